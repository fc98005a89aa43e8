"""Noise calibration and composition agree with Opacus' accountants."""

import pytest
from opacus.accountants import RDPAccountant, create_accountant

from primia.errors import ConfigError
from primia.train.accounting import Mechanism, epsilon_of, merge, noise_for_target


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_calibrated_noise_meets_but_does_not_overshoot_target(accountant):
    sigma = noise_for_target(
        epsilon=3.0, delta=1e-5, sample_rate=0.05, steps=100, accountant=accountant
    )
    spent = epsilon_of([Mechanism(sigma, 0.05, 100)], delta=1e-5, accountant=accountant)
    assert 2.9 <= spent <= 3.0


def test_rdp_matches_opacus_for_a_known_plan():
    accountant = RDPAccountant()
    accountant.history = [(1.1, 0.01, 1000)]
    expected = accountant.get_epsilon(delta=1e-5)
    assert epsilon_of([Mechanism(1.1, 0.01, 1000)], delta=1e-5, accountant="rdp") == expected


def test_more_noise_means_less_epsilon():
    low = epsilon_of([Mechanism(2.0, 0.1, 50)], delta=1e-5)
    high = epsilon_of([Mechanism(1.0, 0.1, 50)], delta=1e-5)
    assert low < high


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 0.0}, "epsilon must be positive"),
        ({"delta": 1.5}, "delta must be in"),
        ({"sample_rate": 0.0}, "sample rate"),
        ({"steps": 0}, "at least one step"),
    ],
)
def test_bad_plans_are_rejected(kwargs, message):
    plan = {"epsilon": 1.0, "delta": 1e-5, "sample_rate": 0.1, "steps": 10} | kwargs
    with pytest.raises(ConfigError, match=message):
        noise_for_target(**plan)


def test_unknown_accountant():
    with pytest.raises(ConfigError, match="unknown accountant"):
        epsilon_of([Mechanism(1.0, 0.1, 1)], delta=1e-5, accountant="gdp")  # type: ignore[arg-type]


HISTORIES = [
    [Mechanism(1.1, 0.01, 100)],
    [Mechanism(3.48, 8 / 12, 2)] * 6,  # six rounds of one plan at a node
    [Mechanism(0.8, 0.2, 7), Mechanism(1.1, 0.01, 30), Mechanism(0.8, 0.2, 5)],
    [Mechanism(1.1, 0.01, 0), Mechanism(2.0, 0.05, 40), Mechanism(1.1, 0.01, 9)],
]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("history", HISTORIES, ids=range(len(HISTORIES)))
def test_merged_composition_is_what_opacus_computes_for_the_whole_history(accountant, history):
    engine = create_accountant(mechanism=accountant)
    engine.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in history if m.steps]
    expected = float(engine.get_epsilon(delta=1e-5))
    assert epsilon_of(history, delta=1e-5, accountant=accountant) == pytest.approx(
        expected, rel=1e-7
    )


def test_equal_mechanisms_are_merged_in_order_and_empty_ones_dropped():
    history = [Mechanism(1.0, 0.1, 3), Mechanism(2.0, 0.1, 4), Mechanism(1.0, 0.1, 5)]
    assert merge([*history, Mechanism(3.0, 0.1, 0)]) == (
        Mechanism(1.0, 0.1, 8),
        Mechanism(2.0, 0.1, 4),
    )
    assert epsilon_of([Mechanism(3.0, 0.1, 0)], delta=1e-5) == 0.0
