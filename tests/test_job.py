"""The Job handle: wait, cancel, states, attempts, name, id, repr, memory."""

from __future__ import annotations

import functools
import gc
import re
import weakref
from typing import Any

import pytest
import trio
from outcome import Error, Value
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import bulkhead
from bulkhead import Job, JobCancelled, JobState, PoolConfig, Retry

from ._jobs import fail, hang_until, noop, ret, sleep_then


def state(job: Job[Any]) -> JobState:
    """Read ``job.state`` afresh (mypy would keep it narrowed across awaits)."""
    return job.state


class Worker:
    async def method(self) -> str:
        await trio.lowlevel.checkpoint()
        return "done"


# ------------------------------------------------------------------------ wait


async def test_wait_returns_the_value_to_every_waiter_as_often_as_called() -> None:
    release = trio.Event()
    seen: list[Any] = []
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job: bulkhead.Job[Any] = await d.dispatch(hang_until, release, priority=1)

        async def waiter() -> None:
            # Blocking path: the job has not ended yet.
            with assert_checkpoints():
                seen.append(await job.wait())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert seen == []
            release.set()
        assert seen == [None, None, None]

        valued = await d.dispatch(ret, "value", priority=1)
        assert await valued.wait() == "value"
        for _ in range(3):
            # Fast path: the job has ended; wait() still checkpoints.
            with assert_checkpoints():
                assert await valued.wait() == "value"
        assert valued.outcome == Value("value")


async def test_wait_raises_the_same_error_every_time_and_never_consumes_it() -> None:
    errors: list[BaseException] = []
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        job = await d.dispatch(fail, "boom", priority=1)

        async def waiter() -> None:
            with pytest.raises(ValueError, match=r"^boom$") as info:
                await job.wait()
            errors.append(info.value)

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(waiter)
        for _ in range(2):
            await waiter()
        assert len(errors) == 4
        assert all(error is errors[0] for error in errors)
        assert job.state is JobState.FAILED
        assert isinstance(job.outcome, Error)
        assert job.outcome.error is errors[0]


async def test_cancelled_job_wait_raises_job_cancelled_and_outcome_is_an_error() -> (
    None
):
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(hang_until, trio.Event(), priority=1, name="hung")
        job.cancel()
        for _ in range(2):
            with pytest.raises(
                JobCancelled, match=r"^job #\d+ \(hung\) was cancelled$"
            ):
                await job.wait()
        assert job.state is JobState.CANCELLED
        assert isinstance(job.outcome, Error)
        assert isinstance(job.outcome.error, JobCancelled)


async def test_cancelling_a_wait_leaves_the_job_running() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(hang_until, release, priority=1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await job.wait()
        assert scope.cancelled_caught
        assert job.state is JobState.RUNNING
        release.set()
        await job.wait()  # returns, raises nothing
        assert state(job) is JobState.SUCCEEDED


# ---------------------------------------------------------------------- cancel


async def test_cancelled_queued_job_never_starts_its_slot_goes_to_the_head_waiter() -> (
    None
):
    release = trio.Event()
    ran: list[int] = []
    accepted: dict[int, Job[Any]] = {}

    async def record(i: int) -> None:
        ran.append(i)

    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        await d.dispatch(hang_until, release, priority=1)
        queued = await d.dispatch(record, 0, priority=1)
        assert queued.state is JobState.QUEUED

        async def blocked(i: int) -> None:
            accepted[i] = await d.dispatch(record, i, priority=1)

        async with trio.open_nursery() as nursery:
            for i in (1, 2):
                nursery.start_soon(blocked, i)
                await wait_all_tasks_blocked()
            assert d.statistics().pools[1].waiting_dispatchers == 2

            queued.cancel()  # not a checkpoint: takes effect at once
            assert state(queued) is JobState.CANCELLED
            await wait_all_tasks_blocked()
            # The freed queue slot went to the head blocked dispatcher, in the
            # same step: the queue is full again and dispatch_nowait can't barge.
            assert list(accepted) == [1]
            assert accepted[1].state is JobState.QUEUED
            stats = d.statistics().pools[1]
            assert (stats.queued, stats.waiting_dispatchers) == (1, 1)
            assert (stats.cancelled, stats.started) == (1, 1)
            with pytest.raises(trio.WouldBlock):
                d.dispatch_nowait(record, 3, priority=1)
            release.set()
        await d.barrier()
    assert ran == [1, 2]
    with pytest.raises(JobCancelled):
        await queued.wait()
    assert queued.attempts == 0


async def test_cancel_of_a_running_job_frees_the_worker_only_once_the_job_stopped() -> (
    None
):
    cleanup_done = trio.Event()
    record: list[str] = []

    async def slow_to_stop() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                record.append("cleaning up")
                await cleanup_done.wait()
                record.append("stopped")

    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(slow_to_stop, priority=1)

        async def next_dispatch() -> None:
            await d.dispatch(ret, 1, priority=1)
            record.append("next accepted")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(next_dispatch)
            await wait_all_tasks_blocked()
            job.cancel()
            await wait_all_tasks_blocked()
            assert record == ["cleaning up"]
            stats = d.statistics().pools[1]
            assert (stats.busy, stats.idle, stats.waiting_dispatchers) == (1, 0, 1)
            assert job.state is JobState.RUNNING
            cleanup_done.set()
        assert record == ["cleaning up", "stopped", "next accepted"]
        assert state(job) is JobState.CANCELLED
        await d.barrier()
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.idle, stats.cancelled, stats.succeeded) == (
            0,
            1,
            1,
            1,
        )


