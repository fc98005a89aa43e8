"""Who is connected: the coordinator's view of its nodes, shared by the rounds and the UI.

A :class:`NodeLink` is one node's live session, whatever carries it (the gRPC servicer
implements it). The :class:`NodeRegistry` admits a link only for a name on the roster,
and keeps per-node status (activity, ε spent) for the progress display and ``primia
status``. A node holds one link at a time: a second link of a name whose link is still
:meth:`~NodeLink.alive` is refused (:class:`AlreadyConnected`: two processes hold that
certificate, or a take-over is being tried), and one whose link died replaces it (the
node reconnected before the old stream's end was processed).

A link may be admitted before it is *ready*: a node first checks the run's plan
(:class:`~primia.federated.tasks.FederationPlan`) and either accepts it (:meth:`ready`;
only then do rounds count it) or refuses to join (:meth:`refused_to_join`): that refusal
is kept until the node joins again and accepts, so the rounds know at once that it will
not take part, and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Protocol

from primia.crypto.secagg import (
    KeyAdvertisement,
    KeyRoster,
    ShareBundle,
    ShareDelivery,
    SurvivorSignature,
    SurvivorSignatures,
    UnmaskRequest,
    UnmaskShares,
)
from primia.errors import PrimiaError
from primia.federated.privacy_record import PrivacyRecord
from primia.federated.tasks import (
    EvaluateTask,
    EvaluationOutcome,
    NodeInfo,
    PrivacyState,
    TrainOutcome,
    TrainTask,
)


class AlreadyConnected(PrimiaError):
    """A node tried to connect while its previous link is alive."""


class NodeLink(Protocol):
    """One connected node. Futures fail with ``NodeDropped`` or ``TaskRefused``.

    A training task with ``secure`` set is answered in the steps of secure aggregation:
    the node's keys (:meth:`advertised_keys`, available once :meth:`train` was called), its
    shares (the answer to :meth:`send_roster`), its masked input (the outcome of
    :meth:`train`, after :meth:`deliver_shares`), its signature on the survivor set (the
    answer to :meth:`request_unmask`) and its revealed shares (the answer to
    :meth:`send_survivor_signatures`). A refusal at any step fails every future of the task.
    """

    name: str
    info: NodeInfo

    def train(self, task: TrainTask) -> Future[TrainOutcome]: ...

    def advertised_keys(self, task_id: str) -> Future[KeyAdvertisement]: ...

    def send_roster(self, task_id: str, roster: KeyRoster) -> Future[ShareBundle]: ...

    def deliver_shares(self, task_id: str, delivery: ShareDelivery) -> None: ...

    def request_unmask(self, task_id: str, request: UnmaskRequest) -> Future[SurvivorSignature]: ...

    def send_survivor_signatures(
        self, task_id: str, signatures: SurvivorSignatures
    ) -> Future[UnmaskShares]: ...

    def request_unmask_without_consistency_round(
        self, task_id: str, request: UnmaskRequest
    ) -> Future[UnmaskShares]:
        """The semi-honest protocol's unmask step (nodes built without the consistency
        round, in tests and benchmarks only): the node reveals at once."""

    def report_error(self, detail: str) -> None:
        """Tell the node that a message of its was refused, and why."""

    def abandon(self, task_id: str, reason: str) -> None:
        """Tell the node that the round of its training task ``task_id`` was abandoned:
        an update it made for it was never used (its ε stays spent)."""

    def evaluate(self, task: EvaluateTask) -> Future[EvaluationOutcome]: ...

    def shutdown(self, reason: str, *, finished: bool, failed: bool = False) -> None:
        """End the node's session; ``finished``: the federation is over (``failed``: it
        failed, ``reason`` says why), so a node started to take part in one run exits."""

    def close(self, reason: str) -> None: ...

    def alive(self) -> bool:
        """Whether the link still carries messages (not closed, its stream active)."""


@dataclass(frozen=True)
class NodeStatus:
    name: str
    connected: bool = False
    activity: str = "not connected"
    epsilon_spent: float = 0.0
    epsilon_budget: float = 0.0
    rounds_contributed: int = 0
    device: str = ""
    ledger_alarm: str = ""
    """Non-empty while the node's ledger reports less ε than this run recorded for it."""
    last_refusal: str = ""
    """The node's latest refusal of a training task, with its reason ("round N: …")."""


