"""``primia dashboard``: the coordinator's status in a browser, bound to 127.0.0.1.

The dashboard is a gRPC client of the coordinator's status service with the operator's
certificate (the same call as ``primia status``); it adds no surface to the coordinator.
Or, with a finished run's directory, it shows the same views from ``rounds.jsonl``. The
page polls ``/state.json`` every two seconds; a failed status call shows "coordinator
unreachable". Every value is escaped by the templates (node names and device strings are
chosen by remote parties).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from primia.errors import PrimiaError
from primia.federated.coordinator import FederationStatus
from primia.federated.registry import NodeStatus
from primia.federated.result import RoundResult
from primia.reports import bar_chart, line_chart, render

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")


def status_from_run(run_dir: Path) -> FederationStatus:
    """A finished (or stopped) run's view: its rounds from ``rounds.jsonl``; nodes as the
    rounds name them (their ε is not in the directory, so it shows as 0 of 0)."""
    rounds_path = run_dir / "rounds.jsonl"
    if not rounds_path.is_file():
        raise PrimiaError(f"{rounds_path} is missing; pass a coordinator's --run-dir")
    history = []
    for line in rounds_path.read_text().splitlines():
        try:
            history.append(RoundResult.of(json.loads(line)))
        except (json.JSONDecodeError, KeyError):
            break  # a line cut short by a crash; the ones before it stand
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    names = sorted(
        {name for result in history for name in (*result.contributors, *result.left_out)}
    )
    nodes = [
        NodeStatus(
            name=name,
            activity="finished",
            rounds_contributed=sum(name in result.contributors for result in history),
        )
        for name in names
    ]
    return FederationStatus(
        run_id=str(run.get("run_id", run_dir.name)),
        state="finished" if (run_dir / "report.json").is_file() else "stopped",
        round=len(history),
        rounds=len(history),
        min_nodes=0,
        nodes=nodes,
        history=history,
    )


def state(fetch: Callable[[], FederationStatus]) -> dict[str, Any]:
    """What ``/state.json`` answers: the status as plain data with its charts (safe SVG),
    or ``{"unreachable": reason}``."""
    try:
        status = fetch()
    except PrimiaError as error:
        return {"unreachable": str(error)}
    auroc = line_chart(
        [(r.round, r.validation_mean_auroc) for r in status.history],
        label="validation mean AUROC per round",
    )
    loss = line_chart(
        [(r.round, r.validation_loss) for r in status.history], label="validation loss per round"
    )
    epsilon = bar_chart(
        [(n.name, n.epsilon_spent, n.epsilon_budget) for n in status.nodes],
        label="ε spent of budget",
    )
    return {
        "run_id": status.run_id,
        "state": status.state,
        "round": status.round,
        "rounds": status.rounds,
        "unit": status.unit,
        "nodes": [asdict(node) for node in status.nodes],
        "history": [asdict(result) for result in status.history],
        "charts": {"auroc": str(auroc), "loss": str(loss), "epsilon": str(epsilon)},
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


def make_app(fetch: Callable[[], FederationStatus], report_folders: list[Path]) -> Any:
    """The Starlette application: ``/`` (run, nodes, reports), ``/state.json`` and
    ``/reports/<n>/<path>`` (files under the n-th ``--reports`` folder only)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    folders = [folder.resolve() for folder in report_folders]

    async def page(request: Request) -> Response:
        return HTMLResponse(render("dashboard.html", reports=reports(folders)))

    async def state_json(request: Request) -> Response:
        return JSONResponse(state(fetch))

    async def report_file(request: Request) -> Response:
        index = int(request.path_params["index"])
        if index >= len(folders):
            return Response("no such report folder", status_code=404)
        path = (folders[index] / request.path_params["path"]).resolve()
        if not path.is_relative_to(folders[index]) or not path.is_file():
            return Response("no such file", status_code=404)
        return FileResponse(path)

    return Starlette(
        routes=[
            Route("/", page),
            Route("/state.json", state_json),
            Route("/reports/{index:int}/{path:path}", report_file),
        ]
    )
