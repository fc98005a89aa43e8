"""``primia dashboard`` over a live two-node federation on loopback with mutual TLS: the
dashboard (real uvicorn, read over HTTP) asks the coordinator's status service with the
operator's certificate. Nodes' rows appear, the round count and ε advance after a round,
a node's refusal shows its reason, and a stopped coordinator reads "unreachable"."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import SITES, Consortium, run_federation

from primia.federated.policy import NodePolicy
from primia.rpc.coordinator_server import CoordinatorServer


def _state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/state.json", timeout=10) as response:
        state: dict[str, Any] = json.loads(response.read())
    return state


def _wait_for(url: str, condition: Any, what: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = _state(url)
        if condition(state):
            return state
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {state}"
        time.sleep(0.2)


def test_the_dashboard_follows_a_live_federation(consortium: Consortium, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    from primia.api.dashboard import dashboard_app, running_dashboard

    config = consortium.coordinator_config(tmp_path / "run", rounds=2, final_test=False)
    server = CoordinatorServer(config)
    port = server.start()
    app = dashboard_app(coordinator=f"127.0.0.1:{port}", tls=consortium.coordinator)
    try:
        with running_dashboard(app) as url:
            _follow(consortium, server, port, url, tmp_path)
    finally:
        server.stop(grace=0)


def _follow(
    consortium: Consortium, server: CoordinatorServer, port: int, url: str, tmp_path: Path
) -> None:
    """Starts the nodes and runs the federation while reading the dashboard."""
    before = _state(url)
    assert before["round"] == 0 and [n["name"] for n in before["nodes"]] == list(SITES)
    for site in SITES:
        # site2 asks for more participants than the roster has: it refuses, saying why;
        # the two others accept a round of two.
        policy = NodePolicy(min_participants=4 if site == "site2" else 2)
        consortium.start_node(
            consortium.node_config(site, port, tmp_path / f"state-{site}", policy=policy)
        )
    # Two rounds; the dashboard is read while the second one runs (after the run the
    # coordinator stops serving).
    federation = threading.Thread(target=run_federation, args=(server,), daemon=True)
    federation.start()
    after = _wait_for(url, lambda s: s.get("round", 0) >= 2, "round 2 to start", 180)
    nodes = {n["name"]: n for n in after["nodes"]}
    assert len(after["history"]) >= 1 and after["history"][0]["round"] == 1
    assert all(nodes[s]["epsilon_spent"] > 0 for s in ("site0", "site1"))
    assert all(nodes[s]["rounds_contributed"] >= 1 for s in ("site0", "site1"))
    assert "min_participants=4" in nodes["site2"]["last_refusal"]
    assert "<polyline" in after["charts"]["auroc"] or "no data" in after["charts"]["auroc"]
    federation.join(180)
    gone = _wait_for(url, lambda s: "unreachable" in s, "the coordinator to be unreachable")
    assert "cannot get the status" in gone["unreachable"]
