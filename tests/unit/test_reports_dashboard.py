"""The template renderer, its SVG charts, a run directory read back (ε per node), and the
dashboard over a run directory, served by a real uvicorn on loopback and read over HTTP,
including what it refuses to a visited web page (DNS rebinding, cross-site requests) and
how it serves untrusted report files."""

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
from primia.federated.run_view import RunView, read_run, write_run_report
from primia.reports import bar_chart, line_chart, lines_chart, render

EVIL = "<script>alert(1)</script>"


def test_line_chart_skips_missing_points_and_escapes_its_label() -> None:
    svg = str(line_chart([(1, 0.5), (2, None), (3, 0.7)], label=EVIL))
    assert svg.count("<circle") == 2
    assert EVIL not in svg and "&lt;script&gt;" in svg
    assert "no data" in str(line_chart([(1, None)], label="auroc"))


def test_lines_chart_draws_a_series_per_name_with_an_escaped_legend() -> None:
    svg = str(lines_chart({"a": [(1, 0.5), (2, 1.0)], EVIL: [(1, 0.2)]}, label="ε"))
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 3
    assert EVIL not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;</text>" in svg


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
    train = {"epsilon_spent": 0.5, "epsilon_budget": 4.0}
    lines = [
        {
            "round": 1,
            "contributors": ["a", EVIL],
            "validation": {"loss": 0.7, "mean_auroc": 0.55},
            "train": {"a": train, EVIL: train},
        },
        {
            "round": 2,
            "contributors": ["a"],
            "refused": {EVIL: "over budget"},
            "validation": {},
            "train": {"a": train | {"epsilon_spent": 1.0}},
        },
    ]
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    # The highest ε each node reported, also in an abandoned attempt that left no line.
    record = {"nodes": {EVIL: {"epsilon_spent": 0.75, "delta": 1e-5, "accountant": "rdp"}}}
    (run_dir / "node-privacy.json").write_text(json.dumps(record))


def test_a_run_directory_gives_each_node_its_epsilon(tmp_path: Path) -> None:
    _write_run(tmp_path / "run")
    view = read_run(tmp_path / "run")
    nodes = {node.name: node for node in view.status.nodes}
    assert (nodes["a"].epsilon_spent, nodes["a"].epsilon_budget) == (1.0, 4.0)
    assert (nodes[EVIL].epsilon_spent, nodes[EVIL].epsilon_budget) == (0.75, 4.0)
    assert nodes[EVIL].last_refusal == "round 2: over budget"
    assert view.epsilon_by_round == {"a": [(1, 0.5), (2, 1.0)], EVIL: [(1, 0.5)]}
    # A finished run's report.json holds the registry's final figures.
    final = {"nodes": {"a": {"epsilon_spent": 1.5, "epsilon_budget": 5.0}}}
    (tmp_path / "run" / "report.json").write_text(json.dumps(final))
    nodes = {node.name: node for node in read_run(tmp_path / "run").status.nodes}
    assert (nodes["a"].epsilon_spent, nodes["a"].epsilon_budget) == (1.5, 5.0)


def test_the_federation_report_charts_epsilon_and_auroc_per_round(tmp_path: Path) -> None:
    _write_run(tmp_path / "run")
    page = write_run_report(tmp_path / "run").read_text()
    assert "ε spent per node after each round" in page and "ε spent of budget" in page
    assert "validation mean AUROC per round" in page and page.count("<polyline") >= 3
    assert "1.00 / 4" in page and "round 2: over budget" in page
    assert EVIL not in page and "&lt;script&gt;" in page


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
    assert nodes["a"]["epsilon_spent"] == 1.0 and nodes["a"]["epsilon_budget"] == 4.0
    assert (
        "1.00/4" in state["charts"]["epsilon"] and "<polyline" in state["charts"]["epsilon_rounds"]
    )
    assert state["history"][1]["left_out"] == [EVIL]
    assert EVIL not in state["charts"]["epsilon"]
    page = _get(f"{served}/").decode()
    assert 'href="/reports/0/report.html"' in page and 'src="/reports/0/grid.png"' in page
    assert _get(f"{served}/reports/0/grid.png").startswith(b"\x89PNG")
    with pytest.raises(urllib.error.HTTPError):
        _get(f"{served}/reports/0/..%2F..%2Frun%2Frun.json")
    assert "ε spent per node after each round" in _get(f"{served}/federation.html").decode()


