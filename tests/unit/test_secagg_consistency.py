"""A coordinator that tells nodes different things (issue 20): the model-consistency check
and the consistency round, each shown to stop an attack that succeeds without it."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pytest
from secagg_consortium import Consortium, issue_consortium

from primia.crypto.secagg import (
    UNSAFE_WITHOUT_CONSISTENCY_CHECKS,
    AggregationClient,
    AggregationServer,
    ClientState,
    ConsistencyChecks,
    InconsistentRound,
    KeyRoster,
    ProtocolViolation,
    RoundView,
    ServerState,
    Setup,
    SurvivorSignature,
    SurvivorSignatures,
    UnmaskRequest,
    UnmaskShares,
)
from primia.crypto.secagg.messages import participants_digest
from primia.crypto.secagg.simulation import unmask_one
from primia.errors import ConfigError
from primia.federated.tasks import TaskRefused
from primia.federated.used_sessions import USED_SESSIONS_FILENAME, UsedSessions

NAMES = tuple(f"node{i}" for i in range(5))
LENGTH = 64
CLIP = 8.0


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Consortium:
    return issue_consortium(tmp_path_factory.mktemp("pki"), NAMES)


def _setup(nodes: int, threshold: int, participants: tuple[str, ...] | None = None) -> Setup:
    return Setup(
        session=os.urandom(16),
        round=1,
        participants=participants or NAMES[:nodes],
        threshold=threshold,
        bits=32,
        clip=CLIP,
        vector_length=LENGTH,
    )


def _view(setup: Setup, weights: bytes = b"global weights") -> RoundView:
    return RoundView(
        weights=hashlib.sha256(weights).digest(),
        plan=hashlib.sha256(b"the plan").digest(),
        participants=participants_digest(setup.participants),
    )


class Round:
    """One round driven by hand, so a test can play a lying coordinator."""

    def __init__(
        self,
        consortium: Consortium,
        setup: Setup,
        *,
        checks: ConsistencyChecks | None = None,
        views: Mapping[str, RoundView] | None = None,
        setups: Mapping[str, Setup] | None = None,
    ) -> None:
        self.setup = setup
        self.checks = checks or ConsistencyChecks()
        views = views or {}
        setups = setups or {}
        self.server = AggregationServer(setup, ca_pem=consortium.ca, checks=self.checks)
        self.clients = {}
        for name in setup.participants:
            own = setups.get(name, setup)
            self.clients[name] = AggregationClient(
                own,
                name,
                certificate_pem=consortium.credentials[name].certificate_pem,
                key_pem=consortium.credentials[name].key_pem,
                ca_pem=consortium.ca,
                view=views.get(name, _view(own)),
                checks=self.checks,
            )
        rng = np.random.default_rng(7)
        fixed_point = setup.fixed_point()
        self.inputs = {
            name: fixed_point.encode(rng.uniform(-1, 1, LENGTH), rng).values
            for name in setup.participants
        }
        self.uploads: dict[str, np.ndarray] = {}

    def keys(self) -> KeyRoster:
        for name, client in self.clients.items():
            self.server.receive_keys(name, client.advertise())
        return self.server.close_keys()

    def until_unmask(self) -> UnmaskRequest:
        roster = self.keys()
        for name, client in self.clients.items():
            self.server.receive_shares(name, client.share(roster))
        deliveries = self.server.close_shares()
        for name, client in self.clients.items():
            client.receive_shares(deliveries[name])
            masked = client.mask(self.inputs[name].copy())
            self.uploads[name] = masked.values.copy()
            self.server.receive_masked(name, masked)
        return self.server.close_masked()

    def mask_publics(self) -> dict[str, bytes]:
        return {name: client._mask_keys.public for name, client in self.clients.items()}


# ---- one model for everyone ------------------------------------------------------------


def _share_outcomes(run: Round, roster: KeyRoster) -> dict[str, str]:
    """Each node's answer to the roster: 'shared' or the error it raised."""
    outcomes = {}
    for name, client in run.clients.items():
        try:
            client.share(roster)
            outcomes[name] = "shared"
        except ProtocolViolation as error:
            outcomes[name] = str(error)
    return outcomes


