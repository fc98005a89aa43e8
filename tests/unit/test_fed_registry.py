"""The registry of connected nodes: roster order, reconnection, waiting, status."""

import threading
import time

import pytest

from primia.federated.registry import AlreadyConnected, NodeRegistry, NodeStatus
from primia.federated.tasks import DatasetSummary, NodeInfo, PrivacyState

ROSTER = ("alpha", "beta", "gamma")


class FakeLink:
    """A connected node that only records being closed."""

    def __init__(self, name: str, *, device: str = "cpu", spent: float = 0.5) -> None:
        self.name = name
        self.info = NodeInfo(
            dataset=DatasetSummary("multilabel", ("x",), 10, 2, 2),
            privacy=PrivacyState(
                epsilon_spent=spent, epsilon_budget=8.0, delta=1e-5, accountant="prv"
            ),
            device=device,
            software_version="0.1",
        )
        self.closed: list[str] = []
        self.stream_alive = True

    def close(self, reason: str) -> None:
        self.closed.append(reason)

    def alive(self) -> bool:
        return self.stream_alive and not self.closed


def status_of(registry: NodeRegistry, name: str) -> NodeStatus:
    return next(status for status in registry.statuses() if status.name == name)


def test_new_registry_lists_the_roster_as_not_connected():
    registry = NodeRegistry(ROSTER)
    assert registry.connected() == []
    assert registry.statuses() == [NodeStatus(name) for name in ROSTER]


def test_connected_follows_the_roster_order_not_the_arrival_order():
    registry = NodeRegistry(ROSTER)
    gamma, alpha = FakeLink("gamma"), FakeLink("alpha")
    registry.admit(gamma)
    registry.admit(alpha)
    assert registry.connected() == [alpha, gamma]
    assert [s.name for s in registry.statuses()] == list(ROSTER)


def test_admit_records_the_nodes_info():
    registry = NodeRegistry(ROSTER)
    registry.admit(FakeLink("beta", device="cuda:0", spent=2.5))
    assert status_of(registry, "beta") == NodeStatus(
        "beta",
        connected=True,
        activity="idle",
        epsilon_spent=2.5,
        epsilon_budget=8.0,
        device="cuda:0",
    )


def test_leave_disconnects_the_node():
    registry = NodeRegistry(ROSTER)
    alpha, beta = FakeLink("alpha"), FakeLink("beta")
    registry.admit(alpha)
    registry.admit(beta)
    registry.leave(alpha)
    assert registry.connected() == [beta]
    status = status_of(registry, "alpha")
    assert not status.connected
    assert status.activity == "disconnected"
    assert alpha.closed == []


def test_a_second_link_while_the_first_is_alive_is_refused():
    registry = NodeRegistry(ROSTER)
    old, new = FakeLink("alpha"), FakeLink("alpha", device="cuda:1")
    registry.admit(old)
    with pytest.raises(AlreadyConnected, match=r"alpha is already connected.*revoke"):
        registry.admit(new)
    assert old.closed == []
    assert registry.connected() == [old]
    assert status_of(registry, "alpha").device == "cpu"


def test_a_second_link_after_the_first_died_replaces_and_closes_it():
    registry = NodeRegistry(ROSTER)
    old, new = FakeLink("alpha"), FakeLink("alpha", device="cuda:1")
    registry.admit(old)
    old.stream_alive = False  # its stream died before the reader noticed
    registry.admit(new)
    assert old.closed == ["its stream died and the node connected again"]
    assert new.closed == []
    assert registry.connected() == [new]
    assert status_of(registry, "alpha").device == "cuda:1"


def test_leave_of_a_stale_link_keeps_the_new_one():
    registry = NodeRegistry(ROSTER)
    old, new = FakeLink("alpha"), FakeLink("alpha")
    registry.admit(old)
    old.stream_alive = False
    registry.admit(new)
    registry.leave(old)  # the old session's stream ends after the node reconnected
    assert registry.connected() == [new]
    assert status_of(registry, "alpha").connected


def test_wait_for_returns_once_enough_links_arrive():
    registry = NodeRegistry(ROSTER)
    registry.admit(FakeLink("alpha"))
    late = FakeLink("beta")
    timer = threading.Timer(0.1, registry.admit, args=(late,))
    started = time.monotonic()
    timer.start()
    try:
        links = registry.wait_for(2, timeout=5.0)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    assert [link.name for link in links] == ["alpha", "beta"]
    assert 0.05 <= elapsed < 2.0


def test_wait_for_gives_up_after_the_timeout_with_fewer():
    registry = NodeRegistry(ROSTER)
    alpha = FakeLink("alpha")
    registry.admit(alpha)
    started = time.monotonic()
    links = registry.wait_for(3, timeout=0.2)
    elapsed = time.monotonic() - started
    assert links == [alpha]
    assert 0.15 <= elapsed < 1.5


