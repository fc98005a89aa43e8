"""An operator's repair of a privacy ledger that failed its integrity checks.

Restoring the ledger and its anchor together from a backup is always the better repair;
this is for when there is none. :func:`repair` keeps every record that is still sound,
chains them again, and appends a ``repair`` record that names the problem and
*carries* an ε: the highest figure known for what was spent — the anchor's, or one the
operator gives (``at_least``, e.g. the coordinator's record) — whenever it exceeds what
the surviving records compose to. The ledger adds carried ε to its composition (basic
composition: ε_spent = Σ carried + ε(releases)), so a repair never lowers the reported ε;
it over-reports when the surviving releases were part of the carried figure. Nothing is
written without ``accept``; the damaged file is kept beside the ledger.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from primia.config import atomic_write_bytes
from primia.errors import ConfigError, LedgerError
from primia.train.accounting import AccountantName
from primia.train.ledger import FORMAT_VERSION, Budget, PrivacyLedger, locked
from primia.train.ledger_chain import Anchor, chain_of, read_anchor, write_anchor
from primia.train.ledger_records import check_record
from primia.train.units import PrivacyUnit, check_unit


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found."""

    problem: str
    """Empty when the ledger passed every check."""
    records: int
    spent_epsilon: float | None
    anchored_epsilon: float | None
    abandoned: int = 0
    """Releases marked abandoned: charged, their update never used."""


@dataclass(frozen=True)
class Repair:
    """What :func:`repair` did, or would do without ``accept``."""

    problem: str
    kept: int
    dropped: int
    surviving_epsilon: float
    carried_epsilon: float
    spent_after: float
    written: bool
    damaged_copy: Path | None


def verify(path: Path) -> Verdict:
    """Check the ledger at ``path`` as training does (a crash's unanchored reserve is
    adopted, as on every open)."""
    anchor = _anchor_or_none(path)
    anchored = None if anchor is None else anchor.epsilon_spent
    try:
        ledger = PrivacyLedger.read(path)
    except LedgerError as error:
        return Verdict(str(error), 0, None, anchored)
    except ConfigError as error:  # no ledger, and no anchor that says one existed
        return Verdict(str(error), 0, None, anchored)
    releases = ledger.releases()
    abandoned = sum(bool(release.abandoned) for release in releases)
    return Verdict("", len(releases), ledger.spent_epsilon(), anchored, abandoned)


def repair(
    path: Path,
    *,
    at_least: float | None = None,
    accept: bool = False,
    budget: Budget | None = None,
    accountant: AccountantName = "prv",
    unit: PrivacyUnit | None = None,
) -> Repair:
    """Rebuild the ledger at ``path`` from its sound records plus a ``repair`` record
    (see the module docstring). ``budget`` and ``accountant`` are needed only when the
    header is lost; ``unit`` (what the lost releases protected: the node's
    ``[privacy] unit``) only when ε is carried and no surviving release shows the unit, so
    that the carried ε keeps its unit and later releases of another unit are refused.
    Raises :class:`ConfigError` when there is nothing to repair."""
    if at_least is not None and not 0 <= at_least < math.inf:
        raise ConfigError(f"--at-least must be a finite epsilon >= 0, got {at_least}")
    verdict = verify(path)  # takes the lock itself (flock does not nest)
    if not verdict.problem and (at_least is None or (verdict.spent_epsilon or 0.0) >= at_least):
        raise ConfigError(
            f"privacy ledger {path} passed every check and reports eps "
            f"{verdict.spent_epsilon:.4g}; there is nothing to repair"
        )
    with locked(path):
        events, dropped = _sound_records(path)
        if not events or events[0]["event"] != "header":
            if budget is None:
                raise ConfigError(
                    f"the header of {path} is lost; give the dataset's budget and accountant "
                    "(--epsilon-budget, --delta, --accountant) to write a new one"
                )
            header = {"event": "header", "accountant": accountant, "budget": asdict(budget)}
            events = [header, *[e for e in events if e["event"] != "header"]]
        events[0] = {**events[0], "version": FORMAT_VERSION}
        events[0].setdefault("ledger_id", uuid.uuid4().hex)
        surviving = PrivacyLedger(path, chain_of(events)).spent_epsilon()
        anchor = _anchor_or_none(path)
        figures = [anchor.epsilon_spent if anchor else 0.0, at_least or 0.0]
        carried = max(figures) if max(figures) > surviving else 0.0
        unit = _carried_unit(events, carried, unit, path)
        problem = verdict.problem or (
            f"the ledger reports eps {surviving:.4g}, less than the {at_least:.4g} recorded "
            "elsewhere (the coordinator's record)"
        )
        events.append(
            {
                "event": "repair",
                "problem": problem,
                "carried_epsilon": carried,
                **({"unit": unit} if unit is not None else {}),
                "anchored_epsilon": anchor.epsilon_spent if anchor else None,
                "at_least": at_least,
                "surviving_epsilon": surviving,
                "dropped_lines": dropped,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        chain = chain_of(events)
        spent_after = PrivacyLedger(path, chain).spent_epsilon()
        copy = None
        if accept:
            if path.exists():
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                copy = path.with_name(f"{path.name}.damaged-{stamp}")
                shutil.copy2(path, copy)
            # Ledger first, then anchor: a crash between leaves a repair record past the
            # anchor, which is refused (it may lower ε); running the repair again heals it.
            atomic_write_bytes(path, chain.text())
            write_anchor(path, Anchor.of(chain, spent_after))
    return Repair(
        problem=problem,
        kept=len(events) - 1,
        dropped=dropped,
        surviving_epsilon=surviving,
        carried_epsilon=carried,
        spent_after=spent_after,
        written=accept,
        damaged_copy=copy,
    )


def _carried_unit(
    events: list[dict[str, Any]], carried: float, given: PrivacyUnit | None, path: Path
) -> PrivacyUnit | None:
    """The unit of the ε a repair carries: the surviving releases' (they must agree with
    ``given``), else ``given``; refused when ε is carried and nothing says its unit."""
    surviving = {
        e.get("unit", "example")
        for e in events
        if e["event"] == "reserve" or (e["event"] == "repair" and "unit" in e)
    }
    if given is not None:
        check_unit(given)
        if surviving and surviving != {given}:
            raise ConfigError(
                f"the surviving releases of {path} are {'/'.join(sorted(surviving))}-level, "
                f"not {given}-level; leave out --unit or give theirs"
            )
        return given
    if len(surviving) == 1:
        return check_unit(surviving.pop())
    if carried > 0:
        raise ConfigError(
            f"the repair of {path} carries eps {carried:.4g} from releases that are lost, and "
            "nothing left says what they protected; give --unit patient or --unit example "
            "(the node's [privacy] unit when they ran)"
        )
    return None


def _anchor_or_none(path: Path) -> Anchor | None:
    try:
        return read_anchor(path)
    except LedgerError:
        return None


def _sound_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``path`` that parse and pass their checks in order (``prev``
    dropped), and how many lines did not."""
    if not path.exists():
        return [], 0
    kept: list[dict[str, Any]] = []
    dropped = 0
    releases: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if not isinstance(record, dict):
            dropped += 1
            continue
        record = {key: value for key, value in record.items() if key != "prev"}
        if record.get("event") == "header":
            record["version"] = FORMAT_VERSION  # a version-1 header is upgraded here
        if check_record(record, len(kept) + 1, releases):
            dropped += 1
            continue
        kept.append(record)
    return kept, dropped