def test_other_weights_for_one_node_abort_the_round_at_every_node_naming_it(consortium):
    """The coordinator sends node2 other weights (Pasquini et al.): every node sees node2's
    signed view differ and sends no share; node2 sees everyone else's differ."""
    setup = _setup(4, 3)
    run = Round(consortium, setup, views={"node2": _view(setup, b"crafted weights")})
    outcomes = _share_outcomes(run, run.keys())

    for name in ("node0", "node1", "node3"):
        assert "told ['node2'] a different round" in outcomes[name]
        assert "node2: other weights" in outcomes[name]
    assert "told ['node0', 'node1', 'node3'] a different round" in outcomes["node2"]
    assert all(client.state is ClientState.ABORTED for client in run.clients.values())


def test_without_the_check_other_weights_isolate_the_targets_update(consortium):
    """The same attack without the check: the round completes, and when the others'
    updates are known to the coordinator (here zero: their crafted model learns nothing)
    the aggregate is the target's update, bit for bit."""
    setup = _setup(4, 3)
    run = Round(
        consortium,
        setup,
        checks=UNSAFE_WITHOUT_CONSISTENCY_CHECKS,
        views={"node2": _view(setup, b"crafted weights")},
    )
    for name in ("node0", "node1", "node3"):
        run.inputs[name] = np.zeros(LENGTH, np.uint32)
    request = run.until_unmask()
    for name in request.survivors:
        revealed = run.clients[name].unmask_without_consistency_round(request)
        run.server.receive_unmask(name, revealed)

    np.testing.assert_array_equal(run.server.finish().total, run.inputs["node2"])


def _without_node4(roster: KeyRoster) -> KeyRoster:
    """The roster as node3's participant list would have it (node4 hidden)."""
    return replace(roster, keys=tuple(ad for ad in roster.keys if ad.node != "node4"))


def test_a_participant_list_that_differs_between_nodes_aborts_the_round(consortium):
    """node3 is told the participants are node0..node3 (a smaller round), the others
    node0..node4, and node4 is kept off the roster: everyone aborts, naming the other
    side."""
    setup = _setup(5, 3)
    smaller = replace(setup, participants=NAMES[:4])
    run = Round(consortium, setup, setups={"node3": smaller})
    outcomes = _share_outcomes(run, _without_node4(run.keys()))

    assert "told ['node3'] a different round" in outcomes["node0"]
    assert "node3: other participants" in outcomes["node0"]
    assert "told ['node0', 'node1', 'node2'] a different round" in outcomes["node3"]
    assert "shared" not in outcomes.values()


def test_without_the_check_a_differing_participant_list_goes_unnoticed(consortium):
    setup = _setup(5, 3)
    smaller = replace(setup, participants=NAMES[:4])
    run = Round(
        consortium, setup, checks=UNSAFE_WITHOUT_CONSISTENCY_CHECKS, setups={"node3": smaller}
    )
    outcomes = _share_outcomes(run, _without_node4(run.keys()))
    del outcomes["node4"]  # kept off the roster, it is not asked to share
    assert set(outcomes.values()) == {"shared"}


def test_a_view_rewritten_by_the_coordinator_breaks_the_signature(consortium):
    """To hide the difference the coordinator rewrites node2's view to match: the
    signature no longer verifies."""
    setup = _setup(4, 3)
    run = Round(consortium, setup, views={"node2": _view(setup, b"crafted weights")})
    roster = run.keys()
    honest_view = _view(setup)
    rewritten = replace(
        roster,
        keys=tuple(
            replace(ad, view=honest_view) if ad.node == "node2" else ad for ad in roster.keys
        ),
    )
    with pytest.raises(ProtocolViolation, match="not signed by 'node2'"):
        run.clients["node0"].share(rewritten)


def test_a_malformed_view_is_refused_by_the_coordinator_on_arrival(consortium):
    setup = _setup(3, 2)
    run = Round(consortium, setup)
    advertisement = run.clients["node0"].advertise()
    broken = replace(advertisement, view=replace(advertisement.view, plan=b"short"))
    with pytest.raises(ProtocolViolation, match="plan digest is 5 bytes"):
        run.server.receive_keys("node0", broken)


# ---- the consistency round -------------------------------------------------------------

STORIES = [(4, 2), (4, 3), (5, 2), (5, 3)]


