"""The federation on a terminal: rounds, nodes, what each is doing, ε each has spent.

:func:`render` draws a :class:`~primia.federated.coordinator.FederationStatus`; the
coordinator shows it live while it runs (:class:`LiveStatus`), ``primia status`` prints it
once from another terminal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from primia.federated.coordinator import FederationStatus

RECENT_ROUNDS = 5


def render(status: FederationStatus) -> RenderableType:
    connected = sum(node.connected for node in status.nodes)
    header = Text.assemble(
        ("federation ", "bold"),
        (status.run_id or "-", "cyan"),
        f"  {status.unit} {status.round}/{status.rounds}  ·  {status.state}  ·  ",
        (f"{connected}/{len(status.nodes)} nodes connected", "green" if connected else "red"),
        f" (a round needs {status.min_nodes})",
    )
    nodes = Table(title=None, expand=False, show_edge=False, pad_edge=False)
    for column in ("node", "status", "ε spent / budget", "rounds", "device"):
        nodes.add_column(column)
    for node in status.nodes:
        budget = (
            f"{node.epsilon_spent:.2f} / {node.epsilon_budget:.2f}" if node.epsilon_budget else "-"
        )
        activity = Text(node.activity, style="green" if node.connected else "dim")
        if node.ledger_alarm:  # the node's ledger reports less ε than this run recorded
            activity = Text(f"LEDGER: {node.ledger_alarm}", style="bold red")
        nodes.add_row(
            node.name,
            activity,
            budget,
            str(node.rounds_contributed),
            node.device or "-",
        )
    parts: list[RenderableType] = [header, nodes]
    refusals = [node for node in status.nodes if node.last_refusal]
    if refusals:
        # In full: a refusal names the node's setting and the value the coordinator asked.
        lines = Table(show_edge=False, pad_edge=False)
        for column in ("node", "last refusal"):
            lines.add_column(column)
        for node in refusals:
            lines.add_row(node.name, Text(node.last_refusal, style="yellow"))
        parts.append(lines)
    if status.history:
        rounds = Table(show_edge=False, pad_edge=False)
        for column in ("round", "val. AUROC", "val. loss", "nodes", "left out", "seconds"):
            rounds.add_column(column)
        for summary in status.history[-RECENT_ROUNDS:]:
            rounds.add_row(
                str(summary.round),
                figure(summary.validation_mean_auroc, 3),
                figure(summary.validation_loss, 4),
                str(len(summary.contributors)),
                ", ".join(summary.left_out) or "-",
                f"{summary.seconds:.1f}",
            )
        parts.append(rounds)
    return Group(*parts)


def status_line(status: FederationStatus) -> str:
    """One line for a log or a pipe: the round, the state, the nodes connected and the
    last finished round's validation AUROC."""
    connected = sum(node.connected for node in status.nodes)
    line = (
        f"{status.unit} {status.round}/{status.rounds} · {status.state} · "
        f"{connected}/{len(status.nodes)} nodes connected"
    )
    if status.history:
        last = status.history[-1]
        auroc = figure(last.validation_mean_auroc, 3)
        line += f" · round {last.round} validation AUROC {auroc}"
    return line


class LiveStatus:
    """Redraws ``status()`` twice a second on stderr while in its ``with`` block."""

    def __init__(
        self, status: Callable[[], FederationStatus], *, console: Console, enabled: bool
    ) -> None:
        self._live = (
            Live(
                get_renderable=lambda: render(status()),
                console=console,
                refresh_per_second=2,
                transient=False,
            )
            if enabled
            else None
        )

    def __enter__(self) -> LiveStatus:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()


def figure(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals, or "n/a" where it is undefined (None, NaN)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"
