"""How many CPU threads a computing command gives PyTorch by default.

PyTorch's default is one OpenMP thread per core. On a machine whose cores other processes
also use (a shared hospital server, a CI runner, several nodes on one box) that is often
far slower than fewer threads: every parallel operation ends at a barrier where each
thread waits (spinning, then sleeping) for the slowest, and a thread the kernel has
descheduled for another process holds up all the others. The models here are small
(32–224 px images, batches of tens), so each operation has little work to share and the
barriers dominate. On a 2-core VM shared with other work, a gradient-inversion attack took
21 s with PyTorch's default and 1.1 s with one thread; local DP training 130 s vs 78 s.

:func:`default_threads` is therefore conservative: half the cores this process may run on,
at least 1 and at most 4. ``OMP_NUM_THREADS``, if set, wins (PyTorch already follows it);
``--threads N`` (or the configurations' ``threads``) chooses explicitly, and ``0`` asks for
PyTorch's own default (all cores), which is fastest on a machine nothing else uses.
"""

from __future__ import annotations

import os

from primia.errors import ConfigError

MAX_DEFAULT_THREADS = 4


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), or the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int | None:
    """Threads for PyTorch when none were asked for: ``None`` (leave PyTorch's choice) when
    ``OMP_NUM_THREADS`` is set, else ``clamp(cores // 2, 1, 4)``."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, min(MAX_DEFAULT_THREADS, available_cores() // 2))


def resolve_threads(threads: int | None) -> int | None:
    """The thread count to set: ``threads`` if given (``0``: PyTorch's default, ``None``
    here), else :func:`default_threads`."""
    if threads is None:
        return default_threads()
    return threads or None


def set_torch_threads(threads: int | None) -> None:
    """Give PyTorch :func:`resolve_threads` ``(threads)`` intra-op threads."""
    if threads is not None and threads < 0:
        raise ConfigError(f"--threads {threads}: give 1 or more, or 0 for PyTorch's default")
    resolved = resolve_threads(threads)
    if resolved is not None:
        import torch  # here, not at import: the CLI imports this module before torch

        torch.set_num_threads(resolved)