def _lie_about_the_target(
    run: Round, request: UnmaskRequest
) -> tuple[dict[str, UnmaskRequest], dict[str, UnmaskShares]]:
    """The coordinator tells the first half (the target node0 among them) that everyone
    survived, the rest that node0 dropped; it gathers each side's signatures and shows each
    side the signatures on its own story. Returns each node's story and what was revealed."""
    names = list(request.survivors)
    half = (len(names) + 1) // 2
    alive = request
    dead = replace(
        request,
        survivors=tuple(n for n in names if n != "node0"),
        dropped=("node0", *request.dropped),
    )
    stories = {name: alive if i < half else dead for i, name in enumerate(names)}
    revealed: dict[str, UnmaskShares] = {}
    if not run.checks.consistency_round:
        for name, story in stories.items():
            revealed[name] = run.clients[name].unmask_without_consistency_round(story)
        return stories, revealed
    signed: dict[str, SurvivorSignature] = {}
    for name, story in stories.items():
        signed[name] = run.clients[name].confirm(story)
    for name, story in stories.items():
        same = tuple(signed[other] for other in names if stories[other] is story)
        with contextlib.suppress(InconsistentRound):  # the node refuses: nothing revealed
            revealed[name] = run.clients[name].unmask(
                SurvivorSignatures(request.session, story.survivors, same)
            )
    return stories, revealed


def _owners_of_both_secrets(revealed: Mapping[str, UnmaskShares]) -> set[str]:
    kinds: dict[str, set[str]] = {}
    for message in revealed.values():
        for share in message.shares:
            kinds.setdefault(share.owner, set()).add(share.kind.value)
    return {owner for owner, found in kinds.items() if len(found) == 2}


@pytest.mark.parametrize(("nodes", "threshold"), STORIES)
def test_different_dropout_stories_reveal_nothing(consortium, nodes, threshold):
    """Told node0 survived (first half) or dropped (the rest), the side told node0 dropped
    never gathers a quorum and reveals nothing; with an even split neither side does. No
    node's two secrets are both revealed and node0's input stays masked."""
    run = Round(consortium, _setup(nodes, threshold))
    request = run.until_unmask()

    stories, revealed = _lie_about_the_target(run, request)

    told_dropped = {name for name, story in stories.items() if "node0" in story.dropped}
    assert not told_dropped & set(revealed)
    assert all(run.clients[name].state is ClientState.ABORTED for name in told_dropped)
    if nodes % 2 == 0:
        assert revealed == {}
    assert _owners_of_both_secrets(revealed) == set()
    with pytest.raises(ValueError, match="were revealed"):
        unmask_one(run.setup, "node0", run.uploads["node0"], revealed, run.mask_publics())


@pytest.mark.parametrize(("nodes", "threshold"), STORIES)
def test_without_the_consistency_round_dropout_stories_unmask_a_node(consortium, nodes, threshold):
    """The same lie against the protocol without the round: nodes reveal self-mask
    shares and mask-key shares of node0. With t ≤ n/2 each side has t nodes and node0's
    input is recovered bit for bit; with t > n/2 the one-reveal-per-node rule already
    keeps one side short of t (the lie is still answered, with contradictory shares)."""
    run = Round(consortium, _setup(nodes, threshold), checks=UNSAFE_WITHOUT_CONSISTENCY_CHECKS)
    request = run.until_unmask()

    _, revealed = _lie_about_the_target(run, request)

    assert "node0" in _owners_of_both_secrets(revealed)
    if 2 * threshold <= nodes:
        recovered = unmask_one(
            run.setup, "node0", run.uploads["node0"], revealed, run.mask_publics()
        )
        np.testing.assert_array_equal(recovered, run.inputs["node0"])
    else:
        with pytest.raises(ValueError, match="were revealed"):
            unmask_one(run.setup, "node0", run.uploads["node0"], revealed, run.mask_publics())


def test_the_quorum_is_a_majority_even_when_the_threshold_is_lower():
    assert _setup(4, 2).consistency_quorum() == 3
    assert _setup(5, 2).consistency_quorum() == 3
    assert _setup(5, 4).consistency_quorum() == 4


