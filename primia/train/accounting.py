"""Privacy accounting for DP-SGD: calibrate the noise to a target ε, compose releases.

DP-SGD with Poisson sampling is the subsampled Gaussian mechanism applied ``steps`` times:
each example joins a step's batch with probability q (the sample rate), per-sample
gradients are clipped to norm C, and Gaussian noise of standard deviation σ·C is added to
their sum. The privacy of that composition depends only on (σ, q, steps); an accountant
turns a history of such triples into ε at a given δ:

* ``prv`` — the privacy random variable accountant (Gopi, Lee, Wutschitz; NeurIPS 2021):
  numerically composes the privacy loss distributions; tight, with a stated error bound
  (the upper estimate is used, so ε is never under-reported).
* ``rdp`` — Rényi DP (Mironov 2017; Mironov, Talwar, Zhang 2019): an upper bound, looser.

Both come from Opacus; this module only fixes how primia calls them.

>>> sigma = noise_for_target(epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=30)
>>> round(epsilon_of([Mechanism(sigma, 0.1, 30)], delta=1e-5), 1) <= 3.0
True
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

from primia.errors import ConfigError

AccountantName = Literal["prv", "rdp"]
ACCOUNTANTS: tuple[AccountantName, ...] = ("prv", "rdp")


@dataclass(frozen=True)
class Mechanism:
    """``steps`` applications of the Poisson-subsampled Gaussian mechanism."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r}; choose one of: prv, rdp")


def epsilon_of(
    history: Sequence[Mechanism], *, delta: float, accountant: AccountantName = "prv"
) -> float:
    """ε at ``delta`` of the composition of every mechanism in ``history``.

    Composition does not depend on the order of the mechanisms, and a mechanism applied
    a times and then b times is that mechanism applied a + b times; so the history is
    first merged to one entry per (σ, q). A node's ledger after R rounds of one plan is
    then one entry to account, not R: the accountants' cost grows with the entries (60 ms
    (RDP) and 140 ms (PRV) per entry and query here), and a node asks a few per round.
    """
    _check_accountant(accountant)
    merged = merge(history)
    if not merged:
        return 0.0
    if accountant == "rdp":
        return _rdp_epsilon(merged, delta)
    return _epsilon_cached(merged, delta, accountant)


def merge(history: Sequence[Mechanism]) -> tuple[Mechanism, ...]:
    """``history`` with the steps of equal (σ, q) summed, in order of first appearance;
    mechanisms applied zero times are left out (they release nothing)."""
    steps: dict[tuple[float, float], int] = {}
    for mechanism in history:
        key = (mechanism.noise_multiplier, mechanism.sample_rate)
        steps[key] = steps.get(key, 0) + mechanism.steps
    return tuple(Mechanism(noise, rate, count) for (noise, rate), count in steps.items() if count)


# Accounting is pure and slow (the PRV accountant bounds its domain with RDP at
# fractional orders: ~0.5 s a call at high sample rates), and a federated node asks the
# same questions every round: remember the answers.
@functools.lru_cache(maxsize=1024)
def _epsilon_cached(
    history: tuple[Mechanism, ...], delta: float, accountant: AccountantName
) -> float:
    engine = create_accountant(mechanism=accountant)
    engine.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in history]
    with _quiet_rdp_orders():
        return float(engine.get_epsilon(delta=delta))


def _rdp_epsilon(history: tuple[Mechanism, ...], delta: float) -> float:
    """What Opacus' RDP accountant computes, with each mechanism's Rényi divergences at
    one step remembered: RDP composes by addition (R(α) of k steps is k·R(α) of one), so
    a new step count costs a multiplication, not the series at 151 orders again."""
    rdp = sum(m.steps * np.asarray(_unit_rdp(m.noise_multiplier, m.sample_rate)) for m in history)
    with _quiet_rdp_orders():
        epsilon, _ = rdp_analysis.get_privacy_spent(
            orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
        )
    return float(epsilon)


@functools.lru_cache(maxsize=256)
def _unit_rdp(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    with _quiet_rdp_orders():
        rdp = rdp_analysis.compute_rdp(
            q=sample_rate,
            noise_multiplier=noise_multiplier,
            steps=1,
            orders=RDPAccountant.DEFAULT_ALPHAS,
        )
    return tuple(float(value) for value in rdp)


def noise_for_target(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = "prv",
) -> float:
    """The smallest noise multiplier σ (to 0.01 in ε) whose ``steps`` steps spend ≤ ε."""
    _check_accountant(accountant)
    if epsilon <= 0:
        raise ConfigError(f"target epsilon must be positive, got {epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}; 1/N² or 1e-5 is usual")
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise ConfigError(f"a training plan needs at least one step, got {steps}")
    return _noise_cached(epsilon, delta, sample_rate, steps, accountant)


@functools.lru_cache(maxsize=256)
def _noise_cached(
    epsilon: float, delta: float, sample_rate: float, steps: int, accountant: AccountantName
) -> float:
    with _quiet_rdp_orders():
        sigma = get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    return float(sigma)


@contextmanager
def _quiet_rdp_orders() -> Iterator[None]:
    """Silence Opacus' hint that the best RDP order is the largest one tried.

    The bound stays valid (only possibly loose), and the PRV accountant triggers the hint
    routinely when it uses RDP to bound its domain.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield
