"""A detailed evaluation too large for one message is refused by the node with the fix
named, instead of breaking the node's stream (a real node and coordinator, mutual TLS)."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from conftest import Consortium

from primia.blobs import Blob
from primia.federated.coordinator import FederationStatus
from primia.federated.data_owner import DataSettings
from primia.federated.registry import NodeRegistry
from primia.federated.tasks import (
    EvaluateTask,
    EvaluationDetail,
    EvaluationOutcome,
    Refusal,
    TaskRefused,
)
from primia.federated.weights import encode
from primia.models.checkpoint import ModelSpec
from primia.rpc.coordinator_server import CoordinatorServer

SITE = "site0"


class AskForDetail:
    """A job that asks the one node for detailed evaluations of random weights."""

    def __init__(self, registry: NodeRegistry, resamples: list[int]) -> None:
        self.registry = registry
        self.resamples = resamples

    def run(self) -> list[Future[EvaluationOutcome]]:
        (link,) = self.registry.wait_for(1, timeout=30.0)
        spec = ModelSpec(
            "cnn",
            num_outputs=4,
            image_size=32,
            label_names=("pneumonia", "effusion", "cardiomegaly", "nodule"),
        )
        weights = Blob.of("w", encode(spec.build().state_dict()))
        futures = []
        for count in self.resamples:
            task = EvaluateTask(
                f"detail-{count}",
                1,
                spec,
                weights,
                "test",
                detail=EvaluationDetail(resamples=count, seed=1),
            )
            futures.append(link.evaluate(task))
            futures[-1].exception(timeout=60.0)  # one at a time
        return futures

    def status(self) -> FederationStatus:
        return FederationStatus("detail", "running", 0, 0, 1, self.registry.statuses(), [])


def test_an_oversized_detailed_evaluation_is_refused_and_the_node_stays(
    consortium: Consortium, tmp_path: Path
) -> None:
    config = consortium.coordinator_config(
        tmp_path / "run", roster=[SITE], min_nodes=1, aggregation="plaintext"
    )
    server = CoordinatorServer(config, job=lambda registry: AskForDetail(registry, [10_000, 50]))
    port = server.start()
    try:
        consortium.start_node(
            consortium.node_config(
                SITE,
                port,
                tmp_path / "state",
                data=DataSettings(path=consortium.data, site=SITE, test_fraction=0.3),
                exit_when_done=False,
            )
        )
        too_large, small = server.job.run()
    finally:
        server.stop(grace=0)

    refusal = too_large.exception()
    assert isinstance(refusal, TaskRefused), refusal
    assert refusal.reason is Refusal.INVALID_PLAN
    assert "resamples" in str(refusal) and "at most" in str(refusal)
    outcome = small.result()  # the same stream still works
    assert outcome.detailed is not None and outcome.detailed.resamples == 50
