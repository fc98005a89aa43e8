"""The coordinator's side of secure aggregation: a state machine, one instance per round.

    KEYS ──close_keys──▶ SHARES ──close_shares──▶ MASKED ──close_masked──▶ CONFIRM
        ──close_confirmations──▶ UNMASK ──finish──▶ DONE

CONFIRM is the consistency round (Bonawitz et al. 2017, malicious server): the survivors
sign the survivor set U3 announced by ``close_masked``, and ``close_confirmations`` hands
every survivor the signatures, which each checks before it reveals anything (see
:mod:`.client`). A server built without the consistency round (tests and benchmarks
only) goes from MASKED straight to UNMASK.

In each state it accepts one kind of message (``receive_*``) from the nodes still in the
round and refuses anything else with :class:`ProtocolViolation` naming the sender and the
fault; the caller then leaves that node out. Each ``close_*`` ends a step: it fails the
round with :class:`AggregationFailed` when fewer than t nodes remain, and otherwise
returns what to send next. Masked inputs are summed as they arrive (O(d) memory whatever
the number of nodes); the server never holds an unmasked input, only the final sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from primia.crypto import keys, shamir
from primia.crypto.prg import MaskGenerator
from primia.crypto.secagg.client import MASK_PURPOSE
from primia.crypto.secagg.messages import (
    AggregationFailed,
    ConsistencyChecks,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ProtocolViolation,
    SecretKind,
    Setup,
    ShareBundle,
    ShareDelivery,
    SurvivorSignature,
    SurvivorSignatures,
    UnmaskRequest,
    UnmaskShares,
    pair_sign,
    verify_keys,
    verify_survivor_signature,
)


class ServerState(Enum):
    KEYS = "collecting keys"
    SHARES = "collecting shares"
    MASKED = "collecting masked inputs"
    CONFIRM = "collecting survivor signatures"
    UNMASK = "collecting unmask shares"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Aggregate:
    total: npt.NDArray[np.unsignedinteger]
    """Σ x_u mod 2^k over the survivors (decode with ``setup.fixed_point()``)."""
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    """Nodes that shared secrets but did not upload (their masks were removed)."""
    clipped: Mapping[str, int]


class AggregationServer:
    """The coordinator's run of one round's protocol (see the module docstring).

    With ``ca_pem`` it checks each key advertisement's and survivor signature on arrival,
    so a node with a broken certificate is left out before the others see its keys.
    """

    def __init__(
        self,
        setup: Setup,
        *,
        ca_pem: bytes | None = None,
        checks: ConsistencyChecks | None = None,
    ) -> None:
        problems = setup.problems()
        if problems:
            raise ValueError("unusable secure-aggregation setup: " + "; ".join(problems))
        self.setup = setup
        self.state = ServerState.KEYS
        self.checks = checks or ConsistencyChecks()
        self._ca = ca_pem
        self._dtype = setup.fixed_point().dtype
        self._keys: dict[str, KeyAdvertisement] = {}
        self._bundles: dict[str, ShareBundle] = {}
        self._total: npt.NDArray[np.unsignedinteger] | None = None
        self._uploaded: dict[str, int] = {}
        """Who uploaded a masked input, with the number of values it clipped."""
        self._revealed: dict[str, UnmaskShares] = {}
        self._contributors: tuple[str, ...] = ()
        self._request: UnmaskRequest | None = None
        self._confirmed: dict[str, SurvivorSignature] = {}

    # ---- step 1: keys ---------------------------------------------------------------

    def receive_keys(self, node: str, advertisement: KeyAdvertisement) -> None:
        self._expect(ServerState.KEYS, node, "keys")
        self._check(node, advertisement.session, "keys")
        if advertisement.node != node:
            raise ProtocolViolation(
                f"{node!r} advertised keys in the name of {advertisement.node!r}"
            )
        if node in self._keys:
            raise ProtocolViolation(f"{node!r} advertised keys twice")
        if self._ca is not None:
            verify_keys(advertisement, self.setup.session, self._ca)
        self._keys[node] = advertisement

    def close_keys(self) -> KeyRoster:
        self._expect(ServerState.KEYS, None, "the end of key advertisement")
        self._need(len(self._keys), "nodes advertised keys")
        self.state = ServerState.SHARES
        return KeyRoster(self.setup.session, tuple(self._keys[name] for name in sorted(self._keys)))

    # ---- step 2: shares -------------------------------------------------------------

    def receive_shares(self, node: str, bundle: ShareBundle) -> None:
        self._expect(ServerState.SHARES, node, "shares")
        self._check(node, bundle.session, "shares")
        if node not in self._keys:
            raise ProtocolViolation(f"{node!r} sent shares but is not on the key roster")
        if bundle.sender != node or any(share.sender != node for share in bundle.shares):
            raise ProtocolViolation(f"{node!r} sent shares in another node's name")
        if node in self._bundles:
            raise ProtocolViolation(f"{node!r} sent shares twice")
        recipients = [share.recipient for share in bundle.shares]
        expected = sorted(set(self._keys) - {node})
        if sorted(recipients) != expected:
            raise ProtocolViolation(
                f"{node!r} sent shares for {sorted(recipients)}; the key roster asks for one "
                f"share for each of {expected}"
            )
        self._bundles[node] = bundle

    def close_shares(self) -> dict[str, ShareDelivery]:
        """Each contributor's sealed shares from the other contributors."""
        self._expect(ServerState.SHARES, None, "the end of share exchange")
        self._need(len(self._bundles), "nodes shared their secrets")
        self._contributors = tuple(sorted(self._bundles))
        inbox: dict[str, list] = {name: [] for name in self._contributors}
        for bundle in self._bundles.values():
            for share in bundle.shares:
                if share.recipient in inbox:
                    inbox[share.recipient].append(share)
        self.state = ServerState.MASKED
        return {
            name: ShareDelivery(self.setup.session, name, tuple(shares))
            for name, shares in inbox.items()
        }

    # ---- step 3: masked inputs ------------------------------------------------------

    def receive_masked(self, node: str, masked: MaskedInput) -> None:
        self._expect(ServerState.MASKED, node, "a masked input")
        self._check(node, masked.session, "masked input")
        if masked.node != node:
            raise ProtocolViolation(f"{node!r} uploaded a masked input in {masked.node!r}'s name")
        if node not in self._contributors:
            raise ProtocolViolation(f"{node!r} uploaded a masked input without sharing secrets")
        if node in self._uploaded:
            raise ProtocolViolation(f"{node!r} uploaded two masked inputs")
        values = masked.values
        expected = self.setup.vector_length
        if values.shape != (expected,) or values.dtype != self._dtype:
            raise ProtocolViolation(
                f"the masked input of {node!r} is {values.size} values of {values.dtype}; "
                f"this round aggregates {expected} values of {np.dtype(self._dtype).name}"
            )
        if self._total is None:
            self._total = values.copy()
        else:
            np.add(self._total, values, out=self._total)
        self._uploaded[node] = masked.clipped

    def close_masked(self) -> UnmaskRequest:
        self._expect(ServerState.MASKED, None, "the end of masked upload")
        self._need(len(self._uploaded), "nodes uploaded masked inputs")
        survivors = tuple(sorted(self._uploaded))
        dropped = tuple(name for name in self._contributors if name not in self._uploaded)
        self._request = UnmaskRequest(self.setup.session, survivors, dropped)
        if self.checks.consistency_round:
            self._need(len(survivors), "nodes uploaded masked inputs", self._quorum())
            self.state = ServerState.CONFIRM
        else:
            self.state = ServerState.UNMASK
        return self._request

    # ---- step 4: consistency round ------------------------------------------------

    def receive_confirmation(self, node: str, signature: SurvivorSignature) -> None:
        self._expect(ServerState.CONFIRM, node, "a survivor signature")
        self._check(node, signature.session, "survivor signature")
        assert self._request is not None
        if signature.node != node or node not in self._request.survivors:
            raise ProtocolViolation(f"{node!r} signed the survivors but is not a survivor")
        if node in self._confirmed:
            raise ProtocolViolation(f"{node!r} signed the survivors twice")
        if self._ca is not None:
            try:
                verify_survivor_signature(
                    signature, self._request.survivors, self._keys[node].certificate, self._ca
                )
            except ProtocolViolation as error:
                raise ProtocolViolation(
                    f"{node!r}'s signature on the survivors does not verify: {error}"
                ) from error
        self._confirmed[node] = signature

    def close_confirmations(self) -> SurvivorSignatures:
        """The signatures on U3 that every survivor checks before it reveals."""
        self._expect(ServerState.CONFIRM, None, "the end of the consistency round")
        self._need(len(self._confirmed), "survivors signed the survivor set", self._quorum())
        assert self._request is not None
        self.state = ServerState.UNMASK
        return SurvivorSignatures(
            self.setup.session,
            self._request.survivors,
            tuple(self._confirmed[name] for name in sorted(self._confirmed)),
        )

    # ---- step 5: unmask -------------------------------------------------------------

    def receive_unmask(self, node: str, revealed: UnmaskShares) -> None:
        self._expect(ServerState.UNMASK, node, "unmask shares")
        self._check(node, revealed.session, "unmask shares")
        assert self._request is not None
        if revealed.node != node or node not in self._request.survivors:
            raise ProtocolViolation(f"{node!r} sent unmask shares but is not a survivor")
        if self.checks.consistency_round and node not in self._confirmed:
            raise ProtocolViolation(f"{node!r} sent unmask shares without signing the survivors")
        if node in self._revealed:
            raise ProtocolViolation(f"{node!r} sent unmask shares twice")
        wanted = {(name, SecretKind.SELF_MASK) for name in self._request.survivors} | {
            (name, SecretKind.MASK_KEY) for name in self._request.dropped
        }
        got = [(share.owner, share.kind) for share in revealed.shares]
        if len(got) != len(wanted) or set(got) != wanted:
            raise ProtocolViolation(
                f"{node!r} revealed shares {sorted(got)}; the request asked for {sorted(wanted)}"
            )
        if any(len(share.share) != shamir.SHARE_BYTES for share in revealed.shares):
            raise ProtocolViolation(f"{node!r} revealed a share of the wrong length")
        self._revealed[node] = revealed

    def finish(self) -> Aggregate:
        """Remove every remaining mask from the running sum (the formula in the package
        docstring) and return Σ x_u over the survivors."""
        self._expect(ServerState.UNMASK, None, "unmasking")
        self._need(len(self._revealed), "survivors revealed their shares")
        assert self._request is not None and self._total is not None
        request, setup = self._request, self.setup
        holders = sorted(self._revealed)[: setup.threshold]
        shares: dict[tuple[str, SecretKind], dict[int, bytes]] = {}
        for holder in holders:
            for share in self._revealed[holder].shares:
                shares.setdefault((share.owner, share.kind), {})[setup.index(holder)] = share.share
        total = self._total
        masks = MaskGenerator(setup.vector_length, self._dtype)
        for survivor in request.survivors:
            seed = self._reconstruct(
                shares[(survivor, SecretKind.SELF_MASK)], survivor, "self mask"
            )
            masks.add(total, seed, -1)
        for gone in request.dropped:
            secret = self._reconstruct(shares[(gone, SecretKind.MASK_KEY)], gone, "mask key")
            mask_keys = keys.KeyPair.from_private_bytes(secret)
            if mask_keys.public != self._keys[gone].mask_public:
                self.state = ServerState.FAILED
                raise AggregationFailed(
                    f"the shares of {gone!r}'s mask key do not rebuild the key it advertised: "
                    "a survivor revealed a wrong share; the round is abandoned"
                )
            for survivor in request.survivors:
                seed = keys.agree(
                    mask_keys.private,
                    self._keys[survivor].mask_public,
                    purpose=MASK_PURPOSE,
                    session=setup.session,
                )
                # survivor added pair_sign(survivor, gone)·PRG(seed); take it away
                masks.add(total, seed, -pair_sign(survivor, gone))
        self.state = ServerState.DONE
        self._total = None
        return Aggregate(
            total=total,
            survivors=request.survivors,
            dropped=request.dropped,
            clipped=dict(self._uploaded),
        )

    # ---- checks ---------------------------------------------------------------------

    def _reconstruct(self, shares: Mapping[int, bytes], owner: str, what: str) -> bytes:
        try:
            return shamir.combine(shares)
        except ValueError as error:
            self.state = ServerState.FAILED
            raise AggregationFailed(
                f"the shares of {owner!r}'s {what} do not combine: {error}"
            ) from error

    def _check(self, node: str, session: bytes, what: str) -> None:
        if node not in self.setup.participants:
            raise ProtocolViolation(f"{node!r} sent {what} but is not a participant of the round")
        self.setup.check_session(session, f"the {what} of {node!r}")

    def _expect(self, state: ServerState, node: str | None, what: str) -> None:
        if self.state is not state:
            sender = f" from {node!r}" if node else ""
            raise ProtocolViolation(
                f"{what}{sender} arrived while the protocol is {self.state.value}"
            )

    def _quorum(self) -> int:
        return self.setup.consistency_quorum()

    def _need(self, count: int, what: str, needed: int | None = None) -> None:
        needed = self.setup.threshold if needed is None else needed
        if count < needed:
            self.state = ServerState.FAILED
            which = "the threshold" if needed == self.setup.threshold else "the consistency quorum"
            raise AggregationFailed(
                f"only {count} {what}; secure aggregation needs {needed} "
                f"({which}): the round is abandoned and nothing was revealed"
            )
