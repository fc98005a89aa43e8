"""The consortium's certificate authority: one CA, and one certificate per participant.

Whoever runs the consortium creates the CA once (:func:`init_ca`) and issues each
coordinator, node and inference server a certificate (:func:`issue`) whose subject says who
it is (CN, also its DNS name), what it may do (OU, its role) and which consortium it
belongs to (O). A participant receives three files, :class:`TLSFiles`: the CA certificate,
its own certificate and its private key. gRPC's mutual TLS trusts only that CA; a servicer
checks the peer again with :func:`verify_peer` and reads its role from the :class:`Identity`.

Keys are ECDSA P-256, certificates are signed with SHA-256. Private keys are written
unencrypted (PKCS8 PEM) with mode 0600 from the moment they exist; the CA key never leaves
the CA's folder.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     _ = init_ca(Path(folder), "Example")
...     ca_pem, cert_pem, _ = issue(Path(folder), "hospital-a", "node").read()
...     verify_peer(cert_pem, ca_pem).role
'node'
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from primia.errors import ConfigError, PrimiaError
from primia.files import PRIVATE, atomic_write_bytes

Role = Literal["coordinator", "node", "inference"]
ROLES: tuple[Role, ...] = typing.get_args(Role)

DEFAULT_CA_DAYS = 3650
DEFAULT_CERT_DAYS = 365

CA_ROLE = "ca"
"""The OU of the CA's own certificate; no participant has it, so a CA certificate presented
as a peer is rejected."""

# Certificates start this long before they are issued, so a peer whose clock runs a little
# behind the CA's does not reject a fresh certificate as not yet valid.
CLOCK_SKEW = timedelta(minutes=5)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAME_RULE = (
    "1-63 letters, digits, hyphens and dots, each dot-separated part starting and ending "
    "with a letter or digit (e.g. hospital-a or node1.example.org)"
)
_CONSORTIUM_MAX = 61  # the CA's CN is "<consortium> CA" and a CN holds at most 64 characters


class CertificateRejected(PrimiaError):
    """A peer's certificate is not one this consortium's CA issued, or not valid now."""


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is; trustworthy only from :func:`verify_peer`."""

    name: str
    role: Role
    consortium: str
    serial: int
    not_after: datetime  # timezone-aware, UTC


@dataclass(frozen=True)
class TLSFiles:
    """The three files a participant needs for mutual TLS."""

    ca: Path
    certificate: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """``(ca_pem, cert_pem, key_pem)``, or a :class:`ConfigError` naming the missing file."""
        name = self.certificate.stem
        issue_hint = (
            f"issue one with `primia certs issue --dir PKI --name {name} --role ROLE` and "
            f"copy {name}.pem and {name}.key to {self.certificate.parent}"
        )
        return (
            _read(self.ca, "the consortium's CA certificate", "copy ca.pem from the CA's folder"),
            _read(self.certificate, f"the certificate of {name!r}", issue_hint),
            _read(self.key, f"the private key of {name!r}", issue_hint, private=True),
        )


def init_ca(
    directory: Path, consortium: str, *, days: int = DEFAULT_CA_DAYS, overwrite: bool = False
) -> Path:
    """Create the consortium's CA: ``directory/ca.pem`` and ``directory/ca.key`` (mode 0600).

    Returns the path of ``ca.pem``, the certificate every participant trusts. An existing CA
    is kept unless ``overwrite``: replacing it invalidates every certificate it issued.
    """
    _check_consortium(consortium)
    _check_days(days)
    certificate_path, key_path = directory / "ca.pem", directory / "ca.key"
    if not overwrite:
        _refuse_existing([certificate_path, key_path], "a certificate authority")
    # The folder holds the CA key: when we create it, only its owner may list it.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, CA_ROLE),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{consortium} CA"),
        ]
    )
    not_before = _now() - CLOCK_SKEW
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    atomic_write_bytes(key_path, mode=PRIVATE, payload=_private_pem(key))
    atomic_write_bytes(certificate_path, certificate.public_bytes(serialization.Encoding.PEM))
    return certificate_path