async def test_cancel_of_a_running_job_affects_that_job_alone() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher({1: 2, 2: 1}) as d:
        victim = await d.dispatch(hang_until, release, priority=1)
        neighbour = await d.dispatch(hang_until, release, priority=1)
        other_pool = await d.dispatch(hang_until, release, priority=2)
        victim.cancel()
        with pytest.raises(JobCancelled):
            await victim.wait()
        assert neighbour.state is JobState.RUNNING
        assert other_pool.state is JobState.RUNNING
        release.set()
        await d.barrier()
        assert state(neighbour) is state(other_pool) is JobState.SUCCEEDED


async def test_cancel_of_a_job_accepted_but_not_yet_begun_never_runs_it() -> None:
    ran: list[str] = []

    async def record() -> None:
        ran.append("ran")

    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = d.dispatch_nowait(record, priority=1)
        assert job.state is JobState.RUNNING  # handed to the worker...
        job.cancel()  # ...which has not had a chance to call it yet
        with pytest.raises(JobCancelled):
            await job.wait()
    assert ran == []
    assert state(job) is JobState.CANCELLED


async def test_cancel_of_a_finished_job_is_a_no_op() -> None:
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        succeeded = await d.dispatch(ret, 5, priority=1)
        failed = await d.dispatch(fail, "no", priority=1)
        cancelled = await d.dispatch(hang_until, trio.Event(), priority=1)
        cancelled.cancel()
        await d.barrier()
        before = d.statistics().pools[1]
        for job in (succeeded, failed, cancelled):
            job.cancel()
            job.cancel()
        assert succeeded.state is JobState.SUCCEEDED
        assert await succeeded.wait() == 5
        assert failed.state is JobState.FAILED
        with pytest.raises(ValueError, match=r"^no$"):
            await failed.wait()
        assert cancelled.state is JobState.CANCELLED
        assert d.statistics().pools[1] == before
        assert (before.succeeded, before.failed, before.cancelled) == (1, 1, 1)


# ---------------------------------------------------------- states and attempts


async def test_job_states_over_its_life(autojump_clock: Any) -> None:
    step = trio.Event()

    async def two_phase() -> str:
        await step.wait()
        return "ok"

    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, queue=1)], on_error="record"
    ) as d:
        blocker_release = trio.Event()
        blocker = await d.dispatch(hang_until, blocker_release, priority=1)
        job = await d.dispatch(two_phase, priority=1)
        assert (job.state, job.attempts, job.outcome) == (JobState.QUEUED, 0, None)
        blocker_release.set()
        await wait_all_tasks_blocked()
        assert blocker.state is JobState.SUCCEEDED
        assert (job.state, job.attempts, job.outcome) == (JobState.RUNNING, 1, None)
        step.set()
        await wait_all_tasks_blocked()
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
        assert job.outcome == Value("ok")

        failing = await d.dispatch(fail, "x", priority=1)
        await wait_all_tasks_blocked()
        assert (failing.state, failing.attempts) == (JobState.FAILED, 1)


async def test_attempts_counts_every_attempt_and_state_stays_running_between_them(
    autojump_clock: Any,
) -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        if calls < 3:
            raise ConnectionError(calls)
        return calls

    retry = Retry(attempts=5, backoff=1, jitter=False)
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(flaky, priority=1, retry=retry)
        await wait_all_tasks_blocked()  # first attempt failed, backing off
        assert (job.state, job.attempts) == (JobState.RUNNING, 1)
        assert await job.wait() == 3
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 3)


