"""Whatever a job raises while it is being cancelled is that job's outcome.

Isolation is the promise of the library: a job's failure ends that job and
nothing else. A job can fail *during* its cancellation too (a nursery whose
child raises in its cleanup gives a group of ``Cancelled`` and the error);
that must neither crash its worker nor reach another pool (issue 12, item 1).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import bulkhead
from bulkhead import JobState, PoolConfig

from ._jobs import hang_until, sync_noop

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


async def raises_plain() -> None:
    try:
        await trio.sleep_forever()
    except trio.Cancelled:
        raise ValueError("cleanup failed") from None


async def raises_from_finally() -> None:
    try:
        await trio.sleep_forever()
    finally:
        raise ValueError("cleanup failed")


async def raises_group() -> None:
    try:
        await trio.sleep_forever()
    finally:
        raise ExceptionGroup("cleanup", [ValueError("cleanup failed")])


async def raises_group_with_cancelled() -> None:
    """A nursery whose child fails in its cleanup: the nursery raises a group
    of the child's ValueError and the body's Cancelled."""

    async def child() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("cleanup failed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
        await trio.sleep_forever()


ASYNC_JOBS: dict[str, Callable[[], Awaitable[None]]] = {
    "plain exception": raises_plain,
    "exception from finally": raises_from_finally,
    "exception group": raises_group,
    "exception group with Cancelled": raises_group_with_cancelled,
}


def cleanup_failure(error: BaseException) -> bool:
    """Whether ``error`` is the job's ValueError, alone or in a group."""
    if isinstance(error, ExceptionGroup):
        return all(cleanup_failure(e) for e in error.exceptions)
    return isinstance(error, ValueError) and str(error) == "cleanup failed"


@pytest.mark.parametrize("how", ["job.cancel()", "grace period", "timeout"])
@pytest.mark.parametrize("job_fn", ASYNC_JOBS.values(), ids=list(ASYNC_JOBS))
async def test_an_async_job_failing_while_cancelled_fails_alone(
    job_fn: Callable[[], Awaitable[None]],
    how: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The job ends FAILED with its own error; the other pool's job and the
    dispatcher carry on, and nothing leaves ``open_dispatcher``."""
    timeout = 5.0 if how == "timeout" else None
    pools = [PoolConfig(1, 1, timeout=timeout), PoolConfig(2, 1)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        other = await d.dispatch(trio.sleep, 10, priority=2)
        job = await d.dispatch(job_fn, priority=1)
        await wait_all_tasks_blocked()
        if how == "job.cancel()":
            job.cancel()
        elif how == "grace period":
            # The other job ends at t=10, well inside the grace period.
            await d.finalize(grace_period=20)
        with pytest.raises(Exception) as raised:  # noqa: PT011 - checked below
            await job.wait()
        assert cleanup_failure(raised.value), raised.value
        assert job.state is JobState.FAILED
        if how != "grace period":
            # The failed job's worker is free again, the other pool unaffected.
            assert other.state is JobState.RUNNING
            await (await d.dispatch(trio.sleep, 0, priority=1)).wait()
        await other.wait()
    stats = d.statistics().pools
    assert (stats[1].failed, stats[1].cancelled) == (1, 0)
    assert stats[1].timed_out == (1 if how == "timeout" else 0)
    assert (stats[2].succeeded, stats[2].cancelled) == (1, 0)


def raise_after(release: threading.Event, error: BaseException) -> None:
    release.wait()
    raise error


@pytest.mark.parametrize(
    "error",
    [ValueError("late"), ExceptionGroup("late", [ValueError("late")])],
    ids=["exception", "exception group"],
)
async def test_a_thread_job_failing_after_its_cancel_is_abandoned_alone(
    error: Exception,
) -> None:
    """A thread cannot be interrupted: the cancelled job ends CANCELLED at
    once, and what its thread raises later is dropped with it, without
    reaching its worker, the other pool or the dispatcher."""
    release = threading.Event()
    other_release = trio.Event()
    pools = [PoolConfig(1, 1, kind="thread"), PoolConfig(2, 1)]
    try:
        async with bulkhead.open_dispatcher(pools) as d:
            other = await d.dispatch(hang_until, other_release, priority=2)
            job = await d.dispatch(raise_after, release, error, priority=1)
            await wait_all_tasks_blocked()  # the thread is running
            job.cancel()
            with pytest.raises(bulkhead.JobCancelled):
                await job.wait()
            await wait_all_tasks_blocked()
            assert d.statistics().pools[1].abandoned == 1
            release.set()
            # The next job starts once the abandoned thread has returned.
            await (await d.dispatch(sync_noop, priority=1)).wait()
            assert d.statistics().pools[1].abandoned == 0
            assert other.state is JobState.RUNNING
            other_release.set()
            await other.wait()
    finally:
        release.set()
    assert job.state is JobState.CANCELLED
