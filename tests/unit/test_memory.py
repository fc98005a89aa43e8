"""primia.memory: after reuse_freed_memory, allocating a block of a size freed before
reuses memory instead of faulting in fresh pages, in the main thread and in others."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator options are glibc's",
)

# Allocates and frees an 80 MB block (above glibc's largest automatic mmap threshold)
# ROUNDS times and prints the page faults of each allocation.
SCRIPT = """
import resource, sys, threading
import torch
from primia.memory import reuse_freed_memory

applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
faults = []

def allocate_repeatedly():
    for _ in range(int(sys.argv[3])):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.zeros(20_000_000)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del block

if sys.argv[2] == "thread":
    worker = threading.Thread(target=allocate_repeatedly)
    worker.start()
    worker.join()
else:
    allocate_repeatedly()
print(applied, *faults)
"""
ROUNDS = 24
PAGES = 80_000_000 // 4096


def _faults(setting: str, where: str) -> tuple[str, list[int]]:
    """Page faults of the last third of the allocations: glibc's heap takes some
    rounds to hold free blocks that fit (posix_memalign asks for a little more than the
    block it freed)."""
    applied, *faults = subprocess.run(
        [sys.executable, "-c", SCRIPT, setting, where, str(ROUNDS)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return applied, [int(count) for count in faults[-(ROUNDS // 3) :]]


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_freed_block_is_reused(where: str) -> None:
    applied, faults = _faults("reuse", where)
    assert applied == "True"
    assert sum(faults) < PAGES // 10


def test_without_it_the_block_is_faulted_in_again() -> None:
    """The default this module changes (so the test above can tell the difference)."""
    applied, faults = _faults("default", "main")
    assert applied == "None"
    assert min(faults) > PAGES // 2