# ------------------------------------------------------------------ name and id


async def test_name_defaults_to_the_functions_qualified_name() -> None:
    async def local() -> None:
        pass

    async with bulkhead.open_dispatcher({1: 1}) as d:
        assert (await d.dispatch(noop, priority=1)).name == "noop"
        assert (await d.dispatch(local, priority=1)).name == (
            "test_name_defaults_to_the_functions_qualified_name.<locals>.local"
        )
        assert (await d.dispatch(Worker().method, priority=1)).name == "Worker.method"
        named = await d.dispatch(noop, priority=1, name="nightly report")
        assert named.name == "nightly report"
        partial = await d.dispatch(functools.partial(ret, 1), priority=1)
        assert isinstance(partial.name, str)
        assert partial.name


async def test_ids_increase_with_dispatch_order_across_pools_and_calls() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 2), PoolConfig(2, 1)]) as d:
        jobs = [
            await d.dispatch(noop, priority=1),
            d.dispatch_nowait(hang_until, release, priority=2),
            await d.dispatch(noop, priority=1),
            d.dispatch_nowait(noop, priority=1),
        ]
        ids = [job.id for job in jobs]
        assert all(isinstance(i, int) for i in ids)
        assert ids == sorted(set(ids))
        release.set()


async def test_ids_are_unique_within_the_process_across_dispatchers() -> None:
    async with (
        bulkhead.open_dispatcher({1: 1}) as first,
        bulkhead.open_dispatcher({1: 1}) as second,
    ):
        a = await first.dispatch(noop, priority=1)
        b = await second.dispatch(noop, priority=1)
        c = await first.dispatch(noop, priority=1)
    assert a.id < b.id < c.id


def test_job_has_no_public_constructor() -> None:
    message = (
        r"^bulkhead\.Job has no public constructor; jobs are created by "
        r"Dispatcher\.dispatch\(\) and dispatch_nowait\(\)$"
    )
    job_class: Any = Job  # the constructor's signature is private
    with pytest.raises(TypeError, match=message):
        job_class()
    with pytest.raises(TypeError, match=message):
        job_class(1, 1, noop, (), None, None, None, None, None)


# ------------------------------------------------------------------------ repr


async def test_repr_shows_id_name_priority_state_and_attempts_in_every_state() -> None:
    def pattern(job: Job[Any], name: str, state_name: str, attempts: int) -> str:
        return (
            rf"^<bulkhead\.Job #{job.id} '{name}' priority=-3 {state_name} "
            rf"attempts={attempts} at 0x[0-9a-f]+>$"
        )

    release = trio.Event()
    async with bulkhead.open_dispatcher(
        [PoolConfig(-3, 1, queue=2)], on_error="record"
    ) as d:
        running = await d.dispatch(hang_until, release, priority=-3, name="runner")
        queued = await d.dispatch(ret, 1, priority=-3, name="waiter")
        doomed = await d.dispatch(noop, priority=-3)
        assert re.match(pattern(running, "runner", "RUNNING", 1), repr(running))
        assert re.match(pattern(queued, "waiter", "QUEUED", 0), repr(queued))
        doomed.cancel()
        assert re.match(pattern(doomed, "noop", "CANCELLED", 0), repr(doomed))
        release.set()
        failing = await d.dispatch(fail, "x", priority=-3)
        await d.barrier()
        assert re.match(pattern(running, "runner", "SUCCEEDED", 1), repr(running))
        assert re.match(pattern(failing, "fail", "FAILED", 1), repr(failing))


# ---------------------------------------------------------------------- memory


async def test_no_job_is_kept_alive_once_finished_and_dropped(
    autojump_clock: Any,
) -> None:
    refs: list[weakref.ref[Job[Any]]] = []

    async def sleep_then_fail(i: int) -> None:
        await trio.sleep(i % 3)
        if i % 5 == 0:
            raise ValueError(i)

    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 4, queue=8), PoolConfig(2, 2, kind="thread")],
        on_error="record",
    ) as d:
        for i in range(300):
            refs.append(weakref.ref(await d.dispatch(sleep_then_fail, i, priority=1)))
            if i % 7 == 0:
                job = await d.dispatch(hang_until, trio.Event(), priority=1)
                job.cancel()
                refs.append(weakref.ref(job))
        for i in range(20):
            refs.append(weakref.ref(await d.dispatch(int, i, priority=2)))
        del job
        await d.barrier()
        gc.collect()
        assert [ref for ref in refs if ref() is not None] == []
        assert d.statistics().total.submitted == len(refs)


