"""Certificates for the secure-aggregation unit tests: one CA and a node certificate each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from primia import pki
from primia.crypto.secagg.simulation import Credentials


@dataclass(frozen=True)
class Consortium:
    ca: bytes
    credentials: Mapping[str, Credentials]


def issue_consortium(directory: Path, names: Iterable[str]) -> Consortium:
    """A CA in ``directory`` and a ``node`` certificate for each of ``names``."""
    ca = pki.init_ca(directory, "test").read_bytes()
    credentials = {}
    for name in names:
        _, certificate, key = pki.issue(directory, name, "node").read()
        credentials[name] = Credentials(certificate, key)
    return Consortium(ca, credentials)
