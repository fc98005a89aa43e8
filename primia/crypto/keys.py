"""Keys of secure aggregation: X25519 agreement, HKDF derivation, AEAD, signatures.

* Each node makes two fresh X25519 key pairs per round: the *cipher* pair, whose pairwise
  secrets key the AEAD that carries Shamir shares node to node through the coordinator,
  and the *mask* pair, whose pairwise secrets seed the pairwise masks.
* Every secret used is HKDF-SHA256(X25519(a, B), info = purpose ‖ session id), so a
  secret is never reused across purposes or rounds and the full 256 bits key the PRG.
* A node signs its two public keys, with the session id and its name, with the ECDSA key
  of its TLS certificate. The others verify the signature with that certificate after
  checking it against the consortium's CA: a coordinator that substitutes a key (to sit
  in the middle of a pair) is detected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from primia import pki
from primia.errors import PrimiaError

PUBLIC_KEY_BYTES = 32
NONCE_BYTES = 12
_SIGNED_CONTEXT = b"primia secure aggregation keys v2"


class ForgedKeys(PrimiaError):
    """A key advertisement is not signed by the certificate of the node it names."""


class UndecryptableShare(PrimiaError):
    """A ciphertext does not decrypt under the pairwise key: altered, or meant for another."""


@dataclass(frozen=True)
class KeyPair:
    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        private = X25519PrivateKey.generate()
        return cls(private, public_bytes(private))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        private = X25519PrivateKey.from_private_bytes(data)
        return cls(private, public_bytes(private))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def agree(
    private: X25519PrivateKey, peer_public: bytes, *, purpose: bytes, session: bytes
) -> bytes:
    """The 256-bit secret HKDF(X25519(private, peer), purpose ‖ session), the same at both ends."""
    if len(peer_public) != PUBLIC_KEY_BYTES:
        raise ValueError(
            f"an X25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(peer_public)}"
        )
    # cryptography refuses a low-order peer key (an all-zero shared secret) with ValueError
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return derive(shared, purpose=purpose, session=session)


def check_public_key(data: bytes) -> None:
    """ValueError unless ``data`` is an X25519 public key usable for agreement (32 bytes,
    not of low order: cryptography refuses an exchange whose result is all zeros)."""
    if len(data) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an X25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(data)}")
    X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(data))


def derive(secret: bytes, *, purpose: bytes, session: bytes) -> bytes:
    """HKDF-SHA256 of ``secret`` to 32 bytes, bound to ``purpose`` and ``session``."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose + b"|" + session)
    return hkdf.derive(secret)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of ChaCha20-Poly1305 under ``key``; the nonce is random because
    both directions of a pair share the key."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, associated)
    except (InvalidTag, ValueError) as error:
        raise UndecryptableShare("the ciphertext does not decrypt") from error


def signed_payload(
    session: bytes, node: str, cipher_public: bytes, mask_public: bytes, view: bytes = b""
) -> bytes:
    """The bytes a node signs: what its advertisement claims, unambiguously framed; ``view``
    is what the node was told of the round (the weights', plan's and participants' digests),
    so the others can check that everyone was told the same."""
    name = node.encode()
    return b"".join(
        [
            _SIGNED_CONTEXT,
            len(session).to_bytes(2, "big"),
            session,
            len(name).to_bytes(2, "big"),
            name,
            cipher_public,
            mask_public,
            len(view).to_bytes(2, "big"),
            view,
        ]
    )


def sign(key_pem: bytes, payload: bytes) -> bytes:
    """ECDSA-SHA256 signature with the private key of a TLS certificate."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(
            "the TLS key is not an elliptic-curve key; issue certificates with primia certs"
        )
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def verify(
    certificate_pem: bytes, ca_pem: bytes, node: str, payload: bytes, signature: bytes
) -> None:
    """Check that ``certificate_pem`` is a node certificate of this CA named ``node`` and
    that it signed ``payload``; :class:`ForgedKeys` otherwise."""
    try:
        identity = pki.verify_peer(certificate_pem, ca_pem)
    except (pki.CertificateRejected, ValueError) as error:
        raise ForgedKeys(
            f"the keys said to be {node!r}'s come with a bad certificate: {error}"
        ) from error
    if identity.name != node or identity.role != "node":
        raise ForgedKeys(
            f"the keys said to be {node!r}'s come with the certificate of "
            f"{identity.role} {identity.name!r}"
        )
    public = x509.load_pem_x509_certificate(certificate_pem).public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ForgedKeys(f"the certificate of {node!r} does not hold an elliptic-curve key")
    try:
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as error:
        raise ForgedKeys(
            f"the keys said to be {node!r}'s are not signed by {node!r}'s certificate: they "
            "were replaced on the way (by the coordinator or the network); the round is "
            "abandoned and nothing was revealed"
        ) from error
