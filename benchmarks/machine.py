"""How busy the machine was while a benchmark measured: its figures are only as good as that.

:class:`CpuWatch` measures the share of all CPUs that *other* programs used between its
creation and :meth:`CpuWatch.foreign_share` (Linux ``/proc/stat`` minus this process and
its waited-for children), so a benchmark can flag or discard figures taken on a loaded
machine.
"""

from __future__ import annotations

import os
import time


def busy_seconds() -> float | None:
    """CPU time all processes have used so far (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU time of this process and of its children that have been waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # not available on this platform
        return "n/a"


class CpuWatch:
    """Starts watching when made; see the module docstring."""

    def __init__(self) -> None:
        self._busy = busy_seconds()
        self._own = own_seconds()
        self._started = time.perf_counter()

    def foreign_share(self) -> float | None:
        """The share (0–1) of all CPUs other programs used since the watch started."""
        after = busy_seconds()
        wall = time.perf_counter() - self._started
        if self._busy is None or after is None or wall <= 0:
            return None
        foreign = after - self._busy - (own_seconds() - self._own)
        return max(0.0, foreign / (wall * (os.cpu_count() or 1)))
