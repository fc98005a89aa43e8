"""The dashboard in a real browser: Debian's Chromium driven by Playwright (never a
downloaded browser), over a finished run's directory and a report folder. The page's
script fills the run and node tables from ``/state.json``; a node named with a
``<script>`` tag shows as text; the report's image loads. Saves a screenshot of the page
into ``docs/images/dashboard.png`` when PRIMIA_SCREENSHOTS is set. Skips, saying why,
where no browser can be had (``make browser`` installs one when it can)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from primia.api.dashboard import dashboard_app, running_dashboard

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL = "<script>window.pwned=1</script>"


def test_the_dashboard_renders_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no browser: {CHROMIUM} is missing (make browser installs it as root)")
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"round": 1, "contributors": ["a", EVIL], "validation": {"mean_auroc": 0.6}}]
    (run / "rounds.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    reports = tmp_path / "reports"
    reports.mkdir()
    Image.new("L", (8, 8), 128).save(reports / "grid.png")
    app = dashboard_app(run_dir=run, reports=[reports])
    with running_dashboard(app) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("tr.node")
        rows = page.locator("tr.node").all_inner_texts()
        assert any(EVIL in row for row in rows)  # shown as text, not run
        assert page.evaluate("window.pwned === undefined")
        assert "round 1 of 1" in page.inner_text("#progress")
        assert page.evaluate("document.querySelector('img.report').naturalWidth") > 0
        if os.environ.get("PRIMIA_SCREENSHOTS"):
            page.screenshot(path=os.environ["PRIMIA_SCREENSHOTS"], full_page=True)
        browser.close()
