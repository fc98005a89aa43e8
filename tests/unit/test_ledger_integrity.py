"""A changed, cut or lost privacy ledger is refused, never read as a smaller ε (issue 22).

Each tampering test first shows that the tampered file, read as version 1 read it
(unknown events skipped, no chain, no anchor), reports less ε than was spent: without
the check the node would have trained on a budget it had already used.
"""

import json
from pathlib import Path

import pytest

from primia.config import atomic_write_bytes
from primia.errors import ConfigError, LedgerError, LedgerIntegrityError
from primia.train.accounting import Mechanism, epsilon_of
from primia.train.ledger import Budget, PrivacyLedger
from primia.train.ledger_chain import anchor_path, canonical, chain_of, read_anchor
from primia.train.ledger_records import anchored_first
from primia.train.ledger_repair import repair, verify

DELTA = 1e-5
PLAN = Mechanism(1.1, 0.05, 60)


def v1_epsilon(path: Path) -> float:
    """ε as primia read a ledger before issue 22: unknown events skipped, nothing checked."""
    if not path.exists():
        return 0.0
    reserved, completed = {}, {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "reserve":
            reserved[event["release_id"]] = event
        elif event["event"] == "complete":
            completed[event["release_id"]] = event
    history = [
        Mechanism(
            plan["noise_multiplier"],
            plan["sample_rate"],
            int(completed[rid]["steps"]) if rid in completed else plan["steps"],
        )
        for rid, plan in reserved.items()
    ]
    return epsilon_of(history, delta=DELTA, accountant="rdp")


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "privacy-ledger.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(10.0, DELTA), accountant="rdp")
    first = ledger.reserve(PLAN, epsilon=1.0, delta=DELTA)
    ledger.complete(first, steps=60, epsilon=1.0)
    second = ledger.reserve(PLAN, epsilon=1.0, delta=DELTA)
    ledger.complete(second, steps=60, epsilon=1.0)
    return path


def spent(path: Path) -> float:
    return PrivacyLedger.open(path, accountant="rdp").spent_epsilon()


def refused(path: Path, problem: str) -> str:
    with pytest.raises(LedgerIntegrityError, match=problem) as caught:
        PrivacyLedger.open(path, budget=Budget(10.0, DELTA), accountant="rdp")
    message = str(caught.value)
    assert "primia ledger repair" in message and "backup" in message
    return message


def test_an_intact_ledger_opens_and_its_anchor_matches(ledger_path: Path) -> None:
    anchor = read_anchor(ledger_path)
    assert anchor is not None and anchor.records == 5
    assert anchor.epsilon_spent == pytest.approx(spent(ledger_path))
    assert spent(ledger_path) == pytest.approx(v1_epsilon(ledger_path))


def test_one_byte_changed_in_an_event_name(ledger_path: Path) -> None:
    original = spent(ledger_path)
    text = ledger_path.read_text()
    ledger_path.write_text(text.replace('"event":"reserve"', '"event":"reservE"', 1))
    assert v1_epsilon(ledger_path) < original - 0.1  # the release vanished
    refused(ledger_path, "unknown event 'reservE'")


def test_a_step_count_edited(ledger_path: Path) -> None:
    original = spent(ledger_path)
    lines = ledger_path.read_text().splitlines()
    record = json.loads(lines[2])
    assert record["event"] == "complete"
    record["steps"] = 6
    lines[2] = canonical(record)
    ledger_path.write_text("\n".join(lines) + "\n")
    assert v1_epsilon(ledger_path) < original - 0.1
    refused(ledger_path, "line 4 does not hold the hash of line 3")


def test_the_last_record_edited_is_caught_by_the_anchor(ledger_path: Path) -> None:
    original = spent(ledger_path)
    lines = ledger_path.read_text().splitlines()
    record = json.loads(lines[-1])
    record["steps"] = 1
    lines[-1] = canonical(record)
    ledger_path.write_text("\n".join(lines) + "\n")
    assert v1_epsilon(ledger_path) < original - 0.1
    refused(ledger_path, "record 5 differs from the one anchored")


@pytest.mark.parametrize("kept", [3, 1], ids=["last-lines-cut", "reduced-to-header"])
def test_the_last_lines_cut(ledger_path: Path, kept: int) -> None:
    original = spent(ledger_path)
    lines = ledger_path.read_text().splitlines()[:kept]
    ledger_path.write_text("\n".join(lines) + "\n")
    assert v1_epsilon(ledger_path) < original - 0.1
    message = refused(ledger_path, f"holds {kept} records but its anchor 5")
    assert f"{original:.3g}" in message


def test_a_deleted_ledger_is_not_created_again(ledger_path: Path) -> None:
    ledger_path.unlink()
    assert v1_epsilon(ledger_path) == 0.0
    refused(ledger_path, "the ledger is missing, but its anchor records 5 records")


def test_a_reserve_missing_a_key_is_a_clear_error(ledger_path: Path) -> None:
    lines = ledger_path.read_text().splitlines()
    record = json.loads(lines[1])
    del record["noise_multiplier"]
    lines[1] = canonical(record)
    ledger_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(KeyError):
        v1_epsilon(ledger_path)  # how version 1 failed: a traceback
    refused(ledger_path, "line 2 \\(reserve\\) has no 'noise_multiplier'")


def test_a_missing_anchor_is_refused(ledger_path: Path) -> None:
    anchor_path(ledger_path).unlink()
    refused(ledger_path, "its anchor is missing")


def test_an_anchor_of_another_ledger_is_refused(ledger_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "privacy-ledger.jsonl"
    PrivacyLedger.open(other, budget=Budget(10.0, DELTA), accountant="rdp")
    anchor_path(ledger_path).write_bytes(anchor_path(other).read_bytes())
    refused(ledger_path, "its anchor protects ledger")


def test_an_appended_complete_is_not_adopted(tmp_path: Path) -> None:
    """Someone who can write only the ledger appends a complete of fewer steps to a
    release left open by a crash: it lies past the anchor and would lower ε."""
    path = tmp_path / "l.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(10.0, DELTA), accountant="rdp")
    release = ledger.reserve(PLAN, epsilon=1.0, delta=DELTA)
    original = spent(path)
    chain = chain_of([json.loads(line) for line in path.read_text().splitlines()])
    forged = chain.extended(
        {"event": "complete", "release_id": release, "steps": 1, "epsilon": 0.1, "time": "t"}
    )
    path.write_bytes(forged.text())
    assert v1_epsilon(path) < original - 0.1
    refused(path, "line 3 \\(complete\\) lies past the 2 records")


def test_crash_after_a_reserve_is_written_before_its_anchor(tmp_path: Path) -> None:
    """Reserve is written ledger first: a crash before the anchor leaves a record past
    the anchor, which is adopted (it raises ε), and the anchor catches up."""
    path = tmp_path / "l.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(10.0, DELTA), accountant="rdp")
    stale_anchor = anchor_path(path).read_bytes()
    ledger.reserve(PLAN, epsilon=1.0, delta=DELTA)
    anchor_path(path).write_bytes(stale_anchor)  # as if the process died between the writes
    reopened = PrivacyLedger.open(path, accountant="rdp")
    assert len(reopened.releases()) == 1
    assert reopened.spent_epsilon() == pytest.approx(
        epsilon_of([PLAN], delta=DELTA, accountant="rdp")
    )
    anchor = read_anchor(path)
    assert anchor is not None and anchor.records == 2


def test_crash_after_a_completes_anchor_before_the_ledger(tmp_path: Path) -> None:
    """Complete is anchored first: a crash before the ledger loses the complete, and the
    release counts with its reserved steps (more ε, never less)."""
    path = tmp_path / "l.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(10.0, DELTA), accountant="rdp")
    release = ledger.reserve(PLAN, epsilon=1.0, delta=DELTA)
    before = path.read_bytes()
    ledger.complete(release, steps=10, epsilon=0.3)
    path.write_bytes(before)  # the anchor was written, the ledger not yet
    reopened = PrivacyLedger.open(path, accountant="rdp")
    (kept,) = reopened.releases()
    assert not kept.completed and kept.mechanism.steps == PLAN.steps


def test_the_write_order_is_the_one_that_over_reports(tmp_path: Path) -> None:
    budget = (10.0, DELTA)
    assert anchored_first({"event": "complete"}, budget)
    assert anchored_first({"event": "budget", "budget": {"epsilon": 20.0, "delta": DELTA}}, budget)
    assert not anchored_first(
        {"event": "budget", "budget": {"epsilon": 5.0, "delta": DELTA}}, budget
    )
    assert not anchored_first({"event": "reserve"}, budget)


def test_crash_while_creating_leaves_an_anchor_that_spent_nothing(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    PrivacyLedger.open(path, budget=Budget(10.0, DELTA), accountant="rdp")
    path.unlink()  # the anchor was written first; the ledger never was
    anchor = read_anchor(path)
    assert anchor is not None and (anchor.records, anchor.epsilon_spent) == (1, 0.0)
    ledger = PrivacyLedger.open(path, budget=Budget(10.0, DELTA), accountant="rdp")
    assert ledger.spent_epsilon() == 0.0


def test_an_unchained_version_1_ledger_is_upgraded_once(tmp_path: Path, caplog) -> None:
    path = tmp_path / "l.jsonl"
    header = {
        "event": "header",
        "version": 1,
        "accountant": "rdp",
        "budget": {"epsilon": 10.0, "delta": DELTA},
        "time": "t",
    }
    reserve = {
        "event": "reserve",
        "release_id": "a" * 32,
        "noise_multiplier": PLAN.noise_multiplier,
        "sample_rate": PLAN.sample_rate,
        "steps": PLAN.steps,
        "epsilon": 1.0,
        "delta": DELTA,
        "description": "",
        "time": "t",
    }
    path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in (header, reserve)))
    ledger = PrivacyLedger.open(path, accountant="rdp")
    assert "upgrading from format version 1" in caplog.text
    assert ledger.spent_epsilon() == pytest.approx(
        epsilon_of([PLAN], delta=DELTA, accountant="rdp")
    )
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events == ["header", "reserve", "migrate"]
    caplog.clear()
    PrivacyLedger.open(path, accountant="rdp")
    assert "upgrading" not in caplog.text
    # Once chained, replacing it by an old-format file is caught by the anchor.
    path.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in (header,)))
    refused(path, "old unchained format")


