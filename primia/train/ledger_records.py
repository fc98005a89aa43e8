"""The privacy ledger's records: which events exist, what each must hold, and what they mean.

A ledger is read only if every record is one of the known events with every key it needs,
of the right type, and the records agree with each other (a ``complete`` follows its
``reserve``, runs at most the reserved steps, once). An unknown event is an error, never
skipped: skipping one would drop its release from the composition and under-report ε.

A ``repair`` record carries an ε that the ledger adds to its composition: the figure an
operator's repair could not itemise (releases lost from a cut or deleted ledger), so a
repair never lowers the reported ε (see :mod:`primia.train.ledger_repair`).

An ``abandon`` record marks a reserved release whose update was never used (the
coordinator abandoned the federated round after the node trained). It changes nothing in
the composition: the release was made, and its ε stays spent.
"""

from __future__ import annotations

import math
from typing import Any

_NUMBER = (int, float)
_KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    "header": {"version": (int,), "accountant": (str,), "budget": (dict,)},
    "budget": {"budget": (dict,)},
    "reserve": {
        "release_id": (str,),
        "noise_multiplier": _NUMBER,
        "sample_rate": _NUMBER,
        "steps": (int,),
        "epsilon": _NUMBER,
        "delta": _NUMBER,
    },
    "complete": {"release_id": (str,), "steps": (int,), "epsilon": _NUMBER},
    "migrate": {"from_version": (int,), "records": (int,)},
    "repair": {"carried_epsilon": _NUMBER, "problem": (str,)},
    "abandon": {"release_id": (str,), "reason": (str,)},
}
EVENTS = tuple(_KEYS)


def check_record(record: Any, number: int, state: dict[str, dict[str, Any]]) -> str:
    """Check record ``number`` (1-based line) and return a problem, or "" if it is sound.

    ``state`` maps release ids to their reserve record and is updated here, so a caller
    checks the records in order with one dict.
    """
    event = record.get("event")
    if event not in _KEYS:
        return (
            f"line {number} has an unknown event {event!r} (known: {', '.join(EVENTS)}); "
            "a record's event was changed"
        )
    if (number == 1) != (event == "header"):
        return f"line {number} is a {event!r} record; a ledger has one header, on line 1"
    for key, types in _KEYS[event].items():
        value = record.get(key)
        if key not in record:
            return f"line {number} ({event}) has no {key!r}"
        if isinstance(value, bool) or not isinstance(value, types):
            return f"line {number} ({event}) has {key}={value!r}, not a {types[0].__name__}"
    if "budget" in _KEYS[event]:
        budget = record["budget"]
        for key in ("epsilon", "delta"):
            value = budget.get(key)
            if isinstance(value, bool) or not isinstance(value, _NUMBER) or not value > 0:
                return f"line {number} ({event}) has a budget without a positive {key}"
    if event == "reserve":
        return _check_reserve(record, number, state)
    if event == "complete":
        return _check_complete(record, number, state)
    if event == "abandon" and record["release_id"] not in state:
        return f"line {number} marks release {record['release_id']} abandoned, never reserved"
    if event == "repair" and not 0 <= record["carried_epsilon"] < math.inf:
        return f"line {number} (repair) has carried_epsilon out of range"
    return ""


def _check_reserve(record: dict[str, Any], number: int, state: dict[str, dict[str, Any]]) -> str:
    release_id = record["release_id"]
    if release_id in state:
        return f"line {number} reserves release {release_id} a second time"
    if record["steps"] < 0 or not math.isfinite(record["noise_multiplier"]):
        return f"line {number} (reserve) has steps or noise_multiplier out of range"
    if not 0 < record["sample_rate"] <= 1 or not record["noise_multiplier"] > 0:
        return f"line {number} (reserve) has sample_rate or noise_multiplier out of range"
    state[release_id] = dict(record)
    return ""


def _check_complete(record: dict[str, Any], number: int, state: dict[str, dict[str, Any]]) -> str:
    plan = state.get(record["release_id"])
    if plan is None:
        return f"line {number} completes release {record['release_id']}, never reserved before"
    if plan.get("completed"):
        return f"line {number} completes release {record['release_id']} a second time"
    if not 0 <= record["steps"] <= plan["steps"]:
        return (
            f"line {number} completes release {record['release_id']} with {record['steps']} "
            f"steps, outside the {plan['steps']} reserved"
        )
    plan["completed"] = True
    return ""


def anchored_first(record: dict[str, Any], budget: tuple[float, float]) -> bool:
    """Whether appending ``record`` could lower the ε the ledger reports or raise its
    ``budget`` (ε, δ): such a record is anchored *before* it is written, so a crash in
    between loses it (the ledger then over-reports) instead of leaving it unanchored."""
    if record["event"] == "complete":
        return True
    if record["event"] == "budget":
        return bool(
            record["budget"]["epsilon"] > budget[0] or record["budget"]["delta"] > budget[1]
        )
    return False


def adoptable(record: dict[str, Any], budget: tuple[float, float]) -> bool:
    """Whether ``record``, found past the anchor, can only keep or raise the reported ε
    and keep or lower the budget: a reserve, or a budget that tightens. Such a record is
    what a crash between writing the ledger and its anchor leaves; it is adopted."""
    if record["event"] == "reserve":
        return True
    return record["event"] == "budget" and not anchored_first(record, budget)
