"""How many of a pool's jobs may run: its size, pause and adaptive limit.

A pool can start fewer jobs than it has idle workers: while it is paused,
held by an :class:`AdaptiveLimit`, or shrinking. :class:`_Capacity` decides
how many may run (:meth:`_Capacity.gate`); the pool keeps the answer as its
own ``_gated`` flag and ``_cap``, so the common path pays one flag test, and
asks again whenever something here changed (pause, resize, a new limit,
a busy worker retired).

Resizing: growing first keeps busy workers that were to retire, then asks
for new workers; shrinking retires idle workers at once and busy ones after
their job (``excess``). The pool wakes the idle ones (it owns the
scheduling); the dispatcher's lifetime spawns new ones.
"""

from __future__ import annotations

import attrs
import trio

from ._errors import PoolFull
from ._limit import _Limiter
from ._policy import PoolConfig


@attrs.define(eq=False)
class _Capacity:
    """A pool's bound on running jobs, and its resizing arithmetic."""

    size: int
    """How many workers the pool should have (``resize`` changes it)."""
    limiter: _Limiter | None
    paused: bool = False
    leaving: int = 0
    """Workers told to retire that have not exited yet."""
    excess: int = 0
    """Busy workers that are to retire once their job has ended."""

    @classmethod
    def of(cls, config: PoolConfig) -> _Capacity:
        limit = config.limit
        return cls(
            config.workers,
            None if limit is None else _Limiter(limit, config.workers),
        )

    @property
    def limit(self) -> int:
        """Most jobs that may run at once, pause aside."""
        limiter = self.limiter
        return self.size if limiter is None else min(self.size, limiter.current)

    def gate(self) -> tuple[bool, int]:
        """Whether the cap can bind below the idle workers, and the cap.

        Gated while paused, under an adaptive limit, or while busy workers
        are to retire (so a freed worker checks whether it is the one).
        """
        gated = self.paused or self.limiter is not None or self.excess > 0
        return gated, 0 if self.paused else self.limit

    def resize(self, workers: int, live: int, idle: int) -> tuple[int, int]:
        """Make the pool ``workers`` strong, with ``live`` workers alive and
        ``idle`` of them idle; returns how many to spawn and how many idle
        workers to retire now (the caller wakes them)."""
        self.size = workers
        if self.limiter is not None:
            self.limiter.resize(workers)
        staying = live - self.leaving - self.excess
        if workers > staying:
            kept = min(workers - staying, self.excess)
            self.excess -= kept
            return workers - staying - kept, 0
        retire = staying - workers
        now = min(retire, idle)
        self.leaving += now
        self.excess += retire - now
        return 0, now

    def retire_busy(self) -> bool:
        """A worker's job ended: whether that worker is to retire now."""
        if not self.excess:
            return False
        self.excess -= 1
        self.leaving += 1
        return True

    def retired(self) -> None:
        """A worker told to retire has exited."""
        self.leaving -= 1

    def observe(self, latency: float, result: object, running: int) -> bool:
        """Feed the adaptive limit one finished job; whether the limit changed."""
        limiter = self.limiter
        assert limiter is not None
        congested = isinstance(result, trio.TooSlowError)
        before = limiter.current
        limiter.observe(latency, congested, running)
        return limiter.current != before

    def full_error(self, config: PoolConfig, max_wait: float) -> PoolFull:
        """The :exc:`PoolFull` of a dispatch that found no room in ``max_wait``."""
        why = (
            "it is paused"
            if self.paused
            else f"its {self.size} workers stayed busy and its queue of "
            f"{config.queue} full"
        )
        return PoolFull(
            f"pool {config.priority!r} took no job in max_wait={max_wait!r} s: "
            f"{why}; shed the job, retry later, or give the pool more workers, "
            "queue or max_wait",
            config.priority,
            max_wait,
        )
