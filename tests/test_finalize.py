"""finalize(), run() and the async-with exit: drain, grace, idempotence, crashes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import bulkhead
from bulkhead import JobState, PoolConfig

from ._jobs import fail, live_bulkhead_tasks, noop, sleep_then


async def test_finalize_drains_running_and_queued_jobs(autojump_clock: Any) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=3)]) as d:
        jobs = [await d.dispatch(sleep_then, 1, i, priority=1) for i in range(4)]
        with assert_checkpoints():
            await d.finalize()
        assert trio.current_time() == 4
        assert [await job.wait() for job in jobs] == [0, 1, 2, 3]
        assert d.statistics().closed


async def test_no_task_is_left_after_exit(autojump_clock: Any) -> None:
    async with bulkhead.open_dispatcher({1: 3, 2: 2}) as d:
        assert len(live_bulkhead_tasks()) == 5
        await d.dispatch(sleep_then, 1, priority=1)
        await d.finalize(grace_period=0.5)
        assert live_bulkhead_tasks() == []
    assert live_bulkhead_tasks() == []


async def test_grace_period_cancels_what_is_still_running_or_queued(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        running = await d.dispatch(sleep_then, 10, priority=1)
        queued = await d.dispatch(sleep_then, 10, priority=1)
        await d.finalize(grace_period=2)
        assert trio.current_time() == 2
        assert running.state is queued.state is JobState.CANCELLED
        assert queued.attempts == 0
        with pytest.raises(bulkhead.JobCancelled):
            await running.wait()
        stats = d.statistics().pools[1]
        assert (stats.cancelled, stats.busy, stats.queued) == (2, 0, 0)


async def test_jobs_finishing_within_the_grace_period_succeed(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher({1: 2}) as d:
        quick = await d.dispatch(sleep_then, 1, "done", priority=1)
        await d.finalize(grace_period=5)
        assert trio.current_time() == 1
        assert await quick.wait() == "done"


async def test_finalize_is_idempotent_and_concurrent_callers_all_return(
    autojump_clock: Any,
) -> None:
    finished: list[float] = []
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(sleep_then, 3, priority=1)

        async def finalize() -> None:
            await d.finalize()
            finished.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(finalize)
        await d.finalize()
    assert finished == [3, 3, 3]


async def test_a_shorter_grace_period_from_a_later_caller_wins(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(sleep_then, 100, priority=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(d.finalize, 50)
            await wait_all_tasks_blocked()
            nursery.start_soon(d.finalize, 2)
            nursery.start_soon(d.finalize, 30)
        assert trio.current_time() == 2
        assert job.state is JobState.CANCELLED


async def test_a_cancelled_finalize_caller_leaves_and_teardown_goes_on(
    autojump_clock: Any,
) -> None:
    d = bulkhead.Dispatcher({1: 1})
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        job = await d.dispatch(sleep_then, 5, "done", priority=1)
        with trio.move_on_after(1):
            await d.finalize()
        assert d.statistics().closed
        with pytest.raises(bulkhead.DispatcherClosed):
            d.dispatch_nowait(noop, priority=1)
    assert trio.current_time() == 5
    assert await job.wait() == "done"


async def test_run_under_nursery_start_returns_once_finalized(
    autojump_clock: Any,
) -> None:
    d = bulkhead.Dispatcher({1: 2})
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        assert d.statistics().pools[1].idle == 2
        assert d.dispatch_nowait(noop, priority=1).state is JobState.RUNNING
        await d.finalize()
    assert "closed" in repr(d)


async def test_a_dispatcher_runs_only_once() -> None:
    d = bulkhead.Dispatcher({1: 1})
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await d.finalize()
    with pytest.raises(
        RuntimeError, match=r"^this Dispatcher is closed: a Dispatcher runs"
    ):
        await d.run()


async def test_finalize_of_a_never_started_dispatcher_closes_it() -> None:
    d = bulkhead.Dispatcher({1: 1})
    with assert_checkpoints():
        await d.finalize()
    with pytest.raises(bulkhead.DispatcherClosed):
        d.dispatch_nowait(noop, priority=1)
    with pytest.raises(RuntimeError, match=r"a Dispatcher runs once"):
        await d.run()


async def test_finalize_raises_failures_not_yet_reported() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(fail, "late", priority=1)
        with pytest.RaisesGroup(
            pytest.RaisesExc(ValueError, match=r"^late\nin bulkhead job #\d+ \(.+\)$")
        ):
            await d.finalize()
        await d.finalize()  # reported once


async def test_jobs_failed_at_normal_exit_is_raised_as_is() -> None:
    with pytest.raises(bulkhead.JobsFailed) as info:
        async with bulkhead.open_dispatcher({1: 1}) as d:
            await d.dispatch(fail, "late", priority=1)
    assert [str(e) for e in info.value.exceptions] == ["late"]
    assert info.value.report.failed == 1


async def test_an_exception_in_the_body_cancels_every_job_and_propagates(
    autojump_clock: Any,
) -> None:
    jobs: list[bulkhead.Job[Any]] = []
    with pytest.RaisesGroup(pytest.RaisesExc(KeyError, match=r"body")):
        async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
            jobs.append(await d.dispatch(sleep_then, 10, priority=1))
            jobs.append(await d.dispatch(sleep_then, 10, priority=1))
            raise KeyError("body")
    assert trio.current_time() == 0
    assert [job.state for job in jobs] == [JobState.CANCELLED] * 2
    assert live_bulkhead_tasks() == []


async def test_cancel_policy_fails_fast_and_propagates_in_one_group(
    autojump_clock: Any,
) -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match=r"^first$")):
        async with bulkhead.open_dispatcher({1: 1, 2: 1}, on_error="cancel") as d:
            other = await d.dispatch(sleep_then, 10, priority=2)
            await d.dispatch(fail, "first", priority=1)
            await trio.sleep(5)
    assert trio.current_time() == 0
    assert other.state is JobState.CANCELLED


async def test_outer_cancellation_tears_down_and_closes_intake(
    autojump_clock: Any,
) -> None:
    d = bulkhead.Dispatcher({1: 1})
    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:
            await nursery.start(d.run)
            job = await d.dispatch(sleep_then, 10, priority=1)
    assert job.state is JobState.CANCELLED
    assert d.statistics().closed
    with pytest.raises(
        bulkhead.DispatcherClosed,
        match=r"^the dispatcher takes no more jobs: it was torn down by an "
        r"exception or a cancellation; open a new dispatcher$",
    ):
        d.dispatch_nowait(noop, priority=1)


async def test_keyboard_interrupt_in_a_job_is_not_a_failure_it_crashes() -> None:
    async def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.RaisesGroup(KeyboardInterrupt):
        async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
            await d.dispatch(interrupt, priority=1)
            await d.barrier()


async def test_finalize_from_inside_a_job_is_an_error() -> None:
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        job = await d.dispatch(d.finalize, priority=1)
        with pytest.raises(
            RuntimeError, match=r"^finalize\(\) called from inside a job"
        ):
            await job.wait()
        assert not d.statistics().closed


@pytest.mark.parametrize(
    ("grace", "error", "message"),
    [
        (-1, ValueError, r"^grace_period must be >= 0 seconds \(or None\), got -1$"),
        (
            "5",
            TypeError,
            r"^grace_period must be a number of seconds or None, got '5'$",
        ),
        (
            True,
            TypeError,
            r"^grace_period must be a number of seconds or None, got True$",
        ),
    ],
)
async def test_bad_grace_periods_are_rejected(
    grace: Any, error: type[Exception], message: str
) -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with pytest.raises(error, match=message):
            await d.finalize(grace)
        assert not d.statistics().closed
