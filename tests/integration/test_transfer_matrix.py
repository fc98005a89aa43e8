"""The domain-transfer matrix over real nodes: two sites, real DP-SGD, mutual TLS.

Checks that every cell is evaluated at its site's node, that what reaches the coordinator
is model updates and metrics only (never an image), that the report files are written,
and that a second run resumes without training or evaluating anything again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Consortium
from PIL import Image

from primia.blobs import BlobChunk
from primia.data.synth import SynthConfig, write_dataset
from primia.federated.data_owner import DataSettings, PrivacySettings
from primia.federated.plan import DPPlan, PlanLimits, TrainPlan
from primia.federated.policy import NodePolicy
from primia.rpc.coordinator_session import NodeSession
from primia.rpc.generated import federation_pb2 as pb
from primia.train.ledger import PrivacyLedger
from primia.transfer.matrix import TransferSettings
from primia.transfer.run import run_transfer_matrix, transfer_server

SITES = ["site0", "site1"]
IMAGE_SIZE = 32


Received = pb.NodeMessage | BlobChunk
"""What a session at the coordinator handles: chunks arrive as BlobChunks (chunk_wire)."""


def _kind(message: Received) -> str | None:
    return "chunk" if isinstance(message, BlobChunk) else message.WhichOneof("kind")


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two-sites")
    write_dataset(
        root,
        SynthConfig(sites=2, patients_per_site=40, images_per_patient=2, size=IMAGE_SIZE, seed=3),
        progress=False,
    )
    return root


def _run(
    consortium: Consortium, data: Path, out: Path, state: Path, received: list[Received]
) -> dict:
    config = consortium.coordinator_config(
        out / "unused-run-dir",
        roster=SITES,
        rounds=2,
        min_nodes=2,
        plan=TrainPlan(epochs=2, batch_size=16, lr=3e-3, dp=DPPlan(epsilon=1.0)),
    )
    settings = TransferSettings(out=out, epsilons=(8.0,), resamples=200, seed=5)
    server = transfer_server(config, settings)
    port = server.start()
    for site in SITES:
        consortium.start_node(
            consortium.node_config(
                site,
                port,
                state / site,
                data=DataSettings(path=data, site=site, test_fraction=0.3),
                privacy=PrivacySettings(epsilon_budget=30.0, accountant="rdp"),
                limits=PlanLimits(require_dp=False),
                # A site-local model is one node's update at the coordinator (plaintext),
                # and the federated model is aggregated over the two sites.
                policy=NodePolicy(aggregation=("secure", "plaintext"), min_participants=2),
            )
        )
    result = run_transfer_matrix(config, settings, server=server)
    return {"analysis": result.analysis, "files": result.files, "timings": result.timings}


@pytest.mark.slow
def test_two_site_matrix_end_to_end_and_resumed(
    consortium: Consortium, two_sites: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[Received] = []
    original = NodeSession.handle

    def spy(self: NodeSession, message: Received) -> None:
        received.append(message)
        original(self, message)

    monkeypatch.setattr(NodeSession, "handle", spy)
    out = tmp_path / "transfer"
    first = _run(consortium, two_sites, out, tmp_path / "state", received)

    # 3 models (two sites' own, the federation's) × 2 levels, each tested at both sites.
    cells = sorted(p.stem for p in (out / "cells").glob("*.json"))
    models = [f"{m}.{level}" for level in ("eps8", "nodp") for m in ("federated", *SITES)]
    assert cells == sorted(f"{m}__{site}" for m in models for site in SITES)
    for model in models:
        assert (out / "models" / model / "model.safetensors").exists()

    analysis = first["analysis"]
    assert set(analysis["levels"]) == {"non-DP", "ε=8"}
    for level in analysis["levels"].values():
        assert set(level["matrix"]) == {"federated", *SITES}
        for row in level["matrix"].values():
            for estimate in row.values():
                if estimate["value"] is not None:
                    assert 0 <= estimate["lower"] <= estimate["value"] <= estimate["upper"] <= 1
        assert set(level["drop"]) == set(SITES)
    versus = analysis["levels"]["ε=8"]["vs_non_dp"]
    assert "all" in versus["difference_by_group"]
    assert {"sex=F", "sex=M"} <= set(versus["difference_by_group"])
    p_value = versus["mean_drop_difference"]["p_value"]
    assert p_value is None or 0 < p_value <= 1

    document = json.loads((out / "matrix.json").read_text())
    assert document["settings"]["sites"] == SITES and document["timings"]["total_seconds"] > 0
    rows = (out / "matrix.csv").read_text().splitlines()
    assert len(rows) == 1 + len(models) * len(SITES)
    for heatmap in first["files"].heatmaps:
        with Image.open(heatmap) as image:
            assert image.size[0] > 300 and image.size[1] > 150
    assert "Domain-transfer matrix" in (out / "report.html").read_text()

    # Only updates and metrics reached the coordinator: every evaluation is a detailed
    # one of metric tables, and no blob holds anything shaped like an image.
    kinds = {_kind(message) for message in received}
    assert kinds <= {
        *("chunk", "train_result", "evaluate_result", "refused", "progress", "plan_answer"),
        *("keys", "shares", "masked_input", "survivor_signature", "unmask_shares"),  # secagg
    }
    assert "refused" not in kinds
    details = [
        m.evaluate_result
        for m in received
        if isinstance(m, pb.NodeMessage) and m.WhichOneof("kind") == "evaluate_result"
    ]
    assert sum(d.HasField("detailed") for d in details) == len(models) * len(SITES)
    for detail in (d.detailed for d in details if d.HasField("detailed")):
        for group in detail.groups:
            assert len(group.values) == 8 * len(detail.metrics) * len(detail.columns)
    for message in received:
        chunk = message if isinstance(message, BlobChunk) else message.chunk
        if _kind(message) == "chunk" and chunk.offset == 0:
            assert chunk.blob_id.endswith(("-update", "-masked")), chunk.blob_id

    # Each node's ledger: two DP models at ε = 8 (its own and the federation's).
    for site in SITES:
        ledger = PrivacyLedger.open(
            tmp_path / "state" / site / "privacy-ledger.jsonl", accountant="rdp"
        )
        assert 8.0 < ledger.spent_epsilon() <= 16.0 + 0.1

    # Resumed: nothing is trained or evaluated again, the figures are the same.
    received.clear()
    second = _run(consortium, two_sites, out, tmp_path / "state", received)
    kinds = {_kind(message) for message in received}
    assert not kinds & {"train_result", "evaluate_result"}
    assert second["analysis"] == first["analysis"]
