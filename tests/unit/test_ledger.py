"""The privacy ledger refuses over-budget plans and never under-reports."""

import json
import math

import pytest

from primia.errors import ConfigError, LedgerError, PrivacyBudgetExceeded
from primia.train.accounting import Mechanism, epsilon_of, noise_for_target
from primia.train.ledger import Budget, PrivacyLedger

DELTA = 1e-5


def plan(epsilon: float, steps: int = 50, sample_rate: float = 0.05) -> Mechanism:
    sigma = noise_for_target(epsilon=epsilon, delta=DELTA, sample_rate=sample_rate, steps=steps)
    return Mechanism(sigma, sample_rate, steps)


def test_new_ledger_needs_a_budget(tmp_path):
    with pytest.raises(ConfigError, match="no budget"):
        PrivacyLedger.open(tmp_path / "ledger.jsonl")


def test_reserve_within_budget_is_recorded_before_completion(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(5.0, DELTA))
    mechanism = plan(2.0)
    release = ledger.reserve(mechanism, epsilon=2.0, delta=DELTA)
    # A crash now must still count the whole plan: reopen from disk.
    reopened = PrivacyLedger.open(path)
    assert reopened.spent_epsilon() == pytest.approx(epsilon_of([mechanism], delta=DELTA))
    assert not reopened.releases()[0].completed
    reopened.complete(release, steps=20, epsilon=1.0)
    after = PrivacyLedger.open(path)
    assert after.releases()[0].completed
    assert after.releases()[0].mechanism.steps == 20
    assert after.spent_epsilon() < reopened.spent_epsilon() + 1e-9


def test_over_budget_plan_is_refused_and_not_recorded(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(3.0, DELTA))
    # Two releases of ε = 2.5 compose (PRV) to about 3.3: the second must be refused.
    ledger.reserve(plan(2.5), epsilon=2.5, delta=DELTA)
    lines_before = path.read_text()
    with pytest.raises(PrivacyBudgetExceeded, match="budget is 3"):
        ledger.reserve(plan(2.5), epsilon=2.5, delta=DELTA)
    assert path.read_text() == lines_before


def test_epsilon_per_run_composes_only_that_runs_releases(tmp_path):
    path = tmp_path / "l.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(100.0, DELTA))
    first, second = plan(1.0), plan(2.0)
    ledger.reserve(first, epsilon=1.0, delta=DELTA, run="run-a")
    ledger.reserve(second, epsilon=2.0, delta=DELTA, run="run-b")
    ledger.reserve(first, epsilon=1.0, delta=DELTA)  # outside any federation
    reopened = PrivacyLedger.open(path)
    assert [release.run for release in reopened.releases()] == ["run-a", "run-b", ""]
    assert reopened.spent_epsilon(run="run-a") == pytest.approx(epsilon_of([first], delta=DELTA))
    assert reopened.spent_epsilon(extra=first, run="run-a") == pytest.approx(
        epsilon_of([first, first], delta=DELTA)
    )
    assert reopened.spent_epsilon(run="run-c") == 0.0
    assert reopened.spent_epsilon() == pytest.approx(
        epsilon_of([first, second, first], delta=DELTA)
    )


def test_composition_is_tighter_than_the_sum_but_grows(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "l.jsonl", budget=Budget(100.0, DELTA))
    for _ in range(3):
        ledger.reserve(plan(1.0), epsilon=1.0, delta=DELTA)
    spent = ledger.spent_epsilon()
    assert 1.0 < spent <= 3.0


def test_completing_more_steps_than_reserved_is_an_error(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "l.jsonl", budget=Budget(10.0, DELTA))
    release = ledger.reserve(plan(1.0, steps=10), epsilon=1.0, delta=DELTA)
    with pytest.raises(LedgerError, match="under-reserved"):
        ledger.complete(release, steps=11, epsilon=1.1)
    ledger.complete(release, steps=10, epsilon=1.0)
    with pytest.raises(LedgerError, match="already completed"):
        ledger.complete(release, steps=10, epsilon=1.0)


def test_budget_change_is_recorded_and_accountant_is_fixed(tmp_path):
    path = tmp_path / "l.jsonl"
    PrivacyLedger.open(path, budget=Budget(1.0, DELTA))
    ledger = PrivacyLedger.open(path, budget=Budget(2.0, DELTA))
    assert ledger.budget.epsilon == 2.0
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events == ["header", "budget"]
    with pytest.raises(ConfigError, match="accountant"):
        PrivacyLedger.open(path, accountant="rdp")


def test_corrupt_ledger_is_reported_with_its_line(tmp_path):
    path = tmp_path / "l.jsonl"
    PrivacyLedger.open(path, budget=Budget(1.0, DELTA))
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(LedgerError, match="line 2"):
        PrivacyLedger.open(path)


def test_infinite_budget_accepts_everything_finite(tmp_path):
    ledger = PrivacyLedger.open(tmp_path / "l.jsonl", budget=Budget(math.inf, DELTA))
    ledger.reserve(plan(8.0), epsilon=8.0, delta=DELTA)
    assert math.isfinite(ledger.spent_epsilon())


def test_an_abandoned_release_stays_charged_and_is_marked(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger.open(path, budget=Budget(5.0, DELTA))
    release = ledger.reserve(plan(1.0), epsilon=1.0, delta=DELTA, run="r")
    ledger.complete(release, steps=50, epsilon=1.0)
    spent = ledger.spent_epsilon()
    ledger.abandon(release, reason="run-r1a1-site0: round 1, attempt 1: 1 updates of the 2 needed")
    reopened = PrivacyLedger.open(path)  # the chain and anchor accept the record
    assert reopened.spent_epsilon() == pytest.approx(spent)
    (marked,) = reopened.releases()
    assert marked.abandoned.startswith("run-r1a1-site0") and marked.completed
    with pytest.raises(LedgerError, match="never reserved"):
        reopened.abandon("not-a-release", reason="x")
