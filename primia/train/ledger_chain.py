"""The privacy ledger's integrity: a hash chain over its records and an anchor beside it.

Each line of the ledger is the canonical JSON of one record (keys sorted, no spaces,
ASCII). Record i carries ``prev`` = SHA-256 of line i−1 (64 zeros for the header), so
changing, inserting or removing any record but the last breaks the chain at the next
line. The *anchor* (``<ledger>.anchor``, a separate file written atomically) holds the
ledger's id, its record count, the hashes of its last two lines, the last record's event,
whether that record was anchored first, and the ε spent; it catches what the chain alone
cannot: the last lines cut, the last record changed, the file reduced to its header or
deleted.

Write order, so that a crash between the two atomic writes never under-reports ε:

* a record that can only keep or raise the reported ε, or tighten the budget (``reserve``,
  a lower ``budget``, ``repair``, the header): ledger first, then anchor. A crash in
  between leaves one record past the anchor; :func:`reconcile` adopts it (a reserve counts
  in full) — only such records are adopted, so an appended ``complete`` is not.
* a record that can lower the reported ε or raise the budget (``complete``, a higher
  ``budget``): anchor first, then ledger. A crash in between leaves the ledger one record
  short of the anchor, whose ``previous_hash`` and ``anchored_first`` say so: the record
  is lost, its release counts with the steps it reserved (over-reporting). Only then is
  a ledger one record short accepted.
* a new ledger: anchor first (one record, ε 0), so a crash leaves an anchor that says
  nothing was spent; the next open creates the ledger again.

Anything else — a record changed, the anchor ahead or behind by more, a different ledger
id, a missing anchor beside an existing ledger, a ledger missing after releases — raises
:class:`~primia.errors.LedgerIntegrityError`. The chain has no key: whoever can rewrite
both files (root on the node) can forge a consistent pair; the coordinator's record of
the node's ε is the check against that (see docs/threat-model.md, issue 22).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from primia.config import atomic_write_bytes
from primia.errors import LedgerIntegrityError
from primia.train.ledger_records import adoptable, check_record

GENESIS = "0" * 64
ANCHOR_FORMAT = "primia-ledger-anchor"


def canonical(record: dict[str, Any]) -> str:
    """The one encoding of ``record`` that the chain hashes (and the file holds)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def fix_hint(path: Path) -> str:
    return (
        "the ledger refuses every training until an operator resolves it: restore the "
        f"ledger and {path.name}.anchor together from a backup, or see "
        f"`primia ledger verify {path}` and `primia ledger repair --help` "
        "(docs/privacy.md, 'Ledger integrity')"
    )


def integrity_error(path: Path, problem: str) -> LedgerIntegrityError:
    return LedgerIntegrityError(f"privacy ledger {path}: {problem}; {fix_hint(path)}")


@dataclass(frozen=True)
class Chain:
    """A ledger's records (with their ``prev``), its lines and their hashes."""

    records: tuple[dict[str, Any], ...]
    lines: tuple[str, ...]
    hashes: tuple[str, ...]

    @property
    def ledger_id(self) -> str:
        return str(self.records[0].get("ledger_id", ""))

    @property
    def last_hash(self) -> str:
        return self.hashes[-1] if self.hashes else GENESIS

    def extended(self, event: dict[str, Any]) -> Chain:
        """The chain with ``event`` appended (its ``prev`` set here)."""
        record = {**event, "prev": self.last_hash}
        line = canonical(record)
        return Chain((*self.records, record), (*self.lines, line), (*self.hashes, digest(line)))

    def text(self) -> bytes:
        return "".join(line + "\n" for line in self.lines).encode()


def chain_of(events: list[dict[str, Any]]) -> Chain:
    """Chain ``events`` (their own ``prev`` fields are replaced)."""
    chain = Chain((), (), ())
    for event in events:
        chain = chain.extended({key: value for key, value in event.items() if key != "prev"})
    return chain


@dataclass(frozen=True)
class Anchor:
    ledger_id: str
    records: int
    last_hash: str
    previous_hash: str
    last_event: str
    epsilon_spent: float
    anchored_first: bool = False
    """The last record was anchored before it was written (it may lower ε): a ledger one
    record short of this anchor is a crash between the writes, and over-reports."""

    @classmethod
    def of(cls, chain: Chain, epsilon_spent: float, *, anchored_first: bool = False) -> Anchor:
        return cls(
            ledger_id=chain.ledger_id,
            records=len(chain.lines),
            last_hash=chain.last_hash,
            previous_hash=chain.hashes[-2] if len(chain.hashes) > 1 else GENESIS,
            last_event=str(chain.records[-1]["event"]),
            epsilon_spent=epsilon_spent,
            anchored_first=anchored_first,
        )


def anchor_path(path: Path) -> Path:
    return path.with_name(path.name + ".anchor")


def write_anchor(path: Path, anchor: Anchor) -> None:
    payload = {"format": ANCHOR_FORMAT, "version": 1, **asdict(anchor)}
    atomic_write_bytes(anchor_path(path), (json.dumps(payload, sort_keys=True) + "\n").encode())