def test_wait_for_stops_early_when_asked():
    registry = NodeRegistry(ROSTER)
    stop = threading.Event()
    stop.set()
    started = time.monotonic()
    assert registry.wait_for(1, timeout=5.0, stop=stop) == []
    assert time.monotonic() - started < 1.0


def test_wait_for_returns_at_once_when_enough_are_connected():
    registry = NodeRegistry(ROSTER)
    registry.admit(FakeLink("alpha"))
    started = time.monotonic()
    assert len(registry.wait_for(1, timeout=5.0)) == 1
    assert time.monotonic() - started < 0.1


def test_set_activity_applies_only_to_connected_nodes():
    registry = NodeRegistry(ROSTER)
    registry.admit(FakeLink("alpha"))
    registry.set_activity("alpha", "training 40%")
    registry.set_activity("beta", "training")  # not connected: ignored
    assert status_of(registry, "alpha").activity == "training 40%"
    assert status_of(registry, "beta").activity == "not connected"


def test_record_privacy_and_contribution_are_reflected():
    registry = NodeRegistry(ROSTER)
    registry.admit(FakeLink("alpha"))
    registry.record_privacy(
        "alpha",
        PrivacyState(epsilon_spent=3.25, epsilon_budget=9.0, delta=1e-5, accountant="prv"),
    )
    registry.record_contribution("alpha")
    registry.record_contribution("alpha")
    status = status_of(registry, "alpha")
    assert (status.epsilon_spent, status.epsilon_budget) == (3.25, 9.0)
    assert status.rounds_contributed == 2
    assert status.connected


def test_restore_carries_counts_of_a_resumed_run_and_skips_strangers():
    registry = NodeRegistry(ROSTER)
    registry.restore(
        [
            NodeStatus(
                "beta",
                connected=True,
                activity="training",
                epsilon_spent=4.0,
                epsilon_budget=8.0,
                rounds_contributed=7,
                device="cuda:0",
            ),
            NodeStatus("mallory", rounds_contributed=99),
        ]
    )
    beta = status_of(registry, "beta")
    # Counts are carried; connection, activity and device are not (it is not connected).
    assert beta == NodeStatus("beta", epsilon_spent=4.0, epsilon_budget=8.0, rounds_contributed=7)
    assert [s.name for s in registry.statuses()] == list(ROSTER)
    registry.record_contribution("beta")
    assert status_of(registry, "beta").rounds_contributed == 8


def test_a_view_sees_only_its_names_and_shares_admissions():
    registry = NodeRegistry(ROSTER)
    view = registry.view(["beta"])
    alpha = FakeLink("alpha")
    registry.admit(alpha)
    assert view.connected() == []
    started = time.monotonic()
    assert view.wait_for(1, timeout=0.3) == []  # alpha does not count for the view
    assert time.monotonic() - started >= 0.3
    beta = FakeLink("beta")
    threading.Timer(0.1, registry.admit, args=(beta,)).start()
    assert view.wait_for(1, timeout=5) == [beta]
    assert registry.connected() == [alpha, beta]
    view.set_activity("beta", "training")
    assert status_of(registry, "beta").activity == "training"
    assert [s.name for s in view.statuses()] == ["beta"]
    try:
        registry.view(["delta"])
    except ValueError as error:
        assert "delta" in str(error)
    else:
        raise AssertionError("a view of a name off the roster was made")


def test_a_node_counts_only_once_it_accepted_the_plan_and_a_refusal_ends_the_wait():
    registry = NodeRegistry(ROSTER)
    alpha, beta = FakeLink("alpha"), FakeLink("beta")
    registry.admit(alpha, ready=False)
    registry.admit(beta)
    assert registry.connected() == [beta] and registry.every_link() == [alpha, beta]
    assert status_of(registry, "alpha").activity == "checking the run's plan"
    registry.ready(alpha)
    assert registry.connected() == [alpha, beta]
    # gamma refuses to join: waiting for the whole roster ends at once.
    registry.refused_to_join("gamma", "incompatible_model: labels")
    started = time.monotonic()
    assert registry.wait_for(3, timeout=10) == [alpha, beta]
    assert time.monotonic() - started < 5
    assert registry.join_refusals() == {"gamma": "incompatible_model: labels"}
    assert status_of(registry, "gamma").last_refusal == "at join: incompatible_model: labels"
    # Nodes excluded by the rounds are neither counted nor returned.
    assert registry.wait_for(2, timeout=0.1, excluding={"beta"}) == [alpha]
    # gamma joins again and accepts: its refusal is forgotten.
    gamma = FakeLink("gamma")
    registry.admit(gamma, ready=False)
    registry.ready(gamma)
    assert registry.join_refusals() == {}
