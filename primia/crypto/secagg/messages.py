"""The messages of secure aggregation and its errors, free of any transport.

Every message carries the round's ``session`` (16 random bytes the coordinator draws per
round): a message from another round is refused by name, and the signatures and AEAD
associated data bind to it, so nothing can be replayed across rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from primia.crypto import keys
from primia.crypto.ring import FixedPoint, ring_bits_problem
from primia.errors import PrimiaError

SESSION_BYTES = 16


class ProtocolViolation(PrimiaError):
    """A message that breaks the protocol (wrong round, wrong sender, wrong length,
    forged or undecryptable); the party that sent it is left out of the round."""


class AggregationFailed(PrimiaError):
    """Too few parties remain (fewer than the threshold) or the protocol was attacked: the
    round is abandoned and nothing about any input has been revealed."""


class SecretKind(StrEnum):
    SELF_MASK = "self_mask"
    """The seed b_u of u's self mask: revealed for survivors."""
    MASK_KEY = "mask_key"
    """u's mask private key s_u: revealed for nodes that dropped before uploading."""


@dataclass(frozen=True)
class Setup:
    """One round's parameters, sent by the coordinator with the training task."""

    session: bytes
    round: int
    participants: tuple[str, ...]
    """Sorted names; a node's Shamir index is its position + 1."""
    threshold: int
    bits: int
    clip: float
    vector_length: int

    def problems(self) -> list[str]:
        """What is wrong with these parameters (empty when they are usable)."""
        found = []
        if len(self.session) != SESSION_BYTES:
            found.append(f"the session id is {len(self.session)} bytes, not {SESSION_BYTES}")
        if list(self.participants) != sorted(set(self.participants)):
            found.append("the participants must be distinct and sorted")
        if len(self.participants) < 2:
            found.append("secure aggregation needs at least 2 participants")
        if not 2 <= self.threshold <= len(self.participants):
            found.append(
                f"threshold {self.threshold} must lie between 2 and the number of "
                f"participants ({len(self.participants)})"
            )
        if problem := ring_bits_problem(self.bits):
            found.append(f"ring bits {problem}")
        if not self.clip > 0:
            found.append(f"the clipping range must be positive, not {self.clip}")
        if self.vector_length < 1:
            found.append("the vector to aggregate is empty")
        return found

    def index(self, node: str) -> int:
        return self.participants.index(node) + 1

    def fixed_point(self) -> FixedPoint:
        return FixedPoint.for_sum(summands=len(self.participants), clip=self.clip, bits=self.bits)

    def check_session(self, session: bytes, what: str) -> None:
        if session != self.session:
            raise ProtocolViolation(
                f"{what} is from another session ({session.hex()[:8]}…), not round "
                f"{self.round}'s ({self.session.hex()[:8]}…): a replayed or delayed message"
            )


def majority(participants: int) -> int:
    """The default threshold: more than half of the participants."""
    return participants // 2 + 1


@dataclass(frozen=True)
class KeyAdvertisement:
    session: bytes
    node: str
    cipher_public: bytes
    mask_public: bytes
    certificate: bytes
    """The node's TLS certificate (PEM), whose key signed the advertisement."""
    signature: bytes


def verify_keys(advertisement: KeyAdvertisement, session: bytes, ca_pem: bytes) -> None:
    """Check that the node the advertisement names signed its keys for ``session`` with
    the certificate this consortium's CA issued it, and that the keys are usable (one
    bad key would otherwise make every honest node abandon the round);
    :class:`ProtocolViolation` if not."""
    for what, public in (
        ("cipher", advertisement.cipher_public),
        ("mask", advertisement.mask_public),
    ):
        try:
            keys.check_public_key(public)
        except ValueError as error:
            raise ProtocolViolation(
                f"the {what} key of {advertisement.node!r} is unusable: {error}"
            ) from error
    payload = keys.signed_payload(
        session, advertisement.node, advertisement.cipher_public, advertisement.mask_public
    )
    try:
        keys.verify(
            advertisement.certificate, ca_pem, advertisement.node, payload, advertisement.signature
        )
    except keys.ForgedKeys as error:
        raise ProtocolViolation(str(error)) from error


@dataclass(frozen=True)
class KeyRoster:
    session: bytes
    keys: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True)
class EncryptedShare:
    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes
    """ChaCha20-Poly1305 of share(b_sender) ‖ share(s_sender) for the recipient."""


@dataclass(frozen=True)
class ShareBundle:
    session: bytes
    sender: str
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class ShareDelivery:
    session: bytes
    recipient: str
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    session: bytes
    node: str
    values: npt.NDArray[np.unsignedinteger]
    clipped: int = 0


@dataclass(frozen=True)
class UnmaskRequest:
    session: bytes
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class RevealedShare:
    owner: str
    kind: SecretKind
    share: bytes


@dataclass(frozen=True)
class UnmaskShares:
    session: bytes
    node: str
    shares: tuple[RevealedShare, ...]


def share_associated_data(session: bytes, sender: str, recipient: str) -> bytes:
    """What a sealed share is bound to: its round, its sender and its recipient."""
    return b"|".join([b"primia share v1", session, sender.encode(), recipient.encode()])


def pair_sign(node: str, peer: str) -> int:
    """+1 if ``node`` adds the pair's mask (it sorts first), −1 if it subtracts it."""
    return 1 if node < peer else -1