def test_an_honest_round_with_the_consistency_round_sums_exactly(consortium):
    run = Round(consortium, _setup(5, 3))
    request = run.until_unmask()
    for name in request.survivors:
        run.server.receive_confirmation(name, run.clients[name].confirm(request))
    signatures = run.server.close_confirmations()
    for name in request.survivors:
        run.server.receive_unmask(name, run.clients[name].unmask(signatures))
    total = run.server.finish().total
    expected = sum(run.inputs.values(), np.zeros(LENGTH, np.uint32))
    np.testing.assert_array_equal(total, expected)


def _confirmed(run: Round, request: UnmaskRequest) -> dict[str, SurvivorSignature]:
    return {name: run.clients[name].confirm(request) for name in request.survivors}


def test_signatures_on_another_survivor_set_are_refused(consortium):
    run = Round(consortium, _setup(4, 3))
    request = run.until_unmask()
    signed = _confirmed(run, request)
    other = tuple(n for n in request.survivors if n != "node3")
    shown = SurvivorSignatures(request.session, other, tuple(signed.values()))
    with pytest.raises(InconsistentRound, match="told nodes different stories"):
        run.clients["node0"].unmask(shown)
    assert run.clients["node0"].state is ClientState.ABORTED


def test_a_signature_made_on_another_set_does_not_count(consortium):
    """The coordinator relabels node3's signature (made on another story) as one on
    node0's set: it does not verify."""
    run = Round(consortium, _setup(4, 3))
    request = run.until_unmask()
    signed = _confirmed(run, request)
    forged = replace(signed["node3"], signature=signed["node2"].signature)
    shown = SurvivorSignatures(
        request.session, request.survivors, (signed["node0"], signed["node1"], forged)
    )
    with pytest.raises(InconsistentRound, match="signature said to be 'node3''s"):
        run.clients["node0"].unmask(shown)


def test_fewer_signatures_than_the_quorum_reveal_nothing(consortium):
    run = Round(consortium, _setup(4, 2))
    request = run.until_unmask()
    signed = _confirmed(run, request)
    shown = SurvivorSignatures(
        request.session, request.survivors, (signed["node0"], signed["node1"])
    )
    with pytest.raises(InconsistentRound, match=r"only 2 survivors.*after 3 did"):
        run.clients["node0"].unmask(shown)


def test_a_signature_twice_or_from_a_non_survivor_is_refused(consortium):
    run = Round(consortium, _setup(4, 3))
    request = run.until_unmask()
    signed = _confirmed(run, request)
    twice = SurvivorSignatures(
        request.session, request.survivors, (signed["node1"], signed["node1"], signed["node2"])
    )
    with pytest.raises(InconsistentRound, match="two survivor signatures of 'node1'"):
        run.clients["node0"].unmask(twice)

    run = Round(consortium, _setup(4, 3))
    request = run.until_unmask()
    for name in request.survivors:
        run.clients[name].confirm(request)
    outsider = SurvivorSignature(request.session, "node4", b"x")
    shown = SurvivorSignatures(request.session, request.survivors, (outsider,))
    with pytest.raises(InconsistentRound, match="'node4', who is not a survivor"):
        run.clients["node1"].unmask(shown)


def test_a_node_confirms_once_and_never_reveals_both_secrets_of_a_peer(consortium):
    """After signing one story a node answers no other: it cannot be made to reveal b_v
    for one set and s_v for another."""
    run = Round(consortium, _setup(4, 2))
    request = run.until_unmask()
    client = run.clients["node1"]
    client.confirm(request)
    dead = replace(request, survivors=("node1", "node2", "node3"), dropped=("node0",))
    with pytest.raises(ProtocolViolation, match="cannot confirm the survivors now"):
        client.confirm(dead)
    with pytest.raises(ProtocolViolation, match="cannot reveal shares now"):
        client.unmask_without_consistency_round(dead)


def test_the_server_refuses_a_survivor_signature_that_does_not_verify(consortium):
    run = Round(consortium, _setup(4, 3))
    request = run.until_unmask()
    signed = _confirmed(run, request)
    with pytest.raises(ProtocolViolation, match="'node1''s signature on the survivors"):
        run.server.receive_confirmation(
            "node1", replace(signed["node1"], signature=signed["node2"].signature)
        )
    with pytest.raises(ProtocolViolation, match="not a survivor"):
        run.server.receive_confirmation("node2", signed["node1"])
    run.server.receive_confirmation("node1", signed["node1"])
    with pytest.raises(ProtocolViolation, match="twice"):
        run.server.receive_confirmation("node1", signed["node1"])


