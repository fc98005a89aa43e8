"""The privacy ledger: an append-only record of every DP release made from one dataset.

A dataset's privacy budget (ε, δ) is spent by every model trained on it and shared. The
ledger keeps one JSON line per event in a file next to the data:

* ``header``   — format version, the accountant used to compose, and the budget;
* ``budget``   — the operator changed the budget (kept, so the change is auditable);
* ``reserve``  — a planned release (σ, q, steps), written *before* the first training step
  (with the coordinator's ``run`` id for a federated round, so a node can bound ε per run);
* ``complete`` — the steps actually run, written after training (never more than reserved);
* ``abandon``  — a release whose update was never used (a federated round abandoned after
  the node trained); it keeps the release and its ε in the composition, and says why.

The spent ε is the composition, by the ledger's accountant, of every release — reserved
releases count with their planned steps until completed. So a crash mid-training can
over-report, never under-report, what was spent. :meth:`PrivacyLedger.reserve` refuses a
plan whose composition with all earlier releases would exceed the budget, before any
step runs.

Every write replaces the file atomically (see :func:`primia.config.atomic_write_bytes`)
while holding an exclusive lock, so concurrent trainings on one dataset cannot both take
the last of a budget.

Records are hash-chained and anchored in a separate file (:mod:`primia.train.ledger_chain`):
every read checks the chain, every record (:mod:`primia.train.ledger_records`: unknown
events and missing keys are errors) and the anchor, and raises
:class:`~primia.errors.LedgerIntegrityError` — so training is refused — when the ledger
was changed, cut or lost. A version-1 (unchained) ledger is upgraded once, with a warning.
``repair`` records (:mod:`primia.train.ledger_repair`) add their ``carried_epsilon`` to the
composition: by basic composition, ε_spent = Σ carried + ε(itemised releases).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from primia.errors import ConfigError, LedgerError, PrivacyBudgetExceeded, PrivacyUnitMismatch
from primia.files import atomic_write_bytes
from primia.train.accounting import ACCOUNTANTS, AccountantName, Mechanism, epsilon_of
from primia.train.ledger_chain import (
    Anchor,
    Chain,
    chain_of,
    integrity_error,
    migrate,
    parse,
    read_anchor,
    reconcile,
    write_anchor,
)
from primia.train.ledger_records import anchored_first
from primia.train.units import PrivacyUnit, check_unit

log = logging.getLogger(__name__)

FORMAT_VERSION = 2


@dataclass(frozen=True)
class Budget:
    """The most (ε, δ) the dataset may spend in total; ``epsilon=inf`` means unbounded."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ConfigError(f"the privacy budget's epsilon must be positive, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"the privacy budget's delta must be in (0, 1), got {self.delta}")


@dataclass(frozen=True)
class Release:
    """One DP release: a training run, as planned or as completed."""

    release_id: str
    mechanism: Mechanism
    delta: float
    epsilon: float
    description: str
    completed: bool
    run: str = ""
    """The coordinator run the release was made for (empty outside a federation)."""
    abandoned: str = ""
    """Why the release's update was never used (empty: it was, or nothing says not)."""


