"""Debian's Chromium driven by Playwright, for the dashboard's tests: the system browser
only (never a downloaded one), or the reason there is none (``make browser`` installs it
when it can). Screenshots go into the folder named by ``PRIMIA_SCREENSHOTS``, if set."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
POLL = "?poll=0.3"
"""The page's polling period in seconds, for tests (the default is 2 s)."""


def missing() -> str | None:
    """Why no browser can be driven here, or None when one can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the dev extra)"
    if not shutil.which(CHROMIUM):
        return f"{CHROMIUM} is missing (make browser installs it as root)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``); check :func:`missing` first."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(target: Any, name: str) -> None:
    """Save ``target`` (a page or an element) as ``<name>.png`` into the folder
    ``PRIMIA_SCREENSHOTS`` names; nothing when it is unset."""
    folder = os.environ.get("PRIMIA_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        options = {"full_page": True} if hasattr(target, "goto") else {}
        target.screenshot(path=str(Path(folder) / f"{name}.png"), **options)
