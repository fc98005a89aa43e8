"""The consortium's CA: what it issues, and what verify_peer refuses."""

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from primia.errors import ConfigError
from primia.pki import (
    ROLES,
    CertificateRejected,
    describe,
    identity_of,
    init_ca,
    issue,
    tls_files,
    verify_peer,
)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    init_ca(tmp_path / "pki", "Lung Study")
    return tmp_path / "pki"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("role", ROLES)
def test_issued_identity_round_trips(pki, role):
    ca_pem, cert_pem, key_pem = issue(pki, "hospital-a", role).read()
    identity = verify_peer(cert_pem, ca_pem)
    assert (identity.name, identity.role, identity.consortium) == (
        "hospital-a",
        role,
        "Lung Study",
    )
    assert identity == identity_of(cert_pem)
    assert identity.not_after.tzinfo is not None
    assert b"PRIVATE KEY" in key_pem and cert_pem.count(b"BEGIN CERTIFICATE") == 1


def test_files_are_where_tls_files_says_and_keys_are_private(pki):
    files = issue(pki, "hospital-a", "node")
    assert files == tls_files(pki, "hospital-a")
    assert files.ca == pki / "ca.pem"
    assert _mode(pki / "ca.key") == 0o600 and _mode(files.key) == 0o600
    assert not [path for path in pki.iterdir() if path.name.startswith(".")]  # no temp files


def test_certificate_is_a_tls_client_and_server_leaf(pki):
    certificate = x509.load_pem_x509_certificate(
        issue(pki, "node1", "node").certificate.read_bytes()
    )
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca


def test_hosts_become_dns_and_ip_alternative_names(pki):
    files = issue(pki, "coordinator", "coordinator", hosts=["10.0.0.5", "::1", "coord.example.org"])
    certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["coordinator", "coord.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]


def test_certificate_from_another_consortium_is_rejected(pki, tmp_path):
    other = tmp_path / "other"
    init_ca(other, "Other Study")
    _, cert_pem, _ = issue(other, "hospital-a", "node").read()
    with pytest.raises(CertificateRejected, match=r"'hospital-a' was issued by .*Other Study CA"):
        verify_peer(cert_pem, (pki / "ca.pem").read_bytes())


def test_certificate_from_another_ca_of_the_same_name_is_rejected(pki, tmp_path):
    impostor = tmp_path / "impostor"
    init_ca(impostor, "Lung Study")
    _, cert_pem, _ = issue(impostor, "hospital-a", "node").read()
    with pytest.raises(CertificateRejected, match="valid signature of this consortium's CA"):
        verify_peer(cert_pem, (pki / "ca.pem").read_bytes())


def test_expired_certificate_is_rejected(pki):
    start = datetime.now(UTC) - timedelta(days=10)
    ca_pem, cert_pem, _ = issue(pki, "hospital-a", "node", days=1, not_before=start).read()
    expiry = (start + timedelta(days=1)).strftime("%Y-%m-%d")
    with pytest.raises(CertificateRejected, match=f"'hospital-a' expired on {expiry}"):
        verify_peer(cert_pem, ca_pem)
    assert "EXPIRED on" in describe(cert_pem)


def test_not_yet_valid_certificate_is_rejected(pki):
    ca_pem, cert_pem, _ = issue(pki, "hospital-a", "node").read()
    with pytest.raises(CertificateRejected, match="'hospital-a' is not valid before"):
        verify_peer(cert_pem, ca_pem, now=datetime.now(UTC) - timedelta(days=1))


def test_expired_ca_is_rejected(tmp_path):
    init_ca(tmp_path, "Lung Study", days=2)
    ca_pem, cert_pem, _ = issue(tmp_path, "hospital-a", "node", days=1).read()
    with pytest.raises(CertificateRejected, match="CA 'Lung Study CA' expired"):
        verify_peer(cert_pem, ca_pem, now=datetime.now(UTC) + timedelta(days=3))


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        # Rename the holder: the signature no longer covers what the certificate says.
        (lambda der: der.replace(b"hospital-a", b"hospital-b"), "altered"),
        # Flip a bit of the signature itself (its last byte ends the DER).
        (lambda der: der[:-1] + bytes([der[-1] ^ 1]), "altered"),
    ],
)
def test_tampered_certificate_is_rejected(pki, tamper, why):
    ca_pem, cert_pem, _ = issue(pki, "hospital-a", "node").read()
    certificate = x509.load_pem_x509_certificate(cert_pem)
    der = tamper(certificate.public_bytes(Encoding.DER))
    forged = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
    with pytest.raises(CertificateRejected, match=why):
        verify_peer(forged, ca_pem)