def test_an_unreadable_anchor_is_refused(ledger_path: Path) -> None:
    atomic_write_bytes(anchor_path(ledger_path), b"{}")
    with pytest.raises(LedgerError, match=r"anchor .* is unreadable"):
        PrivacyLedger.open(ledger_path, accountant="rdp")


def test_repair_of_a_cut_ledger_carries_the_anchored_epsilon(ledger_path: Path) -> None:
    original = spent(ledger_path)
    lines = ledger_path.read_text().splitlines()[:3]
    ledger_path.write_text("\n".join(lines) + "\n")
    dry = repair(ledger_path)
    assert not dry.written and dry.carried_epsilon == pytest.approx(original)
    refused(ledger_path, "holds 3 records")  # nothing was written without accept
    done = repair(ledger_path, accept=True)
    assert done.written and done.damaged_copy is not None and done.damaged_copy.exists()
    repaired = PrivacyLedger.open(ledger_path, accountant="rdp")
    assert repaired.spent_epsilon() >= original  # never lower than what was anchored
    assert verify(ledger_path).problem == ""
    assert [json.loads(line)["event"] for line in ledger_path.read_text().splitlines()][-1] == (
        "repair"
    )


def test_repair_of_an_edited_record_drops_nothing_it_can_keep(ledger_path: Path) -> None:
    original = spent(ledger_path)
    text = ledger_path.read_text()
    ledger_path.write_text(text.replace('"event":"reserve"', '"event":"reservE"', 1))
    assert "unknown event" in verify(ledger_path).problem
    done = repair(ledger_path, accept=True)
    assert done.dropped == 2  # the reservE line and the complete of its release
    assert spent(ledger_path) >= original


