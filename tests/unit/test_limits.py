"""The servers' limits as pure logic: admission, deadlines, log throttling, text."""

from __future__ import annotations

import pytest

from primia.config import from_mapping
from primia.errors import ConfigError
from primia.federated.coordinator import FederationStatus
from primia.federated.coordinator_config import CoordinatorConfig
from primia.federated.registry import NodeStatus
from primia.federated.status_access import StatusAccess, StatusDenied
from primia.limits import (
    Admission,
    Deadlines,
    LimitExceeded,
    LogThrottle,
    ServerLimits,
    check_text,
    clean_text,
)
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.text_fields import check_strings


def test_admission_caps_each_peer_and_the_total() -> None:
    admission = Admission(ServerLimits(max_calls=3, max_calls_per_peer=2))
    admission.enter("a")
    admission.enter("a")
    with pytest.raises(LimitExceeded) as per_peer:
        admission.enter("a")
    assert per_peer.value.limit == "max_calls_per_peer"
    admission.enter("b")  # another certificate is still served
    with pytest.raises(LimitExceeded) as total:
        admission.enter("c")
    assert total.value.limit == "max_calls" and "limits.max_calls" in str(total.value)
    admission.leave("a")
    admission.enter("c")
    assert admission.open_calls() == 3 and admission.open_calls("a") == 1


def test_leaving_more_than_entered_never_frees_other_peers_slots() -> None:
    admission = Admission(ServerLimits(max_calls=2, max_calls_per_peer=2))
    admission.enter("a")
    admission.leave("b")
    admission.leave("a")
    admission.leave("a")
    assert admission.open_calls() == 0


def test_deadlines_come_due_in_order_and_disarmed_ones_never() -> None:
    deadlines = Deadlines()
    deadlines.arm(1, 10.0, "first")
    deadlines.arm(2, 5.0, "second")
    deadlines.arm(3, 7.0, "third")
    deadlines.disarm(3)
    assert deadlines.next_at() == 5.0
    assert deadlines.due(6.0) == [(2, "second")]
    assert deadlines.due(6.0) == []
    assert deadlines.due(10.0) == [(1, "first")]
    assert len(deadlines) == 0 and deadlines.next_at() is None


def test_log_throttle_logs_once_per_interval_with_the_count_held_back() -> None:
    throttle = LogThrottle(every_s=10)
    assert throttle.admit("p", 0.0) == 0
    assert [throttle.admit("p", t) for t in (1.0, 2.0, 3.0)] == [None, None, None]
    assert throttle.admit("q", 3.0) == 0  # another peer has its own budget
    assert throttle.admit("p", 10.0) == 3
    assert throttle.admit("p", 11.0) is None


def test_log_throttle_remembers_a_bounded_number_of_keys() -> None:
    throttle = LogThrottle(every_s=10)
    for index in range(LogThrottle.MAX_KEYS * 2):
        throttle.admit(index, 0.0)
    assert len(throttle._state) <= LogThrottle.MAX_KEYS


def test_clean_text_escapes_control_and_format_characters_and_truncates() -> None:
    assert clean_text("a\nb\rc\x1b[31m", 100) == "a\\nb\\rc\\x1b[31m"
    assert clean_text("evil\u202etxt.exe", 100) == "evil\\u202etxt.exe"
    assert clean_text("héllo wörld", 100) == "héllo wörld"  # printable text is untouched
    assert clean_text("abcdef", 3) == "abc…(+3 characters)"


def test_check_text_refuses_over_the_limit() -> None:
    assert check_text("device", "cuda:0\n", 16) == "cuda:0\\n"
    with pytest.raises(LimitExceeded, match=r"device has 17 characters.*limits\.max_text"):
        check_text("device", "x" * 17, 16)


def test_check_strings_finds_long_strings_in_nested_and_repeated_fields() -> None:
    fine = pb.NodeMessage(hello=pb.Hello(device="cpu", dataset=pb.DatasetSummary(task="t")))
    check_strings(fine, 8)
    nested = pb.NodeMessage(hello=pb.Hello(dataset=pb.DatasetSummary(label_names=["a", "b" * 9])))
    with pytest.raises(LimitExceeded, match=r"hello\.dataset\.label_names"):
        check_strings(nested, 8)
    chunk = pb.NodeMessage(chunk=pb.Chunk(blob_id="b", data=b"x" * 100))
    check_strings(chunk, 8)  # bytes are not text


@pytest.mark.parametrize(
    "values",
    [
        {"max_calls": -1},
        {"max_calls_per_peer": 5, "max_calls": 4},
        {"first_message_s": 0},
        {"max_blob_bytes_kept": 100},
    ],
)
def test_server_limits_refuse_unusable_values(values: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="limits"):
        ServerLimits(**values)  # type: ignore[arg-type]


def test_the_pool_has_a_thread_for_every_admitted_call_and_some_to_refuse() -> None:
    limits = ServerLimits(max_calls=10, max_calls_per_peer=2)
    assert limits.pool_size > limits.max_calls


def _status() -> FederationStatus:
    return FederationStatus(
        run_id="r",
        state="running",
        round=1,
        rounds=2,
        min_nodes=2,
        nodes=[NodeStatus("a", epsilon_spent=1.0), NodeStatus("b", epsilon_spent=2.0)],
        history=[],
    )


def test_status_access_by_role() -> None:
    access = StatusAccess()
    assert access.view(_status(), role="coordinator", name="coordinator") == _status()
    own = access.view(_status(), role="node", name="b")
    assert [node.name for node in own.nodes] == ["b"] and own.run_id == "r"
    assert access.view(_status(), role="node", name="stranger").nodes == []
    with pytest.raises(StatusDenied, match="status_access"):
        access.view(_status(), role="inference", name="viewer")
    everyone = StatusAccess(everything=("coordinator", "inference"))
    assert len(everyone.view(_status(), role="inference", name="viewer").nodes) == 2


def test_status_access_refuses_unknown_roles() -> None:
    with pytest.raises(ConfigError, match="operator"):
        StatusAccess(everything=("operator",))


def test_max_calls_left_at_zero_is_sized_by_the_server() -> None:
    assert ServerLimits().sized(100).max_calls == 100
    assert ServerLimits(max_calls=10).sized(100).max_calls == 10
    assert Admission(ServerLimits()).open_calls() == 0  # usable unsized: the default cap


def test_limits_and_status_access_read_from_a_coordinator_config() -> None:
    tls = {"ca": "ca.pem", "certificate": "c.pem", "key": "c.key"}
    config = from_mapping(
        CoordinatorConfig,
        {
            "tls": tls,
            "roster": ["a", "b"],
            "limits": {"max_calls_per_peer": 3, "first_message_s": 5},
            "status_access": {"everything": ["coordinator", "inference"], "own_row": []},
        },
    )
    assert config.limits.max_calls_per_peer == 3 and config.limits.first_message_s == 5.0
    assert config.status_access.own_row == ()
    with pytest.raises(ConfigError, match=r"max_calls=5 is too few for a roster of 2"):
        from_mapping(
            CoordinatorConfig, {"tls": tls, "roster": ["a", "b"], "limits": {"max_calls": 5}}
        )
