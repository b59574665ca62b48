"""The jobs every contender runs, and the small helpers shared by scenarios.

The jobs are plain coroutine functions that neither trio nor asyncio owns, so
the same function objects run under both event loops. The ``dask`` scenario's
job, :func:`spin`, is a sync function instead: it runs in other processes.
"""

from __future__ import annotations

import math
import time

perf_counter = time.perf_counter


async def trivial(i: int) -> int:
    """The throughput job: no checkpoint, no work; only the dispatch path costs."""
    return i


class LatencyProbe:
    """Collects dispatch-to-start latencies of the small jobs of the isolation run.

    A probe job is ``probe.job(t0)``: it records ``perf_counter() - t0`` the moment
    a worker starts it, so the figure is the time the job waited for a worker
    (plus the hand-off itself), whatever the implementation.
    """

    def __init__(self, expected: int, event: object) -> None:
        self.samples: list[float] = []
        self.expected = expected
        # A trio.Event or asyncio.Event; only .set() is called here.
        self.done = event

    async def job(self, t0: float) -> None:
        self.samples.append(perf_counter() - t0)
        if len(self.samples) == self.expected:
            self.done.set()  # type: ignore[attr-defined]


def spin(iterations: int) -> int:
    """The CPU job of the ``dask`` scenario: a pure-Python loop, no I/O.

    Module-level, so it pickles by reference: worker processes (trio-parallel's
    and Dask's) import this module, found through the ``sys.path`` they
    inherit from ``run.py``.
    """
    total = 0
    for i in range(iterations):
        total += i
    return total


def spin_iterations_per_ms(trials: int = 5, iterations: int = 200_000) -> float:
    """How many :func:`spin` iterations take one millisecond here (best of k)."""
    best = math.inf
    for _ in range(trials):
        t0 = perf_counter()
        spin(iterations)
        best = min(best, perf_counter() - t0)
    return iterations / (best * 1e3)


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
