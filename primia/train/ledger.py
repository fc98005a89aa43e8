"""The privacy ledger: an append-only record of every DP release made from one dataset.

A dataset's privacy budget (ε, δ) is spent by every model trained on it and shared. The
ledger keeps one JSON line per event in a file next to the data:

* ``header``   — format version, the accountant used to compose, and the budget;
* ``budget``   — the operator changed the budget (kept, so the change is auditable);
* ``reserve``  — a planned release (σ, q, steps), written *before* the first training step
  (with the coordinator's ``run`` id for a federated round, so a node can bound ε per run);
* ``complete`` — the steps actually run, written after training (never more than reserved).

The spent ε is the composition, by the ledger's accountant, of every release — reserved
releases count with their planned steps until completed. So a crash mid-training can
over-report, never under-report, what was spent. :meth:`PrivacyLedger.reserve` refuses a
plan whose composition with all earlier releases would exceed the budget, before any
step runs.

Every write replaces the file atomically (see :func:`primia.config.atomic_write_bytes`)
while holding an exclusive lock, so concurrent trainings on one dataset cannot both take
the last of a budget.
"""

from __future__ import annotations

import fcntl
import json
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from primia.config import atomic_write_bytes
from primia.errors import ConfigError, LedgerError, PrivacyBudgetExceeded
from primia.train.accounting import ACCOUNTANTS, AccountantName, Mechanism, epsilon_of

FORMAT_VERSION = 1


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


class PrivacyLedger:
    """The ledger file of one dataset. Open it with :meth:`open`."""

    def __init__(self, path: Path, events: list[dict[str, Any]]) -> None:
        self.path = path
        self._events = events

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
        with _locked(path):
            if not path.exists():
                if budget is None:
                    raise ConfigError(
                        f"no privacy ledger at {path} and no budget given; "
                        "set a budget (e.g. --epsilon-budget 8) to create one"
                    )
                header = {
                    "event": "header",
                    "version": FORMAT_VERSION,
                    "accountant": accountant,
                    "budget": asdict(budget),
                    "time": _now(),
                }
                ledger = cls(path, [header])
                ledger._save()
                return ledger
            ledger = cls(path, _read_events(path))
            if ledger.accountant != accountant:
                raise ConfigError(
                    f"the ledger {path} composes with the {ledger.accountant!r} accountant; "
                    f"use --accountant {ledger.accountant} for this dataset"
                )
            if budget is not None and budget != ledger.budget:
                ledger._events.append({"event": "budget", "budget": asdict(budget), "time": _now()})
                ledger._save()
            return ledger

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
        for event in self._events:
            if event["event"] == "reserve":
                reserved[event["release_id"]] = event
            elif event["event"] == "complete":
                completed[event["release_id"]] = event
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
                )
            )
        return releases

    def spent_epsilon(self, extra: Mechanism | None = None, *, run: str | None = None) -> float:
        """ε at the budget's δ of all releases composed (plus ``extra``, if given); with
        ``run``, of that coordinator run's releases only."""
        history = [
            release.mechanism for release in self.releases() if run is None or release.run == run
        ]
        if extra is not None:
            history.append(extra)
        return epsilon_of(history, delta=self.budget.delta, accountant=self.accountant)

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
    ) -> str:
        """Record a planned release before it runs; refuse it if the budget would be exceeded.

        ``epsilon`` and ``delta`` are the release's own guarantee, kept for the record; the
        budget check composes the mechanism with every earlier release. Returns the
        release id that :meth:`complete` takes.
        """
        with _locked(self.path):
            self._events = _read_events(self.path)
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
            self._events.append(
                {
                    "event": "reserve",
                    "release_id": release_id,
                    "noise_multiplier": mechanism.noise_multiplier,
                    "sample_rate": mechanism.sample_rate,
                    "steps": mechanism.steps,
                    "epsilon": epsilon,
                    "delta": delta,
                    "description": description,
                    "time": _now(),
                }
            )
            if run:
                self._events[-1]["run"] = run
            self._save()
            return release_id

    def complete(self, release_id: str, *, steps: int, epsilon: float) -> None:
        """Record the steps a reserved release actually ran (at most the planned steps)."""
        with _locked(self.path):
            self._events = _read_events(self.path)
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
            self._events.append(
                {
                    "event": "complete",
                    "release_id": release_id,
                    "steps": steps,
                    "epsilon": epsilon,
                    "time": _now(),
                }
            )
            self._save()

    def _save(self) -> None:
        lines = "".join(json.dumps(event, sort_keys=True) + "\n" for event in self._events)
        atomic_write_bytes(self.path, lines.encode())


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as error:
            raise LedgerError(
                f"privacy ledger {path} line {number} is not valid JSON ({error}); "
                "restore it from a backup: a ledger must never be edited by hand"
            ) from error
        if not isinstance(event, dict) or "event" not in event:
            raise LedgerError(f"privacy ledger {path} line {number} is not a ledger event")
        events.append(event)
    if not events or events[0]["event"] != "header":
        raise LedgerError(f"privacy ledger {path} has no header line; it is not a primia ledger")
    if events[0].get("version") != FORMAT_VERSION:
        raise LedgerError(
            f"privacy ledger {path} has format version {events[0].get('version')}; "
            f"this primia reads version {FORMAT_VERSION}"
        )
    return events


@contextmanager
def _locked(path: Path) -> Iterator[None]:
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
