"""Keys of secure aggregation: agreement, sealing, and signatures checked against the CA."""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia import pki
from primia.crypto import keys

SESSION = bytes(range(16))
PURPOSE = b"test purpose"


@dataclass(frozen=True)
class Holder:
    certificate: bytes
    key: bytes


@dataclass(frozen=True)
class Consortium:
    ca: bytes
    alice: Holder
    bob: Holder
    coordinator: Holder
    stranger: Holder
    """A node named alice, issued by another consortium's CA."""


def _holder(directory: Path, name: str, role: pki.Role) -> Holder:
    _, certificate, key = pki.issue(directory, name, role).read()
    return Holder(certificate, key)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("theirs")
    ca = pki.init_ca(ours, "test").read_bytes()
    pki.init_ca(theirs, "test")
    return Consortium(
        ca=ca,
        alice=_holder(ours, "alice", "node"),
        bob=_holder(ours, "bob", "node"),
        coordinator=_holder(ours, "coord", "coordinator"),
        stranger=_holder(theirs, "alice", "node"),
    )


def _payload(node: str = "alice") -> bytes:
    return keys.signed_payload(SESSION, node, bytes(32), bytes(range(32)))


# ---- agreement ---------------------------------------------------------------------


def test_agreement_gives_both_ends_the_same_256_bit_secret():
    a, b = keys.KeyPair.generate(), keys.KeyPair.generate()
    ours = keys.agree(a.private, b.public, purpose=PURPOSE, session=SESSION)
    theirs = keys.agree(b.private, a.public, purpose=PURPOSE, session=SESSION)
    assert ours == theirs
    assert len(ours) == 32


def test_agreement_is_bound_to_purpose_session_and_peer():
    a, b, c = keys.KeyPair.generate(), keys.KeyPair.generate(), keys.KeyPair.generate()
    secret = keys.agree(a.private, b.public, purpose=PURPOSE, session=SESSION)
    others = {
        keys.agree(a.private, b.public, purpose=b"another purpose", session=SESSION),
        keys.agree(a.private, b.public, purpose=PURPOSE, session=bytes(16)),
        keys.agree(a.private, c.public, purpose=PURPOSE, session=SESSION),
    }
    assert secret not in others
    assert len(others) == 3


def test_derive_frames_purpose_and_session():
    secret = os.urandom(32)
    assert keys.derive(secret, purpose=b"ab", session=b"c") != keys.derive(
        secret, purpose=b"a", session=b"bc"
    )


@pytest.mark.parametrize("size", [0, 31, 33])
def test_agreement_refuses_a_public_key_of_another_size(size):
    with pytest.raises(ValueError, match=f"32 bytes, not {size}"):
        keys.agree(keys.KeyPair.generate().private, bytes(size), purpose=PURPOSE, session=SESSION)


def test_agreement_refuses_a_low_order_public_key():
    with pytest.raises(ValueError):
        keys.agree(keys.KeyPair.generate().private, bytes(32), purpose=PURPOSE, session=SESSION)


def test_key_pair_round_trips_through_its_private_bytes():
    pair = keys.KeyPair.generate()
    again = keys.KeyPair.from_private_bytes(pair.private_bytes())
    assert len(pair.public) == keys.PUBLIC_KEY_BYTES
    assert again.public == pair.public
    assert keys.KeyPair.generate().public != pair.public


# ---- sealing -----------------------------------------------------------------------


def test_sealed_plaintext_opens_with_the_same_key_and_associated_data():
    key = os.urandom(32)
    nonce, ciphertext = keys.seal(key, b"share bytes", b"context")
    assert len(nonce) == keys.NONCE_BYTES
    assert b"share bytes" not in ciphertext
    assert keys.open_sealed(key, nonce, ciphertext, b"context") == b"share bytes"


def test_each_seal_draws_a_fresh_nonce():
    key = os.urandom(32)
    assert keys.seal(key, b"same", b"")[0] != keys.seal(key, b"same", b"")[0]


