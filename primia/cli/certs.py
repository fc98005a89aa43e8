"""``primia certs``: run the consortium's certificate authority (create, issue, list)."""

from __future__ import annotations

import argparse
from pathlib import Path

from primia.cli.commands import command_help
from primia.cli.groups import print_help
from primia.errors import ConfigError
from primia.pki import (
    DEFAULT_CA_DAYS,
    DEFAULT_CERT_DAYS,
    ROLES,
    CertificateRejected,
    describe,
    init_ca,
    issue,
)

DESCRIPTION = """\
Every connection in a consortium is mutual TLS: each participant (the coordinator, each
hospital's node, an inference server) holds a certificate issued by the consortium's own
certificate authority and trusts no other. One person runs the CA on a machine that
hospitals cannot reach, issues one certificate per participant, and hands each its three
files: ca.pem (shared by all), NAME.pem and NAME.key (private to NAME).
"""

EPILOG = """\
example: a consortium of a coordinator and two hospitals
  primia certs init  --dir pki --consortium "Lung Screening Study"
  primia certs issue --dir pki --name coordinator --role coordinator --host 10.0.0.5
  primia certs issue --dir pki --name hospital-a --role node
  primia certs issue --dir pki --name hospital-b --role node
  primia certs list  --dir pki

pki/ca.key signs every certificate: keep it on the CA's machine and back it up offline.
"""

INIT_DESCRIPTION = """\
Create the consortium's certificate authority: PKI/ca.pem, the certificate every
participant trusts, and PKI/ca.key, its private key (mode 0600).
"""

INIT_EPILOG = """\
example:
  primia certs init --dir pki --consortium "Lung Screening Study"
  primia certs issue --dir pki --name coordinator --role coordinator
"""

ISSUE_DESCRIPTION = """\
Issue NAME a certificate for ROLE, signed by the CA in PKI: writes PKI/NAME.pem and
PKI/NAME.key (mode 0600). NAME is also the DNS name others reach it by; add any other
names and IP addresses it is reached at with --host.
"""

ISSUE_EPILOG = """\
examples:
  primia certs issue --dir pki --name coordinator --role coordinator \\
      --host coord.example.org --host 10.0.0.5
  primia certs issue --dir pki --name hospital-a --role node --days 180
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``primia certs`` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "certs",
        help=command_help("certs"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=print_help(parser))
    commands = parser.add_subparsers(title="certs commands", metavar="COMMAND")

    init = commands.add_parser(
        "init",
        help="create the consortium's certificate authority",
        description=INIT_DESCRIPTION,
        epilog=INIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_dir(init, "folder for the CA; created if missing (required)")
    init.add_argument(
        "--consortium",
        metavar="NAME",
        required=True,
        help="the consortium's name, written into every certificate (required)",
    )
    init.add_argument(
        "--days",
        type=int,
        metavar="N",
        default=DEFAULT_CA_DAYS,
        help=f"how long the CA is valid; no certificate outlives it (default {DEFAULT_CA_DAYS})",
    )
    init.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing CA; every certificate it issued stops being trusted",
    )
    init.set_defaults(handler=run_init)

    issue_parser = commands.add_parser(
        "issue",
        help="issue a participant its certificate and private key",
        description=ISSUE_DESCRIPTION,
        epilog=ISSUE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_dir(issue_parser, "the CA's folder, made by `primia certs init` (required)")
    issue_parser.add_argument(
        "--name",
        required=True,
        help="the participant's name: letters, digits, hyphens and dots, e.g. hospital-a "
        "(required)",
    )
    issue_parser.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="what the participant does in the consortium (required)",
    )
    issue_parser.add_argument(
        "--days",
        type=int,
        metavar="N",
        default=DEFAULT_CERT_DAYS,
        help=f"how long the certificate is valid (default {DEFAULT_CERT_DAYS})",
    )
    issue_parser.add_argument(
        "--host",
        dest="hosts",
        action="append",
        default=[],
        metavar="H",
        help="another DNS name or IP address the participant is reached at; repeatable",
    )
    issue_parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace NAME's existing certificate and key",
    )
    issue_parser.set_defaults(handler=run_issue)

    list_parser = commands.add_parser(
        "list",
        help="list the certificates in a folder, marking expired ones",
        description="One line per certificate (*.pem) in PKI: name, role, consortium, "
        "serial, and until when it is valid or since when it has EXPIRED.",
    )
    _add_dir(list_parser, "the folder to list (required)")
    list_parser.set_defaults(handler=run_list)


def _add_dir(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--dir", type=Path, metavar="PKI", required=True, help=help_text)


def run_init(args: argparse.Namespace) -> int:
    certificate = init_ca(args.dir, args.consortium, days=args.days, overwrite=args.overwrite)
    print(f"created the certificate authority of consortium {args.consortium!r}:")
    print(f"  {certificate}  its certificate: every participant gets a copy")
    print(f"  {args.dir / 'ca.key'}  its private key: keep it here, never send it")
    print("next, issue the coordinator its certificate:")
    print(f"  primia certs issue --dir {args.dir} --name coordinator --role coordinator")
    return 0


def run_issue(args: argparse.Namespace) -> int:
    files = issue(
        args.dir,
        args.name,
        args.role,
        days=args.days,
        hosts=args.hosts,
        overwrite=args.overwrite,
    )
    print(f"issued {args.name!r} a certificate as {args.role}:")
    print(f"  {describe(files.certificate.read_bytes())}")
    print(f"hand {args.name} these three files, over a channel only it can read:")
    print(f"  {files.ca}  the consortium's CA certificate")
    print(f"  {files.certificate}  its certificate")
    print(f"  {files.key}  its private key: {args.name} must keep it private")
    return 0


def run_list(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        raise ConfigError(f"{args.dir} is not a folder; pass the CA's folder with --dir")
    paths = sorted(args.dir.glob("*.pem"), key=lambda path: (path.name != "ca.pem", path.name))
    if not paths:
        raise ConfigError(
            f"no certificates (*.pem) in {args.dir}; create a CA there with "
            f"`primia certs init --dir {args.dir} --consortium NAME`"
        )
    width = max(len(path.name) for path in paths)
    for path in paths:
        try:
            line = describe(path.read_bytes())
        except CertificateRejected as error:
            line = f"unreadable: {error}"
        print(f"{path.name:<{width}}  {line}")
    return 0
