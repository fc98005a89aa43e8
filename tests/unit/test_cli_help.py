"""What ``primia`` prints: examples and option descriptions in the help, one label option,
the demo's lines without a live table, log records above a progress bar."""

from __future__ import annotations

import argparse
import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from primia.cli import build_parser
from primia.cli.demo import changes_printer
from primia.cli.progress import step_progress
from primia.cli.train import config_from_args
from primia.federated.coordinator import FederationStatus
from primia.federated.registry import NodeStatus
from primia.federated.result import RoundResult


def subcommand(*path: str) -> argparse.ArgumentParser:
    parser = build_parser(path[0])
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", [("demo",), ("status",), ("infer", "demo")])
def test_help_has_examples(path: tuple[str, ...]) -> None:
    assert "example" in subcommand(*path).format_help()


@pytest.mark.parametrize(
    ("group", "commands"),
    [("anonymize", ("train", "apply", "evaluate")), ("segment", ("train", "apply"))],
)
def test_every_option_is_described_and_each_command_has_its_own_page(
    group: str, commands: tuple[str, ...]
) -> None:
    pages = {name: subcommand(group, name) for name in commands}
    for name, parser in pages.items():
        undescribed = [
            action.option_strings
            for action in parser._actions
            if action.option_strings and not action.help
        ]
        assert not undescribed, (name, undescribed)
    descriptions = {parser.description for parser in pages.values()}
    assert len(descriptions) == len(commands)


def test_one_label_option_and_the_old_spelling_warns(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser("train-local")
    common = ["train-local", "--data", "d", "--out", "o"]
    new = config_from_args(parser.parse_args([*common, "--label-columns", "effusion", "nodule"]))
    assert new.label_columns == ["effusion", "nodule"]
    assert "warning" not in capsys.readouterr().err
    old = config_from_args(parser.parse_args([*common, "--labels", "effusion,nodule"]))
    assert old.label_columns == new.label_columns
    assert "--labels is deprecated; use --label-columns" in capsys.readouterr().err
    assert "--label-columns" in subcommand("evaluate").format_help()


def _status(round_: int, state: str, history: list[RoundResult]) -> FederationStatus:
    return FederationStatus(
        run_id="r",
        state=state,
        round=round_,
        rounds=3,
        min_nodes=2,
        nodes=[NodeStatus("site0", connected=True), NodeStatus("site1")],
        history=history,
    )


def test_the_demo_without_a_live_table_prints_a_line_per_change() -> None:
    out = io.StringIO()
    on_status = changes_printer(Console(file=out, width=200))
    done = RoundResult(1, ("site0",), (), 0.5, 0.712, 3.0)
    for status in (
        _status(0, "starting", []),
        _status(0, "starting", []),
        _status(1, "training", []),
        _status(1, "training", []),
        _status(2, "training", [done]),
    ):
        on_status(status)
    lines = out.getvalue().splitlines()
    assert lines == [
        "round 0/3 · starting · 1/2 nodes connected",
        "round 1/3 · training · 1/2 nodes connected",
        "round 2/3 · training · 1/2 nodes connected · round 1 validation AUROC 0.712",
    ]


def test_log_records_print_above_the_progress_bar(tmp_path: Path) -> None:
    original = io.StringIO()
    handler = logging.StreamHandler(original)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        screen = io.StringIO()
        with step_progress(Console(file=screen, force_terminal=True, width=80)) as progress:
            progress.add_task("epochs", total=2)
            logging.getLogger("primia.test").warning("epoch 1/2 done")
        assert "epoch 1/2 done" in screen.getvalue()  # through rich, above the bar
        assert "epoch 1/2 done" not in original.getvalue()
        assert handler.stream is original  # restored
    finally:
        root.removeHandler(handler)


def test_the_demo_says_what_is_coming_before_the_coordinator_answers(tmp_path: Path) -> None:
    import socket

    from primia.api import Consortium
    from primia.demo.federation import DemoSettings, _status_or_placeholder

    consortium = Consortium.create(tmp_path / "pki", name="demo")
    consortium.issue("coordinator", role="coordinator")
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    status = _status_or_placeholder(
        address, consortium.tls("coordinator"), {}, DemoSettings(rounds=4, min_nodes=2)
    )
    assert (status.state, status.round, status.rounds, status.min_nodes) == ("starting", 0, 4, 2)
