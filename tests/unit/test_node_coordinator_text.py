"""A node reads its coordinator's names and ids as bounded, printable text: they go into
its log lines and its privacy ledger (:class:`primia.rpc.node_client._Session`)."""

from __future__ import annotations

import queue

import pytest

from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.node_client import MAX_TEXT, PlanRefused, _Session


class _Owner:
    """The data owner's one call a Welcome without a plan makes."""

    def check_coordinator_record(self, recorded: float | None) -> None:
        return None


def _session() -> tuple[_Session, queue.Queue[object]]:
    outbound: queue.Queue[object] = queue.Queue()
    return _Session(_Owner(), outbound, (b"", b"", b"")), outbound  # type: ignore[arg-type]


def _sent(outbound: queue.Queue[object]) -> list[pb.NodeMessage]:
    sent = []
    while not outbound.empty():
        message = outbound.get()
        assert isinstance(message, pb.NodeMessage)
        sent.append(message)
    return sent


@pytest.mark.parametrize(
    ("run_id", "problem"),
    [
        ("r1\n2026-12-06 06:00:00 INFO round 1: released an update at eps 0.01", "control"),
        ("r" * (MAX_TEXT + 1), f"over {MAX_TEXT} characters"),
    ],
)
def test_a_run_id_with_a_newline_or_a_megabyte_is_refused_at_the_welcome(
    run_id: str, problem: str
) -> None:
    """Before, a newline in the run id forged the node's log lines and a long one went
    into every ledger release; now the node refuses to join, saying why."""
    session, outbound = _session()
    welcome = pb.CoordinatorMessage(welcome=pb.Welcome(node_name="site0", run_id=run_id))
    with pytest.raises(PlanRefused, match=r"run_id|text field"):
        session.run(iter([welcome]))
    (answer,) = _sent(outbound)
    assert not answer.plan_answer.accepted
    assert problem in answer.plan_answer.refusal.detail
    assert "\n" not in answer.plan_answer.refusal.detail


def test_a_task_with_an_overlong_id_is_ignored_and_a_long_shutdown_reason_is_not() -> None:
    """A task's id would be logged and written into the ledger's release: the node drops
    the message (the coordinator sees a dropout), answering nothing that echoes it. A
    shutdown's reason is cut where it is logged, so a long one still ends the session."""
    session, outbound = _session()
    welcome = pb.CoordinatorMessage(welcome=pb.Welcome(node_name="site0", run_id="r1"))
    task = pb.CoordinatorMessage(train=pb.TrainTask(task_id="t" * 100_000, round=1))
    shutdown = pb.CoordinatorMessage(
        shutdown=pb.Shutdown(reason="done " * 1000, finished=True, failed=False)
    )
    ending = session.run(iter([welcome, task, shutdown]))
    (answer,) = _sent(outbound)
    assert answer.plan_answer.accepted
    assert ending.finished and not ending.failed
