"""A coordinator's run directory read back: the federation's status and each node's ε.

What the directory holds (:mod:`primia.federated.rundir`):

* ``rounds.jsonl``: per round the contributors, the nodes that dropped out or refused
  (with the reason), the pooled validation figures, and per contributing node its
  privacy release as reported with its update (``train[name]``: ``epsilon_spent``, the
  node ledger's total after the round, and ``epsilon_budget``);
* ``node-privacy.json``: the highest ε each node ever reported in this run (also in its
  Hello and in attempts whose aggregate was abandoned, which leave no line);
* ``report.json``: the registry's final figures, once the run finished.

So a node's ε spent is ``max(last train record, node-privacy.json, report.json)``: each
is a figure the node itself reported, and a ledger never decreases, so the highest is
the latest. Its budget is the latest one reported (rounds, then ``report.json``). ε per
round is the train records' ``epsilon_spent`` at each round the node contributed to.
What the directory cannot hold is ε a node spent and never reported (a crash before its
reply); the node's own ledger has it.

:func:`write_run_report` renders this as ``report.html`` (AUROC and loss per round, ε per
node per round and against its budget, the rounds' events) beside ``report.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primia import __version__
from primia.errors import PrimiaError
from primia.federated.coordinator import FederationStatus
from primia.federated.privacy_record import FILENAME as PRIVACY_RECORD
from primia.federated.registry import NodeStatus
from primia.federated.result import RoundResult
from primia.files import atomic_write_bytes
from primia.reports import Markup, bar_chart, line_chart, lines_chart, render

REPORT = "report.html"


@dataclass(frozen=True)
class RunView:
    """A run as its directory records it."""

    status: FederationStatus
    epsilon_by_round: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Node → (round, ε spent after it), for the rounds the node contributed to."""


def read_run(run_dir: Path) -> RunView:
    """The run in ``run_dir`` (see the module docstring for where each figure comes
    from). A line of ``rounds.jsonl`` cut short by a crash ends the rounds read."""
    rounds_path = run_dir / "rounds.jsonl"
    if not rounds_path.is_file():
        raise PrimiaError(f"{rounds_path} is missing; pass a coordinator's --run-dir")
    records = []
    for line in rounds_path.read_text().splitlines():
        try:
            record = json.loads(line)
            records.append((RoundResult.of(record), record))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            break  # a line cut short by a crash; the ones before it stand
    history = [result for result, _ in records]
    run = _json(run_dir / "run.json")
    report = _json(run_dir / "report.json")
    recorded = _json(run_dir / PRIVACY_RECORD).get("nodes", {})
    spent: dict[str, float] = {}
    budget: dict[str, float] = {}
    refusal: dict[str, str] = {}
    by_round: dict[str, list[tuple[int, float]]] = {}
    for result, record in records:
        for name, train in (record.get("train") or {}).items():
            epsilon = _finite(train.get("epsilon_spent"))
            if epsilon is not None:
                spent[name] = max(spent.get(name, 0.0), epsilon)
                by_round.setdefault(name, []).append((result.round, epsilon))
            limit = _finite(train.get("epsilon_budget"))
            if limit is not None:
                budget[name] = limit
        for name, reason in (record.get("refused") or {}).items():
            refusal[name] = f"round {result.round}: {reason}"
    for name, entry in (report.get("nodes") or {}).items():
        spent[name] = max(spent.get(name, 0.0), _finite(entry.get("epsilon_spent")) or 0.0)
        budget[name] = _finite(entry.get("epsilon_budget")) or budget.get(name, 0.0)
    for name, entry in recorded.items():
        spent[name] = max(spent.get(name, 0.0), _finite(entry.get("epsilon_spent")) or 0.0)
    names = sorted(
        {name for result in history for name in (*result.contributors, *result.left_out)}
        | set(spent)
    )
    nodes = [
        NodeStatus(
            name=name,
            activity="finished",
            rounds_contributed=sum(name in result.contributors for result in history),
            epsilon_spent=spent.get(name, 0.0),
            epsilon_budget=budget.get(name, 0.0),
            last_refusal=refusal.get(name, ""),
        )
        for name in names
    ]
    status = FederationStatus(
        run_id=str(run.get("run_id", run_dir.name)),
        state="finished" if report else "stopped",
        round=len(history),
        rounds=len(history),
        min_nodes=0,
        nodes=nodes,
        history=history,
    )
    return RunView(status=status, epsilon_by_round=by_round)


def charts(
    status: FederationStatus, epsilon_by_round: dict[str, list[tuple[int, float]]]
) -> dict[str, Markup]:
    """The run's charts as inline SVG: validation AUROC and loss per round, ε spent per
    node per round, and ε spent against each node's budget."""
    return {
        "auroc": line_chart(
            [(r.round, r.validation_mean_auroc) for r in status.history],
            label="validation mean AUROC per round",
        ),
        "loss": line_chart(
            [(r.round, r.validation_loss) for r in status.history],
            label="validation loss per round",
        ),
        "epsilon_rounds": lines_chart(
            {name: list(points) for name, points in sorted(epsilon_by_round.items())},
            label="ε spent per node after each round",
        ),
        "epsilon": bar_chart(
            [(n.name, n.epsilon_spent, n.epsilon_budget) for n in status.nodes],
            label="ε spent of budget",
        ),
    }


def federation_html(view: RunView) -> str:
    """The run's page, from ``templates/federation.html`` (every value escaped)."""
    return render(
        "federation.html",
        version=__version__,
        status=view.status,
        charts=charts(view.status, view.epsilon_by_round),
        rounds=[
            [
                str(r.round),
                ", ".join(r.contributors),
                ", ".join(r.left_out),
                "n/a" if r.validation_mean_auroc is None else f"{r.validation_mean_auroc:.3f}",
                f"{r.seconds:.1f}",
            ]
            for r in view.status.history
        ],
    )


def write_run_report(run_dir: Path) -> Path:
    """Write ``report.html`` for the run in ``run_dir`` (atomically); returns its path."""
    path = run_dir / REPORT
    atomic_write_bytes(path, federation_html(read_run(run_dir)).encode())
    return path


def _json(path: Path) -> dict[str, Any]:
    """A JSON object file's content; {} where it is missing or unreadable (a view shows
    what it can)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (JSON null stands for ∞ and NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