def _status(url: str, **headers: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}


def test_a_rebound_host_name_is_refused(served: str) -> None:
    # DNS rebinding: a page at evil.example:PORT whose name now resolves to 127.0.0.1
    # sends its own host name.
    port = served.rsplit(":", 1)[1]
    assert _status(f"{served}/state.json", Host=f"evil.example:{port}")[0] == 400
    assert _status(f"{served}/state.json", Host=f"localhost:{port}")[0] == 200


def test_the_hosts_allowed_are_the_bound_address_loopback_and_named_ones() -> None:
    from primia.dashboard import allowed_hosts

    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert allowed_hosts("::1") == ["[::1]", "127.0.0.1", "localhost"]  # as Host writes it
    assert "dash.example" in allowed_hosts("0.0.0.0", ["dash.example"])
    assert "*" not in allowed_hosts("0.0.0.0")


def test_another_site_cannot_read_the_dashboard(served: str) -> None:
    code, headers = _status(f"{served}/state.json", Origin="https://evil.example")
    assert code == 200 and not any(k.startswith("access-control") for k in headers)
    fetch = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
    assert _status(f"{served}/state.json", **fetch)[0] == 403
    image = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    assert _status(f"{served}/reports/0/grid.png", **image)[0] == 403
    # A link from elsewhere still opens the page (the other site reads nothing).
    link = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    assert _status(f"{served}/", **link)[0] == 200


def test_report_files_are_served_as_untrusted_content(served: str) -> None:
    code, headers = _status(f"{served}/reports/0/report.html")
    assert code == 200 and headers["x-content-type-options"] == "nosniff"
    policy = headers["content-security-policy"]
    assert policy.startswith("sandbox allow-same-origin;") and "allow-scripts" not in policy
    assert "default-src 'none'" in policy
    page_policy = _status(f"{served}/")[1]["content-security-policy"]
    assert "script-src 'self'" in page_policy and "frame-ancestors 'none'" in page_policy


def test_an_unreachable_coordinator_is_said_plainly() -> None:
    from primia.dashboard import state

    def fetch() -> FederationStatus:
        raise PrimiaError("cannot get the status from 127.0.0.1:1")

    assert state(fetch) == {"unreachable": "cannot get the status from 127.0.0.1:1"}
    live = FederationStatus(
        "r", "running", 1, 2, 2, [NodeStatus("n", True, "training", 1.0, 4.0, 1, "cpu")], []
    )
    assert state(lambda: RunView(live))["nodes"][0]["device"] == "cpu"


def test_a_live_view_charts_epsilon_per_round_as_it_saw_it() -> None:
    from primia.dashboard import LiveRun

    seen = [(1, 0.5), (1, 0.6), (2, 1.1)]

    def fetch() -> FederationStatus:
        round_number, epsilon = seen.pop(0)
        node = NodeStatus("n", True, "training", epsilon, 4.0, round_number, "cpu")
        return FederationStatus("r", "running", round_number, 2, 2, [node], [])

    view = LiveRun(fetch)
    for _ in range(3):
        latest = view()
    assert latest.epsilon_by_round == {"n": [(1, 0.6), (2, 1.1)]}


def test_the_dashboard_needs_one_source(tmp_path: Path) -> None:
    from primia.api.dashboard import dashboard_app

    with pytest.raises(ConfigError, match="either --coordinator"):
        dashboard_app()