def test_repair_refuses_an_intact_ledger_and_a_lower_figure(ledger_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to repair"):
        repair(ledger_path, accept=True)
    with pytest.raises(ConfigError, match="nothing to repair"):
        repair(ledger_path, at_least=0.01, accept=True)


def test_repair_of_a_deleted_ledger_needs_the_budget(ledger_path: Path) -> None:
    original = spent(ledger_path)
    ledger_path.unlink()
    with pytest.raises(ConfigError, match=r"header .* is lost"):
        repair(ledger_path, accept=True)
    budget = Budget(10.0, DELTA)
    with pytest.raises(ConfigError, match="give --unit"):  # nothing says what ε protected
        repair(ledger_path, accept=True, budget=budget, accountant="rdp")
    repair(ledger_path, accept=True, budget=budget, accountant="rdp", unit="example")
    assert spent(ledger_path) == pytest.approx(original)


def test_the_cli_verifies_and_repairs_only_with_accept(ledger_path: Path, capsys) -> None:
    from primia.cli import main

    assert main(["ledger", "verify", str(ledger_path)]) == 0
    ledger_path.write_text(ledger_path.read_text().splitlines()[0] + "\n")
    assert main(["ledger", "verify", str(ledger_path)]) == 2
    assert "holds 1 records but its anchor 5" in capsys.readouterr().out
    assert main(["ledger", "repair", str(ledger_path), "--unit", "example"]) == 1
    assert "nothing written" in capsys.readouterr().out
    assert main(["ledger", "repair", str(ledger_path), "--accept", "--unit", "example"]) == 0
    assert main(["ledger", "verify", str(ledger_path)]) == 0


def test_a_cut_tighter_budget_is_not_taken_for_a_crash(ledger_path: Path) -> None:
    """A tighter budget is written ledger first; cutting it would loosen the budget."""
    PrivacyLedger.open(ledger_path, budget=Budget(5.0, DELTA), accountant="rdp")
    lines = ledger_path.read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "budget"
    ledger_path.write_text("\n".join(lines[:-1]) + "\n")
    refused(ledger_path, "holds 5 records but its anchor 6")
