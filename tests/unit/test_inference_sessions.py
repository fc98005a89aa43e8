"""Session limits of the crypto provider: its allow-list, the configured address, per-caller
limits and capped deadlines (the party processes replaced by stand-ins: pure logic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from primia import pki
from primia.inference.sessions import DealerSessions, DealFor, Limits, Refusal, SessionRefused


class _Party:
    def __init__(self, args: tuple[Any, ...]) -> None:
        self.plan = args[0]
        self.name = "stand-in"
        self.joined = False

    def listening(self, timeout_s: float) -> int:
        return 29950

    def wait(self, timeout_s: float) -> None:
        return None

    def kill(self) -> None:
        pass


class _Pool:
    def __init__(self) -> None:
        self.taken: list[_Party] = []

    def take(self, name: str, target: Any, args: tuple[Any, ...]) -> _Party:
        self.taken.append(_Party(args))
        return self.taken[-1]

    def close(self) -> None:
        pass


@pytest.fixture
def dealer(tmp_path: Path) -> tuple[DealerSessions, _Pool]:
    pki.init_ca(tmp_path, "test")
    files = pki.issue(tmp_path, "crypto-provider", "inference")
    pool = _Pool()
    sessions = DealerSessions(
        tls=files,
        model_owners=(DealFor("model-owner", "10.0.0.1", (29500, 29599)),),
        mpc_host="10.0.0.3",
        mpc_ports=(29600, 29699),
        limits=Limits(
            max_sessions=4, max_sessions_per_caller=2, session_timeout_s=60, join_timeout_s=5
        ),
        pool=pool,  # type: ignore[arg-type]
    )
    return sessions, pool


def test_the_dealer_dials_only_the_configured_address(dealer: tuple[DealerSessions, _Pool]) -> None:
    sessions, pool = dealer
    endpoint = sessions.deal("s1", 29500, 10**9, "site0", "model-owner")
    assert (endpoint.host, endpoint.port) == ("10.0.0.3", 29950)
    owner, data = pool.taken[0].plan.peers
    assert (owner.name, owner.host, owner.port) == ("model-owner", "10.0.0.1", 29500)
    assert data.name == "site0" and data.dials_us
    # the deadline asked for is capped by the provider's own session_timeout_s
    session = sessions.table.running[0]
    assert session.deadline - session.join_deadline < 61


@pytest.mark.parametrize(
    ("caller", "port", "data_owner", "reason", "message"),
    [
        ("viewer", 29500, "site0", Refusal.FORBIDDEN, "not among the model owners"),
        ("model-owner", 22, "site0", Refusal.FORBIDDEN, "outside model-owner's configured"),
        ("model-owner", 29500, "crypto-provider", Refusal.INVALID, "party of its own"),
        ("model-owner", 29500, "model-owner", Refusal.INVALID, "party of its own"),
    ],
)
def test_deals_it_may_not_make_are_refused(
    dealer: tuple[DealerSessions, _Pool],
    caller: str,
    port: int,
    data_owner: str,
    reason: Refusal,
    message: str,
) -> None:
    sessions, pool = dealer
    with pytest.raises(SessionRefused, match=message) as refused:
        sessions.deal("s1", port, 60, data_owner, caller)
    assert refused.value.reason is reason
    assert not pool.taken


def test_a_model_owner_over_its_limit_is_refused_naming_it(
    dealer: tuple[DealerSessions, _Pool],
) -> None:
    sessions, _ = dealer
    sessions.deal("s1", 29500, 60, "site0", "model-owner")
    sessions.deal("s2", 29501, 60, "site1", "model-owner")
    with pytest.raises(SessionRefused, match="max_sessions_per_caller = 2") as refused:
        sessions.deal("s3", 29502, 60, "site2", "model-owner")
    assert refused.value.reason is Refusal.BUSY