def test_ca_certificate_is_not_a_participant(pki):
    ca_pem = (pki / "ca.pem").read_bytes()
    with pytest.raises(CertificateRejected, match="has role 'ca'"):
        verify_peer(ca_pem, ca_pem)


def test_garbage_is_rejected(pki):
    with pytest.raises(CertificateRejected, match=r"not a PEM X\.509 certificate"):
        verify_peer(b"hello", (pki / "ca.pem").read_bytes())


@pytest.mark.parametrize(
    "name", ["", "a" * 64, "hospital_a", "-a", "a-", "a..b", ".a", "a b", "ca", "ümlaut"]
)
def test_invalid_names_are_refused(pki, name):
    with pytest.raises(ConfigError, match=r"invalid name|'ca' is the certificate authority"):
        issue(pki, name, "node")


def test_invalid_role_host_and_days_are_refused(pki):
    with pytest.raises(ConfigError, match="unknown role 'admin'; choose one of coordinator"):
        issue(pki, "hospital-a", "admin")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="invalid host 'bad host'"):
        issue(pki, "hospital-a", "node", hosts=["bad host"])
    with pytest.raises(ConfigError, match="--days must be at least 1"):
        issue(pki, "hospital-a", "node", days=0)
    with pytest.raises(ConfigError, match="would outlive the CA"):
        issue(pki, "hospital-a", "node", days=4000)
    assert not (pki / "hospital-a.pem").exists()


def test_existing_ca_and_certificates_are_kept_unless_overwrite(pki):
    ca_pem = (pki / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="--overwrite"):
        init_ca(pki, "Lung Study")
    assert (pki / "ca.pem").read_bytes() == ca_pem
    issue(pki, "hospital-a", "node")
    with pytest.raises(ConfigError, match="certificate for 'hospital-a' already exists"):
        issue(pki, "hospital-a", "node")
    reissued = issue(pki, "hospital-a", "inference", overwrite=True)
    assert identity_of(reissued.certificate.read_bytes()).role == "inference"
    init_ca(pki, "Lung Study", overwrite=True)
    assert (pki / "ca.pem").read_bytes() != ca_pem


def test_issue_without_a_ca_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="primia certs init --dir"):
        issue(tmp_path, "hospital-a", "node")


def test_read_names_the_missing_file_and_the_fix(pki):
    with pytest.raises(ConfigError, match=r"hospital-a.pem; issue one with `primia certs issue"):
        tls_files(pki, "hospital-a").read()


def test_describe_is_one_line_for_people(pki):
    cert_pem = issue(pki, "hospital-a", "node").certificate.read_bytes()
    line = describe(cert_pem)
    assert line.startswith("hospital-a (node) of consortium Lung Study, serial ")
    assert "valid until" in line and "\n" not in line


def test_private_keys_others_can_read_are_refused(pki):
    # A private key any local account can read lets that account impersonate the
    # participant (or, the CA's, issue certificates): it is refused, naming the fix.
    files = issue(pki, "hospital-a", "node")
    files.key.chmod(0o644)
    with pytest.raises(
        ConfigError, match=r"hospital-a.key can be read or changed by other.*chmod 600"
    ):
        files.read()
    files.key.chmod(0o600)
    assert b"PRIVATE KEY" in files.read()[2]
    (pki / "ca.key").chmod(0o640)
    with pytest.raises(ConfigError, match=r"ca.key can be read or changed by other.*chmod 600"):
        issue(pki, "hospital-b", "node")
    (pki / "ca.key").chmod(0o600)
    issue(pki, "hospital-b", "node")
