"""The node's side of secure aggregation: a state machine, one instance per round.

    NEW ──advertise──▶ ADVERTISED ──share──▶ SHARED ──receive_shares──▶ READY
        ──mask──▶ MASKED ──confirm──▶ CONFIRMED ──unmask──▶ DONE

The input is needed only at ``mask``: a node exchanges keys and shares before it trains,
so that it can mask and upload its update as soon as training ends.

Two checks make the coordinator's lies useless (issue 20):

* **One view for everyone** (at ``share``, before any share leaves the node): the node's
  advertisement signs its :class:`RoundView` (digests of the weights, the plan and the
  participants it received); it shares only if every advertisement on the roster carries
  the same view, and otherwise raises :class:`InconsistentRound` naming the nodes whose
  view differs.
* **Consistency round** (Bonawitz et al. 2017, malicious server): told the survivor set
  U3, the node signs it (``confirm``); it reveals shares (``unmask``) only when shown
  signatures on that same U3 from at least ``setup.consistency_quorum()`` nodes of its
  roster, each a survivor. An honest node signs one set per round, and two sets with a
  quorum each share a signer, so the nodes that reveal all reveal for the same U3: b_v
  for v ∈ U3 and s_v for v ∉ U3, never both.

Any step out of order, any message of another session and any check that fails raises
:class:`ProtocolViolation` (or :class:`AggregationFailed` when too few parties remain)
and moves the client to ABORTED, from which it answers nothing more: a node never
reveals a share after it has seen the protocol misbehave.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import numpy as np
import numpy.typing as npt

from primia.crypto import keys, shamir
from primia.crypto.prg import SEED_BYTES, MaskGenerator
from primia.crypto.secagg.messages import (
    AggregationFailed,
    ConsistencyChecks,
    EncryptedShare,
    InconsistentRound,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ProtocolViolation,
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
    pair_sign,
    participants_digest,
    share_associated_data,
    survivors_payload,
    verify_keys,
    verify_survivor_signature,
)

CIPHER_PURPOSE = b"primia share cipher"
MASK_PURPOSE = b"primia pairwise mask"


class ClientState(Enum):
    NEW = "new"
    ADVERTISED = "advertised"
    SHARED = "shared"
    READY = "ready"
    MASKED = "masked"
    CONFIRMED = "confirmed"
    DONE = "done"
    ABORTED = "aborted"


class AggregationClient:
    """Node ``node``'s run of one round's protocol (see the module docstring).

    ``certificate_pem``/``key_pem`` are the node's TLS certificate and key, which sign its
    public keys; ``ca_pem`` is the consortium's CA, against which the others' are checked.
    ``view`` is what this node was told of the round (see :class:`RoundView`); without
    one, only the participants (from ``setup``) are compared.
    """

    def __init__(
        self,
        setup: Setup,
        node: str,
        *,
        certificate_pem: bytes,
        key_pem: bytes,
        ca_pem: bytes,
        view: RoundView | None = None,
        checks: ConsistencyChecks | None = None,
    ) -> None:
        problems = setup.problems()
        if problems:
            raise ProtocolViolation("unusable secure-aggregation setup: " + "; ".join(problems))
        if node not in setup.participants:
            raise ProtocolViolation(f"{node!r} is not among the round's participants")
        self.setup = setup
        self.node = node
        self.checks = checks or ConsistencyChecks()
        self.view = view or RoundView(participants=participants_digest(setup.participants))
        if self.view.participants != participants_digest(setup.participants):
            raise ValueError("the round view's participants are not the setup's")
        self.state = ClientState.NEW
        self._certificate = certificate_pem
        self._key_pem = key_pem
        self._ca = ca_pem
        self._cipher_keys = keys.KeyPair.generate()
        self._mask_keys = keys.KeyPair.generate()
        self._self_seed = os.urandom(SEED_BYTES)
        self._roster: dict[str, KeyAdvertisement] = {}
        self._own_shares: dict[SecretKind, bytes] = {}
        self._held: dict[str, dict[SecretKind, bytes]] = {}
        """Shares this node holds of each peer's secrets (and of its own)."""
        self._contributors: tuple[str, ...] = ()
        self._request: UnmaskRequest | None = None
        """The survivor set this node signed (the consistency round)."""
        self._mask_sum: npt.NDArray[np.unsignedinteger] | None = None

    # ---- the four steps -------------------------------------------------------------

    def advertise(self) -> KeyAdvertisement:
        self._expect(ClientState.NEW, "advertise keys")
        view = self.view if self.checks.model_consistency else RoundView()
        payload = keys.signed_payload(
            self.setup.session,
            self.node,
            self._cipher_keys.public,
            self._mask_keys.public,
            view.encoded(),
        )
        advertisement = KeyAdvertisement(
            session=self.setup.session,
            node=self.node,
            cipher_public=self._cipher_keys.public,
            mask_public=self._mask_keys.public,
            certificate=self._certificate,
            signature=keys.sign(self._key_pem, payload),
            view=view,
        )
        self.state = ClientState.ADVERTISED
        return advertisement

    def share(self, roster: KeyRoster) -> ShareBundle:
        """Verify every advertised key and that every node was told the same round, then
        seal shares of b_u and s_u for each peer."""
        self._expect(ClientState.ADVERTISED, "share secrets")
        with self._aborting():
            self.setup.check_session(roster.session, "the key roster")
            self._roster = self._verified(roster)
            if self.checks.model_consistency:
                self._check_views()
            roster_names = sorted(self._roster)
            indices = [self.setup.index(name) for name in roster_names]
            threshold = self.setup.threshold
            seed_shares = shamir.split(self._self_seed, indices, threshold)
            key_shares = shamir.split(self._mask_keys.private_bytes(), indices, threshold)
            sealed = []
            for name, index in zip(roster_names, indices, strict=True):
                plaintext = seed_shares[index] + key_shares[index]
                if name == self.node:
                    self._held[name] = {
                        SecretKind.SELF_MASK: seed_shares[index],
                        SecretKind.MASK_KEY: key_shares[index],
                    }
                    continue
                key = self._pair_key(name, CIPHER_PURPOSE)
                nonce, ciphertext = keys.seal(
                    key, plaintext, share_associated_data(self.setup.session, self.node, name)
                )
                sealed.append(EncryptedShare(self.node, name, nonce, ciphertext))
            self.state = ClientState.SHARED
            return ShareBundle(self.setup.session, self.node, tuple(sealed))

    def receive_shares(self, delivery: ShareDelivery) -> None:
        """Open the shares the others sealed for this node; their senders are the
        contributors whose pairwise masks this node's input will carry."""
        self._expect(ClientState.SHARED, "receive shares")
        with self._aborting():
            self.setup.check_session(delivery.session, "the share delivery")
            if delivery.recipient != self.node:
                raise ProtocolViolation(
                    f"a share delivery for {delivery.recipient!r} reached {self.node!r}"
                )
            for sealed in delivery.shares:
                self._open(sealed)
            self._contributors = tuple(sorted(self._held))
            self._need(len(self._contributors), "nodes shared their secrets")
            self.state = ClientState.READY

    def mask_sum(self) -> npt.NDArray[np.unsignedinteger]:
        """PRG(b_u) + Σ_v ±PRG(s_uv) over the round's contributors: what :meth:`mask` adds.

        It depends only on seeds fixed once the shares are in, so a node can compute it
        while it trains (the bulk of masking: one keystream of the vector's length per
        contributor); computed once and kept for :meth:`mask`.
        """
        self._expect(ClientState.READY, "compute the masks")
        if self._mask_sum is None:
            with self._aborting():
                masks = MaskGenerator(self.setup.vector_length, self.setup.fixed_point().dtype)
                total = masks.mask(self._self_seed)
                for peer in self._contributors:
                    if peer != self.node:
                        seed = self._pair_key(peer, MASK_PURPOSE)
                        masks.add(total, seed, pair_sign(self.node, peer))
                self._mask_sum = total
        return self._mask_sum

    def mask(self, encoded: npt.NDArray[np.unsignedinteger]) -> MaskedInput:
        """Mask ``encoded`` (this node's input, already in the ring) with the self mask
        and a pairwise mask per contributor."""
        self._expect(ClientState.READY, "mask the input")
        with self._aborting():
            fixed_point = self.setup.fixed_point()
            if encoded.shape != (self.setup.vector_length,) or encoded.dtype != fixed_point.dtype:
                raise ProtocolViolation(
                    f"the input is {encoded.shape} {encoded.dtype}; the round aggregates "
                    f"{self.setup.vector_length} values of {np.dtype(fixed_point.dtype).name}"
                )
            # The masks are used once: their sum becomes the masked input, in place (a new
            # vector of the model's size would cost its pages again).
            masked = self.mask_sum()
            self._mask_sum = None
            np.add(masked, encoded, out=masked)
            self.state = ClientState.MASKED
            return MaskedInput(self.setup.session, self.node, masked)

    def confirm(self, request: UnmaskRequest) -> SurvivorSignature:
        """Check the survivor set U3 the coordinator announced and sign it (the
        consistency round); nothing is revealed yet."""
        self._expect(ClientState.MASKED, "confirm the survivors")
        if not self.checks.consistency_round:
            raise ProtocolViolation(f"{self.node!r} runs no consistency round")
        with self._aborting():
            self._check_request(request)
            if len(request.survivors) < self.setup.consistency_quorum():
                raise AggregationFailed(
                    f"only {len(request.survivors)} nodes uploaded masked inputs; revealing "
                    f"needs {self.setup.consistency_quorum()} to confirm one survivor set: the "
                    "round is abandoned and nothing was revealed"
                )
            self._request = request
            payload = survivors_payload(self.setup.session, request.survivors)
            self.state = ClientState.CONFIRMED
            return SurvivorSignature(
                self.setup.session, self.node, keys.sign(self._key_pem, payload)
            )

    def unmask(self, signatures: SurvivorSignatures) -> UnmaskShares:
        """Reveal shares of b_v for the survivors and of s_v for the dropped, once a quorum
        of the roster has signed the survivor set this node signed."""
        self._expect(ClientState.CONFIRMED, "reveal shares")
        with self._aborting():
            self.setup.check_session(signatures.session, "the survivor signatures")
            assert self._request is not None  # set with the CONFIRMED state
            self._check_signatures(signatures, self._request.survivors)
            return self._reveal(self._request)

    def unmask_without_consistency_round(self, request: UnmaskRequest) -> UnmaskShares:
        """Reveal on the coordinator's word alone (the semi-honest protocol): only for a
        client built without the consistency round, in tests and benchmarks."""
        self._expect(ClientState.MASKED, "reveal shares")
        if self.checks.consistency_round:
            raise ProtocolViolation(
                f"{self.node!r} reveals shares only after the consistency round"
            )
        with self._aborting():
            self._check_request(request)
            return self._reveal(request)

    def _reveal(self, request: UnmaskRequest) -> UnmaskShares:
        revealed = [
            RevealedShare(name, SecretKind.SELF_MASK, self._held[name][SecretKind.SELF_MASK])
            for name in sorted(request.survivors)
        ] + [
            RevealedShare(name, SecretKind.MASK_KEY, self._held[name][SecretKind.MASK_KEY])
            for name in sorted(request.dropped)
        ]
        self.state = ClientState.DONE
        return UnmaskShares(self.setup.session, self.node, tuple(revealed))

    # ---- checks ---------------------------------------------------------------------

    def _check_request(self, request: UnmaskRequest) -> None:
        """A survivor set that this node can reveal for: it partitions the contributors
        into survivors and dropped, counts this node a survivor, and has t members."""
        self.setup.check_session(request.session, "the unmask request")
        survivors, dropped = set(request.survivors), set(request.dropped)
        contributors = set(self._contributors)
        if survivors & dropped:
            raise ProtocolViolation(
                "the unmask request calls "
                f"{sorted(survivors & dropped)} both survivors and dropped: revealing both "
                "secrets of a node would unmask its input"
            )
        if survivors | dropped != contributors:
            raise ProtocolViolation(
                f"the unmask request accounts for {sorted(survivors | dropped)}, but the "
                f"nodes that shared secrets are {sorted(contributors)}"
            )
        if self.node not in survivors:
            raise ProtocolViolation(f"the unmask request does not count {self.node!r} a survivor")
        self._need(len(survivors), "nodes uploaded masked inputs")

    def _check_views(self) -> None:
        """Every advertisement on the roster carries this node's view of the round."""
        differing = {
            name: self.view.differences(advertisement.view)
            for name, advertisement in self._roster.items()
            if advertisement.view != self.view
        }
        if differing:
            told = "; ".join(
                f"{name}: other {', '.join(parts)}" for name, parts in sorted(differing.items())
            )
            raise InconsistentRound(
                f"the coordinator told {sorted(differing)} a different round than "
                f"{self.node!r} ({told}): it may be isolating one node's update (different "
                "weights or plans make the others' updates known); the round is abandoned "
                "before any share was sent"
            )

    def _check_signatures(self, signatures: SurvivorSignatures, survivors: tuple[str, ...]) -> None:
        if tuple(sorted(signatures.survivors)) != tuple(sorted(survivors)):
            raise InconsistentRound(
                f"the coordinator told {self.node!r} that {sorted(survivors)} survived but "
                f"shows signatures on {sorted(signatures.survivors)}: it told nodes different "
                "stories of who dropped; the round is abandoned and nothing was revealed"
            )
        signers: set[str] = set()
        for signature in signatures.signatures:
            name = signature.node
            if name in signers:
                raise InconsistentRound(f"two survivor signatures of {name!r}")
            if name not in self._roster or name not in survivors:
                raise InconsistentRound(
                    f"a survivor signature of {name!r}, who is not a survivor on {self.node!r}'s "
                    "roster"
                )
            self.setup.check_session(signature.session, f"the survivor signature of {name!r}")
            verify_survivor_signature(
                signature, survivors, self._roster[name].certificate, self._ca
            )
            signers.add(name)
        quorum = self.setup.consistency_quorum()
        if len(signers) < quorum:
            raise InconsistentRound(
                f"only {len(signers)} survivors ({sorted(signers)}) signed the survivor set "
                f"{sorted(survivors)}; {self.node!r} reveals shares only after {quorum} did "
                "(others may have been told another story of who dropped): the round is "
                "abandoned and nothing was revealed"
            )

    def _verified(self, roster: KeyRoster) -> dict[str, KeyAdvertisement]:
        by_name: dict[str, KeyAdvertisement] = {}
        for advertisement in roster.keys:
            name = advertisement.node
            if name not in self.setup.participants:
                raise ProtocolViolation(f"the key roster lists {name!r}, not a participant")
            if name in by_name:
                raise ProtocolViolation(f"the key roster lists {name!r} twice")
            self.setup.check_session(advertisement.session, f"the keys of {name!r}")
            verify_keys(advertisement, self.setup.session, self._ca)
            by_name[name] = advertisement
        own = by_name.get(self.node)
        if own is None or (own.cipher_public, own.mask_public) != (
            self._cipher_keys.public,
            self._mask_keys.public,
        ):
            raise ProtocolViolation(f"the key roster does not hold {self.node!r}'s own keys")
        self._need(len(by_name), "nodes advertised keys")
        return by_name

    def _open(self, sealed: EncryptedShare) -> None:
        if sealed.recipient != self.node:
            raise ProtocolViolation(
                f"a share from {sealed.sender!r} addressed to {sealed.recipient!r} was "
                f"delivered to {self.node!r}"
            )
        if sealed.sender not in self._roster or sealed.sender == self.node:
            raise ProtocolViolation(f"a share from {sealed.sender!r}, who is not on the key roster")
        if sealed.sender in self._held:
            raise ProtocolViolation(f"two shares from {sealed.sender!r}")
        key = self._pair_key(sealed.sender, CIPHER_PURPOSE)
        associated = share_associated_data(self.setup.session, sealed.sender, self.node)
        try:
            plaintext = keys.open_sealed(key, sealed.nonce, sealed.ciphertext, associated)
        except keys.UndecryptableShare as error:
            raise ProtocolViolation(
                f"the share from {sealed.sender!r} does not decrypt: it was altered, replayed "
                "or meant for another node"
            ) from error
        size = shamir.SHARE_BYTES
        if len(plaintext) != 2 * size:
            raise ProtocolViolation(f"the share from {sealed.sender!r} has the wrong length")
        self._held[sealed.sender] = {
            SecretKind.SELF_MASK: plaintext[:size],
            SecretKind.MASK_KEY: plaintext[size:],
        }

    def _pair_key(self, peer: str, purpose: bytes) -> bytes:
        advertisement = self._roster[peer]
        if purpose == CIPHER_PURPOSE:
            own, public = self._cipher_keys, advertisement.cipher_public
        else:
            own, public = self._mask_keys, advertisement.mask_public
        try:
            return keys.agree(own.private, public, purpose=purpose, session=self.setup.session)
        except ValueError as error:
            raise ProtocolViolation(f"the public key of {peer!r} is unusable: {error}") from error

    def _need(self, count: int, what: str) -> None:
        if count < self.setup.threshold:
            raise AggregationFailed(
                f"only {count} {what}; secure aggregation needs {self.setup.threshold} "
                "(the threshold): the round is abandoned and nothing was revealed"
            )

    def _expect(self, state: ClientState, action: str) -> None:
        if self.state is not state:
            raise ProtocolViolation(
                f"{self.node!r} cannot {action} now: its protocol is {self.state.value}, "
                f"not {state.value}"
            )

    @contextmanager
    def _aborting(self) -> Iterator[None]:
        """Move to ABORTED when a step fails, whatever the error."""
        try:
            yield
        except BaseException:
            self.state = ClientState.ABORTED
            raise
