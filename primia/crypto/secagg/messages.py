"""The messages of secure aggregation and its errors, free of any transport.

Every message carries the round's ``session`` (16 random bytes the coordinator draws per
round): a message from another round is refused by name, and the signatures and AEAD
associated data bind to it, so nothing can be replayed across rounds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
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


class InconsistentRound(ProtocolViolation):
    """The coordinator told different nodes different things (weights, plan, participants,
    or who survived): the node abandons the round before it sends or reveals any share."""


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

    def consistency_quorum(self) -> int:
        """Signatures on one survivor set a node needs before it reveals a share:
        max(t, ⌊n/2⌋ + 1) over the n participants.

        Two sets that each gather this many signatures share a signer (2·q > n), and an
        honest node signs one set per round; so no two sets can both be confirmed, and no
        node's self mask and mask key can both be revealed, whatever t the coordinator
        chose (t ≤ n/2 alone would let it split the nodes into two halves, each told the
        other half dropped). With c colluding nodes the guarantee needs q > (n + c) / 2.
        """
        return max(self.threshold, majority(len(self.participants)))


def majority(participants: int) -> int:
    """The default threshold: more than half of the participants."""
    return participants // 2 + 1


DIGEST_BYTES = 32


@dataclass(frozen=True)
class RoundView:
    """What a node was told of the round, as SHA-256 digests: the global weights it
    received, the round's plan (a canonical encoding) and the participant list.

    Each node signs its view into its key advertisement and abandons the round unless
    every advertisement it accepts carries the same view, so a coordinator cannot give
    one node other weights (Pasquini et al., CCS 2022), another plan or another roster
    than the rest. Empty digests: no view bound (only when the check is switched off).
    """

    weights: bytes = b""
    plan: bytes = b""
    participants: bytes = b""

    def encoded(self) -> bytes:
        """The three digests, length-framed, as they are signed."""
        return b"".join(
            len(part).to_bytes(1, "big") + part
            for part in (self.weights, self.plan, self.participants)
        )

    def differences(self, other: RoundView) -> list[str]:
        """Which of the three digests differ between ``self`` and ``other``."""
        return [
            what
            for what, mine, theirs in (
                ("weights", self.weights, other.weights),
                ("plan", self.plan, other.plan),
                ("participants", self.participants, other.participants),
            )
            if mine != theirs
        ]

    def problems(self) -> list[str]:
        return [
            f"the {what} digest is {len(part)} bytes, not {DIGEST_BYTES}"
            for what, part in (
                ("weights", self.weights),
                ("plan", self.plan),
                ("participants", self.participants),
            )
            if len(part) not in (0, DIGEST_BYTES)
        ]


@dataclass(frozen=True)
class ConsistencyChecks:
    """The defences against a coordinator that tells nodes different things; both on by
    default. Neither is read from configuration or from the wire (a coordinator that could
    switch them off would): only tests that show what they prevent, and the benchmark of
    their cost, build the parties with :data:`UNSAFE_WITHOUT_CONSISTENCY_CHECKS`."""

    model_consistency: bool = True
    """Bind the round view into the key advertisement and compare everyone's."""
    consistency_round: bool = True
    """Survivors sign U3; a node reveals only after a quorum of signatures on its U3."""


UNSAFE_WITHOUT_CONSISTENCY_CHECKS = ConsistencyChecks(
    model_consistency=False, consistency_round=False
)
"""Semi-honest-coordinator secure aggregation (before issue 20): tests and benchmarks only."""


def participants_digest(participants: tuple[str, ...]) -> bytes:
    """SHA-256 of the participant names, each length-framed, in order."""
    digest = hashlib.sha256(b"primia participants v1")
    for name in participants:
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(2, "big") + encoded)
    return digest.digest()


@dataclass(frozen=True)
class KeyAdvertisement:
    session: bytes
    node: str
    cipher_public: bytes
    mask_public: bytes
    certificate: bytes
    """The node's TLS certificate (PEM), whose key signed the advertisement."""
    signature: bytes
    view: RoundView = field(default_factory=RoundView)
    """What the node was told of the round, signed with its keys."""


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
    problems = advertisement.view.problems()
    if problems:
        raise ProtocolViolation(
            f"the round view of {advertisement.node!r} is malformed: " + "; ".join(problems)
        )
    payload = keys.signed_payload(
        session,
        advertisement.node,
        advertisement.cipher_public,
        advertisement.mask_public,
        advertisement.view.encoded(),
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
class SurvivorSignature:
    """A survivor's signature on the survivor set U3 it was told (the consistency round):
    ECDSA with its TLS certificate's key over :func:`survivors_payload`."""

    session: bytes
    node: str
    signature: bytes


@dataclass(frozen=True)
class SurvivorSignatures:
    """What the coordinator gathered: signatures of survivors on one set U3; a node
    reveals its shares only when enough of them (the consistency quorum) sign the set it
    signed itself."""

    session: bytes
    survivors: tuple[str, ...]
    signatures: tuple[SurvivorSignature, ...]


def survivors_payload(session: bytes, survivors: tuple[str, ...]) -> bytes:
    """The bytes a survivor signs: the round's session and the sorted survivor names,
    framed so that no two sets encode alike."""
    parts = [b"primia survivors v1", len(session).to_bytes(2, "big"), session]
    for name in sorted(survivors):
        encoded = name.encode()
        parts.append(len(encoded).to_bytes(2, "big") + encoded)
    return b"".join(parts)


def verify_survivor_signature(
    signature: SurvivorSignature, survivors: tuple[str, ...], certificate_pem: bytes, ca_pem: bytes
) -> None:
    """Check that ``signature`` is its node's signature on ``survivors`` for its session,
    made with the certificate this consortium's CA issued it; :class:`InconsistentRound`
    if not."""
    payload = survivors_payload(signature.session, survivors)
    try:
        keys.verify(certificate_pem, ca_pem, signature.node, payload, signature.signature)
    except keys.ForgedKeys as error:
        raise InconsistentRound(
            f"the signature said to be {signature.node!r}'s on the survivors "
            f"{sorted(survivors)} does not verify: the coordinator altered it or "
            f"{signature.node!r} signed another survivor set (it was told another story of "
            "who dropped)"
        ) from error


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