async def test_an_idle_worker_keeps_no_reference_to_its_last_job() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(ret, bytearray(10), priority=1)
        await job.wait()
        ref = weakref.ref(job)
        del job
        await wait_all_tasks_blocked()
        assert d.statistics().pools[1].idle == 1
        gc.collect()
        assert ref() is None


async def test_failed_jobs_are_released_once_their_batch_is_reported() -> None:
    refs: list[weakref.ref[Job[Any]]] = []
    async with bulkhead.open_dispatcher({1: 2}, on_error="raise") as d:
        for i in range(50):
            refs.append(weakref.ref(await d.dispatch(fail, str(i), priority=1)))
        with pytest.raises(bulkhead.JobsFailed):
            await d.barrier()
        gc.collect()
        assert [ref for ref in refs if ref() is not None] == []


async def test_an_unreported_failure_does_not_pin_its_job() -> None:
    refs: list[weakref.ref[Job[Any]]] = []
    async with bulkhead.open_dispatcher({1: 2}, on_error="raise") as d:
        for i in range(10):
            refs.append(weakref.ref(await d.dispatch(fail, str(i), priority=1)))
        await wait_all_tasks_blocked()
        assert d.statistics().pools[1].failed == 10
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        with pytest.raises(bulkhead.JobsFailed):
            await d.barrier()
    # Each failure itself is kept for the barrier, by design; the Job is not.
    assert alive == 0


# ------------------------------------------------------------------------- tag


async def test_tag_rides_on_the_handle_from_every_dispatch_path() -> None:
    record = {"caller": "row 7"}
    async with bulkhead.open_dispatcher({1: 4}) as d:
        untagged = await d.dispatch(noop, priority=1)
        assert untagged.tag is None
        job = await d.dispatch(noop, priority=1, tag=record)
        assert job.tag is record
        nowait = d.dispatch_nowait(noop, priority=1, tag=42)
        assert nowait.tag == 42
        many = await d.dispatch_many(ret, [(1,), (2,)], priority=1, tag="round 3")
        assert [j.tag for j in many] == ["round 3", "round 3"]
        await d.barrier()
        # Kept after the job ended, where the function and arguments are not.
        assert job.tag is record
        assert job.state is JobState.SUCCEEDED


async def test_hooks_find_the_callers_record_through_the_tag() -> None:
    seen: list[tuple[str, object]] = []
    hooks = bulkhead.Hooks(
        on_started=lambda job: seen.append(("started", job.tag)),
        on_retried=lambda job, exc, delay: seen.append(("retried", job.tag)),
        on_finished=lambda job, duration: seen.append(("finished", job.tag)),
    )
    retry = Retry(attempts=2, backoff=0, jitter=False)
    async with bulkhead.open_dispatcher({1: 1}, hooks=hooks, on_error="record") as d:
        await d.dispatch(fail, "boom", priority=1, retry=retry, tag="mine")
        await d.barrier()
    assert seen == [("started", "mine"), ("retried", "mine"), ("finished", "mine")]


# --------------------------------------------------------------------- timings


def times(job: Job[Any]) -> tuple[float | None, float | None, float | None]:
    """A job's timings, read afresh (mypy would keep them narrowed)."""
    return job.accepted_at, job.started_at, job.finished_at


async def test_timings_are_on_trios_clock_and_none_until_then(
    autojump_clock: Any,
) -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)], timings=True) as d:
        t0 = trio.current_time()
        running = await d.dispatch(hang_until, release, priority=1)
        await trio.sleep(2)
        queued = await d.dispatch(sleep_then, 3.0, priority=1)
        assert times(running) == (t0, t0, None)
        assert times(queued) == (t0 + 2, None, None)
        await trio.sleep(1)
        release.set()
        await d.barrier()
        assert times(running) == (t0, t0, t0 + 3)
        assert times(queued) == (t0 + 2, t0 + 3, t0 + 6)


async def test_jobs_are_not_timed_unless_asked() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(noop, priority=1)
        await job.wait()
        assert times(job) == (None, None, None)


async def test_timings_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"^timings must be a bool, got 1$"):
        bulkhead.Dispatcher({1: 1}, timings=1)  # type: ignore[arg-type]
