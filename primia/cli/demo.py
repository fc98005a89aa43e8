"""``primia demo``: a federation of three hospitals on synthetic radiographs, end to end."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from primia.cli.commands import command_help
from primia.demo.federation import DemoResult, DemoSettings, run_demo
from primia.federated.coordinator import FederationStatus
from primia.federated.display import figure, render, status_line

HELP = {
    "out": "folder for everything the demo makes (emptied if an earlier demo made it)",
    "sites": "synthetic hospitals, one node process each",
    "patients_per_site": "patients per hospital",
    "images_per_patient": "radiographs per patient",
    "image_size": "image size in pixels",
    "model": "architecture: resnet9, resnet18 or cnn",
    "width": "base channel count of the model",
    "rounds": "federated rounds",
    "epochs_per_round": "local epochs at each node per round",
    "batch_size": "expected batch size of the Poisson-sampled DP batches",
    "lr": "learning rate (Adam)",
    "epsilon_per_round": "target ε of each node's release per round (composed by its ledger)",
    "epsilon_budget": "each node's total privacy budget",
    "delta": "δ of the DP guarantee",
    "min_nodes": "updates a round needs to complete",
    "aggregation": "secure (the coordinator learns only the sum of the updates) or plaintext",
    "seed": "seed of the data and the initial model",
    "timeout_s": "give up after this many seconds",
}

DESCRIPTION = """\
Synthesize a multi-site chest radiograph dataset, issue a consortium's certificates, and
run a federation on this machine: a coordinator and one data-owner node per site, each a
separate process, talking gRPC over mutual TLS on loopback. Every node trains with DP-SGD
on its own site's images only; the coordinator combines the updates by secure
aggregation (it learns their weighted sum, never one node's update: FedAvg), evaluates on
every node's held-out patients, and checkpoints each round. Ends with AUROC per round and
the ε each node spent.
"""

EPILOG = """\
examples:
  primia demo                                     three hospitals, 64 px, a few minutes
  primia demo --rounds 2 --image-size 32 --model cnn --no-progress    a quick look
  primia demo --epsilon-per-round 0.5 --aggregation plaintext --out runs/demo-low-eps

OUT receives the dataset, the consortium's certificates, every party's configuration and
log, and the coordinator's run (its checkpoints: 'primia infer demo' uses them).
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults beside each option, and the examples as written."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help=command_help("demo"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    defaults = DemoSettings()
    for field in fields(DemoSettings):
        if field.name == "progress":
            continue
        default = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(default) if not isinstance(default, Path) else Path,
            default=default,
            help=HELP[field.name],
        )
    parser.add_argument("--no-progress", action="store_true", help="no live status")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(DemoSettings) if f.name != "progress"}
    settings = DemoSettings(**values, progress=not args.no_progress)
    console = Console()
    console.print(
        f"[bold]primia demo[/]: {settings.sites} hospitals, {settings.rounds} federated "
        f"rounds, DP-SGD at every node, {settings.aggregation} aggregation, mutual TLS on "
        "loopback"
    )
    if settings.progress and console.is_terminal:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            result = run_demo(settings, on_status=lambda status: live.update(render(status)))
    else:
        result = run_demo(settings, on_status=changes_printer(console))
    print_summary(result, console)
    return 0


def changes_printer(console: Console) -> Callable[[FederationStatus], None]:
    """An ``on_status`` that prints a line whenever the round or its state changes (for
    --no-progress, logs and pipes: the live table would be silent there)."""
    last: list[str] = []

    def on_status(status: FederationStatus) -> None:
        line = status_line(status)
        key = f"{status.round} {status.state}"
        if not last or last[-1] != key:
            last.append(key)
            console.print(line, highlight=False)

    return on_status


def print_summary(result: DemoResult, console: Console) -> None:
    federation = result.result
    rounds = Table(title="rounds (validation, pooled over the nodes)")
    for column in ("round", "AUROC", "loss", "nodes", "left out", "seconds"):
        rounds.add_column(column)
    for entry in federation.rounds:
        rounds.add_row(
            str(entry.round),
            figure(entry.validation_mean_auroc, 3),
            figure(entry.validation_loss, 4),
            str(len(entry.contributors)),
            ", ".join(entry.left_out) or "-",
            f"{entry.seconds:.1f}",
        )
    console.print(rounds)
    nodes = Table(title="privacy spent per node (ε at δ, composed over rounds by its ledger)")
    for column in ("node", "rounds", "ε spent", "ε budget"):
        nodes.add_column(column)
    for name, node in federation.nodes.items():
        nodes.add_row(
            name,
            str(node.rounds_contributed),
            figure(node.epsilon_spent, 2),
            figure(node.epsilon_budget, 2),
        )
    console.print(nodes)
    test = federation.test
    per_label = ", ".join(
        f"{label} {figure(value, 3)}" for label, value in (test.auroc if test else {}).items()
    )
    console.print(
        "test AUROC (held-out patients of every node): "
        f"[bold]{figure(test.mean_auroc if test else None, 3)}[/] ({per_label})"
    )
    console.print(
        f"model: {result.out / 'run' / 'model.safetensors'}\n"
        f"run directory: {result.out / 'run'} "
        "(rounds.jsonl, checkpoints/, tb/, report.json, report.html); "
        f"logs: {result.out / 'logs'}\n"
        f"finished in {result.seconds:.0f} s"
    )
