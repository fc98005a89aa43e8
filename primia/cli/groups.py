"""What the commands share: the handler of a group run without a subcommand, ``--threads``."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def print_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A handler for a command group run without a subcommand: its help, exit status 2."""

    def handler(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return handler


THREADS_HELP = (
    "CPU threads for PyTorch (default: half the cores, 1 to 4, or OMP_NUM_THREADS; "
    "0: PyTorch's default, all cores; see docs/operator-guide.md)"
)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` of a command that computes; its handler passes it to
    :func:`primia.threads.set_torch_threads` (or a configuration's ``threads``)."""
    parser.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
