"""Client sampling: which of the connected nodes train in a round.

With ``[sampling]`` in the coordinator's configuration, each attempt of round t trains on

    k = count                                   when count > 0, else
    k = ⌈fraction · m⌉                          of the m connected nodes,

raised to ``min_nodes`` and capped at m, drawn uniformly without replacement by a
generator seeded with (seed, t, attempt), so a restarted coordinator draws the same nodes
and a run can be reproduced. The others sit the round out (they still evaluate).

**No privacy amplification is claimed.** Amplification by subsampling needs the
selection to be random *and secret* from the adversary. Here the coordinator draws it (a
dishonest one picks whom it likes, and no node can check that a draw was fair) and
announces the participants (secure aggregation needs them), so a node's ledger accounts
every round it trains as a full release, and rounds it sits out cost it nothing — the
same accounting as without sampling. A node could claim amplification only by sampling
itself, with its own secret coin, and hiding whether it took part; primia's nodes do
not (see docs/threat-model.md).

Pure logic: no transport.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from primia.errors import ConfigError


@dataclass(frozen=True)
class SamplingConfig:
    """The coordinator's ``[sampling]`` table; the defaults train every connected node."""

    fraction: float = 1.0
    """The share of the connected nodes drawn each round (ignored when ``count`` > 0)."""
    count: int = 0
    """Nodes drawn each round; 0: use ``fraction``."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fraction) and 0 < self.fraction <= 1):
            raise ConfigError(f"sampling.fraction must be in (0, 1], not {self.fraction}")
        if self.count < 0:
            raise ConfigError(f"sampling.count must be 0 (use fraction) or more, not {self.count}")

    @property
    def everyone(self) -> bool:
        return self.count == 0 and self.fraction == 1.0

    def size(self, connected: int, min_nodes: int) -> int:
        """How many of ``connected`` nodes train (see the module docstring)."""
        wanted = self.count or math.ceil(self.fraction * connected)
        return min(connected, max(wanted, min_nodes))


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def sample(
    nodes: Sequence[N],
    config: SamplingConfig,
    *,
    min_nodes: int,
    seed: int,
    round_number: int,
    attempt: int,
) -> list[N]:
    """The attempt's draw from ``nodes``, in name order (all of them when sampling is off).

    The draw depends only on the names connected, ``seed``, the round and the attempt:
    the nodes are put in name order before drawing, whatever order they connected in."""
    ordered = sorted(nodes, key=lambda node: node.name)
    if config.everyone:
        return ordered
    size = config.size(len(ordered), min_nodes)
    generator = random.Random(f"primia-sampling/{seed}/{round_number}/{attempt}")
    chosen = generator.sample(range(len(ordered)), size)
    return [ordered[index] for index in sorted(chosen)]