class PrivacyLedger:
    """The ledger file of one dataset. Open it with :meth:`open`."""

    def __init__(self, path: Path, chain: Chain) -> None:
        self.path = path
        self._chain = chain

    @property
    def _events(self) -> tuple[dict[str, Any], ...]:
        return self._chain.records

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        budget: Budget | None = None,
        accountant: AccountantName = "prv",
    ) -> PrivacyLedger:
        """Open (or create) the ledger at ``path``.

        A new ledger needs a ``budget``. Giving a budget that differs from the stored one
        records the change; the accountant of an existing ledger cannot change, since ε
        composed by two accountants is not comparable.
        """
        if accountant not in ACCOUNTANTS:
            raise ConfigError(f"unknown accountant {accountant!r}; choose one of: prv, rdp")
        with locked(path):
            chain = _load(path)
            if chain is None:
                if budget is None:
                    raise ConfigError(
                        f"no privacy ledger at {path} and no budget given; "
                        "set a budget (e.g. --epsilon-budget 8) to create one"
                    )
                header = {
                    "event": "header",
                    "version": FORMAT_VERSION,
                    "ledger_id": uuid.uuid4().hex,
                    "accountant": accountant,
                    "budget": asdict(budget),
                    "time": _now(),
                }
                created = chain_of([header])
                # Anchor first: a crash before the ledger is written leaves an anchor that
                # says nothing was spent, and the next open creates the ledger again.
                write_anchor(path, Anchor.of(created, 0.0))
                atomic_write_bytes(path, created.text())
                return cls(path, created)
            ledger = cls(path, chain)
            if ledger.accountant != accountant:
                raise ConfigError(
                    f"the ledger {path} composes with the {ledger.accountant!r} accountant; "
                    f"use --accountant {ledger.accountant} for this dataset"
                )
            if budget is not None and budget != ledger.budget:
                ledger._append({"event": "budget", "budget": asdict(budget), "time": _now()})
            return ledger

    @classmethod
    def read(cls, path: Path) -> PrivacyLedger:
        """Open the existing ledger at ``path`` with whatever accountant it uses."""
        with locked(path):
            chain = _load(path)
        if chain is None:
            raise ConfigError(f"there is no privacy ledger at {path}")
        return cls(path, chain)

    def reload(self) -> None:
        """Read the ledger from disk again (checking it): what another process recorded,
        or an operator repaired."""
        with locked(self.path):
            self._chain = self._read()

    @property
    def accountant(self) -> AccountantName:
        name = self._events[0]["accountant"]
        return "rdp" if name == "rdp" else "prv"

    @property
    def budget(self) -> Budget:
        latest = [e["budget"] for e in self._events if e["event"] in ("header", "budget")][-1]
        return Budget(epsilon=float(latest["epsilon"]), delta=float(latest["delta"]))

    def releases(self) -> list[Release]:
        """Every release, completed ones with their actual steps."""
        reserved: dict[str, dict[str, Any]] = {}
        completed: dict[str, dict[str, Any]] = {}
        abandoned: dict[str, str] = {}
        for event in self._events:
            if event["event"] == "reserve":
                reserved[event["release_id"]] = event
            elif event["event"] == "complete":
                completed[event["release_id"]] = event
            elif event["event"] == "abandon":
                abandoned[event["release_id"]] = str(event["reason"])
        releases = []
        for release_id, plan in reserved.items():
            done = completed.get(release_id)
            steps = int(done["steps"]) if done else int(plan["steps"])
            releases.append(
                Release(
                    release_id=release_id,
                    mechanism=Mechanism(
                        float(plan["noise_multiplier"]), float(plan["sample_rate"]), steps
                    ),
                    delta=float(plan["delta"]),
                    epsilon=float(done["epsilon"]) if done else float(plan["epsilon"]),
                    description=str(plan.get("description", "")),
                    completed=done is not None,
                    run=str(plan.get("run", "")),
                    abandoned=abandoned.get(release_id, ""),
                )
            )
        return releases

    @property
    def unit(self) -> PrivacyUnit | None:
        """What the recorded releases protect (a release without the field, from before
        units were recorded, was example-level); ``None`` before the first release."""
        units = {e.get("unit", "example") for e in self._events if e["event"] == "reserve"}
        # a repair carries the ε of lost releases with their unit
        units |= {e["unit"] for e in self._events if e["event"] == "repair" and "unit" in e}
        if len(units) > 1:  # reserve() never writes this; a hand-edited ledger might
            raise LedgerError(
                f"{self.path} mixes releases of units {sorted(units)}, which do not compose; "
                "split it into one ledger per unit"
            )
        return check_unit(units.pop()) if units else None

    def unit_problem(self, unit: PrivacyUnit) -> str | None:
        """Why a release protecting ``unit`` cannot join this ledger's releases; ``None``
        if it can (the same unit, or no release yet)."""
        recorded = self.unit
        if recorded is None or recorded == unit:
            return None
        return (
            f"this release protects each {unit} but the ledger {self.path} records "
            f"{recorded}-level releases, and the two do not compose into one epsilon "
            "(a guarantee per image protects a patient with k images only by a k-fold "
            f"group-privacy bound); train with privacy unit '{recorded}' (privacy.unit on a "
            "node), or keep this unit's releases in a ledger of their own"
        )

    def spent_epsilon(self, extra: Mechanism | None = None, *, run: str | None = None) -> float:
        """ε at the budget's δ of all releases composed (plus ``extra``, if given); with
        ``run``, of that coordinator run's releases only."""
        history = [
            release.mechanism for release in self.releases() if run is None or release.run == run
        ]
        if extra is not None:
            history.append(extra)
        carried = sum(float(e["carried_epsilon"]) for e in self._events if e["event"] == "repair")
        return carried + epsilon_of(history, delta=self.budget.delta, accountant=self.accountant)

    def remaining_epsilon(self) -> float:
        return max(0.0, self.budget.epsilon - self.spent_epsilon())

    def reserve(
        self,
        mechanism: Mechanism,
        *,
        epsilon: float,
        delta: float,
        description: str = "",
        run: str = "",
        unit: PrivacyUnit = "example",
    ) -> str:
        """Record a planned release before it runs; refuse it if the budget would be exceeded.

        ``epsilon`` and ``delta`` are the release's own guarantee, kept for the record; the
        budget check composes the mechanism with every earlier release. ``unit`` is what
        the release's ε protects (:mod:`primia.train.units`); releases of different units
        do not compose into one ε, so a release whose unit differs from the ledger's
        earlier ones is refused (:class:`PrivacyUnitMismatch`). Returns the release id
        that :meth:`complete` takes.
        """
        check_unit(unit)
        with locked(self.path):
            self._chain = self._read()
            problem = self.unit_problem(unit)
            if problem is not None:
                raise PrivacyUnitMismatch(problem)
            budget = self.budget
            total = self.spent_epsilon(extra=mechanism)
            if not math.isfinite(total) or total > budget.epsilon:
                spent = self.spent_epsilon()
                raise PrivacyBudgetExceeded(
                    f"this plan would bring the dataset's spent epsilon to {total:.3g} "
                    f"(already spent {spent:.3g}) but the budget is {budget.epsilon:.3g} "
                    f"at delta={budget.delta:g} (ledger {self.path}); train for fewer "
                    "epochs, with a smaller target epsilon, or raise the budget"
                )
            release_id = uuid.uuid4().hex
            self._append(
                {
                    "event": "reserve",
                    "release_id": release_id,
                    "noise_multiplier": mechanism.noise_multiplier,
                    "sample_rate": mechanism.sample_rate,
                    "steps": mechanism.steps,
                    "epsilon": epsilon,
                    "delta": delta,
                    "description": description,
                    "unit": unit,
                    "time": _now(),
                    # a federated round's run id, so that a node can bound ε per run
                    **({"run": run} if run else {}),
                }
            )
            return release_id

    def complete(self, release_id: str, *, steps: int, epsilon: float) -> None:
        """Record the steps a reserved release actually ran (at most the planned steps)."""
        with locked(self.path):
            self._chain = self._read()
            plans = [
                e for e in self._events if e["event"] == "reserve" and e["release_id"] == release_id
            ]
            if not plans:
                raise LedgerError(f"release {release_id} was never reserved in {self.path}")
            if any(
                e["event"] == "complete" and e["release_id"] == release_id for e in self._events
            ):
                raise LedgerError(f"release {release_id} is already completed in {self.path}")
            if steps > int(plans[0]["steps"]):
                raise LedgerError(
                    f"release {release_id} ran {steps} steps but reserved only "
                    f"{plans[0]['steps']}; its privacy cost was under-reserved"
                )
            self._append(
                {
                    "event": "complete",
                    "release_id": release_id,
                    "steps": steps,
                    "epsilon": epsilon,
                    "time": _now(),
                }
            )

    def abandon(self, release_id: str, *, reason: str) -> None:
        """Mark a reserved release as never used (its round was abandoned after training).

        The release stays in the composition: its update left the node's training, so
        its ε is spent whatever became of it. The mark only says so, for the operator."""
        with locked(self.path):
            self._chain = self._read()
            if not any(
                e["event"] == "reserve" and e["release_id"] == release_id for e in self._events
            ):
                raise LedgerError(f"release {release_id} was never reserved in {self.path}")
            self._append(
                {"event": "abandon", "release_id": release_id, "reason": reason, "time": _now()}
            )

    def _append(self, event: dict[str, Any]) -> None:
        """Append ``event`` and anchor it, in the order that keeps a crash between the two
        writes from under-reporting ε (see :mod:`primia.train.ledger_chain`). Call with
        the lock held."""
        budget = self.budget
        before = self._chain
        self._chain = before.extended(event)
        first = anchored_first(event, (budget.epsilon, budget.delta))
        try:
            anchor = Anchor.of(self._chain, self.spent_epsilon(), anchored_first=first)
        except BaseException:
            self._chain = before
            raise
        if first:
            write_anchor(self.path, anchor)
            atomic_write_bytes(self.path, self._chain.text())
        else:
            atomic_write_bytes(self.path, self._chain.text())
            write_anchor(self.path, anchor)

    def _read(self) -> Chain:
        chain = _load(self.path)
        if chain is None:
            raise integrity_error(self.path, "the ledger file is missing")
        return chain


