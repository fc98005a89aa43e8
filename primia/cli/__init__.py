"""The ``primia`` command: a thin layer over the Python API.

Each command group lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``handler`` to a function ``(args) -> int``. Handlers parse and
validate arguments, call the API, and print; the work itself happens in the packages.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from primia import __version__
from primia.errors import PrimiaError
from primia.memory import reuse_freed_memory

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


def build_parser() -> argparse.ArgumentParser:
    from primia.cli import (
        anonymize,
        audit,
        certs,
        check,
        data,
        demo,
        evaluate,
        federation,
        infer,
        ledger,
        train,
    )

    parser = argparse.ArgumentParser(
        prog="primia",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"primia {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    groups = (demo, data, train, ledger, certs, federation, check, infer, audit, evaluate)
    for group in (*groups, anonymize):
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    reuse_freed_memory()  # before any thread starts: see primia.memory
    parser = build_parser()
    args = parser.parse_args(argv)
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
        return int(handler(args))
    except PrimiaError as error:
        print(f"primia: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("primia: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
