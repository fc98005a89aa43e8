"""``primia check``: prove a link to the coordinator (address, certificates, roster,
integrity, throughput) before a federation depends on it."""

from __future__ import annotations

import argparse

from primia.cli.commands import command_help
from primia.cli.connection import add_connection_arguments, tls_files_of
from primia.rpc.probe import MEGABYTE, probe

DESCRIPTION = """\
Upload random bytes to a running coordinator exactly as weights travel (mutual TLS,
chunks, SHA-256 checked on arrival) and report the throughput. It fails, saying what to
check, if the coordinator cannot be reached, refuses your certificate or name, or
receives the bytes damaged. MB are 10^6 bytes.
"""

EPILOG = """\
example, from hospital-a's machine:
  primia check --coordinator coord.example.org:50051 --ca pki/ca.pem \\
      --cert pki/hospital-a.pem --key pki/hospital-a.key
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``primia check`` to the top-level parser."""
    parser = subparsers.add_parser(
        "check",
        help=command_help("check"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(parser)
    parser.add_argument(
        "--megabytes",
        type=_megabytes,
        default=64,
        metavar="N",
        help="how much to upload, in MB, 0-1000 (default 64)",
    )
    parser.set_defaults(handler=_check)


def _megabytes(text: str) -> int:
    value = int(text)
    # The coordinator accepts probes of at most 1 GiB.
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1000, got {value}")
    return value


def _check(args: argparse.Namespace) -> int:
    result = probe(
        args.coordinator,
        tls_files_of(args),
        server_name=args.server_name,
        size=args.megabytes * MEGABYTE,
    )
    verdict = "SHA-256 verified" if result.verified else "SHA-256 MISMATCH: the bytes changed"
    print(
        f"uploaded {result.size / MEGABYTE:g} MB to {args.coordinator} in "
        f"{result.seconds:.2f} s: {result.megabytes_per_second:.0f} MB/s, {verdict}"
    )
    return 0 if result.verified else 1