def read_anchor(path: Path) -> Anchor | None:
    """The anchor of the ledger at ``path``; None if there is none."""
    location = anchor_path(path)
    if not location.exists():
        return None
    try:
        data = json.loads(location.read_text())
        if data.get("format") != ANCHOR_FORMAT:
            raise ValueError("not a ledger anchor")
        anchor = Anchor(
            ledger_id=str(data["ledger_id"]),
            records=int(data["records"]),
            last_hash=str(data["last_hash"]),
            previous_hash=str(data["previous_hash"]),
            last_event=str(data["last_event"]),
            epsilon_spent=float(data["epsilon_spent"]),
            anchored_first=data.get("anchored_first") is True,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise integrity_error(path, f"its anchor {location.name} is unreadable ({error})") from None
    if anchor.records < 1 or not math.isfinite(anchor.epsilon_spent):
        raise integrity_error(path, f"its anchor {location.name} holds impossible figures")
    return anchor


def parse(path: Path, text: str) -> Chain:
    """The chained ledger in ``text``, every record and link checked."""
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    hashes: list[str] = []
    releases: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise integrity_error(path, f"line {number} is not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise integrity_error(path, f"line {number} is not a ledger record")
        if canonical(record) != line:
            raise integrity_error(path, f"line {number} is not in the ledger's canonical form")
        expected = hashes[-1] if hashes else GENESIS
        if record.get("prev") != expected:
            raise integrity_error(
                path,
                f"line {number} does not hold the hash of line {number - 1}: a record was "
                f"changed, inserted or removed at or before line {number}",
            )
        problem = check_record(record, number, releases)
        if problem:
            raise integrity_error(path, problem)
        records.append(record)
        lines.append(line)
        hashes.append(digest(line))
    if not records:
        raise integrity_error(path, "the file is empty")
    if not records[0].get("ledger_id"):
        raise integrity_error(path, "its header has no ledger_id")
    return Chain(tuple(records), tuple(lines), tuple(hashes))


def reconcile(path: Path, chain: Chain, anchor: Anchor) -> tuple[Chain, str]:
    """Check ``chain`` against ``anchor``; return the chain to use and a note for the log
    ("" when they agree). Raises :class:`LedgerIntegrityError` when they cannot agree
    by a crash between the two writes (see the module docstring)."""
    n, anchored = len(chain.lines), anchor.records
    if anchor.ledger_id != chain.ledger_id:
        raise integrity_error(
            path, f"its anchor protects ledger {anchor.ledger_id}, the file is {chain.ledger_id}"
        )
    if n == anchored and chain.last_hash == anchor.last_hash:
        return chain, ""
    if n > anchored and chain.hashes[anchored - 1] == anchor.last_hash:
        budget = _budget_at(chain, anchored)
        for index in range(anchored, n):
            record = chain.records[index]
            if not adoptable(record, budget):
                raise integrity_error(
                    path,
                    f"line {index + 1} ({record['event']}) lies past the {anchored} records "
                    "the anchor covers, and could lower the reported epsilon (a crash never "
                    "leaves such a record unanchored: it was appended)",
                )
            if record["event"] == "budget":
                budget = (record["budget"]["epsilon"], record["budget"]["delta"])
        return chain, (
            f"adopted {n - anchored} record(s) past the anchor (reserve or tighter budget: a "
            "crash between writing the ledger and its anchor)"
        )
    if n == anchored - 1 and chain.last_hash == anchor.previous_hash and anchor.anchored_first:
        return chain, (
            f"the anchored last record ({anchor.last_event}) was never written (a crash between "
            "writing the anchor and the ledger); its release counts as reserved"
        )
    if n < anchored:
        raise integrity_error(
            path,
            f"it holds {n} records but its anchor {anchored} (ε {anchor.epsilon_spent:.3g} "
            f"spent): the last {anchored - n} were cut, or an older copy was restored",
        )
    raise integrity_error(
        path,
        f"record {anchored} differs from the one anchored (ε {anchor.epsilon_spent:.3g} "
        "spent): the ledger was changed",
    )


def _budget_at(chain: Chain, count: int) -> tuple[float, float]:
    budget = (math.inf, 1.0)
    for record in chain.records[:count]:
        if record["event"] in ("header", "budget"):
            budget = (float(record["budget"]["epsilon"]), float(record["budget"]["delta"]))
    return budget


def migrate(path: Path, text: str) -> Chain:
    """A version-1 (unchained) ledger as a chained one, deterministically: its id is the
    SHA-256 of the old file, and a ``migrate`` record (no time) ends it."""
    events: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as error:
            raise integrity_error(path, f"line {number} is not valid JSON ({error})") from None
        if not isinstance(event, dict):
            raise integrity_error(path, f"line {number} is not a ledger record")
        events.append(event)
    header = {
        **events[0],
        "version": 2,
        "ledger_id": hashlib.sha256(text.encode()).hexdigest()[:32],
    }
    migrated = [
        header,
        *events[1:],
        {"event": "migrate", "from_version": 1, "records": len(events)},
    ]
    releases: dict[str, dict[str, Any]] = {}
    for number, event in enumerate(migrated, start=1):
        problem = check_record(event, number, releases)
        if problem:
            raise integrity_error(path, f"the version-1 ledger cannot be upgraded: {problem}")
    return chain_of(migrated)
