"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against what
remote parties and report folders could inject: node names, device strings and refusal
reasons holding ``<script>`` show as text and never run; a report file's script does not
run on the dashboard's origin (it is served sandboxed). Skips, saying why, where no
browser can be had (``make browser`` installs one when it can). The live federation in
the browser is in ``test_dashboard.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chromium import POLL, chromium, missing
from PIL import Image

from primia.federated.coordinator import FederationStatus
from primia.federated.registry import NodeStatus
from primia.federated.run_view import RunView

EVIL = "<script>window.pwned=1</script>"


def test_injected_strings_stay_text_in_chromium(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
    if reason := missing():
        pytest.skip(f"no browser: {reason}")
    from primia.api.dashboard import running_dashboard
    from primia.dashboard import make_app

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"round": 1, "contributors": ["a", EVIL], "validation": {"mean_auroc": 0.6}}]
    (run / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    reports = tmp_path / "reports"
    reports.mkdir()
    Image.new("L", (8, 8), 128).save(reports / "grid.png")
    # A hostile report: its script would mark the dashboard's origin if it ran there.
    (reports / "evil.html").write_text(
        '<img src="grid.png"><script>localStorage.setItem("pwned", "1")</script>'
    )
    node = NodeStatus(EVIL, True, EVIL, 0.5, 1.0, 1, device=EVIL, last_refusal=EVIL)
    status = FederationStatus("r", "running", 1, 2, 1, [node], [])
    app = make_app(lambda: RunView(status), [reports])
    with running_dashboard(app) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(f"{url}/{POLL}")
        page.wait_for_selector("tr.node")
        cells = page.locator("tr.node td").all_inner_texts()
        assert cells.count(EVIL) == 4  # name, stage, last refusal, device: as text
        assert page.evaluate("window.pwned === undefined")
        assert page.evaluate("document.querySelector('img.report').naturalWidth") > 0
        page.goto(f"{url}/reports/0/evil.html")
        assert page.evaluate("document.querySelector('img').naturalWidth") > 0
        page.goto(f"{url}/{POLL}")
        assert page.evaluate("localStorage.getItem('pwned')") is None
