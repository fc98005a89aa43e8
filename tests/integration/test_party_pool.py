"""The warm pool of party processes (:class:`primia.inference.processes.PartyPool`), with
real spawned processes: a session takes a process that was started (and imported torch
and CrypTen) before it, that process serves that one session and exits, and the pool
starts a fresh one in its place; nothing a session leaves in its process reaches the
next session."""

from __future__ import annotations

import os
from typing import Any

import pytest

from primia.inference.processes import PartyPool

pytestmark = pytest.mark.slow

WARM_S = 120.0
_LEFT_BEHIND: list[str] = []
"""What earlier jobs in this process left in module state (a session's secrets would)."""


def _session(secret: str, progress: Any) -> dict[str, Any]:
    """A job: report its process and what earlier jobs left behind, then leave ``secret``."""
    seen = list(_LEFT_BEHIND)
    _LEFT_BEHIND.append(secret)
    return {"pid": os.getpid(), "seen": seen}


def _run(pool: PartyPool, secret: str) -> tuple[int | None, dict[str, Any]]:
    process = pool.take("party", _session, (secret,))
    outcome = process.wait(WARM_S)
    assert outcome is not None and outcome.error is None, outcome
    assert not process.running  # one session, then the process is gone
    with pytest.raises(RuntimeError, match="already has a job"):
        process.assign("again", _session, ("second job",))
    assert isinstance(outcome.stats, dict)
    return process.pid, outcome.stats


def test_each_session_gets_a_warm_process_of_its_own_and_the_pool_refills() -> None:
    pool = PartyPool(2, threads=1, name="test")
    try:
        assert pool.wait_warm(WARM_S)
        assert pool.idle == 2
        warm = pool.idle_pids()

        first_pid, first = _run(pool, "first session's shares")
        assert first_pid == warm[0]  # the oldest warm process, started before the session
        assert first == {"pid": first_pid, "seen": []}

        assert pool.wait_warm(WARM_S)  # refilled in the background
        assert pool.idle == 2
        refilled = pool.idle_pids()
        assert first_pid not in refilled
        assert refilled[0] == warm[1]

        second_pid, second = _run(pool, "second session's shares")
        assert second_pid not in (first_pid, None)
        assert second["seen"] == []  # nothing of the first session in this process
        assert _LEFT_BEHIND == []  # nor in the pool's own process
    finally:
        pool.close()
    assert pool.idle == 0
