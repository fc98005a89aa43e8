"""``primia dashboard`` over a live three-node federation on loopback with mutual TLS: the
dashboard (real uvicorn) asks the coordinator's status service with the operator's
certificate, and is read over HTTP and, where a browser can be had, in Debian's Chromium
driven by Playwright (one federation for both). Nodes' rows appear, the round count and ε
advance after a round, a node's refusal shows its reason, a stopped coordinator reads
"unreachable"; a report page renders with its images; afterwards the run directory gives
each node its ε (``--run``). With ``PRIMIA_SCREENSHOTS=DIR`` the browser saves a
screenshot of each page into DIR. Without a browser the HTTP checks run and the test then
skips, saying why."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chromium import POLL, chromium, missing, screenshot
from conftest import SITES, Consortium, run_federation

from primia.audit.report import write_report
from primia.audit.results import AttackOutcome, ImageScore, InversionAudit, summarize
from primia.federated.policy import NodePolicy
from primia.federated.run_view import read_run, write_run_report
from primia.rpc.coordinator_server import CoordinatorServer

WAIT_MS = 180_000
"""How long the browser waits for a round (a loaded CI machine trains slowly)."""


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


def _audit_report(folder: Path) -> None:
    """A real inversion-audit report (two 32-px images, random reconstructions)."""
    rng = np.random.default_rng(0)
    scores = [
        ImageScore(i, f"p{i}", 0.01, 20.0, 0.6, 15.0, 0.5, 0.2, 1.0, False, False) for i in range(2)
    ]
    outcome = AttackOutcome(
        originals=rng.random((2, 32, 32), dtype=np.float32),
        reconstructions=rng.random((2, 32, 32), dtype=np.float32),
        scores=scores,
        seconds=1.0,
        attack_loss=0.1,
    )
    audit = InversionAudit(
        settings={"attack": "dlg", "defense": "none"},
        prior=np.full((32, 32), 0.5, dtype=np.float32),
        outcomes=[outcome],
        summary=summarize([outcome]),
        epsilon=None,
        notes=[],
    )
    write_report([audit], folder)


def test_the_dashboard_follows_a_live_federation(
    consortium: Consortium, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("uvicorn")
    from primia.api.dashboard import dashboard_app, running_dashboard

    _audit_report(tmp_path / "audit")
    config = consortium.coordinator_config(tmp_path / "run", rounds=2, final_test=False)
    server = CoordinatorServer(config)
    dashboard_read = _hold_after_last_round(server, monkeypatch)
    port = server.start()
    app = dashboard_app(
        coordinator=f"127.0.0.1:{port}", tls=consortium.coordinator, reports=[tmp_path / "audit"]
    )
    no_browser = missing()
    try:
        with running_dashboard(app) as url, ExitStack() as stack:
            page = None
            if no_browser is None:
                page = stack.enter_context(chromium()).new_page(
                    viewport={"width": 1100, "height": 900}
                )
                page.goto(f"{url}/{POLL}")
            _follow(consortium, server, port, url, tmp_path, page, dashboard_read)
    finally:
        dashboard_read.set()
        server.stop(grace=0)
    # --run: the finished run's directory gives each node the ε it reported.
    view = read_run(tmp_path / "run")
    nodes = {node.name: node for node in view.status.nodes}
    assert all(nodes[s].epsilon_spent > 0 and nodes[s].epsilon_budget == 10 for s in SITES[:2])
    assert [r for r, _ in view.epsilon_by_round["site0"]] == [1, 2]
    write_run_report(tmp_path / "run")
    if no_browser is None:
        _browse_run(tmp_path / "run")
    else:
        pytest.skip(f"the HTTP checks passed; the browser part skipped: {no_browser}")


def _hold_after_last_round(
    server: CoordinatorServer, monkeypatch: pytest.MonkeyPatch
) -> threading.Event:
    """Make the federation wait, once its last round is recorded, until the returned event
    is set. Its rounds take a tenth of a second: without the hold, the dashboard's polls
    would race the run's end (and the coordinator stops serving when the run ends)."""
    federation = server.federation
    log_round = federation._log_round
    dashboard_read = threading.Event()

    def log_then_hold(writer: Any, record: dict[str, Any]) -> None:
        log_round(writer, record)
        if record["round"] == federation.config.rounds:
            dashboard_read.wait(timeout=300)

    monkeypatch.setattr(federation, "_log_round", log_then_hold)
    return dashboard_read


