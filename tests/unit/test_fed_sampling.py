"""Client sampling: how many nodes, which ones, reproducibly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from primia.errors import ConfigError
from primia.federated.sampling import SamplingConfig, sample


@dataclass(frozen=True)
class Node:
    name: str


NODES = [Node(f"site{i:02d}") for i in range(10)]


def draw(config: SamplingConfig, *, round_number: int = 1, attempt: int = 1, nodes=NODES):
    return [
        node.name
        for node in sample(
            nodes, config, min_nodes=2, seed=7, round_number=round_number, attempt=attempt
        )
    ]


def test_by_default_every_node_trains():
    assert draw(SamplingConfig(), nodes=list(reversed(NODES))) == [n.name for n in NODES]


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (SamplingConfig(fraction=0.3), 3),
        (SamplingConfig(fraction=0.25), 3),  # ⌈2.5⌉
        (SamplingConfig(fraction=0.01), 2),  # raised to min_nodes
        (SamplingConfig(count=4), 4),
        (SamplingConfig(count=40), 10),  # capped at the connected nodes
    ],
)
def test_the_draw_has_the_configured_size(config, size):
    names = draw(config)
    assert len(names) == len(set(names)) == size
    assert names == sorted(names)


def test_the_draw_is_reproducible_and_varies_with_round_and_attempt():
    config = SamplingConfig(count=3)
    assert draw(config) == draw(config, nodes=list(reversed(NODES)))  # order of connection
    draws = {tuple(draw(config, round_number=r, attempt=a)) for r in range(1, 6) for a in (1, 2)}
    assert len(draws) > 5


def test_each_node_is_drawn_about_as_often():
    config = SamplingConfig(fraction=0.3)
    counts = dict.fromkeys((n.name for n in NODES), 0)
    for round_number in range(1, 2001):
        for name in draw(config, round_number=round_number):
            counts[name] += 1
    # 600 draws each in expectation; binomial sd ≈ 20
    assert all(500 < count < 700 for count in counts.values()), counts


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fraction": 0.0}, "sampling.fraction must be in"),
        ({"fraction": 1.5}, "sampling.fraction must be in"),
        ({"count": -1}, "sampling.count must be 0"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        SamplingConfig(**settings)
