"""``primia coordinator``, ``primia node`` and ``primia status``: run a federation."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.logging import RichHandler

from primia.cli.commands import command_help
from primia.cli.connection import add_connection_arguments, tls_files_of
from primia.cli.groups import print_help
from primia.federated.display import LiveStatus, render
from primia.federated.result import FederationResult
from primia.federated.run_view import write_run_report
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.node_client import NodeClient
from primia.rpc.node_config import NodeConfig, load_node_config
from primia.rpc.status import fetch_status

COORDINATOR_EPILOG = """\
A consortium, step by step:
  primia certs init --dir pki --consortium chest-xray
  primia certs issue --dir pki --name coordinator --role coordinator
  primia certs issue --dir pki --name hospital-a --role node   (one per hospital)
  primia coordinator serve --config coordinator.toml          (docs/federation.md has a
                                                               commented example file)
  primia node serve --config node.toml                        (at each hospital)
  primia status --coordinator HOST:PORT --ca pki/ca.pem --cert pki/hospital-a.pem \\
      --key pki/hospital-a.key

Restarted on the same run_dir, the coordinator resumes after the last completed round.
"""

NODE_EPILOG = """\
The node dials out to the coordinator (no inbound port is needed at the hospital), keeps
one stream open, and trains when asked. It refuses tasks outside its [policy] (plaintext
aggregation unless allowed, too few participants, a threshold below a strict majority, a
model it does not train), plans outside its [limits] (including the noise floor) and any
release that would exceed its [privacy] budget; its privacy ledger is
STATE_DIR/privacy-ledger.jsonl. It reconnects with back-off when the coordinator is gone.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    coordinator = subparsers.add_parser(
        "coordinator",
        help=command_help("coordinator"),
        description="Run a federation's coordinator. See 'primia coordinator serve --help'.",
    )
    coordinator.set_defaults(handler=print_help(coordinator))
    commands = coordinator.add_subparsers(title="coordinator commands", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve nodes and run the configured rounds",
        description="Listen for nodes, run the federated rounds of coordinator.toml, write "
        "the run directory (rounds.jsonl, checkpoints, TensorBoard, report.json) and exit.",
        epilog=COORDINATOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="TOML",
        help="the coordinator's configuration file (required)",
    )
    serve.add_argument("--rounds", type=int, metavar="N", help="override `rounds`")
    serve.add_argument("--run-dir", type=Path, metavar="DIR", help="override `run_dir`")
    serve.add_argument("--listen", metavar="HOST:PORT", help="override `listen`")
    serve.add_argument(
        "--init",
        type=Path,
        metavar="CHECKPOINT",
        help="override `init`: start the global model from this checkpoint (spec checked)",
    )
    serve.add_argument(
        "--no-progress", action="store_true", help="log lines instead of the live status table"
    )
    serve.set_defaults(handler=_serve_coordinator)

    node = subparsers.add_parser(
        "node",
        help=command_help("node"),
        description="Run a data-owner node. See 'primia node serve --help'.",
    )
    node.set_defaults(handler=print_help(node))
    node_commands = node.add_subparsers(title="node commands", metavar="COMMAND")
    node_serve = node_commands.add_parser(
        "serve",
        help="join the coordinator and train on this institution's data when asked",
        description="Join the coordinator named in node.toml and serve its tasks.",
        epilog=NODE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    node_serve.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="TOML",
        help="the node's configuration file (required)",
    )
    node_serve.add_argument("--coordinator", metavar="HOST:PORT", help="override `coordinator`")
    node_serve.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit when the federation finishes instead of waiting for the next",
    )
    node_serve.set_defaults(handler=_serve_node)

    status = subparsers.add_parser(
        "status",
        help=command_help("status"),
        description="Ask a running coordinator for its state, with any certificate of the "
        "consortium.",
        epilog="""\
example:
  primia status --coordinator coordinator.example.org:50051 \\
      --ca pki/ca.pem --cert pki/hospital-a.pem --key pki/hospital-a.key

Prints the coordinator's live table: the round and its state, and per node whether it is
connected, what it does, the ε it spent of its budget and the rounds it contributed. A
coordinator certificate sees every node, a node's certificate its own row.
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(status)
    status.set_defaults(handler=_status)


def _serve_coordinator(args: argparse.Namespace) -> int:
    from primia.federated.coordinator_config import load_coordinator_config

    config = load_coordinator_config(args.config)
    overrides = {
        key: value
        for key, value in (
            ("rounds", args.rounds),
            ("run_dir", args.run_dir),
            ("listen", args.listen),
            ("init", args.init),
        )
        if value is not None
    }
    config = dataclasses.replace(config, **overrides)
    console = Console(stderr=True)
    live = config.progress and not args.no_progress and console.is_terminal
    if live:
        _log_through(console)
    stop_on_sigterm()
    server = CoordinatorServer(config)
    server.start()
    with LiveStatus(server.federation.status, console=console, enabled=live):
        result: FederationResult = server.run()
    page = write_run_report(config.run_dir)
    auroc = result.test.mean_auroc if result.test else None
    print(
        f"federation {result.run_id} finished: {len(result.rounds)} rounds, test AUROC "
        f"{'n/a' if auroc is None else f'{auroc:.3f}'}; report in "
        f"{config.run_dir / 'report.json'} and {page}"
    )
    return 0


def _serve_node(args: argparse.Namespace) -> int:
    config: NodeConfig = load_node_config(args.config)
    if args.coordinator:
        config = dataclasses.replace(config, coordinator=args.coordinator)
    if args.exit_when_done:
        config = dataclasses.replace(config, exit_when_done=True)
    client = NodeClient.from_config(config)
    info = client.owner.info()
    logging.getLogger("primia.node").info(
        "node ready: %d training examples, %s; eps spent %.2f of %.2f; joining %s",
        info.dataset.train_examples,
        info.device,
        info.privacy.epsilon_spent,
        info.privacy.epsilon_budget,
        config.coordinator,
    )
    stop_on_sigterm()
    client.serve()
    return 0


def _status(args: argparse.Namespace) -> int:
    status = fetch_status(
        args.coordinator,
        tls_files_of(args),
        server_name=args.server_name,
    )
    Console().print(render(status))
    return 0


def stop_on_sigterm() -> None:
    """SIGTERM ends the process like Ctrl-C: training stops and the ledger records the
    steps that ran (see primia.train.local.fit)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _log_through(console: Console) -> None:
    """Route log lines through the live display's console, so they scroll above it."""
    root = logging.getLogger()
    level = root.level
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(RichHandler(console=console, show_path=False))
    root.setLevel(level)
