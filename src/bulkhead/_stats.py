"""Statistics snapshots and batch reports.

Everything here is a frozen value built on demand from live counters, the way
trio's ``*Statistics`` classes are: O(pools) to build, never cached, valid after
the dispatcher has finished. The live tally a barrier turns into a
:class:`BatchReport` is ``_batch._Batch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, final

import attrs


@final
@attrs.frozen
class PoolStatistics:
    """A snapshot of one pool, returned inside :class:`DispatcherStatistics`.

    The gauges (``workers``, ``current_workers``, ``limit``, ``paused``,
    ``busy``, ``idle``, ``abandoned``, ``queued``, ``waiting_dispatchers``)
    describe the moment of the snapshot; the counters only grow. In
    :attr:`DispatcherStatistics.total`, ``paused`` says whether any pool is.
    At every moment ``submitted == queued + busy + succeeded + failed +
    cancelled``.
    """

    name: str
    """The pool's name (:attr:`PoolConfig.name`, else its priority's); in
    :attr:`DispatcherStatistics.total`, ``"total"``."""
    workers: int
    """How many workers the pool has, or is resizing to (its bound on
    concurrently running jobs)."""
    current_workers: int
    """Worker tasks alive now. It differs from ``workers`` while a resize is
    in progress (busy workers retire once their job has ended)."""
    limit: int
    """Most jobs the pool starts at once, which is its
    :class:`AdaptiveLimit`'s current value, else ``workers``."""
    paused: bool
    """Whether the pool is paused (:meth:`Dispatcher.pause`): it accepts jobs
    into its queue but starts none."""
    busy: int
    """Jobs running right now (handed to a worker and not finished)."""
    idle: int
    """Workers parked and ready to take a job at once."""
    abandoned: int
    """Workers still held by a thread job that already ended as timed out or
    cancelled but has not really returned yet."""
    queued: int
    """Accepted jobs waiting in the pool's queue for a worker."""
    waiting_dispatchers: int
    """Tasks blocked in :meth:`Dispatcher.dispatch` on this pool."""
    submitted: int
    """Jobs accepted by the pool."""
    started: int
    """Jobs a worker took, which is when their first attempt began
    (:attr:`Job.attempts` is 1 from then); counted by the time a rendezvous
    dispatch returns."""
    succeeded: int
    """Jobs that returned a value."""
    failed: int
    """Jobs that raised an exception (after their last attempt)."""
    cancelled: int
    """Jobs that ended cancelled, by :meth:`Job.cancel` or a finalize grace period."""
    retried: int
    """Attempts that failed and were scheduled for a retry (counted when the
    backoff begins)."""
    timed_out: int
    """Attempts that overran their timeout."""
    rejected: int
    """Dispatches refused for want of room, which are
    :meth:`Dispatcher.dispatch_nowait` calls that raised :exc:`trio.WouldBlock`
    and dispatches whose ``max_wait`` ran out (:exc:`PoolFull`)."""

    @classmethod
    def _sum(cls, parts: Iterable[PoolStatistics]) -> PoolStatistics:
        fields = attrs.fields(cls)
        totals: dict[str, Any] = dict.fromkeys(
            (f.name for f in fields if f.name != "name"), 0
        )
        for part in parts:
            for name in totals:
                totals[name] += getattr(part, name)
        return cls(name="total", **{**totals, "paused": bool(totals["paused"])})


@final
@attrs.frozen
class DispatcherStatistics:
    """A snapshot of a whole dispatcher, returned by :meth:`Dispatcher.statistics`."""

    pools: Mapping[int, PoolStatistics]
    """Read-only mapping from priority to that pool's :class:`PoolStatistics`."""
    total: PoolStatistics
    """Every field summed over all pools."""
    closed: bool
    """Whether intake has stopped (:meth:`Dispatcher.finalize` has begun)."""


@final
@attrs.frozen
class BatchReport:
    """What one barrier (or finalize) found: the jobs of its batch and how they ended.

    Each job is counted by exactly one report: the first covering barrier or
    finalize to complete.
    """

    jobs: int
    """Jobs of the batch (``succeeded + failed + cancelled``)."""
    succeeded: int
    """Jobs of the batch that returned a value."""
    failed: int
    """Jobs of the batch that raised."""
    cancelled: int
    """Jobs of the batch that ended cancelled."""
    elapsed: float
    """Seconds (on trio's clock) the barrier waited for its batch."""
