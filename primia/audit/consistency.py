"""The nodes' own model-consistency check, run on the weights a coordinator sent.

A coordinator that sends one node other weights than the rest (model inconsistency,
Pasquini et al., CCS 2022) must get past the check every node runs in a secure round:
each node signs the SHA-256 of the weights blob it received, of the round's plan and of
the participant list into its key advertisement (:func:`primia.federated.round_view.round_view`),
and :class:`~primia.crypto.secagg.AggregationClient` sends no share unless every
advertisement on the roster carries the same three digests.

:func:`consistency_refusal` plays that step with the code the nodes run, nothing
simulated: it encodes each node's weights as the coordinator's blob (safetensors bytes,
:func:`primia.federated.weights.encode`), builds each node's train task and its
:class:`~primia.federated.secure.SecureContribution` (which derives the signed view),
issues every node a certificate from a throwaway CA (the advertisements are verified
against it, as in a consortium), collects the advertisements into the coordinator's key
roster and hands it to every node. A node that finds a differing view raises
:class:`~primia.crypto.secagg.InconsistentRound`; its message is the refusal.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from primia import pki
from primia.blobs import Blob
from primia.crypto.secagg import InconsistentRound, KeyRoster, Setup
from primia.crypto.secagg.messages import SESSION_BYTES, majority
from primia.federated.coordinator_config import SecureAggregationConfig
from primia.federated.plan import TrainPlan
from primia.federated.secure import SecureContribution
from primia.federated.tasks import SecureTask, TrainTask
from primia.federated.weights import encode
from primia.models.checkpoint import ModelSpec

CONSORTIUM = "audit"


def consistency_refusal(sent: Sequence[nn.Module], spec: ModelSpec) -> str | None:
    """Run the nodes' model-consistency check on one secure round in which node ``i``
    received the weights ``sent[i]``; return why the nodes abandon it (None when every
    node accepts the roster and would go on to send its shares)."""
    if len(sent) < 2:
        raise ValueError(f"a secure round needs at least 2 nodes, got {len(sent)}")
    names = tuple(f"node{i}" for i in range(len(sent)))
    defaults = SecureAggregationConfig()
    setup = Setup(
        session=os.urandom(SESSION_BYTES),
        round=1,
        participants=names,
        threshold=majority(len(names)),
        bits=defaults.ring_bits,
        clip=defaults.clip,
        vector_length=sum(p.numel() for p in sent[0].parameters() if p.requires_grad) + 1,
    )
    secure = SecureTask(setup, weight_unit=1.0)
    with tempfile.TemporaryDirectory() as folder:
        ca_pem = pki.init_ca(Path(folder), CONSORTIUM).read_bytes()
        nodes = []
        for index, (name, model) in enumerate(zip(names, sent, strict=True)):
            _, certificate, key = pki.issue(Path(folder), name, "node").read()
            task = TrainTask(
                task_id=f"audit-round-1-{name}",
                round=1,
                spec=spec,
                weights=Blob.of(f"global-weights-{index}", encode(model.state_dict())),
                plan=TrainPlan(),
                secure=secure,
            )
            nodes.append(
                SecureContribution(
                    task, name, certificate_pem=certificate, key_pem=key, ca_pem=ca_pem
                )
            )
    roster = KeyRoster(setup.session, tuple(node.client.advertise() for node in nodes))
    refusals = []
    for node in nodes:
        try:
            node.client.share(roster)
        except InconsistentRound as refused:
            refusals.append(str(refused))
    if not refusals:
        return None
    return (
        f"refused by the model-consistency check: {len(refusals)} of {len(nodes)} nodes "
        f"abandoned the round before sending any share; the first said: {refusals[0]}"
    )
