"""Plaintext FedAvg: the example-weighted mean of the updates of the nodes that finished."""

from concurrent.futures import Future

import torch

from primia.blobs import Blob
from primia.federated.aggregation import PlaintextAggregator
from primia.federated.plan import TrainPlan
from primia.federated.tasks import (
    NodeDropped,
    PrivacyState,
    Refusal,
    TaskRefused,
    TrainOutcome,
    TrainTask,
)
from primia.federated.weights import encode
from primia.models.checkpoint import ModelSpec

REFERENCE = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
PRIVACY = PrivacyState(epsilon_spent=1.0, epsilon_budget=8.0, delta=1e-5, accountant="prv")


class FakeLink:
    """A node whose training has already ended (or never will): ``train`` hands back
    the future it was given and records the task."""

    def __init__(self, name: str, future: Future) -> None:
        self.name = name
        self.future = future
        self.tasks: list[TrainTask] = []

    def train(self, task: TrainTask) -> Future:
        self.tasks.append(task)
        return self.future


def outcome(update: dict[str, torch.Tensor], num_examples: int) -> TrainOutcome:
    return TrainOutcome(
        update=Blob.of("update", encode(update)),
        num_examples=num_examples,
        train_loss=0.5,
        steps=3,
        seconds=0.1,
        release=None,
        privacy=PRIVACY,
    )


def answered(name: str, update: dict[str, torch.Tensor], num_examples: int) -> FakeLink:
    future: Future = Future()
    future.set_result(outcome(update, num_examples))
    return FakeLink(name, future)


def failed(name: str, error: Exception) -> FakeLink:
    future: Future = Future()
    future.set_exception(error)
    return FakeLink(name, future)


def make_task(link: FakeLink) -> TrainTask:
    return TrainTask(
        task_id=f"task-{link.name}",
        round=1,
        spec=ModelSpec("cnn", num_outputs=3),
        weights=Blob.of("weights", b""),
        plan=TrainPlan(),
    )


def collect(links, reference=REFERENCE, timeout: float = 1.0):
    return PlaintextAggregator().collect(links, make_task, reference=reference, timeout=timeout)


def random_update(seed: int, reference=REFERENCE) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(t.shape, generator=generator).to(t.dtype) for name, t in reference.items()
    }


def test_fedavg_is_the_example_weighted_mean():
    updates = {"a": random_update(1), "b": random_update(2), "c": random_update(3)}
    counts = {"a": 10, "b": 30, "c": 60}
    links = [answered(name, updates[name], counts[name]) for name in updates]
    result = collect(links)
    assert result.contributors == ["a", "b", "c"]
    assert result.total_weight == 100
    assert result.refused == {} and result.dropped == {}
    mean = result.mean_update()
    for tensor in ("w", "b"):
        expected = (
            10 * updates["a"][tensor] + 30 * updates["b"][tensor] + 60 * updates["c"][tensor]
        ) / 100
        assert torch.allclose(mean[tensor], expected, atol=1e-6), tensor
        assert torch.allclose(result.weighted_sum[tensor], expected.double() * 100, atol=1e-4), (
            "the sum is Σ n_i Δ_i, not the mean"
        )


def test_weighting_by_examples_differs_from_the_plain_mean():
    ones = {name: torch.ones_like(t) for name, t in REFERENCE.items()}
    fours = {name: torch.full_like(t, 4.0) for name, t in REFERENCE.items()}
    result = collect([answered("small", ones, 1), answered("large", fours, 3)])
    # (1·1 + 3·4) / 4 = 3.25, not the unweighted 2.5.
    assert torch.allclose(result.mean_update()["w"], torch.full((2, 3), 3.25))


def test_each_link_gets_its_own_task_and_outcomes_are_kept():
    links = [answered("a", random_update(1), 5), answered("b", random_update(2), 7)]
    result = collect(links)
    assert [link.tasks[0].task_id for link in links] == ["task-a", "task-b"]
    assert result.outcomes["a"].num_examples == 5
    assert result.outcomes["b"].num_examples == 7


