"""``primia dashboard``: the coordinator's status in a browser, bound to 127.0.0.1.

The dashboard is a gRPC client of the coordinator's status service with the operator's
certificate (the same call as ``primia status``); it adds no surface to the coordinator.
Or, with a finished run's directory, it shows the same views from what the directory
holds (:mod:`primia.federated.run_view`). The page polls ``/state.json`` every two
seconds; a failed status call shows "coordinator unreachable". Every value is escaped by
the templates or put in as text by the page's script (node names and device strings are
chosen by remote parties).

Whoever can reach the page reads what the operator's certificate reads, so the server
answers only its own pages (see ``docs/threat-model.md``):

* **DNS rebinding**: a request whose ``Host`` is not the bound address, ``localhost`` or
  a name the operator allowed is refused (400), so a web page whose name resolves to
  127.0.0.1 cannot read it;
* **cross-site requests**: a browser's request another site started (``Sec-Fetch-Site``
  ``cross-site`` or ``same-site``) is refused (403), except a plain top-level navigation;
  no response carries CORS headers;
* **report files are untrusted** (any process that can write a ``--reports`` folder
  chooses them): they are served only from inside their folder, with
  ``X-Content-Type-Options: nosniff`` and a ``Content-Security-Policy`` that sandboxes
  them without scripts, so a report cannot run script on the dashboard's origin;
* the dashboard's own page runs only its shipped script (``script-src 'self'``) and may
  not be framed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from primia.errors import PrimiaError
from primia.federated.coordinator import FederationStatus
from primia.federated.run_view import RunView, charts, federation_html
from primia.reports import render

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; "
    "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The dashboard's own pages: its shipped script only, data from its own origin."""
REPORT_POLICY = (
    "sandbox allow-same-origin; default-src 'none'; img-src 'self' data:; "
    "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
"""A report folder's files: no script at all (a sandbox without ``allow-scripts``), no
forms, nothing fetched but its own folder's images and its inline style."""
LOCAL_HOSTS = ("127.0.0.1", "localhost")


class LiveRun:
    """A running coordinator's view: each call asks its status and notes every node's ε
    spent at the round it is in, so the page can chart ε per round as the dashboard saw
    it (the status call carries only the current totals)."""

    def __init__(self, fetch: Callable[[], FederationStatus]) -> None:
        self._fetch = fetch
        self._lock = threading.Lock()
        self._seen: dict[str, dict[int, float]] = {}

    def __call__(self) -> RunView:
        status = self._fetch()
        with self._lock:
            for node in status.nodes:
                if node.epsilon_spent > 0:
                    self._seen.setdefault(node.name, {})[status.round] = node.epsilon_spent
            seen = {name: sorted(points.items()) for name, points in self._seen.items()}
        return RunView(status=status, epsilon_by_round=seen)


def state(fetch: Callable[[], RunView]) -> dict[str, Any]:
    """What ``/state.json`` answers: the status as plain data with its charts (safe SVG),
    or ``{"unreachable": reason}``."""
    try:
        view = fetch()
    except PrimiaError as error:
        return {"unreachable": str(error)}
    status = view.status
    return {
        "run_id": status.run_id,
        "state": status.state,
        "round": status.round,
        "rounds": status.rounds,
        "unit": status.unit,
        "nodes": [asdict(node) for node in status.nodes],
        "history": [asdict(result) for result in status.history],
        "epsilon_by_round": view.epsilon_by_round,
        "charts": {name: str(svg) for name, svg in charts(status, view.epsilon_by_round).items()},
    }


def reports(folders: list[Path]) -> list[dict[str, Any]]:
    """Each report folder: its HTML pages and images, as paths relative to the folder."""
    listed = []
    for index, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        listed.append(
            {
                "index": index,
                "folder": str(folder),
                "pages": [str(p.relative_to(folder)) for p in files if p.suffix == ".html"],
                "images": [
                    str(p.relative_to(folder)) for p in files if p.suffix.lower() in IMAGE_SUFFIXES
                ],
            }
        )
    return listed


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names the dashboard answers when bound to ``host``: that address (an
    IPv6 one in brackets, as a ``Host`` header writes it), the loopback names and the
    ``extra`` names the operator allows (``--allow-host``). Never a wildcard: a wildcard
    is what DNS rebinding needs."""
    bound = f"[{host}]" if ":" in host else host
    return list(dict.fromkeys([bound, *LOCAL_HOSTS, *extra]))


def make_app(
    fetch: Callable[[], RunView], report_folders: list[Path], *, hosts: Iterable[str] = LOCAL_HOSTS
) -> Any:
    """The Starlette application: ``/`` (run, nodes, reports), ``/dashboard.js``,
    ``/state.json``, ``/federation.html`` (the run's report, from the current view) and
    ``/reports/<n>/<path>`` (files under the n-th ``--reports`` folder only), answering
    requests whose ``Host`` is one of ``hosts``."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    folders = [folder.resolve() for folder in report_folders]
    script = (resources.files("primia.reports") / "templates" / "dashboard.js").read_text()

    def guarded(response: Response, policy: str) -> Response:
        response.headers["Content-Security-Policy"] = policy
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def page(request: Request) -> Response:
        return guarded(
            HTMLResponse(render("dashboard.html", reports=reports(folders))), PAGE_POLICY
        )

    async def page_script(request: Request) -> Response:
        return guarded(Response(script, media_type="text/javascript"), PAGE_POLICY)

    async def state_json(request: Request) -> Response:
        return guarded(JSONResponse(state(fetch)), PAGE_POLICY)

    async def federation(request: Request) -> Response:
        try:
            body = federation_html(fetch())
        except PrimiaError as error:
            return guarded(Response(f"coordinator unreachable: {error}", 503), PAGE_POLICY)
        return guarded(HTMLResponse(body), PAGE_POLICY)

    async def report_file(request: Request) -> Response:
        index = int(request.path_params["index"])
        if index >= len(folders):
            return guarded(Response("no such report folder", status_code=404), REPORT_POLICY)
        path = (folders[index] / request.path_params["path"]).resolve()
        if not path.is_relative_to(folders[index]) or not path.is_file():
            return guarded(Response("no such file", status_code=404), REPORT_POLICY)
        return guarded(FileResponse(path), REPORT_POLICY)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/dashboard.js", page_script),
            Route("/state.json", state_json),
            Route("/federation.html", federation),
            Route("/reports/{index:int}/{path:path}", report_file),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts), www_redirect=False),
            Middleware(SameSiteOnly),
        ],
    )


class SameSiteOnly:
    """ASGI middleware: refuse (403) a browser's request that another site started
    (``Sec-Fetch-Site: cross-site`` or ``same-site``), unless it is a plain top-level
    navigation (``Sec-Fetch-Mode: navigate``, ``Sec-Fetch-Dest: document``), which shows
    the page to the user but lets the other site read nothing. A request without the
    header (an older browser, ``curl``) passes: the ``Host`` check still holds for it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {
                key.decode("latin-1").lower(): value.decode("latin-1")
                for key, value in scope["headers"]
            }
            site = headers.get("sec-fetch-site", "")
            navigation = (
                headers.get("sec-fetch-mode") == "navigate"
                and headers.get("sec-fetch-dest") == "document"
            )
            if site in ("cross-site", "same-site") and not navigation:
                from starlette.responses import PlainTextResponse

                response = PlainTextResponse(
                    "refused: another site's request (the dashboard answers its own pages only)",
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
