"""Stress: floods, many rounds and many jobs end cleanly and leave nothing.

Sizes are the ones issue 4 asks for; everything runs in ``make test`` on
virtual time, so only the work itself costs real time (a few seconds).
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import bulkhead
from bulkhead import Job, JobState, PoolConfig, Retry

from ._jobs import all_tasks, fail, hang_until, live_bulkhead_tasks, noop, sleep_then


def live_jobs() -> int:
    gc.collect()
    return sum(isinstance(obj, Job) for obj in gc.get_objects())


async def test_ten_thousand_blocked_dispatchers_all_get_dispatcher_closed_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()
    refused: list[int] = []
    accepted: list[int] = []
    async with bulkhead.open_dispatcher([PoolConfig(1, 2, queue=2)]) as d:
        baseline = live_jobs()
        held = [await d.dispatch(hang_until, release, priority=1) for _ in range(4)]

        async def dispatcher(i: int) -> None:
            try:
                await d.dispatch(noop, priority=1)
            except bulkhead.DispatcherClosed:
                refused.append(i)
            else:
                accepted.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(10_000):
                nursery.start_soon(dispatcher, i)
            await wait_all_tasks_blocked()
            assert d.statistics().pools[1].waiting_dispatchers == 10_000
            start = trio.current_time()
            nursery.start_soon(d.finalize)
            await wait_all_tasks_blocked()
            # Promptly: every one refused at once, none served, and the jobs
            # held before finalize are still running and queued.
            assert trio.current_time() == start
            assert sorted(refused) == list(range(10_000))
            assert accepted == []
            stats = d.statistics().pools[1]
            assert (stats.waiting_dispatchers, stats.busy, stats.queued) == (0, 2, 2)
            # The refused dispatchers' jobs are gone with them.
            assert live_jobs() - baseline == 4
            release.set()
        assert [job.state for job in held] == [JobState.SUCCEEDED] * 4
        stats = d.statistics().pools[1]
        assert (stats.submitted, stats.succeeded, stats.rejected) == (4, 4, 0)
    assert live_bulkhead_tasks() == []
    del held
    assert live_jobs() == baseline


async def test_a_thousand_barrier_rounds_keep_the_task_count_constant(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each round dispatches to every pool (a queue, retries with timeouts, a
    failure, a cancelled job), waits on per-pool barriers from background
    tasks and then on a global one. No round leaves a task behind."""
    pools = [
        PoolConfig(1, 4, queue=4),
        PoolConfig(2, 2, timeout=0.5, retry=Retry(2, backoff=0.25, jitter=False)),
        PoolConfig(3, 1, on_error="record", copy_context=False),
    ]
    async with bulkhead.open_dispatcher(pools) as d:
        baseline = len(all_tasks())
        counts: list[int] = []
        for _ in range(1000):
            for i in range(6):
                await d.dispatch(sleep_then, i % 3 * 0.25, priority=1)
            await d.dispatch(sleep_then, 1, priority=2)  # times out twice
            await d.dispatch(sleep_then, 0.25, priority=2)
            await d.dispatch(fail, "on purpose", priority=3)
            d.dispatch_nowait(noop, priority=1).cancel()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(d.barrier, 1)
                nursery.start_soon(d.barrier, 3)
            with pytest.RaisesGroup(trio.TooSlowError):  # pool 2 raises, 3 records
                await d.barrier()
            counts.append(len(all_tasks()))
        assert counts == [baseline] * 1000
        total = d.statistics().total
        assert (total.succeeded, total.failed, total.cancelled) == (7000, 2000, 1000)


async def test_a_hundred_thousand_jobs_with_no_handles_leave_no_job_alive() -> None:
    """Jobs whose handles are dropped at once: the dispatcher keeps only what
    is running or queued, and nothing once they are done."""
    pools = [
        PoolConfig(1, 4, queue=64),
        PoolConfig(2, 2, copy_context=False, on_error="record"),
    ]
    refs: list[weakref.ref[Job[Any]]] = []
    async with bulkhead.open_dispatcher(pools) as d:
        for i in range(100_000):
            priority = 1 + i % 2
            fn, args = (fail, ("on purpose",)) if i % 100 == 1 else (noop, ())
            try:
                job = d.dispatch_nowait(fn, *args, priority=priority)
            except trio.WouldBlock:
                job = await d.dispatch(fn, *args, priority=priority)
            if i % 1000 == 0:
                job.cancel()
            refs.append(weakref.ref(job))
            del job
            if i % 10_000 == 9_999:
                stats = d.statistics().total
                # Only jobs still running or queued are alive.
                gc.collect()
                alive = sum(ref() is not None for ref in refs)
                assert alive == stats.busy + stats.queued
                await d.barrier()
                gc.collect()
                assert all(ref() is None for ref in refs)
                refs.clear()
        total = d.statistics().total
        assert total.submitted == 100_000
        assert total.succeeded + total.failed + total.cancelled == 100_000
