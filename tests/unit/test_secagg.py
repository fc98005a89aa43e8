"""Secure aggregation end to end: exact sums with dropouts, the threshold, what the
coordinator sees, refusals of tampered or misplaced messages, and the protobuf codec."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import pytest
from google.protobuf.message import Message
from scipy import stats
from secagg_consortium import Consortium, issue_consortium

from primia.crypto import keys
from primia.crypto.secagg import (
    AggregationClient,
    AggregationFailed,
    AggregationServer,
    ClientState,
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ProtocolViolation,
    ServerState,
    Setup,
    ShareBundle,
    ShareDelivery,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskShares,
)
from primia.crypto.secagg.messages import majority
from primia.crypto.secagg.simulation import Step, simulate
from primia.federated.tasks import SecureTask
from primia.rpc import secure_codec
from primia.rpc.codec import MessageError
from primia.rpc.generated import federation_pb2 as pb

NAMES = tuple(f"node{i:02d}" for i in range(20))
CLIP = 8.0
LENGTH = 1000


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    return issue_consortium(tmp_path_factory.mktemp("pki"), NAMES)


def _mask(client: AggregationClient, delivery: ShareDelivery, values: np.ndarray) -> MaskedInput:
    """The node's third step as it runs in a round: take the shares, then mask."""
    client.receive_shares(delivery)
    return client.mask(values)


def _setup(nodes: int, *, bits: int = 32, length: int = LENGTH) -> Setup:
    return Setup(
        session=os.urandom(16),
        round=1,
        participants=NAMES[:nodes],
        threshold=majority(nodes),
        bits=bits,
        clip=CLIP,
        vector_length=length,
    )


