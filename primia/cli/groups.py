"""What the command groups (``primia data``, ``certs``, ``coordinator``, ``node``) share."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def print_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A handler for a command group run without a subcommand: its help, exit status 2."""

    def handler(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return handler