def issue(
    directory: Path,
    name: str,
    role: Role,
    *,
    days: int = DEFAULT_CERT_DAYS,
    hosts: Sequence[str] = (),
    not_before: datetime | None = None,
    overwrite: bool = False,
) -> TLSFiles:
    """Issue ``name`` a certificate for ``role``, signed by the CA in ``directory``.

    Writes ``directory/<name>.pem`` (the certificate alone) and ``directory/<name>.key``
    (mode 0600). The certificate is valid for TLS as client and server, for the DNS name
    ``name`` and each of ``hosts`` (IP addresses become IP entries). ``not_before`` (aware)
    backdates or postdates it; by default it starts a few minutes ago.
    """
    _check_name(name, "name")
    if name.lower() == CA_ROLE:
        raise ConfigError("the name 'ca' is the certificate authority's own; choose another")
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    _check_days(days)
    alternative_names = _alternative_names(name, hosts)
    files = tls_files(directory, name)
    if not overwrite:
        _refuse_existing([files.certificate, files.key], f"a certificate for {name!r}")
    ca_certificate, ca_key = _load_ca(directory)

    if not_before is None:
        not_before = _now() - CLOCK_SKEW
    elif not_before.tzinfo is None:
        raise ValueError("not_before must be timezone-aware")
    not_before = not_before.replace(microsecond=0)
    not_after = not_before + timedelta(days=days)
    if not_after > ca_certificate.not_valid_after_utc:
        raise ConfigError(
            f"a certificate valid until {_timestamp(not_after)} would outlive the CA, valid "
            f"until {_timestamp(ca_certificate.not_valid_after_utc)}; ask for fewer --days, "
            "or create a new CA with `primia certs init --overwrite` and reissue every "
            "certificate"
        )
    consortium = _attribute(ca_certificate.subject, NameOID.ORGANIZATION_NAME) or ""

    key = ec.generate_private_key(ec.SECP256R1())
    ca_key_identifier = ca_certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, consortium),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
        .add_extension(
            # Every participant dials others and may also be dialled.
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_identifier),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    atomic_write_bytes(files.key, mode=PRIVATE, payload=_private_pem(key))
    atomic_write_bytes(files.certificate, certificate.public_bytes(serialization.Encoding.PEM))
    return files


def tls_files(directory: Path, name: str) -> TLSFiles:
    """Where the files of participant ``name`` are by convention; :meth:`TLSFiles.read` checks."""
    return TLSFiles(
        ca=directory / "ca.pem",
        certificate=directory / f"{name}.pem",
        key=directory / f"{name}.key",
    )


def identity_of(cert_pem: bytes) -> Identity:
    """The identity a certificate claims, unverified: use :func:`verify_peer` for peers."""
    certificate = _parse(cert_pem)
    name = _common_name(certificate)
    roles = [
        attribute.value
        for attribute in certificate.subject.get_attributes_for_oid(
            NameOID.ORGANIZATIONAL_UNIT_NAME
        )
    ]
    if len(roles) != 1:
        raise CertificateRejected(
            f"certificate of {name!r} names {len(roles)} roles (OU); it must name exactly one "
            f"of {', '.join(ROLES)}"
        )
    role = roles[0]
    if role not in ROLES:
        raise CertificateRejected(
            f"certificate of {name!r} has role {role!r}; a participant is one of {', '.join(ROLES)}"
        )
    return Identity(
        name=name,
        role=role,
        consortium=_attribute(certificate.subject, NameOID.ORGANIZATION_NAME) or "",
        serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc,
    )


def verify_peer(cert_pem: bytes, ca_pem: bytes, *, now: datetime | None = None) -> Identity:
    """The identity of ``cert_pem`` if this consortium's CA issued it and it is valid ``now``.

    Checks, beside what TLS already checked: the issuer is the CA, the CA's ECDSA P-256 /
    SHA-256 signature over the certificate holds, both certificates are within their validity
    windows, and the certificate names exactly one known role. Anything else raises
    :class:`CertificateRejected` with a one-line reason that names the certificate.
    """
    if now is None:
        now = _now()
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    certificate = _parse(cert_pem)
    ca_certificate = _parse(ca_pem)
    name = _common_name(certificate)
    ca_name = _common_name(ca_certificate)

    if certificate.issuer != ca_certificate.subject:
        raise CertificateRejected(
            f"certificate of {name!r} was issued by {certificate.issuer.rfc4514_string()!r}, "
            f"not by this consortium's CA {ca_certificate.subject.rfc4514_string()!r}"
        )
    _check_signature(certificate, ca_certificate, name, ca_name)
    if now > ca_certificate.not_valid_after_utc:
        raise CertificateRejected(
            f"the consortium's CA {ca_name!r} expired on "
            f"{_timestamp(ca_certificate.not_valid_after_utc)}, so the certificate of "
            f"{name!r} is no longer trusted; create a new CA with `primia certs init "
            "--overwrite` and reissue every certificate"
        )
    if now < certificate.not_valid_before_utc:
        raise CertificateRejected(
            f"certificate of {name!r} is not valid before "
            f"{_timestamp(certificate.not_valid_before_utc)} (now {_timestamp(now)}); check "
            "the clocks of both machines"
        )
    if now > certificate.not_valid_after_utc:
        raise CertificateRejected(
            f"certificate of {name!r} expired on {_timestamp(certificate.not_valid_after_utc)}; "
            "issue a new one with `primia certs issue`"
        )
    return identity_of(cert_pem)