def _inputs(setup: Setup, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each node's update in [-clip, clip], as floats and encoded in the ring."""
    rng = np.random.default_rng(seed)
    floats = {name: rng.uniform(-CLIP, CLIP, setup.vector_length) for name in setup.participants}
    fixed_point = setup.fixed_point()
    encoded = {name: fixed_point.encode(x, rng).values for name, x in floats.items()}
    return floats, encoded


def _client(consortium: Consortium, setup: Setup, name: str) -> AggregationClient:
    credentials = consortium.credentials[name]
    return AggregationClient(
        setup,
        name,
        certificate_pem=credentials.certificate_pem,
        key_pem=credentials.key_pem,
        ca_pem=consortium.ca,
    )


class Round:
    """One round driven by hand, so a test can alter what passes between the sides."""

    def __init__(self, consortium: Consortium, setup: Setup) -> None:
        self.setup = setup
        self.server = AggregationServer(setup, ca_pem=consortium.ca)
        self.clients = {name: _client(consortium, setup, name) for name in setup.participants}
        self.inputs = _inputs(setup, seed=0)[1]

    def keys(self) -> KeyRoster:
        for name, client in self.clients.items():
            self.server.receive_keys(name, client.advertise())
        return self.server.close_keys()

    def shares(self, roster: KeyRoster) -> dict[str, ShareDelivery]:
        for name, client in self.clients.items():
            self.server.receive_shares(name, client.share(roster))
        return self.server.close_shares()

    def masked(self, deliveries: Mapping[str, ShareDelivery]) -> UnmaskRequest:
        for name, client in self.clients.items():
            self.server.receive_masked(name, _mask(client, deliveries[name], self.inputs[name]))
        return self.server.close_masked()

    def until_masked(self) -> dict[str, ShareDelivery]:
        return self.shares(self.keys())

    def until_unmask(self) -> UnmaskRequest:
        return self.masked(self.until_masked())

    def reveal(self, request: UnmaskRequest) -> dict[str, UnmaskShares]:
        """The consistency round then unmasking, by every survivor of ``request``."""
        for name in request.survivors:
            self.server.receive_confirmation(name, self.clients[name].confirm(request))
        signatures = self.server.close_confirmations()
        return {name: self.clients[name].unmask(signatures) for name in request.survivors}


# ---- 1. the secure sum is the plaintext sum, bit for bit -------------------------------

DROPOUTS = [
    pytest.param(2, {}, id="2-none"),
    *(pytest.param(3, {1: step}, id=f"3-one-before-{step.name}") for step in Step),
    *(pytest.param(5, {0: step, 4: step}, id=f"5-two-before-{step.name}") for step in Step),
    pytest.param(
        20,
        {0: Step.KEYS, 7: Step.KEYS, 3: Step.SHARES, 19: Step.SHARES, 1: Step.MASKED}
        | {10: Step.MASKED, 15: Step.MASKED, 5: Step.UNMASK, 12: Step.UNMASK},
        id="20-nine-at-every-step",
    ),
    pytest.param(20, {i: Step.MASKED for i in range(1, 19, 2)}, id="20-nine-before-MASKED"),
]


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize(("nodes", "dropouts"), DROPOUTS)
def test_secure_sum_equals_the_plaintext_sum_bit_for_bit(consortium, bits, nodes, dropouts):
    setup = _setup(nodes, bits=bits)
    floats, encoded = _inputs(setup, seed=nodes + bits)
    drop_before = {NAMES[i]: step for i, step in dropouts.items()}

    aggregate, _ = simulate(
        setup, encoded, consortium.credentials, consortium.ca, drop_before=drop_before
    )

    # dropped before uploading: left out; dropped after uploading: still summed
    survivors = [n for n in setup.participants if drop_before.get(n) in (None, Step.UNMASK)]
    dangling = [n for n in setup.participants if drop_before.get(n) == Step.MASKED]
    assert aggregate.survivors == tuple(survivors)
    assert aggregate.dropped == tuple(dangling)
    fixed_point = setup.fixed_point()
    expected = np.zeros(LENGTH, dtype=fixed_point.dtype)
    for name in survivors:
        expected += encoded[name]  # mod 2^k
    assert aggregate.total.dtype == expected.dtype
    assert np.array_equal(aggregate.total, expected)

    plain = np.sum([floats[name] for name in survivors], axis=0)
    # one unit of rounding per summand; float64 falls short of a 64-bit ring by 11 bits
    tolerance = len(survivors) * (fixed_point.resolution + 4 * CLIP * 2.0**-53)
    np.testing.assert_allclose(fixed_point.decode(aggregate.total), plain, rtol=0, atol=tolerance)


def test_aggregate_reports_what_each_survivor_clipped(consortium):
    run = Round(consortium, _setup(3))
    deliveries = run.until_masked()
    for count, (name, client) in enumerate(run.clients.items()):
        masked = _mask(client, deliveries[name], run.inputs[name])
        run.server.receive_masked(name, replace(masked, clipped=count))
    request = run.server.close_masked()
    for name, revealed in run.reveal(request).items():
        run.server.receive_unmask(name, revealed)

    aggregate = run.server.finish()

    assert aggregate.clipped == {"node00": 0, "node01": 1, "node02": 2}
    assert run.server.state is ServerState.DONE
    assert all(client.state is ClientState.DONE for client in run.clients.values())


def test_masks_computed_while_training_are_the_ones_added_and_still_cancel(consortium):
    """A node computes its masks before it has its input (mask_sum, while it trains):
    mask adds exactly those, and the round's sum is still the inputs' sum."""
    run = Round(consortium, _setup(3))
    deliveries = run.until_masked()
    for name, client in run.clients.items():
        client.receive_shares(deliveries[name])
        ahead = client.mask_sum().copy()
        masked = client.mask(run.inputs[name])
        assert np.array_equal(masked.values, run.inputs[name] + ahead)
        assert not np.array_equal(masked.values, run.inputs[name])
        run.server.receive_masked(name, masked)
    request = run.server.close_masked()
    for name, revealed in run.reveal(request).items():
        run.server.receive_unmask(name, revealed)

    aggregate = run.server.finish()

    expected = sum(run.inputs.values(), start=np.zeros(LENGTH, dtype=np.uint32))
    assert np.array_equal(aggregate.total, expected)


# ---- 2. the threshold ------------------------------------------------------------------


@pytest.mark.parametrize("step", list(Step))
def test_fewer_than_the_threshold_at_any_step_fails_the_round(consortium, step):
    setup = _setup(5)  # threshold 3
    drop_before = {name: step for name in NAMES[1:4]}
    with pytest.raises(AggregationFailed, match=r"only 2 .*needs 3 \(the threshold\)"):
        simulate(
            setup,
            _inputs(setup, 0)[1],
            consortium.credentials,
            consortium.ca,
            drop_before=drop_before,
        )


def test_a_client_refuses_to_share_with_fewer_than_the_threshold(consortium):
    run = Round(consortium, _setup(5))
    roster = run.keys()
    short = replace(roster, keys=roster.keys[:2])
    client = run.clients["node00"]
    with pytest.raises(AggregationFailed, match=r"only 2 nodes advertised keys.*needs 3"):
        client.share(short)
    assert client.state is ClientState.ABORTED


def test_a_client_refuses_to_mask_with_fewer_than_the_threshold_of_shares(consortium):
    run = Round(consortium, _setup(5))
    deliveries = run.until_masked()
    client = run.clients["node00"]
    short = replace(deliveries["node00"], shares=deliveries["node00"].shares[:1])
    with pytest.raises(AggregationFailed, match=r"only 2 nodes shared.*needs 3"):
        _mask(client, short, run.inputs["node00"])
    assert client.state is ClientState.ABORTED


def test_a_client_reveals_nothing_when_told_most_nodes_dropped(consortium):
    run = Round(consortium, _setup(5))
    request = run.until_unmask()
    claim = replace(request, survivors=("node00", "node01"), dropped=NAMES[2:5])
    client = run.clients["node00"]
    with pytest.raises(AggregationFailed, match="needs 3"):
        client.confirm(claim)
    assert client.state is ClientState.ABORTED


@pytest.mark.parametrize("owner", ["node01", "node04"])
def test_an_altered_revealed_share_fails_the_round_instead_of_a_wrong_sum(consortium, owner):
    """node01 survives (its self-mask seed is rebuilt); node04 dropped (its mask key is)."""
    run = Round(consortium, _setup(5))
    deliveries = run.until_masked()
    for name, client in run.clients.items():
        if name != "node04":
            run.server.receive_masked(name, _mask(client, deliveries[name], run.inputs[name]))
    request = run.server.close_masked()
    assert request.dropped == ("node04",)
    for name, revealed in run.reveal(request).items():
        if name == "node00":
            altered = tuple(
                replace(share, share=bytes(65) + b"\x01") if share.owner == owner else share
                for share in revealed.shares
            )
            revealed = replace(revealed, shares=altered)
        run.server.receive_unmask(name, revealed)

    with pytest.raises(AggregationFailed, match=f"the shares of '{owner}''s"):
        run.server.finish()
    assert run.server.state is ServerState.FAILED


# ---- 3. what the coordinator sees ------------------------------------------------------


def _coordinator_view(
    consortium: Consortium, setup: Setup, inputs: Mapping[str, np.ndarray]
) -> list[object]:
    received: list[object] = []
    simulate(
        setup,
        inputs,
        consortium.credentials,
        consortium.ca,
        observe=lambda _, message: received.append(message),
    )
    return received


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("constant", [0.0, 3.25])
def test_a_masked_upload_is_indistinguishable_from_uniform(consortium, bits, constant):
    setup = _setup(3, bits=bits, length=100_000)
    rng = np.random.default_rng(0)
    inputs = {
        name: setup.fixed_point().encode(np.full(100_000, constant), rng).values
        for name in setup.participants
    }

    uploads = [
        m for m in _coordinator_view(consortium, setup, inputs) if isinstance(m, MaskedInput)
    ]

    assert len(uploads) == 3
    top = np.uint64(bits - 8) if bits == 64 else np.uint32(bits - 8)
    for upload in uploads:
        for byte in (upload.values & 0xFF, upload.values >> top):
            counts = np.bincount(byte.astype(np.intp), minlength=256)
            assert stats.chisquare(counts).pvalue > 1e-6, f"{upload.node}'s upload is not uniform"


def _all_bytes(message: object) -> Iterator[bytes]:
    """Every bytes field (and array) of a message, however deeply nested."""
    if isinstance(message, bytes):
        yield message
    elif isinstance(message, np.ndarray):
        yield message.tobytes()
    elif isinstance(message, tuple):
        for item in message:
            yield from _all_bytes(item)
    elif dataclasses.is_dataclass(message):
        for field in dataclasses.fields(message):
            yield from _all_bytes(getattr(message, field.name))


def test_the_coordinator_never_receives_an_unmasked_input(consortium):
    setup = _setup(5)
    inputs = _inputs(setup, seed=3)[1]

    view = _coordinator_view(consortium, setup, inputs)

    kinds = {type(message) for message in view}
    assert kinds == {KeyAdvertisement, ShareBundle, MaskedInput, SurvivorSignature, UnmaskShares}
    uploads = [message for message in view if isinstance(message, MaskedInput)]
    for upload in uploads:
        for name, encoded in inputs.items():
            agreeing = np.count_nonzero(upload.values == encoded)
            assert agreeing <= 2, f"{upload.node}'s upload agrees with {name}'s input"
    received = [data for message in view for data in _all_bytes(message)]
    for name, encoded in inputs.items():
        raw = encoded.tobytes()
        for start in range(0, len(raw) - 16, len(raw) // 8):
            window = raw[start : start + 16]
            assert not any(window in data for data in received), f"{name}'s input leaked"


# ---- 4. refusals -----------------------------------------------------------------------


def _substituted(roster: KeyRoster, victim: str, **fields: bytes) -> KeyRoster:
    advertisements = tuple(replace(ad, **fields) if ad.node == victim else ad for ad in roster.keys)
    return replace(roster, keys=advertisements)


@pytest.mark.parametrize("field", ["mask_public", "cipher_public"])
def test_a_substituted_key_is_refused_and_the_client_aborts(consortium, field):
    run = Round(consortium, _setup(3))
    roster = run.keys()
    forged = _substituted(roster, "node01", **{field: keys.KeyPair.generate().public})
    client = run.clients["node00"]

    with pytest.raises(ProtocolViolation, match="not signed by 'node01'"):
        client.share(forged)

    assert client.state is ClientState.ABORTED
    with pytest.raises(ProtocolViolation, match="aborted"):
        client.share(roster)
    with pytest.raises(ProtocolViolation, match="aborted"):
        client.unmask(UnmaskRequest(run.setup.session, NAMES[:3], ()))


def test_keys_resigned_by_another_node_are_refused(consortium):
    run = Round(consortium, _setup(3))
    roster = run.keys()
    impostor = consortium.credentials["node02"]
    substitute = keys.KeyPair.generate().public
    own = next(ad for ad in roster.keys if ad.node == "node01")
    payload = keys.signed_payload(run.setup.session, "node01", own.cipher_public, substitute)
    forged = _substituted(
        roster,
        "node01",
        mask_public=substitute,
        certificate=impostor.certificate_pem,
        signature=keys.sign(impostor.key_pem, payload),
    )

    with pytest.raises(ProtocolViolation, match="certificate of node 'node02'"):
        run.clients["node00"].share(forged)


def test_the_server_refuses_a_forged_advertisement_on_arrival(consortium):
    setup = _setup(3)
    server = AggregationServer(setup, ca_pem=consortium.ca)
    advertisement = _client(consortium, setup, "node00").advertise()
    forged = replace(advertisement, mask_public=keys.KeyPair.generate().public)

    with pytest.raises(ProtocolViolation, match="not signed by 'node00'"):
        server.receive_keys("node00", forged)
    server.receive_keys("node00", advertisement)  # the genuine one is still welcome


def test_a_roster_without_the_clients_own_keys_is_refused(consortium):
    run = Round(consortium, _setup(3))
    roster = run.keys()
    other = _client(consortium, run.setup, "node00").advertise()  # node00's, but not these
    swapped = replace(roster, keys=(other, *roster.keys[1:]))
    with pytest.raises(ProtocolViolation, match="does not hold 'node00''s own keys"):
        run.clients["node00"].share(swapped)


def test_a_roster_listing_a_node_twice_is_refused(consortium):
    run = Round(consortium, _setup(3))
    roster = run.keys()
    with pytest.raises(ProtocolViolation, match="twice"):
        run.clients["node00"].share(replace(roster, keys=(*roster.keys, roster.keys[1])))


def test_messages_of_an_earlier_round_are_refused(consortium):
    old_roster = Round(consortium, _setup(3)).keys()
    current = Round(consortium, _setup(3))

    with pytest.raises(ProtocolViolation, match="another session"):
        current.server.receive_keys("node00", old_roster.keys[0])

    current_roster = current.keys()
    client = current.clients["node00"]
    with pytest.raises(ProtocolViolation, match="another session"):
        client.share(old_roster)
    assert client.state is ClientState.ABORTED

    # an old advertisement slipped into a roster of the current session
    other = current.clients["node01"]
    mixed = replace(current_roster, keys=(old_roster.keys[0], *current_roster.keys[1:]))
    with pytest.raises(ProtocolViolation, match=r"the keys of 'node00' .*another session"):
        other.share(mixed)


def test_a_masked_input_of_an_earlier_round_is_refused(consortium):
    earlier = Round(consortium, _setup(3))
    old_deliveries = earlier.until_masked()
    old_upload = _mask(
        earlier.clients["node00"], old_deliveries["node00"], earlier.inputs["node00"]
    )
    current = Round(consortium, replace(earlier.setup, session=os.urandom(16), round=2))
    current.until_masked()

    with pytest.raises(ProtocolViolation, match="masked input of 'node00' is from another session"):
        current.server.receive_masked("node00", old_upload)


def _share(delivery: ShareDelivery, sender: str) -> EncryptedShare:
    return next(share for share in delivery.shares if share.sender == sender)


def test_a_share_addressed_to_another_node_is_refused(consortium):
    run = Round(consortium, _setup(3))
    deliveries = run.until_masked()
    for_node02 = _share(deliveries["node02"], "node00")
    misrouted = replace(
        deliveries["node01"],
        shares=(for_node02, _share(deliveries["node01"], "node02")),
    )
    with pytest.raises(ProtocolViolation, match="addressed to 'node02' was delivered to 'node01'"):
        _mask(run.clients["node01"], misrouted, run.inputs["node01"])
    assert run.clients["node01"].state is ClientState.ABORTED


def test_a_share_readdressed_to_another_node_does_not_decrypt(consortium):
    run = Round(consortium, _setup(3))
    deliveries = run.until_masked()
    readdressed = replace(_share(deliveries["node02"], "node00"), recipient="node01")
    misrouted = replace(
        deliveries["node01"],
        shares=(readdressed, _share(deliveries["node01"], "node02")),
    )
    with pytest.raises(ProtocolViolation, match="from 'node00' does not decrypt"):
        _mask(run.clients["node01"], misrouted, run.inputs["node01"])


def test_a_delivery_for_another_node_is_refused(consortium):
    run = Round(consortium, _setup(3))
    deliveries = run.until_masked()
    with pytest.raises(ProtocolViolation, match="for 'node02' reached 'node01'"):
        _mask(run.clients["node01"], deliveries["node02"], run.inputs["node01"])


def test_the_same_share_twice_is_refused(consortium):
    run = Round(consortium, _setup(3))
    deliveries = run.until_masked()
    twice = _share(deliveries["node01"], "node00")
    doubled = replace(deliveries["node01"], shares=(twice, twice))
    with pytest.raises(ProtocolViolation, match="two shares from 'node00'"):
        _mask(run.clients["node01"], doubled, run.inputs["node01"])


@pytest.mark.parametrize(
    "values",
    [np.zeros(LENGTH - 1, np.uint32), np.zeros(LENGTH + 1, np.uint32), np.zeros(LENGTH, np.uint64)],
)
def test_the_server_refuses_a_masked_input_of_the_wrong_shape(consortium, values):
    run = Round(consortium, _setup(3))
    run.until_masked()
    upload = MaskedInput(run.setup.session, "node00", values)
    with pytest.raises(ProtocolViolation, match=f"aggregates {LENGTH} values of uint32"):
        run.server.receive_masked("node00", upload)


def test_a_client_refuses_to_mask_an_input_of_the_wrong_length(consortium):
    run = Round(consortium, _setup(3))
    deliveries = run.until_masked()
    with pytest.raises(ProtocolViolation, match=f"aggregates {LENGTH} values of uint32"):
        _mask(run.clients["node00"], deliveries["node00"], np.zeros(LENGTH - 1, np.uint32))


def test_an_unmask_request_calling_a_node_both_survivor_and_dropped_is_refused(consortium):
    run = Round(consortium, _setup(5))
    request = run.until_unmask()
    both = replace(request, survivors=NAMES[:5], dropped=("node03",))
    client = run.clients["node00"]

    with pytest.raises(ProtocolViolation, match=r"\['node03'\] both survivors and dropped"):
        client.confirm(both)

    assert client.state is ClientState.ABORTED
    with pytest.raises(ProtocolViolation, match="aborted"):
        client.confirm(request)


def test_an_unmask_request_that_omits_a_contributor_is_refused(consortium):
    run = Round(consortium, _setup(5))
    request = run.until_unmask()
    partial = replace(request, survivors=NAMES[:4], dropped=())
    with pytest.raises(ProtocolViolation, match="accounts for"):
        run.clients["node00"].confirm(partial)


def test_an_unmask_request_that_calls_the_client_dropped_is_refused(consortium):
    run = Round(consortium, _setup(5))
    request = run.until_unmask()
    claim = replace(request, survivors=NAMES[1:5], dropped=("node00",))
    with pytest.raises(ProtocolViolation, match="does not count 'node00' a survivor"):
        run.clients["node00"].confirm(claim)


def test_the_server_refuses_messages_out_of_order(consortium):
    run = Round(consortium, _setup(3))
    upload = MaskedInput(run.setup.session, "node00", np.zeros(LENGTH, np.uint32))

    with pytest.raises(ProtocolViolation, match=r"from 'node00' arrived while .* collecting keys"):
        run.server.receive_masked("node00", upload)
    with pytest.raises(ProtocolViolation, match="end of share exchange arrived while"):
        run.server.close_shares()

    roster = run.keys()
    with pytest.raises(ProtocolViolation, match=r"keys from 'node00' arrived while .* shares"):
        run.server.receive_keys("node00", roster.keys[0])
    assert run.server.state is ServerState.SHARES


def test_a_client_refuses_steps_out_of_order(consortium):
    run = Round(consortium, _setup(3))
    client = run.clients["node00"]
    delivery = ShareDelivery(run.setup.session, "node00", ())
    with pytest.raises(ProtocolViolation, match=r"cannot receive shares now: .* new, not shared"):
        _mask(client, delivery, run.inputs["node00"])
    client.advertise()
    with pytest.raises(ProtocolViolation, match="cannot advertise keys now"):
        client.advertise()


def test_the_server_refuses_messages_in_another_nodes_name(consortium):
    run = Round(consortium, _setup(3))
    advertisement = run.clients["node00"].advertise()
    with pytest.raises(ProtocolViolation, match="'node01' advertised keys in the name of 'node00'"):
        run.server.receive_keys("node01", advertisement)
    with pytest.raises(ProtocolViolation, match="not a participant"):
        run.server.receive_keys("node19", advertisement)
    run.server.receive_keys("node00", advertisement)
    with pytest.raises(ProtocolViolation, match="advertised keys twice"):
        run.server.receive_keys("node00", advertisement)


# ---- 5. the protobuf codec -------------------------------------------------------------


ProtoMessage = TypeVar("ProtoMessage", bound=Message)
TASK_ID = "task-7"


def _wire(message: ProtoMessage) -> ProtoMessage:
    """Through bytes, as gRPC carries it."""
    return type(message).FromString(message.SerializeToString())


def test_every_message_round_trips_through_protobuf(consortium):
    run = Round(consortium, _setup(3))
    roster = run.keys()
    bundles = {name: client.share(roster) for name, client in run.clients.items()}
    for name, bundle in bundles.items():
        run.server.receive_shares(name, bundle)
    deliveries = run.server.close_shares()
    request = run.masked(deliveries)
    confirmations = {name: run.clients[name].confirm(request) for name in request.survivors}
    for name, confirmation in confirmations.items():
        run.server.receive_confirmation(name, confirmation)
    signatures = run.server.close_confirmations()
    revealed = {name: run.clients[name].unmask(signatures) for name in request.survivors}
    codec = secure_codec
    cases: list[tuple[Callable[..., Any], Callable[..., object], object, tuple[str, ...]]] = [
        *((codec.keys_to_proto, codec.keys_from_proto, ad, ()) for ad in roster.keys),
        (codec.roster_to_proto, codec.roster_from_proto, roster, ()),
        *((codec.bundle_to_proto, codec.bundle_from_proto, b, (n,)) for n, b in bundles.items()),
        *(
            (codec.delivery_to_proto, codec.delivery_from_proto, d, (n,))
            for n, d in deliveries.items()
        ),
        (codec.request_to_proto, codec.request_from_proto, request, ()),
        *(
            (codec.signature_to_proto, codec.signature_from_proto, c, (n,))
            for n, c in confirmations.items()
        ),
        (codec.signatures_to_proto, codec.signatures_from_proto, signatures, ()),
        *((codec.unmask_to_proto, codec.unmask_from_proto, r, (n,)) for n, r in revealed.items()),
    ]

    for to_proto, from_proto, message, authenticated_sender in cases:
        received = _wire(to_proto(TASK_ID, message))
        assert received.task_id == TASK_ID
        assert from_proto(received, *authenticated_sender) == message, type(message).__name__


def test_the_sender_of_a_bundle_is_the_authenticated_one_not_a_claimed_one(consortium):
    run = Round(consortium, _setup(3))
    bundle = run.clients["node00"].share(run.keys())
    received = secure_codec.bundle_from_proto(
        _wire(secure_codec.bundle_to_proto("t", bundle)), "node02"
    )
    assert received.sender == "node02"
    with pytest.raises(ProtocolViolation, match="in another node's name"):
        run.server.receive_shares("node02", received)


@pytest.mark.parametrize("clip", [8.0, 0.1])
def test_the_secure_task_round_trips_through_protobuf(clip):
    setup = replace(_setup(5, bits=64, length=123_456), clip=clip, round=4)
    task = SecureTask(setup=setup, weight_unit=250.0)
    message = _wire(secure_codec.secure_task_to_proto(task))
    assert secure_codec.secure_task_from_proto(message, round_number=4) == task


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"threshold": 1}, "threshold 1 must lie between 2"),
        ({"threshold": 6}, "threshold 6 must lie between 2"),
        ({"ring_bits": 16}, "ring bits must be 32 or 64"),
        ({"session_id": b"short"}, "session id is 5 bytes"),
        ({"clip": 0.0}, "clipping range must be positive"),
        ({"vector_length": 0}, "empty"),
        ({"weight_unit": 0.0}, "weight unit must be positive"),
    ],
)
def test_an_unusable_secure_task_is_refused(change, problem):
    message = secure_codec.secure_task_to_proto(SecureTask(setup=_setup(5), weight_unit=10.0))
    for field, value in change.items():
        setattr(message, field, value)
    with pytest.raises(MessageError, match=problem):
        secure_codec.secure_task_from_proto(message, round_number=1)