def _flip_first_bit(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


@pytest.mark.parametrize("tampered", ["key", "nonce", "ciphertext", "associated", "truncated"])
def test_anything_altered_fails_to_open(tampered):
    key = os.urandom(32)
    nonce, ciphertext = keys.seal(key, b"share bytes", b"context")
    arguments = {"key": key, "nonce": nonce, "ciphertext": ciphertext, "associated": b"context"}
    if tampered == "truncated":
        arguments["ciphertext"] = ciphertext[:-1]
    else:
        arguments[tampered] = _flip_first_bit(arguments[tampered])
    with pytest.raises(keys.UndecryptableShare, match="does not decrypt"):
        keys.open_sealed(**arguments)


def test_a_malformed_nonce_is_an_undecryptable_share():
    key = os.urandom(32)
    _, ciphertext = keys.seal(key, b"share bytes", b"")
    with pytest.raises(keys.UndecryptableShare):
        keys.open_sealed(key, b"short", ciphertext, b"")


# ---- signatures --------------------------------------------------------------------


def test_signed_payload_frames_each_field():
    cipher, mask = bytes(32), bytes(range(32))
    payload = keys.signed_payload(SESSION, "ab", cipher, mask)
    assert payload != keys.signed_payload(SESSION + b"a", "b", cipher, mask)
    assert payload != keys.signed_payload(SESSION, "ab", mask, cipher)
    assert payload != keys.signed_payload(bytes(16), "ab", cipher, mask)


def test_a_node_signature_verifies_with_its_certificate(consortium):
    signature = keys.sign(consortium.alice.key, _payload())
    keys.verify(consortium.alice.certificate, consortium.ca, "alice", _payload(), signature)


def test_verify_rejects_another_nodes_certificate(consortium):
    signature = keys.sign(consortium.alice.key, _payload())
    with pytest.raises(keys.ForgedKeys, match="certificate of node 'bob'"):
        keys.verify(consortium.bob.certificate, consortium.ca, "alice", _payload(), signature)


def test_verify_rejects_a_signature_by_another_nodes_key(consortium):
    signature = keys.sign(consortium.bob.key, _payload())
    with pytest.raises(keys.ForgedKeys, match="not signed by 'alice'"):
        keys.verify(consortium.alice.certificate, consortium.ca, "alice", _payload(), signature)


def test_verify_rejects_a_coordinator_certificate(consortium):
    payload = _payload("coord")
    signature = keys.sign(consortium.coordinator.key, payload)
    with pytest.raises(keys.ForgedKeys, match="certificate of coordinator 'coord'"):
        keys.verify(consortium.coordinator.certificate, consortium.ca, "coord", payload, signature)


def test_verify_rejects_a_certificate_from_another_ca(consortium):
    signature = keys.sign(consortium.stranger.key, _payload())
    with pytest.raises(keys.ForgedKeys, match="bad certificate"):
        keys.verify(consortium.stranger.certificate, consortium.ca, "alice", _payload(), signature)


def test_verify_rejects_an_altered_payload(consortium):
    signature = keys.sign(consortium.alice.key, _payload())
    altered = keys.signed_payload(SESSION, "alice", bytes(32), bytes(reversed(range(32))))
    with pytest.raises(keys.ForgedKeys, match="replaced on the way"):
        keys.verify(consortium.alice.certificate, consortium.ca, "alice", altered, signature)


def test_verify_rejects_a_payload_from_another_session(consortium):
    signature = keys.sign(consortium.alice.key, _payload())
    replayed = keys.signed_payload(bytes(16), "alice", bytes(32), bytes(range(32)))
    with pytest.raises(keys.ForgedKeys, match="not signed"):
        keys.verify(consortium.alice.certificate, consortium.ca, "alice", replayed, signature)


def test_verify_rejects_a_certificate_that_is_not_pem(consortium):
    signature = keys.sign(consortium.alice.key, _payload())
    with pytest.raises(keys.ForgedKeys, match="bad certificate"):
        keys.verify(b"not a certificate", consortium.ca, "alice", _payload(), signature)


def test_sign_refuses_a_key_that_is_not_elliptic_curve():
    ed25519 = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="not an elliptic-curve key"):
        keys.sign(ed25519, _payload())
