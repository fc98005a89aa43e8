"""The template renderer, its SVG charts, and the dashboard over a run directory, served
by a real uvicorn on loopback and read over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from primia.errors import ConfigError, PrimiaError
from primia.federated.coordinator import FederationStatus
from primia.federated.registry import NodeStatus
from primia.reports import bar_chart, line_chart, render

EVIL = "<script>alert(1)</script>"


def test_line_chart_skips_missing_points_and_escapes_its_label() -> None:
    svg = str(line_chart([(1, 0.5), (2, None), (3, 0.7)], label=EVIL))
    assert svg.count("<circle") == 2
    assert EVIL not in svg and "&lt;script&gt;" in svg
    assert "no data" in str(line_chart([(1, None)], label="auroc"))


def test_bar_chart_marks_a_budget_overrun() -> None:
    svg = str(bar_chart([("a", 0.5, 1.0), ("b", 2.0, 1.0)], label="ε"))
    assert svg.count('class="bar over"') == 1 and svg.count('class="bar"') == 1


def test_the_dashboard_template_escapes_report_names() -> None:
    page = render(
        "dashboard.html", reports=[{"index": 0, "folder": EVIL, "pages": [], "images": []}]
    )
    assert EVIL not in page and "&lt;script&gt;" in page


def _write_run(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"run_id": "r1"}))
    lines = [
        {"round": 1, "contributors": ["a", EVIL], "validation": {"loss": 0.7, "mean_auroc": 0.55}},
        {"round": 2, "contributors": ["a"], "refused": {EVIL: "over budget"}, "validation": {}},
    ]
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    pytest.importorskip("uvicorn")
    from primia.api.dashboard import dashboard_app, running_dashboard

    _write_run(tmp_path / "run")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.html").write_text("<html>report</html>")
    (reports / "grid.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    app = dashboard_app(run_dir=tmp_path / "run", reports=[reports])
    with running_dashboard(app) as url:
        yield url


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def test_the_dashboard_serves_a_finished_run_and_its_reports(served: str) -> None:
    state = json.loads(_get(f"{served}/state.json"))
    assert state["run_id"] == "r1" and state["round"] == 2 and state["state"] == "stopped"
    nodes = {node["name"]: node for node in state["nodes"]}
    assert nodes["a"]["rounds_contributed"] == 2 and nodes[EVIL]["rounds_contributed"] == 1
    assert state["history"][1]["left_out"] == [EVIL]
    assert EVIL not in state["charts"]["epsilon"]
    page = _get(f"{served}/").decode()
    assert 'href="/reports/0/report.html"' in page and 'src="/reports/0/grid.png"' in page
    assert _get(f"{served}/reports/0/grid.png").startswith(b"\x89PNG")
    with pytest.raises(urllib.error.HTTPError):
        _get(f"{served}/reports/0/..%2F..%2Frun%2Frun.json")


def test_an_unreachable_coordinator_is_said_plainly() -> None:
    from primia.dashboard import state

    def fetch() -> FederationStatus:
        raise PrimiaError("cannot get the status from 127.0.0.1:1")

    assert state(fetch) == {"unreachable": "cannot get the status from 127.0.0.1:1"}
    live = FederationStatus(
        "r", "running", 1, 2, 2, [NodeStatus("n", True, "training", 1.0, 4.0, 1, "cpu")], []
    )
    assert state(lambda: live)["nodes"][0]["device"] == "cpu"


def test_the_dashboard_needs_one_source(tmp_path: Path) -> None:
    from primia.api.dashboard import dashboard_app

    with pytest.raises(ConfigError, match="either --coordinator"):
        dashboard_app()
