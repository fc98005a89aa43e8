"""The consortium: its certificate authority and the certificates it issues.

Every link in a federation and in encrypted inference is mutual TLS with these
certificates; the role in a certificate decides what its holder may call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from primia import pki


@dataclass(frozen=True)
class Consortium:
    """A consortium's PKI folder: ``ca.pem`` (trusted by everyone), ``ca.key`` (kept by the
    consortium's operator only) and one ``<name>.pem`` / ``<name>.key`` per participant.

    >>> import tempfile
    >>> consortium = Consortium.create(Path(tempfile.mkdtemp()) / "pki", name="chest-xray")
    >>> files = consortium.issue("hospital-a", role="node")
    >>> files.certificate.name, files.key.stat().st_mode & 0o777 == 0o600
    ('hospital-a.pem', True)
    """

    directory: Path

    @classmethod
    def create(cls, directory: Path, *, name: str, days: int = pki.DEFAULT_CA_DAYS) -> Consortium:
        """Create the consortium's CA in ``directory`` (refuses to replace an existing one:
        that would invalidate every certificate it issued)."""
        pki.init_ca(directory, name, days=days)
        return cls(directory)

    def issue(
        self,
        name: str,
        *,
        role: pki.Role,
        hosts: Sequence[str] = (),
        days: int = pki.DEFAULT_CERT_DAYS,
    ) -> pki.TLSFiles:
        """A certificate for participant ``name`` in ``role`` (``coordinator``, ``node`` or
        ``inference``), valid for the DNS name ``name`` and each of
        ``hosts``; returns the three files its holder needs."""
        return pki.issue(self.directory, name, role, hosts=hosts, days=days)

    def tls(self, name: str) -> pki.TLSFiles:
        """Where participant ``name``'s files are (checked when they are read)."""
        return pki.tls_files(self.directory, name)
