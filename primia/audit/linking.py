"""Do reconstructions link back to their patients? Judged by a trained verifier.

The inversion audit's own re-identification compares pixels (the nearest image in MSE).
Given a Siamese verifier (``primia audit reid`` saves one), each reconstruction is scored
against every image of the node's dataset except its own original; it is re-identified
when the best-scoring image belongs to the original's patient — the attacker's question
when the original itself is not in their hands, only other images of the patient.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from primia.audit.results import InversionAudit, discount_chance, summarize
from primia.audit.verifier import SiameseVerifier


@torch.no_grad()
def link_with_verifier(
    audit: InversionAudit,
    verifier: SiameseVerifier,
    *,
    reference: torch.Tensor,
    patient_ids: list[str],
    device: torch.device,
) -> InversionAudit:
    """``audit`` with each image's ``verifier_patient_correct`` and the summary's
    ``reidentified_by_verifier`` filled in; ``reference`` is the dataset's images as
    ``float[N, 1, S, S]`` in [0, 1]."""
    verifier = verifier.to(device).eval()
    gallery = torch.cat(
        [
            verifier.embed(reference[start : start + 256].to(device))
            for start in range(0, len(reference), 256)
        ]
    )
    patients = np.asarray(patient_ids)
    outcomes = []
    for outcome in audit.outcomes:
        queries = torch.from_numpy(np.clip(np.nan_to_num(outcome.reconstructions), 0, 1))
        embedded = verifier.embed(queries.float().unsqueeze(1).to(device))
        scores = verifier.score_matrix(embedded, gallery).cpu().numpy()
        linked = []
        for row, score in zip(scores, outcome.scores, strict=True):
            row[score.dataset_index] = -np.inf  # not the original itself
            best = int(np.argmax(row))
            linked.append(
                dataclasses.replace(
                    score, verifier_patient_correct=bool(patients[best] == score.patient_id)
                )
            )
        outcomes.append(dataclasses.replace(outcome, scores=linked))
    outcomes = discount_chance(outcomes)  # the verifier is one more method to test
    return dataclasses.replace(audit, outcomes=outcomes, summary=summarize(outcomes))
