"""The ``primia`` command: a thin layer over the Python API.

Each command group lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``handler`` to a function ``(args) -> int``. Handlers parse and
validate arguments, call the API, and print; the work itself happens in the packages.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from primia import __version__
from primia.cli.commands import COMMANDS
from primia.errors import PrimiaError
from primia.memory import reuse_freed_memory
from primia.threads import set_torch_threads

DESCRIPTION = """\
primia trains models on medical images that stay where they are: each institution trains
locally with differential privacy, and only protected updates leave it.

Start with:
  primia demo                         a federation of three hospitals on synthetic data
  primia data synth --out data/synth  make a synthetic multi-site radiograph dataset
  primia train-local --data data/synth --dp --epsilon 3 --out runs/local
  primia certs init --dir pki --consortium NAME     then: coordinator serve, node serve
  primia infer demo                   encrypted inference with the demo's model
  primia audit invert --data data/synth --defense none dp secagg --out audit
                                      can a radiograph be rebuilt from an update?
  primia audit reid --data data/synth --out audit/reid
                                      do radiographs link back to their patients?
  primia anonymize train --data data/synth --out anon --mu 0.01
                                      radiographs that keep findings, hide patients
  primia evaluate --model runs/local --data data/synth --out eval
                                      metrics with CIs, subgroups, paired comparison
  primia transfer-matrix --config coordinator.toml --out transfer
                                      how models trained at one site do at the others
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` only (its module imported), or, for ``None`` or a name
    that is no command, a parser that lists every command and registers none (for
    ``--help``, ``--version`` and the error that names the choices)."""
    parser = argparse.ArgumentParser(
        prog="primia",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"primia {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    if command in COMMANDS:
        module = importlib.import_module(f"primia.cli.{COMMANDS[command].module}")
        module.register(subparsers)
    else:
        for name, entry in COMMANDS.items():
            subparsers.add_parser(name, help=entry.help)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: its first word that is not an option (the top-level
    options take no values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    reuse_freed_memory()  # before any thread starts: see primia.memory
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(words))
    args = parser.parse_args(words)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # Opacus configures the root logger when imported
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        if hasattr(args, "threads"):  # a command that computes: see primia.threads
            set_torch_threads(args.threads)
        return int(handler(args))
    except PrimiaError as error:
        print(f"primia: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("primia: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
