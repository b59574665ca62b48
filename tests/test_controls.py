"""Runtime controls: resize, pause/resume, max_wait and PoolFull, dispatch_many,
and a single pool that needs no priority (issue 11)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import bulkhead
from bulkhead import JobState, PoolConfig

from ._jobs import hang_until, noop, sleep_then, sync_noop

# ------------------------------------------------------------------- resize


async def test_growing_a_pool_starts_workers_that_take_waiting_jobs_at_once() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=2)]) as d:
        jobs = [await d.dispatch(hang_until, release) for _ in range(3)]
        assert [j.state for j in jobs] == [JobState.RUNNING] + [JobState.QUEUED] * 2
        d.resize(1, 3)
        await wait_all_tasks_blocked()
        assert [j.state for j in jobs] == [JobState.RUNNING] * 3
        stats = d.statistics().pools[1]
        assert (stats.workers, stats.current_workers, stats.busy) == (3, 3, 3)
        release.set()
    assert d.statistics().pools[1].succeeded == 3


async def test_shrinking_retires_idle_workers_now_and_busy_ones_after_their_job() -> (
    None
):
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 4, queue=4)]) as d:
        running = [await d.dispatch(hang_until, release) for _ in range(2)]
        d.resize(1, 1)
        await wait_all_tasks_blocked()
        stats = d.statistics().pools[1]
        # The two idle workers left; the two busy ones keep their jobs.
        assert (stats.workers, stats.current_workers, stats.busy) == (1, 2, 2)
        assert all(job.state is JobState.RUNNING for job in running)
        queued = [await d.dispatch(noop) for _ in range(2)]
        await wait_all_tasks_blocked()
        assert all(job.state is JobState.QUEUED for job in queued)  # busy > size
        release.set()
        await d.barrier()
        stats = d.statistics().pools[1]
        assert (stats.workers, stats.current_workers, stats.idle) == (1, 1, 1)
        assert stats.succeeded == 4


async def test_a_pool_never_runs_more_than_its_new_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    most = 0
    running = 0

    async def count() -> None:
        nonlocal most, running
        running += 1
        most = max(most, running)
        await trio.sleep(1)
        running -= 1

    async with bulkhead.open_dispatcher([PoolConfig(1, 5, queue=50)]) as d:
        for _ in range(20):
            await d.dispatch(count)
        d.resize(1, 2)
        await trio.sleep(1.5)  # the first five end; from now on two at a time
        most = running
        await d.barrier()
    assert most == 2


async def test_resize_of_a_thread_pool_resizes_its_limiter() -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 2, kind="thread")]) as d:
        d.resize(1, 5)
        await (await d.dispatch(sync_noop)).wait()
        assert d.statistics().pools[1].workers == 5


async def test_resize_is_validated_and_refused_once_closed() -> None:
    d = bulkhead.Dispatcher({1: 1})
    with pytest.raises(
        RuntimeError,
        match=r"^this Dispatcher is not running yet: resize\(\) works on a running "
        r"dispatcher$",
    ):
        d.resize(1, 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        with pytest.raises(ValueError, match=r"^workers must be >= 1, got 0$"):
            d.resize(1, 0)
        with pytest.raises(TypeError, match=r"^workers must be an int, got 2\.0$"):
            d.resize(1, 2.0)  # type: ignore[arg-type]
        with pytest.raises(
            bulkhead.UnknownPriority,
            match=r"^no pool has priority 7; configured priorities: 1$",
        ):
            d.resize(7, 2)
        await d.finalize()
    calls: list[Callable[[], None]] = [lambda: d.resize(1, 2), d.pause, d.resume]
    for call in calls:
        with pytest.raises(
            bulkhead.DispatcherClosed,
            match=r"^\w+\(\) on a dispatcher that is closed: finalize\(\) has begun "
            r"or the dispatcher was torn down$",
        ):
            call()


# ------------------------------------------------------------- pause/resume


async def test_a_paused_pool_accepts_into_its_queue_but_starts_nothing() -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 2, queue=2), PoolConfig(2, 1)]
    ) as d:
        d.pause(1)
        queued = [await d.dispatch(noop, priority=1) for _ in range(2)]
        with pytest.raises(trio.WouldBlock):
            d.dispatch_nowait(noop, priority=1)
        other = await d.dispatch(noop, priority=2)  # other pools carry on
        await wait_all_tasks_blocked()
        assert [j.state for j in queued] == [JobState.QUEUED] * 2
        assert other.state is JobState.SUCCEEDED
        stats = d.statistics().pools[1]
        assert (stats.paused, stats.idle, stats.busy) == (True, 2, 0)
        d.resume(1)
        await wait_all_tasks_blocked()
        assert [j.state for j in queued] == [JobState.SUCCEEDED] * 2
        assert not d.statistics().pools[1].paused


async def test_finalize_drains_a_paused_pool() -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=3)]) as d:
        d.pause()
        jobs = [await d.dispatch(noop) for _ in range(3)]
    assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 3


async def test_a_barrier_waits_for_a_paused_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        d.pause()
        await d.dispatch(noop)
        with trio.move_on_after(10) as waited:
            await d.barrier()
        assert waited.cancelled_caught
        d.resume()
        assert (await d.barrier()).succeeded == 1


async def test_finalize_with_grace_cancels_what_a_paused_pool_could_not_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=2)]) as d:
        jobs = [await d.dispatch(sleep_then, 10) for _ in range(3)]
        d.pause()
        await d.finalize(grace_period=5)
    assert [j.state for j in jobs] == [JobState.CANCELLED] * 3


# -------------------------------------------------------- max_wait, PoolFull


async def test_a_dispatch_that_waited_max_wait_fails_with_pool_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(3, 1)]) as d:
        await d.dispatch(hang_until, release)
        started = trio.current_time()
        with pytest.raises(
            bulkhead.PoolFull,
            match=r"^pool 3 took no job in max_wait=2\.5 s: its 1 workers stayed "
            r"busy and its queue of 0 full; shed the job, retry later, or give the "
            r"pool more workers, queue or max_wait$",
        ) as raised:
            await d.dispatch(noop, max_wait=2.5)
        assert trio.current_time() - started == 2.5
        assert (raised.value.priority, raised.value.max_wait) == (3, 2.5)
        assert isinstance(raised.value, trio.WouldBlock)
        stats = d.statistics().pools[3]
        assert (stats.submitted, stats.rejected, stats.waiting_dispatchers) == (
            1,
            1,
            0,
        )
        release.set()


async def test_max_wait_zero_refuses_at_once_as_dispatch_nowait_does() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, max_wait=0)]) as d:
        await d.dispatch(hang_until, release)
        with assert_checkpoints(), pytest.raises(bulkhead.PoolFull):
            await d.dispatch(noop)
        assert d.statistics().pools[1].rejected == 1
        release.set()


async def test_a_dispatch_served_within_max_wait_is_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, max_wait=5)]) as d:
        await d.dispatch(sleep_then, 3)
        job = await d.dispatch(noop)  # the worker frees up at t=3
        assert trio.current_time() == 3
        await job.wait()
        # math.inf on the call lifts the pool's max_wait.
        await d.dispatch(sleep_then, 10)
        await d.dispatch(noop, max_wait=math.inf)
        assert trio.current_time() == 13


async def test_max_wait_is_validated() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with pytest.raises(
            ValueError, match=r"^max_wait must be >= 0 seconds \(or None\), got -1$"
        ):
            await d.dispatch(noop, max_wait=-1)
    with pytest.raises(
        TypeError, match=r"^max_wait must be a number of seconds or None, got '1'$"
    ):
        PoolConfig(1, 1, max_wait="1")  # type: ignore[arg-type]


# ------------------------------------------------------------ dispatch_many


async def record(log: list[int], i: int) -> None:
    log.append(i)


async def test_dispatch_many_runs_each_job_in_order_and_returns_the_handles() -> None:
    log: list[int] = []
    async with bulkhead.open_dispatcher([PoolConfig(1, 3)]) as d:
        with assert_checkpoints():
            jobs = await d.dispatch_many(record, [(log, i) for i in range(10)])
        report = await d.barrier()
    assert report.jobs == 10
    assert sorted(log) == list(range(10))
    assert [job.state for job in jobs] == [JobState.SUCCEEDED] * 10
    assert [job.id for job in jobs] == sorted(job.id for job in jobs)


async def test_dispatch_many_of_nothing_is_still_a_checkpoint() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with assert_checkpoints():
            assert await d.dispatch_many(noop, []) == []


@pytest.mark.parametrize("cancel_after", [0, 1, 2])
async def test_a_cancelled_dispatch_many_reports_exactly_what_was_accepted(
    cancel_after: int,
) -> None:
    """One worker, no queue, four jobs that hang: each hand-off needs the
    worker back, so the call parks between jobs; cancelled at its
    ``cancel_after``-th park, exactly that many jobs were accepted, and only
    they run."""
    releases = [trio.Event() for _ in range(4)]
    accepted: list[bulkhead.Job[Any]] = []
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def release_in_order() -> None:
                    for event in releases[:cancel_after]:
                        await wait_all_tasks_blocked()
                        event.set()
                    await wait_all_tasks_blocked()
                    scope.cancel()

                nursery.start_soon(release_in_order)
                await d.dispatch_many(
                    hang_until, [(e,) for e in releases], accepted=accepted
                )
        assert scope.cancelled_caught
        assert len(accepted) == cancel_after + 1
        for event in releases:
            event.set()
        await d.barrier()
    assert [job.state for job in accepted] == [JobState.SUCCEEDED] * len(accepted)
    assert d.statistics().pools[1].submitted == cancel_after + 1


async def test_dispatch_many_is_validated_before_anything_is_accepted() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with pytest.raises(
            TypeError,
            match=r"^dispatch_many\(\) takes an iterable of argument tuples, one per "
            r"job; item 1 is 2: wrap a single argument as \(2,\)$",
        ):
            await d.dispatch_many(sleep_then, [(1,), 2])  # type: ignore[list-item]
        with pytest.raises(
            TypeError,
            match=r"^dispatch_many\(\) takes an iterable of argument tuples, one per "
            r"job; got 'ab'$",
        ):
            await d.dispatch_many(sleep_then, "ab")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^accepted must be a list or None, got"):
            await d.dispatch_many(noop, [()], accepted=())  # type: ignore[call-overload]
        assert d.statistics().total.submitted == 0


async def test_dispatch_many_with_max_wait_stops_at_the_first_job_not_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    accepted: list[bulkhead.Job[Any]] = []
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        with pytest.raises(bulkhead.PoolFull):
            await d.dispatch_many(
                sleep_then, [(10,)] * 4, max_wait=1, accepted=accepted
            )
        assert len(accepted) == 2  # one running, one queued
    assert d.statistics().pools[1].rejected == 1


# ----------------------------------------------------------- the only pool


async def test_a_dispatcher_with_one_pool_needs_no_priority() -> None:
    async with bulkhead.open_dispatcher([PoolConfig(7, 1)]) as d:
        job = await d.dispatch(noop)
        assert job.priority == 7
        assert (await d.barrier()).jobs == 1


async def test_with_several_pools_a_priority_is_still_needed() -> None:
    async with bulkhead.open_dispatcher({1: 1, 2: 1}) as d:
        with pytest.raises(
            TypeError,
            match=r"^no priority given and this dispatcher has no default_priority: "
            r"pass priority=\.\.\. or open the dispatcher with "
            r"default_priority=\.\.\.$",
        ):
            await d.dispatch(noop)


async def test_finalize_without_grace_never_starts_a_paused_pools_queue() -> None:
    ran: list[str] = []

    async def job() -> None:
        ran.append("called")

    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        d.pause()
        queued = d.dispatch_nowait(job)
        await d.finalize(grace_period=0)
    assert (queued.state, queued.attempts, ran) == (JobState.CANCELLED, 0, [])


async def test_pool_full_says_when_the_pool_is_paused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with bulkhead.open_dispatcher({1: 2}) as d:
        d.pause()
        with pytest.raises(
            bulkhead.PoolFull,
            match=r"^pool 1 took no job in max_wait=1 s: it is paused; shed the "
            r"job, retry later, or give the pool more workers, queue or max_wait$",
        ):
            await d.dispatch(noop, max_wait=1)