def _load(path: Path) -> Chain | None:
    """The checked chain of the ledger at ``path``; None if there is none (nor an anchor
    that says releases were recorded). Hold the lock."""
    anchor = read_anchor(path)
    if not path.exists():
        if anchor is None or (anchor.records == 1 and anchor.epsilon_spent == 0):
            return None  # never created, or its creation crashed before the ledger
        raise integrity_error(
            path,
            f"the ledger is missing, but its anchor records {anchor.records} records and "
            f"ε {anchor.epsilon_spent:.3g} spent",
        )
    text = path.read_text()
    version = _version(text)
    if version == 1:
        return _upgrade(path, text, anchor)
    if version != FORMAT_VERSION:
        raise LedgerError(
            f"privacy ledger {path} has format version {version}; this primia reads "
            f"versions 1 and {FORMAT_VERSION}"
        )
    chain = parse(path, text)
    if anchor is None:
        raise integrity_error(
            path,
            "its anchor is missing (deleted, or the ledger was copied without it), so a cut "
            "ledger cannot be told from a whole one",
        )
    chain, note = reconcile(path, chain, anchor)
    if note:
        log.warning("privacy ledger %s: %s", path, note)
        write_anchor(path, Anchor.of(chain, PrivacyLedger(path, chain).spent_epsilon()))
    return chain


def _upgrade(path: Path, text: str, anchor: Anchor | None) -> Chain:
    """Chain a version-1 ledger, anchor first (the upgrade is deterministic, so a crash
    before the ledger is rewritten is finished at the next open)."""
    chain = migrate(path, text)
    if anchor is not None:
        if anchor.ledger_id != chain.ledger_id or anchor.last_hash != chain.last_hash:
            raise integrity_error(
                path,
                "the file is in the old unchained format but a chained ledger's anchor is "
                "beside it: the chained ledger was replaced",
            )
    else:
        log.warning(
            "privacy ledger %s: upgrading from format version 1 to %d (hash-chained, with an "
            "anchor); the records before the upgrade could not be checked",
            path,
            FORMAT_VERSION,
        )
        write_anchor(path, Anchor.of(chain, PrivacyLedger(path, chain).spent_epsilon()))
    atomic_write_bytes(path, chain.text())
    return chain


def _version(text: str) -> object:
    first = text.split("\n", 1)[0]
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        return FORMAT_VERSION  # let the chain's check name the line
    return header.get("version") if isinstance(header, dict) else FORMAT_VERSION


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path``'s lock file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