def describe(cert_pem: bytes, *, now: datetime | None = None) -> str:
    """One line for people: who, which role, which consortium, serial, and until when.

    A certificate outside its validity window at ``now`` (default: the current time) says
    ``EXPIRED on ...`` or ``NOT VALID before ...`` instead of ``valid until ...``.
    """
    now = now or _now()
    certificate = _parse(cert_pem)
    role = _attribute(certificate.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) or "no role"
    consortium = _attribute(certificate.subject, NameOID.ORGANIZATION_NAME) or "?"
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now > not_after:
        validity = f"EXPIRED on {_timestamp(not_after)}"
    elif now < not_before:
        validity = f"NOT VALID before {_timestamp(not_before)}"
    else:
        validity = f"valid until {_timestamp(not_after)}"
    return (
        f"{_common_name(certificate)} ({role}) of consortium {consortium}, "
        f"serial {certificate.serial_number:x}, {validity}"
    )


def _check_signature(
    certificate: x509.Certificate, ca_certificate: x509.Certificate, name: str, ca_name: str
) -> None:
    if certificate.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise CertificateRejected(
            f"certificate of {name!r} is signed with algorithm "
            f"{certificate.signature_algorithm_oid.dotted_string}, not ECDSA with SHA-256 as "
            "this consortium's CA signs"
        )
    ca_public_key = ca_certificate.public_key()
    if not (
        isinstance(ca_public_key, ec.EllipticCurvePublicKey)
        and isinstance(ca_public_key.curve, ec.SECP256R1)
    ):
        raise CertificateRejected(
            f"the CA certificate {ca_name!r} does not hold an ECDSA P-256 key; it is not a "
            "CA made by `primia certs init`"
        )
    try:
        ca_public_key.verify(
            certificate.signature,
            certificate.tbs_certificate_bytes,
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        raise CertificateRejected(
            f"certificate of {name!r} does not carry a valid signature of this consortium's "
            f"CA {ca_name!r}: it was altered, or issued by another CA of the same name"
        ) from None


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    certificate_path, key_path = directory / "ca.pem", directory / "ca.key"
    for path in (certificate_path, key_path):
        if not path.is_file():
            raise ConfigError(
                f"no certificate authority in {directory} ({path.name} is missing); create "
                f"one with `primia certs init --dir {directory} --consortium NAME`, or point "
                "--dir at the CA's folder"
            )
    try:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        key = serialization.load_pem_private_key(read_private(key_path), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"cannot read the CA in {directory}: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or (
        key.public_key() != certificate.public_key()
    ):
        raise ConfigError(
            f"{key_path} is not the ECDSA key of {certificate_path}; the CA folder is "
            "inconsistent, restore it from backup or create a new CA with "
            "`primia certs init --overwrite`"
        )
    return certificate, key


def _alternative_names(name: str, hosts: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = [x509.DNSName(name)]
    for host in hosts:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            _check_name(host, "host")
            entry = x509.DNSName(host)
        if entry not in entries:
            entries.append(entry)
    return entries


def _key_usage(
    *,
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _refuse_existing(paths: Sequence[Path], what: str) -> None:
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise ConfigError(
            f"{what} already exists ({', '.join(existing)}); pass --overwrite to replace it"
        )


def read_private(path: Path) -> bytes:
    """The bytes of the secret at ``path``, refused (:class:`ConfigError`) when its
    permissions let another account read or change it (any group or other bit).

    A secret written with :data:`~primia.files.PRIVATE` passes; one copied, restored or
    made by hand with a looser mode would otherwise be used silently while any local
    account could read it (a TLS key: impersonate this participant; a pseudonymization
    key: link pseudonyms back to patients). Where the platform has no POSIX permissions
    (Windows), the check is left to its ACLs.
    """
    if os.name == "posix":
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} can be read or changed by other accounts (mode {mode:o}); a secret "
                f"must be its owner's only: run `chmod 600 {path}`"
            )
    return path.read_bytes()


def _read(path: Path, what: str, fix: str, *, private: bool = False) -> bytes:
    try:
        return read_private(path) if private else path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} is missing: {path}; {fix}") from None
    except OSError as error:
        raise ConfigError(f"cannot read {what} at {path}: {error.strerror}") from error


def _parse(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise CertificateRejected(f"not a PEM X.509 certificate: {error}") from error


def _common_name(certificate: x509.Certificate) -> str:
    return _attribute(certificate.subject, NameOID.COMMON_NAME) or "<no common name>"


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attributes = name.get_attributes_for_oid(oid)
    if not attributes or not isinstance(attributes[0].value, str):
        return None
    return attributes[0].value


def _check_name(value: str, what: str) -> None:
    if not (len(value) <= 63 and _NAME.fullmatch(value)):
        raise ConfigError(f"invalid {what} {value!r}: use {_NAME_RULE}")


def _check_consortium(consortium: str) -> None:
    if not (
        0 < len(consortium) <= _CONSORTIUM_MAX
        and consortium.isprintable()
        and consortium == consortium.strip()
    ):
        raise ConfigError(
            f"invalid consortium name {consortium!r}: use 1-{_CONSORTIUM_MAX} printable "
            "characters without leading or trailing spaces"
        )


def _check_days(days: int) -> None:
    if days < 1:
        raise ConfigError(f"--days must be at least 1, got {days}")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
