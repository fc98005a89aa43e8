"""``primia dashboard``: the federation in a browser (see :mod:`primia.api.dashboard`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from primia.pki import TLSFiles


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("dashboard", help="show a federation in the browser")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="a running coordinator")
    parser.add_argument("--ca", type=Path, help="the consortium's ca.pem")
    parser.add_argument("--cert", type=Path, help="the operator's certificate")
    parser.add_argument("--key", type=Path, help="the operator's private key")
    parser.add_argument("--server-name", default="coordinator")
    parser.add_argument("--run", type=Path, help="a finished run's directory, instead")
    parser.add_argument(
        "--reports", type=Path, action="append", default=[], help="a report folder to list"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default localhost)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page may be requested by, besides the bound address and "
        "localhost (other names are refused, against DNS rebinding)",
    )
    parser.set_defaults(handler=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    from primia.api.dashboard import dashboard_app, serve_dashboard

    tls = None
    if args.ca and args.cert and args.key:
        tls = TLSFiles(ca=args.ca, certificate=args.cert, key=args.key)
    app = dashboard_app(
        coordinator=args.coordinator,
        tls=tls,
        run_dir=args.run,
        reports=args.reports,
        server_name=args.server_name,
        host=args.host,
        allow_hosts=args.allow_host,
    )
    print(f"dashboard on http://{args.host}:{args.port}/")
    serve_dashboard(app, host=args.host, port=args.port)
    return 0
