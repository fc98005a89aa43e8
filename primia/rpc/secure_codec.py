"""Secure-aggregation messages to and from protobuf (:mod:`primia.crypto.secagg`).

The masked input itself travels as a blob of little-endian k-bit integers (raw array
bytes, never pickle; see :func:`primia.crypto.ring.ring_bytes`).
"""

from __future__ import annotations

from primia.crypto.secagg import (
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    RevealedShare,
    RoundView,
    SecretKind,
    Setup,
    ShareBundle,
    ShareDelivery,
    SurvivorSignature,
    SurvivorSignatures,
    UnmaskRequest,
    UnmaskShares,
)
from primia.federated.tasks import SecureTask
from primia.rpc.codec import MessageError
from primia.rpc.generated import federation_pb2 as pb


def secure_task_to_proto(secure: SecureTask) -> pb.SecureAggregation:
    setup = secure.setup
    return pb.SecureAggregation(
        session_id=setup.session,
        participants=list(setup.participants),
        threshold=setup.threshold,
        ring_bits=setup.bits,
        clip=setup.clip,
        vector_length=setup.vector_length,
        weight_unit=secure.weight_unit,
    )


def secure_task_from_proto(message: pb.SecureAggregation, round_number: int) -> SecureTask:
    setup = Setup(
        session=message.session_id,
        round=round_number,
        participants=tuple(message.participants),
        threshold=message.threshold,
        bits=message.ring_bits,
        clip=message.clip,
        vector_length=message.vector_length,
    )
    problems = setup.problems()
    if not message.weight_unit > 0:
        problems.append(f"the weight unit must be positive, not {message.weight_unit}")
    if problems:
        raise MessageError("unusable secure-aggregation setup: " + "; ".join(problems))
    return SecureTask(setup=setup, weight_unit=message.weight_unit)


def keys_to_proto(task_id: str, keys: KeyAdvertisement) -> pb.KeyAdvertisement:
    return pb.KeyAdvertisement(
        task_id=task_id,
        session_id=keys.session,
        node=keys.node,
        cipher_public_key=keys.cipher_public,
        mask_public_key=keys.mask_public,
        certificate=keys.certificate,
        signature=keys.signature,
        view=pb.RoundView(
            weights_sha256=keys.view.weights,
            plan_sha256=keys.view.plan,
            participants_sha256=keys.view.participants,
        ),
    )


def keys_from_proto(message: pb.KeyAdvertisement) -> KeyAdvertisement:
    view = message.view
    return KeyAdvertisement(
        session=message.session_id,
        node=message.node,
        cipher_public=message.cipher_public_key,
        mask_public=message.mask_public_key,
        certificate=message.certificate,
        signature=message.signature,
        view=RoundView(view.weights_sha256, view.plan_sha256, view.participants_sha256),
    )


def roster_to_proto(task_id: str, roster: KeyRoster) -> pb.KeyRoster:
    return pb.KeyRoster(
        task_id=task_id,
        session_id=roster.session,
        keys=[keys_to_proto(task_id, keys) for keys in roster.keys],
    )


def roster_from_proto(message: pb.KeyRoster) -> KeyRoster:
    return KeyRoster(message.session_id, tuple(keys_from_proto(k) for k in message.keys))


def _shares_to_proto(shares: tuple[EncryptedShare, ...]) -> list[pb.EncryptedShare]:
    return [
        pb.EncryptedShare(
            sender=share.sender,
            recipient=share.recipient,
            nonce=share.nonce,
            ciphertext=share.ciphertext,
        )
        for share in shares
    ]


def _shares_from_proto(messages: list[pb.EncryptedShare]) -> tuple[EncryptedShare, ...]:
    return tuple(EncryptedShare(m.sender, m.recipient, m.nonce, m.ciphertext) for m in messages)


def bundle_to_proto(task_id: str, bundle: ShareBundle) -> pb.ShareBundle:
    return pb.ShareBundle(
        task_id=task_id, session_id=bundle.session, shares=_shares_to_proto(bundle.shares)
    )


def bundle_from_proto(message: pb.ShareBundle, sender: str) -> ShareBundle:
    """The bundle of ``sender`` (the name in its certificate, not one it claims)."""
    return ShareBundle(message.session_id, sender, _shares_from_proto(list(message.shares)))


def delivery_to_proto(task_id: str, delivery: ShareDelivery) -> pb.ShareDelivery:
    return pb.ShareDelivery(
        task_id=task_id, session_id=delivery.session, shares=_shares_to_proto(delivery.shares)
    )


def delivery_from_proto(message: pb.ShareDelivery, recipient: str) -> ShareDelivery:
    return ShareDelivery(message.session_id, recipient, _shares_from_proto(list(message.shares)))


def request_to_proto(task_id: str, request: UnmaskRequest) -> pb.UnmaskRequest:
    return pb.UnmaskRequest(
        task_id=task_id,
        session_id=request.session,
        survivors=list(request.survivors),
        dropped=list(request.dropped),
    )


def request_from_proto(message: pb.UnmaskRequest) -> UnmaskRequest:
    return UnmaskRequest(message.session_id, tuple(message.survivors), tuple(message.dropped))


def signature_to_proto(task_id: str, signature: SurvivorSignature) -> pb.SurvivorSignature:
    return pb.SurvivorSignature(
        task_id=task_id, session_id=signature.session, signature=signature.signature
    )


def signature_from_proto(message: pb.SurvivorSignature, node: str) -> SurvivorSignature:
    """The signature of ``node`` (the name in its certificate, not one it claims)."""
    return SurvivorSignature(message.session_id, node, message.signature)


def signatures_to_proto(task_id: str, signatures: SurvivorSignatures) -> pb.SurvivorSignatures:
    return pb.SurvivorSignatures(
        task_id=task_id,
        session_id=signatures.session,
        survivors=list(signatures.survivors),
        signatures=[
            pb.NodeSignature(node=signature.node, signature=signature.signature)
            for signature in signatures.signatures
        ],
    )


def signatures_from_proto(message: pb.SurvivorSignatures) -> SurvivorSignatures:
    return SurvivorSignatures(
        message.session_id,
        tuple(message.survivors),
        tuple(
            SurvivorSignature(message.session_id, signed.node, signed.signature)
            for signed in message.signatures
        ),
    )


def unmask_to_proto(task_id: str, revealed: UnmaskShares) -> pb.UnmaskShares:
    return pb.UnmaskShares(
        task_id=task_id,
        session_id=revealed.session,
        shares=[
            pb.RevealedShare(owner=share.owner, kind=share.kind.value, share=share.share)
            for share in revealed.shares
        ],
    )


def unmask_from_proto(message: pb.UnmaskShares, node: str) -> UnmaskShares:
    shares = []
    for share in message.shares:
        try:
            kind = SecretKind(share.kind)
        except ValueError:
            raise MessageError(
                f"a revealed share of kind {share.kind!r}; it must be self_mask or mask_key"
            ) from None
        shares.append(RevealedShare(share.owner, kind, share.share))
    return UnmaskShares(message.session_id, node, tuple(shares))
