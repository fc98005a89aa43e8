"""FedAdam with FedProx at the nodes over real gRPC with mutual TLS, secure aggregation and
DP-SGD; a node's limits bound μ; the server optimiser's state survives a coordinator
restart; client sampling draws the round's nodes; a plug-in model trains."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SITES, Consortium, rounds_of, run_federation
from safetensors import safe_open

from primia.federated.plan import DPPlan, PlanLimits, TrainPlan
from primia.federated.policy import NodePolicy
from primia.federated.result import FederationResult
from primia.federated.sampling import SamplingConfig
from primia.federated.server_optimizer import ServerOptimizerConfig
from primia.rpc.coordinator_server import CoordinatorServer
from primia.train.tracking import TrackingConfig, mlflow_installed

PLAN = TrainPlan(epochs=1, batch_size=8, lr=3e-3, proximal_mu=0.1, dp=DPPlan(epsilon=1.0))
FEDADAM = ServerOptimizerConfig(name="fedadam", lr=0.01)


def federate(
    consortium: Consortium,
    tmp_path: Path,
    rounds: int,
    strict: str | None = None,
    sampling: SamplingConfig | None = None,
    tracking: TrackingConfig | None = None,
) -> FederationResult:
    """``strict`` names a node whose limits allow a smaller FedProx μ than the plan's."""
    server = CoordinatorServer(
        consortium.coordinator_config(
            tmp_path / "run",
            rounds=rounds,
            plan=PLAN,
            server_optimizer=FEDADAM,
            sampling=sampling or SamplingConfig(),
            tracking=tracking or TrackingConfig(),
        )
    )
    port = server.start()
    for site in SITES:
        limits = PlanLimits(max_proximal_mu=0.01) if site == strict else PlanLimits()
        consortium.start_node(
            consortium.node_config(
                site,
                port,
                tmp_path / f"state-{site}",
                limits=limits,
                policy=NodePolicy(min_participants=2),  # the round goes on without the strict one
            )
        )
    return run_federation(server)


def optimizer_steps(path: Path) -> int:
    with safe_open(str(path), framework="pt") as handle:
        return int((handle.metadata() or {})["steps"])


def test_fedadam_with_fedprox_resumes_its_state_after_a_restart(
    consortium: Consortium, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    federate(consortium, tmp_path, rounds=1, strict="site2")
    first = rounds_of(tmp_path / "run")[0]
    assert first["contributors"] == ["site0", "site1"]
    # the strict node saw the plan at Join and refused to join the run
    assert "proximal_mu=0.1 is outside [0, 0.01]" in str(consortium.ended["site2"])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert optimizer_steps(checkpoints / "optimizer-0001.safetensors") == 1

    # the coordinator restarts, now drawing two of the three nodes each round, and logging
    # to MLflow when it is installed
    store = (tmp_path / "mlruns").as_uri()
    tracking = TrackingConfig(mlflow_uri=store) if mlflow_installed() else None
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    report = federate(
        consortium, tmp_path, rounds=2, sampling=SamplingConfig(count=2), tracking=tracking
    )
    rounds = rounds_of(tmp_path / "run")
    assert len(rounds[1]["sampled"]) == 2
    assert rounds[1]["contributors"] == rounds[1]["sampled"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["server_optimizer"] == "fedadam" for r in rounds)
    assert all(r["aggregation"] == "secure" and len(r["contributors"]) >= 2 for r in rounds)
    # round 2 continued round 1's moments rather than starting afresh
    assert optimizer_steps(checkpoints / "optimizer-0002.safetensors") == 2
    assert report.test is not None and report.test.examples > 0
    if tracking is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=store)
        (run,) = client.search_runs([client.get_experiment_by_name("primia").experiment_id])
        assert run.info.run_name == report.run_id and run.info.status == "FINISHED"
        assert run.data.params["server_optimizer"] == "fedadam"
        auroc = client.get_metric_history(run.info.run_id, "validation/mean_auroc")
        assert [m.step for m in auroc] == [2]  # the same tags as TensorBoard, by round
        assert {f"epsilon_spent/{name}" for name in rounds[1]["contributors"]} <= set(
            run.data.metrics
        )