class NodeRegistry:
    """The roster's nodes, connected or not; thread-safe."""

    def __init__(self, roster: Sequence[str], privacy_record: PrivacyRecord | None = None) -> None:
        """``privacy_record``: where the nodes' reported ε is kept (the run directory's
        :class:`~primia.federated.privacy_record.PrivacyRecord`); None keeps none."""
        self.roster = tuple(roster)
        self.privacy_record = privacy_record
        self._links: dict[str, NodeLink] = {}
        self._ready: set[str] = set()
        """Names whose current link accepted the run's plan."""
        self._refusals: dict[str, str] = {}
        """Nodes that refused to join, with why, until they join again and accept."""
        self._status = {name: NodeStatus(name) for name in self.roster}
        self._changed = threading.Condition()

    def view(self, names: Sequence[str]) -> NodeRegistry:
        """The same nodes, seen through a roster of ``names`` only: its ``connected`` and
        ``wait_for`` count those nodes alone (a federation of some of the consortium, as
        the transfer matrix's site-local models). Admissions to either are seen by both."""
        unknown = set(names) - set(self.roster)
        if unknown:
            raise ValueError(f"{', '.join(sorted(unknown))} not on the roster")
        view = NodeRegistry.__new__(NodeRegistry)
        view.roster = tuple(names)
        view._links = self._links
        view._ready = self._ready
        view._refusals = self._refusals
        view._status = self._status
        view._changed = self._changed
        view.privacy_record = self.privacy_record
        return view

    def admit(self, link: NodeLink, *, ready: bool = True) -> None:
        """Register ``link``; raise :class:`AlreadyConnected` if the node's previous link
        is alive, else close that one (the node reconnected after it died). Not ``ready``:
        the rounds count it only once :meth:`ready` says it accepted the run's plan."""
        if link.name not in self._status:
            raise ValueError(f"{link.name} is not on the roster")
        with self._changed:
            previous = self._links.get(link.name)
            if previous is not None and previous.alive():
                raise AlreadyConnected(
                    f"{link.name} is already connected, and one certificate may hold one "
                    "Join stream at a time. If this node restarted, the coordinator drops "
                    "its old stream once it is found dead (at most ~30 s, HTTP/2 keepalive) "
                    "and a retry then gets in; if no other copy of this node should run, "
                    "its certificate may have been copied: revoke it and issue a new one"
                )
            self._links[link.name] = link
            if ready:
                self._ready.add(link.name)
                self._refusals.pop(link.name, None)
            else:
                self._ready.discard(link.name)
            self._update(
                link.name,
                connected=True,
                activity="idle" if ready else "checking the run's plan",
                device=link.info.device,
                epsilon_spent=link.info.privacy.epsilon_spent,
                epsilon_budget=link.info.privacy.epsilon_budget,
            )
            self._changed.notify_all()
        if self.privacy_record is not None:
            self.privacy_record.update(link.name, link.info.privacy)
        if previous is not None:
            previous.close("its stream died and the node connected again")

    def ready(self, link: NodeLink) -> None:
        """``link``'s node accepted the run's plan: the rounds may count it."""
        with self._changed:
            if self._links.get(link.name) is link:
                self._ready.add(link.name)
                self._refusals.pop(link.name, None)
                self._update(link.name, activity="idle", last_refusal="")
            self._changed.notify_all()

    def refused_to_join(self, name: str, reason: str) -> None:
        """``name`` refuses every round of the run (``reason``: what and why)."""
        with self._changed:
            self._refusals[name] = reason
            self._update(name, activity="refused to join", last_refusal=f"at join: {reason}")
            self._changed.notify_all()

    def join_refusals(self) -> dict[str, str]:
        """The nodes that refused to join (and have not joined since), with why."""
        with self._changed:
            return {name: self._refusals[name] for name in self.roster if name in self._refusals}

    def leave(self, link: NodeLink) -> None:
        """Forget ``link`` if it is still the node's current one."""
        with self._changed:
            if self._links.get(link.name) is link:
                del self._links[link.name]
                self._ready.discard(link.name)
                activity = "refused to join" if link.name in self._refusals else "disconnected"
                self._update(link.name, connected=False, activity=activity)
            self._changed.notify_all()

    def connected(self, *, excluding: Collection[str] = ()) -> list[NodeLink]:
        """The links that accepted the run's plan, in roster order (but ``excluding``)."""
        with self._changed:
            return [
                self._links[name]
                for name in self.roster
                if name in self._ready and name in self._links and name not in excluding
            ]

    def every_link(self) -> list[NodeLink]:
        """Every admitted link, ready or still checking the plan."""
        with self._changed:
            return [self._links[name] for name in self.roster if name in self._links]

    def wait_for(
        self,
        count: int,
        *,
        timeout: float,
        stop: threading.Event | None = None,
        excluding: Collection[str] = (),
    ) -> list[NodeLink]:
        """The ready links (but ``excluding``) once at least ``count`` are, or after
        ``timeout`` seconds (or ``stop``, or once ``count`` is out of reach because nodes
        refused to join or are excluded) with however many there are."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                out = set(excluding) | set(self._refusals)
                names = [name for name in self.roster if name not in out]
                if sum(name in self._ready for name in names) >= count or len(names) < count:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    break
                self._changed.wait(min(remaining, 0.5))
        return self.connected(excluding=excluding)

    def set_activity(self, name: str, activity: str) -> None:
        with self._changed:
            if name in self._links:
                self._update(name, activity=activity)

    def record_privacy(self, name: str, privacy: PrivacyState) -> None:
        with self._changed:
            self._update(
                name, epsilon_spent=privacy.epsilon_spent, epsilon_budget=privacy.epsilon_budget
            )
        if self.privacy_record is not None:
            self.privacy_record.update(name, privacy)

    def recorded_epsilon(self, name: str) -> float | None:
        """The highest ε ``name`` reported in this run, if a record is kept."""
        return None if self.privacy_record is None else self.privacy_record.recorded(name)

    def set_ledger_alarm(self, name: str, alarm: str) -> None:
        with self._changed:
            self._update(name, ledger_alarm=alarm)

    def record_refusal(self, name: str, refusal: str) -> None:
        """Keep ``refusal`` as the node's latest (shown until the next one)."""
        with self._changed:
            self._update(name, last_refusal=refusal)

    def record_contribution(self, name: str) -> None:
        with self._changed:
            if name in self._status:
                self._update(name, rounds_contributed=self._status[name].rounds_contributed + 1)

    def restore(self, statuses: Sequence[NodeStatus]) -> None:
        """Carry counts from a resumed run (they are shown as not connected)."""
        with self._changed:
            for status in statuses:
                if status.name in self._status:
                    self._update(
                        status.name,
                        rounds_contributed=status.rounds_contributed,
                        epsilon_spent=status.epsilon_spent,
                        epsilon_budget=status.epsilon_budget,
                    )

    def statuses(self) -> list[NodeStatus]:
        with self._changed:
            return [self._status[name] for name in self.roster]

    def _update(self, name: str, **changes: object) -> None:
        if name not in self._status:
            return  # not on the roster: nothing to show
        self._status[name] = replace(self._status[name], **changes)  # type: ignore[arg-type]