def test_unsorted_participants_are_refused():
    message = secure_codec.secure_task_to_proto(SecureTask(setup=_setup(3), weight_unit=10.0))
    message.participants.reverse()
    with pytest.raises(MessageError, match="distinct and sorted"):
        secure_codec.secure_task_from_proto(message, round_number=1)


def test_an_unknown_revealed_share_kind_is_refused():
    message = pb.UnmaskShares(
        task_id="t",
        session_id=bytes(16),
        shares=[
            pb.RevealedShare(owner="node00", kind="self_mask", share=bytes(66)),
            pb.RevealedShare(owner="node01", kind="both", share=bytes(66)),
        ],
    )
    with pytest.raises(MessageError, match="kind 'both'"):
        secure_codec.unmask_from_proto(message, "node02")


@pytest.mark.parametrize("bad_key", [bytes(31), bytes(32)])
def test_an_unusable_public_key_is_refused_by_the_server_before_others_see_it(consortium, bad_key):
    """A node whose signed keys cannot be used (wrong size, low order) is left out at the
    coordinator; otherwise every honest node would abandon the round on meeting it."""
    run = Round(consortium, _setup(3))
    client = run.clients["node00"]
    honest = client.advertise()
    credentials = consortium.credentials["node00"]
    payload = keys.signed_payload(run.setup.session, "node00", honest.cipher_public, bad_key)
    forged = replace(honest, mask_public=bad_key, signature=keys.sign(credentials.key_pem, payload))
    with pytest.raises(ProtocolViolation, match="mask key of 'node00' is unusable"):
        run.server.receive_keys("node00", forged)