def _follow(
    consortium: Consortium,
    server: CoordinatorServer,
    port: int,
    url: str,
    tmp_path: Path,
    page: Any,
    dashboard_read: threading.Event,
) -> None:
    """Starts the nodes and runs the federation while reading the dashboard (over HTTP,
    and in ``page`` when there is a browser)."""
    before = _state(url)
    assert before["round"] == 0 and [n["name"] for n in before["nodes"]] == list(SITES)
    if page is not None:
        page.wait_for_function("() => document.querySelectorAll('tr.node').length === 3")
        assert [page.get_attribute(f"tr.node >> nth={i}", "data-node") for i in range(3)] == [
            *SITES
        ]
    for site in SITES:
        # site2 asks for more participants than the roster has: it refuses, saying why;
        # the two others accept a round of two.
        policy = NodePolicy(min_participants=4 if site == "site2" else 2)
        consortium.start_node(
            consortium.node_config(site, port, tmp_path / f"state-{site}", policy=policy)
        )
    # Two rounds; the dashboard is read while the federation holds after the second.
    federation = threading.Thread(target=run_federation, args=(server,), daemon=True)
    federation.start()
    after = _wait_for(url, lambda s: s.get("round", 0) >= 2, "round 2 to start", 180)
    nodes = {n["name"]: n for n in after["nodes"]}
    assert len(after["history"]) >= 1 and after["history"][0]["round"] == 1
    assert all(nodes[s]["epsilon_spent"] > 0 for s in ("site0", "site1"))
    assert all(nodes[s]["rounds_contributed"] >= 1 for s in ("site0", "site1"))
    assert "min_participants=4" in nodes["site2"]["last_refusal"]
    assert "<polyline" in after["charts"]["auroc"] or "no data" in after["charts"]["auroc"]
    if page is not None:
        _browse_live(page, url)
    dashboard_read.set()
    federation.join(180)
    gone = _wait_for(url, lambda s: "unreachable" in s, "the coordinator to be unreachable")
    assert "cannot get the status" in gone["unreachable"]
    if page is not None:
        page.wait_for_selector("#unreachable:not([hidden])")
        assert "coordinator unreachable" in page.inner_text("#unreachable")


def _cell(page: Any, site: str, column: int) -> str:
    text: str = page.inner_text(f'tr.node[data-node="{site}"] td >> nth={column}')
    return text


def _browse_live(page: Any, url: str) -> None:
    """In the browser, mid-run: the round and ε advanced, the refusal's reason shows; the
    report page shows its images. Screenshots of the page's sections and the report."""
    page.wait_for_function(
        "() => /round 2 of 2/.test(document.getElementById('progress').textContent)",
        timeout=WAIT_MS,
    )
    assert all(float(_cell(page, s, 3).split(" / ")[0]) > 0 for s in ("site0", "site1"))
    assert "min_participants=4" in _cell(page, "site2", 5)
    assert page.locator("#rounds tr").count() >= 1
    for section in ("run", "nodes", "reports"):
        screenshot(page.locator(f"#{section}"), section)
    report = page.context.browser.new_page()
    report.goto(f"{url}/reports/0/report.html")
    sizes = report.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
    assert sizes and all(width > 0 for width in sizes)  # the grid loads inside the sandbox
    assert "Gradient-inversion audit" in report.inner_text("h1")
    screenshot(report, "report")
    report.close()


def _browse_run(run_dir: Path) -> None:
    """``--run`` in the browser: the nodes' ε from the run directory, and the federation's
    report page with its charts."""
    from primia.api.dashboard import dashboard_app, running_dashboard

    app = dashboard_app(run_dir=run_dir)
    with running_dashboard(app) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(f"{url}/{POLL}")
        page.wait_for_selector('tr.node[data-node="site0"]')
        assert float(_cell(page, "site0", 3).split(" / ")[0]) > 0
        page.goto(f"{url}/federation.html")
        assert page.locator("svg.chart polyline").count() >= 3
        screenshot(page, "federation")
