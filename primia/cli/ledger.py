"""``primia ledger verify`` and ``primia ledger repair``: check a privacy ledger, and the
operator's repair when it failed (see :mod:`primia.train.ledger_repair`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from primia.cli.commands import command_help
from primia.train.ledger import Budget
from primia.train.ledger_repair import repair, verify

DESCRIPTION = """\
A privacy ledger is hash-chained and anchored (LEDGER.anchor beside it): a record changed,
the last lines cut, the file reduced to its header or deleted are detected, and training
is refused until an operator resolves it. Restoring the ledger and its anchor together
from a backup is always the better repair. Without a backup, `repair` keeps the sound
records and carries the highest epsilon known (the anchor's, or --at-least, e.g. the
coordinator's record) whenever the survivors compose to less: the reported epsilon never
goes down. It writes nothing without --accept; the damaged file is kept beside it.
"""

EPILOG = """\
examples:
  primia ledger verify state/privacy-ledger.jsonl
  primia ledger repair state/privacy-ledger.jsonl                  (shows what it would do)
  primia ledger repair state/privacy-ledger.jsonl --accept
  primia ledger repair state/privacy-ledger.jsonl --at-least 1.95 --accept
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``primia ledger`` to the top-level parser."""
    parser = subparsers.add_parser(
        "ledger",
        help=command_help("ledger"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="ledger commands", metavar="COMMAND", required=True)
    check = commands.add_parser("verify", help="check the chain, records and anchor")
    check.add_argument("ledger", type=Path, help="the ledger file (privacy-ledger.jsonl)")
    check.set_defaults(handler=_verify)
    fix = commands.add_parser(
        "repair",
        help="rebuild a failed ledger, carrying the highest known epsilon",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fix.add_argument("ledger", type=Path, help="the ledger file (privacy-ledger.jsonl)")
    fix.add_argument(
        "--at-least",
        type=float,
        metavar="EPS",
        help="epsilon known to be spent (e.g. the coordinator's record); carried if higher",
    )
    fix.add_argument("--accept", action="store_true", help="write the repair (else: dry run)")
    fix.add_argument("--epsilon-budget", type=float, help="the budget, if the header is lost")
    fix.add_argument("--delta", type=float, default=1e-5, help="the budget's delta (1e-5)")
    fix.add_argument("--accountant", choices=("prv", "rdp"), default="prv")
    fix.add_argument(
        "--unit",
        choices=("patient", "example"),
        help="what the lost releases protected (the node's [privacy] unit), needed when "
        "epsilon is carried and no surviving release shows it",
    )
    fix.set_defaults(handler=_repair)


def _verify(args: argparse.Namespace) -> int:
    verdict = verify(args.ledger)
    if verdict.problem:
        print(f"FAILED: {verdict.problem}")
        return 2
    print(
        f"OK: {args.ledger}: chain, records and anchor agree; {verdict.records} releases, "
        f"eps {verdict.spent_epsilon:.4g} spent"
    )
    if verdict.abandoned:
        print(
            f"{verdict.abandoned} of the releases were charged for federated rounds the "
            "coordinator abandoned (their updates were never used; their eps stays spent)"
        )
    return 0


def _repair(args: argparse.Namespace) -> int:
    budget = None
    if args.epsilon_budget is not None:
        budget = Budget(epsilon=args.epsilon_budget, delta=args.delta)
    result = repair(
        args.ledger,
        at_least=args.at_least,
        accept=args.accept,
        budget=budget,
        accountant=args.accountant,
        unit=args.unit,
    )
    print(f"problem: {result.problem}")
    print(f"records kept: {result.kept}, lines dropped: {result.dropped}")
    print(
        f"eps of the kept records {result.surviving_epsilon:.4g}, carried "
        f"{result.carried_epsilon:.4g}: the ledger will report {result.spent_after:.4g}"
    )
    if not result.written:
        print("nothing written: run again with --accept to repair")
        return 1
    print(f"repaired; the damaged file is kept as {result.damaged_copy}")
    return 0
