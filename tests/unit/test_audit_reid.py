"""Pairs of patients, the verifier's symmetry, and the retrieval metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from primia.audit.pairs import PatientIndex
from primia.audit.reid import ReidAudit, ReidConfig, chance_precision_at_1, retrieval
from primia.audit.verifier import SiameseVerifier
from primia.errors import ConfigError, DataError
from primia.evaluate.evaluation import Estimate


class FakeDataset:
    """Only what PatientIndex reads: the patient of each image."""

    def __init__(self, patient_ids: list[str]) -> None:
        self.patient_ids = patient_ids


def index_of(patient_ids: list[str]) -> PatientIndex:
    return PatientIndex.of(FakeDataset(patient_ids), what="test")  # type: ignore[arg-type]


def test_sampled_pairs_are_balanced_and_correct() -> None:
    index = index_of(["a", "a", "a", "b", "b", "c"])
    first, second, same = index.sample(200, np.random.default_rng(0))
    assert same.sum() == 100
    patient = index.patient_of
    assert (patient[first[same]] == patient[second[same]]).all()
    assert (first[same] != second[same]).all()  # two different images of one patient
    assert (patient[first[~same]] != patient[second[~same]]).all()


def test_all_pairs_keep_every_positive_and_cap_the_negatives() -> None:
    index = index_of(["a", "a", "b", "b", "c", "c", "d"])
    first, second, same = index.all_pairs(max_negatives=5, rng=np.random.default_rng(0))
    assert same.sum() == 3 and (~same).sum() == 5
    assert (first < second).all()


def test_patients_of_one_image_or_a_single_patient_are_refused() -> None:
    with pytest.raises(DataError, match="single image"):
        index_of(["a", "b", "c"])
    with pytest.raises(DataError, match="at least two"):
        index_of(["a", "a"])


def test_retrieval_metrics_on_a_known_ranking() -> None:
    patients = np.array([0, 0, 1, 1, 1])
    scores = np.array(
        [
            [9, 5, 1, 0, 0],  # best other: image 1 (same patient)   AP@R (R=1) = 1
            [4, 9, 5, 0, 0],  # best other: image 2 (different)      AP@R = 0
            [0, 0, 9, 3, 2],  # ranks 3 then 4 (both same)           AP@R = 1
            [0, 5, 1, 9, 2],  # ranks 1 (diff), 4 (same), 2 (same)   AP@R = (1/2)/2 = 0.25
            [0, 0, 0, 1, 9],  # ranks 3 (same), then ties in index order: 0 (diff)
        ],  #                                                   AP@R (R=2) = 1/2
        dtype=float,
    )
    precision_at_1, map_at_r = retrieval(scores, patients)
    assert precision_at_1 == pytest.approx(3 / 5)
    assert map_at_r == pytest.approx((1 + 0 + 1 + 0.25 + 0.5) / 5)
    # chance: images 0, 1 have 1 same-patient image of 4 others, images 2-4 have 2
    assert chance_precision_at_1(patients) == pytest.approx((1 + 1 + 2 + 2 + 2) / 5 / 4)


@pytest.mark.parametrize(("lower", "links"), [(0.61, True), (0.6, False), (0.3, False)])
def test_the_verdict_states_its_rule(lower: float, links: bool) -> None:
    audit = ReidAudit(
        auroc=Estimate(0.7, lower, 0.8),
        precision_at_1=0.2,
        chance_precision_at_1=0.05,
        map_at_r=0.1,
        test_patients=10,
        test_images=40,
        positive_pairs=5,
        negative_pairs=5,
        history=[],
        best_epoch=1,
        seconds_per_epoch=1.0,
    )
    assert audit.links is links
    assert audit.verdict.startswith("the radiographs" if links else "little sign")
    assert "above 0.6" in audit.verdict or "lower end above 0.6" in audit.verdict
    assert audit.as_dict()["chance_precision_at_1"] == 0.05


def test_verifier_is_symmetric_and_its_matrix_matches_pairs() -> None:
    torch.manual_seed(0)
    verifier = SiameseVerifier("cnn", width=4).eval()
    images = torch.rand(5, 1, 32, 32)
    with torch.no_grad():
        forward = verifier(images[:3], images[2:])
        backward = verifier(images[2:], images[:3])
        matrix = verifier.score_matrix(verifier.embed(images), chunk=2)
        cross = verifier.score_matrix(verifier.embed(images[:2]), verifier.embed(images))
    torch.testing.assert_close(forward, backward)
    torch.testing.assert_close(matrix[0, 2], forward[0])
    torch.testing.assert_close(matrix, matrix.T)
    torch.testing.assert_close(cross, matrix[:2])


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        ReidConfig(data=Path("x"), epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        ReidConfig(data=Path("x"), lr=0)