def test_the_server_needs_the_quorum_of_signatures(consortium):
    run = Round(consortium, _setup(4, 2))
    request = run.until_unmask()
    signed = _confirmed(run, request)
    for name in ("node0", "node1"):
        run.server.receive_confirmation(name, signed[name])
    with pytest.raises(Exception, match=r"only 2 survivors signed.*needs 3"):
        run.server.close_confirmations()
    assert run.server.state is ServerState.FAILED


def test_unmask_shares_before_the_consistency_round_are_refused_by_the_server(consortium):
    run = Round(consortium, _setup(3, 2))
    run.until_unmask()
    with pytest.raises(
        ProtocolViolation, match="arrived while the protocol is collecting survivor"
    ):
        run.server.receive_unmask("node0", UnmaskShares(run.setup.session, "node0", ()))


# ---- a session id used twice -----------------------------------------------------------


def _signatures_of_an_earlier_round(consortium: Consortium, setup: Setup) -> SurvivorSignatures:
    """A round of ``setup``'s session in which node0 dropped before uploading: the
    survivors' signatures on the others, as the coordinator keeps them."""
    earlier = Round(consortium, setup)
    roster = earlier.keys()
    for name, client in earlier.clients.items():
        earlier.server.receive_shares(name, client.share(roster))
    deliveries = earlier.server.close_shares()
    for name in setup.participants[1:]:
        client = earlier.clients[name]
        client.receive_shares(deliveries[name])
        earlier.server.receive_masked(name, client.mask(earlier.inputs[name].copy()))
    request = earlier.server.close_masked()
    for name in request.survivors:
        earlier.server.receive_confirmation(name, earlier.clients[name].confirm(request))
    return earlier.server.close_confirmations()


def test_a_reused_session_lets_earlier_signatures_unmask_a_node_so_nodes_refuse_it(
    consortium, tmp_path
):
    """The coordinator chooses the session id. Given one a second time, the protocol
    accepts the survivor signatures of the earlier round: node1 and node2, told node0
    dropped, reveal its mask key on signatures no node of this round made, while node3 and
    node4, told the truth, reveal its self-mask seed; node0's input comes back bit for bit
    (t = 2 of 5: the consistency round as the second line of defence). Hence each node
    takes part in a session once (primia.federated.used_sessions), persisted."""
    setup = _setup(5, 2)
    replayed = _signatures_of_an_earlier_round(consortium, setup)
    assert replayed.survivors == NAMES[1:5]
    run = Round(consortium, setup)
    request = run.until_unmask()
    dead = replace(request, survivors=replayed.survivors, dropped=("node0",))
    revealed = {}
    for name in ("node1", "node2"):
        run.clients[name].confirm(dead)
        revealed[name] = run.clients[name].unmask(replayed)
    truth = tuple(run.clients[name].confirm(request) for name in ("node0", "node3", "node4"))
    for name in ("node3", "node4"):
        revealed[name] = run.clients[name].unmask(
            SurvivorSignatures(request.session, request.survivors, truth)
        )
    recovered = unmask_one(setup, "node0", run.uploads["node0"], revealed, run.mask_publics())
    np.testing.assert_array_equal(recovered, run.inputs["node0"])

    sessions = UsedSessions(tmp_path / USED_SESSIONS_FILENAME)
    sessions.claim(setup.session)  # the earlier round
    with pytest.raises(
        TaskRefused, match=f"reused secure-aggregation session {setup.session.hex()}"
    ):
        UsedSessions(tmp_path / USED_SESSIONS_FILENAME).claim(setup.session)  # after a restart
    sessions.claim(os.urandom(16))  # a fresh session is taken part in


def test_a_damaged_record_of_sessions_stops_the_node_naming_it(tmp_path):
    path = tmp_path / USED_SESSIONS_FILENAME
    path.write_text("00ff\nnot hex\n")
    with pytest.raises(ConfigError, match=r"is damaged .* restore it from a backup"):
        UsedSessions(path)
