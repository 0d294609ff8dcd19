"""The guard with a clock on it, for benchmarks/guard_bench.py: give vLLM `guard_clock:UnlearnGuard`
(with benchmarks/ on PYTHONPATH) instead of the guard's own class name, and the engine's worker, which
vLLM's CPU backend spawns, imports this module, which times the guard's V1 adapter in that process.

vLLM calls the adapter's `update_state` (requests admitted and classified, finished ones dropped) and
`apply` (each decode step), and nothing else of it. The totals (CLOCK) are added to a small file
($GUARD_BENCH_CLOCK, float64s) mapped into memory, which the benchmark reads from its own process.
"""

from __future__ import annotations

import os
import time

import numpy as np

from unlearnkit.guard.vllm_plugin import UnlearnGuard  # noqa: F401 - the class vLLM builds
from unlearnkit.guard.vllm_v1 import GuardProcessorV1

CLOCK = ("seconds", "calls", "update_state", "apply")
CLOCK_ENV = "GUARD_BENCH_CLOCK"


def open_clock(path: str, create: bool = False) -> np.memmap:
    return np.memmap(path, dtype=np.float64, mode="w+" if create else "r+", shape=(len(CLOCK),))


def _time(clock: np.memmap, name: str) -> None:
    inner, at = getattr(GuardProcessorV1, name), CLOCK.index(name)

    def timed(self, *args):
        started = time.perf_counter()
        try:
            return inner(self, *args)
        finally:
            spent = time.perf_counter() - started
            clock[0] += spent
            clock[1] += 1
            clock[at] += spent
    setattr(GuardProcessorV1, name, timed)


if os.environ.get(CLOCK_ENV):
    _clock = open_clock(os.environ[CLOCK_ENV])
    for _name in ("update_state", "apply"):
        _time(_clock, _name)