def test_a_refusing_node_is_listed_as_refused_and_left_out():
    refusal = TaskRefused(Refusal.BUDGET_EXCEEDED, "ε would reach 9 of 8")
    result = collect([answered("a", random_update(1), 4), failed("b", refusal)])
    assert result.refused == {"b": "budget_exceeded: ε would reach 9 of 8"}
    assert result.dropped == {}
    assert result.contributors == ["a"]
    assert result.total_weight == 4


def test_a_dropped_node_is_listed_as_dropped():
    result = collect([answered("a", random_update(1), 4), failed("b", NodeDropped("gone"))])
    assert result.dropped == {"b": "gone"}
    assert result.refused == {}
    assert result.contributors == ["a"]


def test_a_node_that_never_answers_is_dropped_after_the_timeout():
    silent: Future = Future()
    update = random_update(1)
    result = collect([answered("a", update, 4), FakeLink("slow", silent)], timeout=0.2)
    assert set(result.dropped) == {"slow"}
    assert result.dropped["slow"].startswith("no answer within")
    assert silent.cancelled()
    assert result.contributors == ["a"]
    assert torch.allclose(result.mean_update()["w"], update["w"])


def test_an_update_of_the_wrong_shape_is_dropped_with_the_reason():
    bad = {"w": torch.zeros(3, 2), "b": torch.zeros(3)}
    result = collect([answered("a", random_update(1), 4), answered("bad", bad, 100)])
    assert set(result.dropped) == {"bad"}
    assert "update of bad" in result.dropped["bad"]
    assert "(3, 2)" in result.dropped["bad"] and "(2, 3)" in result.dropped["bad"]
    assert result.total_weight == 4


def test_an_update_that_is_not_safetensors_is_dropped():
    future: Future = Future()
    future.set_result(
        TrainOutcome(Blob.of("u", b"garbage"), 5, 0.5, 1, 0.1, release=None, privacy=PRIVACY)
    )
    result = collect([FakeLink("bad", future)])
    assert "not valid safetensors" in result.dropped["bad"]
    assert result.total_weight == 0
    assert result.contributors == []


def test_an_update_claiming_no_examples_is_dropped():
    result = collect([answered("a", random_update(1), 4), answered("empty", random_update(2), 0)])
    assert result.dropped == {"empty": "the update claims no training examples"}
    assert result.total_weight == 4
    assert torch.allclose(result.mean_update()["b"], random_update(1)["b"])


def test_mean_update_keeps_the_reference_dtype():
    reference = {"w": torch.zeros(2, 3, dtype=torch.float32), "d": torch.zeros(4).double()}
    result = collect(
        [
            answered("a", random_update(1, reference), 2),
            answered("b", random_update(2, reference), 3),
        ],
        reference=reference,
    )
    mean = result.mean_update()
    assert mean["w"].dtype == torch.float32
    assert mean["d"].dtype == torch.float64
    # The sums stay in float64 (precision); the mean returns to the model's dtypes.
    assert {t.dtype for t in result.weighted_sum.values()} == {torch.float64}


def test_half_precision_sums_do_not_overflow():
    reference = {"w": torch.zeros(4, dtype=torch.float16)}
    twos = {"w": torch.full((4,), 2.0, dtype=torch.float16)}
    result = collect(
        [answered("a", twos, 40_000), answered("b", twos, 40_000)], reference=reference
    )
    mean = result.mean_update()["w"]
    assert mean.dtype == torch.float16
    assert torch.equal(mean, twos["w"])


def test_no_links_gives_zero_sums():
    result = collect([])
    assert result.total_weight == 0
    assert all(torch.count_nonzero(t) == 0 for t in result.weighted_sum.values())
    assert result.contributors == []
