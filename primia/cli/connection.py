"""The options every command that calls a coordinator takes: where, and with what identity."""

from __future__ import annotations

import argparse
from pathlib import Path

from primia.pki import TLSFiles


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coordinator", required=True, metavar="HOST:PORT", help="the coordinator's address"
    )
    parser.add_argument("--ca", type=Path, required=True, help="the consortium's ca.pem")
    parser.add_argument("--cert", type=Path, required=True, help="your certificate")
    parser.add_argument("--key", type=Path, required=True, help="your private key")
    parser.add_argument(
        "--server-name",
        default="coordinator",
        help="the name in the coordinator's certificate (default coordinator)",
    )


def tls_files_of(args: argparse.Namespace) -> TLSFiles:
    return TLSFiles(ca=args.ca, certificate=args.cert, key=args.key)
