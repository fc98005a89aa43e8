"""Secure aggregation (Bonawitz et al., CCS 2017): the coordinator learns Σ x_i, nothing else.

Five steps, each a barrier at the coordinator, with U1 ⊇ U2 ⊇ U3 ⊇ U4 the nodes still
taking part after each:

1. **Keys** — every node advertises two fresh X25519 public keys, signed with its TLS
   certificate's key; the coordinator broadcasts the roster U1 (|U1| ≥ t).
2. **Shares** — every node verifies every signature, draws a self-mask seed b_u and
   Shamir-shares b_u and its mask private key s_u among U1 (threshold t), each share
   sealed for its recipient (ChaCha20-Poly1305, key from their cipher keys); the
   coordinator routes them (it cannot open them). Those who sent shares form U2.
3. **Masked input** — node u uploads y_u = x_u + PRG(b_u) + Σ_{v∈U2∖u} ±PRG(s_uv)
   mod 2^k, with + when u < v and − when v < u, so pairwise masks cancel in the sum.
   Those who uploaded form U3; y_u alone is uniformly distributed.
4. **Consistency round** — every node of U3 signs U3 as it was told it; the coordinator
   shows every survivor the signatures, and a node goes on only when at least
   q = max(t, ⌊n/2⌋+1) survivors of its roster signed the very set it signed.
5. **Unmask** — every node of U3 reveals its shares of b_v for v ∈ U3 and of s_v for the
   dropped v ∈ U2∖U3 (never both for one node). From t of them the coordinator removes
   the self masks of the survivors and the dangling pairwise masks of the dropped:

       Σ_{u∈U3} x_u = Σ_{u∈U3} y_u − Σ_{u∈U3} PRG(b_u) − Σ_{v∈U2∖U3} Σ_{u∈U3} ±PRG(s_uv).

Besides, every node signs into its key advertisement the digests of the weights, plan
and participant list it received (:class:`RoundView`) and shares nothing unless every
advertisement on its roster carries the same.

Guarantee: against a semi-honest coordinator and any t − 1 colluding nodes, the
coordinator's view is simulatable from the sum of the survivors' inputs alone. Against a
coordinator that deviates at will (with no colluding node): key substitution is detected
by the signatures; different weights, plans or participant lists sent to different nodes
abort the round before any share is sent; a coordinator that lies about who dropped
cannot gather the self mask and the mask key of any node, because two survivor sets
cannot both gather q signatures (2q > n) and an honest node signs one. With c colluding
nodes the last holds while q > (n + c)/2 (see docs/secure-aggregation.md).

:mod:`.messages` holds the messages, :mod:`.client` the node's state machine and
:mod:`.server` the coordinator's; neither knows how messages travel.
"""

from primia.crypto.secagg.client import AggregationClient, ClientState
from primia.crypto.secagg.messages import (
    UNSAFE_WITHOUT_CONSISTENCY_CHECKS,
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
)
from primia.crypto.secagg.server import Aggregate, AggregationServer, ServerState

__all__ = [
    "UNSAFE_WITHOUT_CONSISTENCY_CHECKS",
    "Aggregate",
    "AggregationClient",
    "AggregationFailed",
    "AggregationServer",
    "ClientState",
    "ConsistencyChecks",
    "EncryptedShare",
    "InconsistentRound",
    "KeyAdvertisement",
    "KeyRoster",
    "MaskedInput",
    "ProtocolViolation",
    "RevealedShare",
    "RoundView",
    "SecretKind",
    "ServerState",
    "Setup",
    "ShareBundle",
    "ShareDelivery",
    "SurvivorSignature",
    "SurvivorSignatures",
    "UnmaskRequest",
    "UnmaskShares",
]
