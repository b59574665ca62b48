"""One test (or family) per bullet of DESIGN.md "Pitfalls every implementation
must test", in the order the contract lists them.

The speed targets of the context-variable bullet are measured by
``make bench``, not here: tests never depend on timing.
"""

from __future__ import annotations

import contextvars
import functools
import gc
import re
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import bulkhead
from bulkhead import BatchReport, Job, JobState, PoolConfig, Retry

from ._jobs import hang_until, live_bulkhead_tasks, noop, sleep_then

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def fail_after_sleeping(seconds: float, message: str) -> None:
    await trio.sleep(seconds)
    raise ValueError(message)


def live_jobs() -> int:
    gc.collect()
    return sum(isinstance(obj, Job) for obj in gc.get_objects())


# ------------------------------------------------ 1. cancel at the hand-off


@pytest.mark.parametrize("copy_context", [True, False])
async def test_handoff_dispatcher_cancelled_as_its_job_starts_gets_the_job(
    copy_context: bool,
) -> None:
    """A worker frees up, takes the blocked dispatcher's job and starts it; the
    dispatcher is cancelled before it wakes. Accepted means accepted: dispatch
    returns the job, which runs once, and the worker is granted once."""
    release = trio.Event()
    scopes: dict[str, trio.CancelScope] = {}
    ran: list[str] = []
    returned: list[Job[Any]] = []

    async def cancels_its_dispatcher(name: str) -> None:
        ran.append(name)
        scopes[name].cancel()  # before its first checkpoint: the hand-off moment
        await trio.lowlevel.checkpoint()

    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, copy_context=copy_context)]
    ) as d:
        await d.dispatch(hang_until, release, priority=1)

        async def dispatcher(name: str) -> None:
            with scopes.setdefault(name, trio.CancelScope()):
                returned.append(
                    await d.dispatch(cancels_its_dispatcher, name, priority=1)
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher, "first")
            await wait_all_tasks_blocked()
            nursery.start_soon(dispatcher, "second")
            await wait_all_tasks_blocked()
            assert d.statistics().pools[1].waiting_dispatchers == 2
            release.set()
        await d.barrier()
        assert ran == ["first", "second"]
        assert [job.state for job in returned] == [JobState.SUCCEEDED] * 2
        assert [job.attempts for job in returned] == [1, 1]
        stats = d.statistics().pools[1]
        assert (stats.submitted, stats.started, stats.succeeded) == (3, 3, 3)
        assert (stats.busy, stats.idle) == (0, 1)


async def test_handoff_dispatcher_cancelled_as_it_enters_the_queue_gets_the_job() -> (
    None
):
    """A queue slot frees up and goes to the blocked dispatcher; it is
    cancelled before it wakes (by the job that just left the queue). Its job
    was accepted into the queue, so dispatch returns it and it runs later."""
    release = trio.Event()
    scope = trio.CancelScope()
    returned: list[Job[Any]] = []

    async def cancel_the_dispatcher() -> None:
        scope.cancel()
        await trio.lowlevel.checkpoint()

    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        await d.dispatch(hang_until, release, priority=1)
        await d.dispatch(cancel_the_dispatcher, priority=1)  # queued

        async def dispatcher() -> None:
            with scope:
                returned.append(await d.dispatch(sleep_then, 0, "mine", priority=1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatcher)
            await wait_all_tasks_blocked()
            release.set()  # the queued job starts; the dispatcher is admitted
        assert len(returned) == 1
        assert await returned[0].wait() == "mine"
        assert d.statistics().pools[1].submitted == 3


async def test_handoff_cancel_and_free_in_the_same_instant_grants_the_worker_once() -> (
    None
):
    """The head dispatcher is cancelled in the very step that frees the
    worker: it leaves with nothing accepted, the worker goes to the next one,
    and exactly one job takes the freed slot."""
    release = trio.Event()
    ran: Counter[str] = Counter()
    accepted: dict[str, Job[Any]] = {}
    scopes = {name: trio.CancelScope() for name in ("first", "second", "third")}

    async def job(name: str) -> None:
        ran[name] += 1
        await trio.sleep_forever()

    async with bulkhead.open_dispatcher({1: 1}) as d:
        running = await d.dispatch(hang_until, release, priority=1)

        async def dispatcher(name: str) -> None:
            with scopes[name]:
                accepted[name] = await d.dispatch(job, name, priority=1)

        async with trio.open_nursery() as nursery:
            for name in scopes:
                nursery.start_soon(dispatcher, name)
                await wait_all_tasks_blocked()
            scopes["first"].cancel()
            release.set()
            await wait_all_tasks_blocked()
            assert list(accepted) == ["second"]
            stats = d.statistics().pools[1]
            assert (stats.busy, stats.idle, stats.waiting_dispatchers) == (1, 0, 1)
            with pytest.raises(trio.WouldBlock):
                d.dispatch_nowait(noop, priority=1)
            scopes["third"].cancel()
        await running.wait()  # returns, raises nothing
        assert list(accepted) == ["second"]
        assert ran == {"second": 1}
        accepted["second"].cancel()
        await d.barrier()
        stats = d.statistics().pools[1]
        assert (stats.submitted, stats.busy, stats.idle) == (2, 0, 1)


# --------------------------- 2. a stopped job frees its worker only once stopped


async def cleans_up_for(seconds: float, log: list[str]) -> None:
    try:
        await trio.sleep_forever()
    finally:
        log.append(f"stopping at {trio.current_time():g}")
        with trio.CancelScope(shield=True):
            await trio.sleep(seconds)
        log.append(f"stopped at {trio.current_time():g}")


@pytest.mark.parametrize("how", ["job.cancel()", "timeout", "grace period"])
async def test_a_stopped_job_keeps_its_worker_until_it_has_really_stopped(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Told to stop at t=1, the job needs 2 s of (shielded) cleanup: its
    worker stays busy and nobody else gets it before t=3."""
    log: list[str] = []
    after: list[str] = []
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        timeout = 1 if how == "timeout" else None
        job = await d.dispatch(cleans_up_for, 2, log, priority=1, timeout=timeout)

        async def next_dispatch() -> None:
            await d.dispatch(noop, priority=1)
            after.append(f"next accepted at {trio.current_time():g}")

        async def finalize() -> None:
            await d.finalize(grace_period=0)
            after.append(f"finalize returned at {trio.current_time():g}")

        async with trio.open_nursery() as nursery:
            if how != "grace period":
                nursery.start_soon(next_dispatch)
            await trio.sleep(1)
            if how == "job.cancel()":
                job.cancel()
            elif how == "grace period":
                nursery.start_soon(finalize)
            await wait_all_tasks_blocked()
            # Told to stop, still cleaning up: the job holds its worker.
            assert log == ["stopping at 1"]
            assert job.state is JobState.RUNNING
            stats = d.statistics().pools[1]
            assert (stats.busy, stats.waiting_dispatchers) == (
                1,
                int(how != "grace period"),
            )
            assert after == []
        assert log == ["stopping at 1", "stopped at 3"]
        if how == "grace period":
            assert after == ["finalize returned at 3"]
        else:
            assert after == ["next accepted at 3"]
        stopped = JobState.FAILED if how == "timeout" else JobState.CANCELLED
        assert job.state is stopped


# ------------------------------------------- 3. no hidden unbounded buffer


async def test_a_flood_is_held_by_blocked_dispatchers_not_by_a_buffer() -> None:
    """Accepted jobs are bounded by workers + queue; beyond that each extra job
    lives in a blocked dispatcher's frame (and leaves with it), and a refused
    dispatch_nowait keeps nothing."""
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 2, queue=3)]) as d:
        baseline = live_jobs()
        async with trio.open_nursery() as nursery:
            for _ in range(2 + 3 + 300):
                nursery.start_soon(
                    functools.partial(d.dispatch, hang_until, release, priority=1)
                )
            await wait_all_tasks_blocked()
            for _ in range(1000):
                with pytest.raises(trio.WouldBlock):
                    d.dispatch_nowait(hang_until, release, priority=1)
            stats = d.statistics().pools[1]
            assert (stats.busy, stats.queued, stats.waiting_dispatchers) == (2, 3, 300)
            assert (stats.submitted, stats.rejected) == (5, 1000)
            assert live_jobs() - baseline == 5 + 300
            nursery.cancel_scope.cancel()
        # The cancelled dispatchers took their jobs with them.
        assert d.statistics().pools[1].waiting_dispatchers == 0
        assert live_jobs() - baseline == 5
        release.set()
        assert (await d.barrier()).jobs == 5
        assert live_jobs() == baseline


def bulkhead_bytes() -> int:
    """Bytes allocated by bulkhead's own code that are still alive."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/bulkhead/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_memory_stays_flat_however_many_rounds_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every kind of round a service goes through (successes, failures under
    "raise" and "record", timeouts with retries, cancelled queued jobs,
    cancelled blocked dispatchers, per-pool and global barriers) leaves
    nothing behind in the dispatcher."""
    pools = [
        PoolConfig(1, 2, queue=2),
        PoolConfig(2, 1, on_error="record"),
        PoolConfig(3, 1, timeout=1, retry=Retry(2, backoff=0.5, jitter=False)),
    ]
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        async with bulkhead.open_dispatcher(pools) as d:

            async def rounds(count: int) -> None:
                for _ in range(count):
                    for _ in range(3):  # 2 running, 1 queued
                        await d.dispatch(sleep_then, 1, priority=1)
                    d.dispatch_nowait(noop, priority=1).cancel()  # queued, withdrawn
                    await d.dispatch(sleep_then, 1, priority=1)  # the queue is full
                    with trio.move_on_after(0.5):  # a dispatcher that gives up
                        await d.dispatch(noop, priority=1)
                    await d.dispatch(fail_after_sleeping, 1, "recorded", priority=2)
                    await d.dispatch(sleep_then, 5, priority=3)  # times out twice
                    await d.barrier(priority=1)
                    with pytest.RaisesGroup(trio.TooSlowError):
                        await d.barrier()

            # A long warm-up: Python 3.10 keeps a spare frame per function,
            # allocated the first time each code path runs.
            await rounds(300)
            warm = bulkhead_bytes()
            await rounds(300)
            after = bulkhead_bytes()
        # A leak of even one small object (>= 48 bytes) per round would add
        # over 14 KiB; the margin covers the objects of the round in flight
        # when each snapshot is taken.
        assert after - warm < 4096, (warm, after)
    finally:
        if not was_tracing:
            tracemalloc.stop()


# ------------------------- 4. barrier()/finalize() from inside their own job

WAITS: dict[str, Callable[[bulkhead.Dispatcher], Awaitable[object]]] = {
    "barrier()": lambda d: d.barrier(),
    "barrier(own pool)": lambda d: d.barrier(1),
    "finalize()": lambda d: d.finalize(),
}


async def try_to_wait(d: bulkhead.Dispatcher, call: str) -> str:
    try:
        await WAITS[call](d)
    except RuntimeError as exc:
        return str(exc)
    return "returned"


def refusal(call: str) -> str:
    what = call.split("(")[0]
    return (
        f"{what}() called from inside a job of pool 1 of the same dispatcher "
        f"would wait for that job itself; call {what}() from the task that "
        "dispatched the jobs instead"
    )


@pytest.mark.parametrize("copy_context", [True, False])
@pytest.mark.parametrize("where", ["job", "task spawned by the job", "nested job"])
@pytest.mark.parametrize("call", list(WAITS))
async def test_waiting_on_its_own_pool_from_inside_a_job_raises_runtime_error(
    call: str, where: str, copy_context: bool, autojump_clock: trio.testing.MockClock
) -> None:
    pools = [
        PoolConfig(1, 1, copy_context=copy_context),
        PoolConfig(2, 1, copy_context=copy_context),
    ]
    async with bulkhead.open_dispatcher(pools) as d:

        async def spawning() -> str:
            results: list[str] = []

            async def child() -> None:
                results.append(await try_to_wait(d, call))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
            return results[0]

        async def nesting() -> str:
            # A job of pool 2 runs the waiting job in pool 1 and waits for it.
            inner = await d.dispatch(try_to_wait, d, call, priority=1)
            result: str = await inner.wait()
            return result

        if where == "job":
            job = await d.dispatch(try_to_wait, d, call, priority=1)
        elif where == "task spawned by the job":
            job = await d.dispatch(spawning, priority=1)
        else:
            job = await d.dispatch(nesting, priority=2)
        with trio.move_on_after(1000):  # a deadlock jumps the clock here
            await job.wait()
        assert job.state is JobState.SUCCEEDED, "deadlocked: waited for itself"
        assert await job.wait() == refusal(call)
        assert not d.statistics().closed  # finalize() was refused, not begun


async def test_a_job_may_wait_for_another_pools_batch() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher({1: 1, 2: 1}) as d:
        other = await d.dispatch(hang_until, release, priority=2)

        async def waits_for_pool_2() -> int:
            report = await d.barrier(2)
            return report.jobs

        job = await d.dispatch(waits_for_pool_2, priority=1)
        await wait_all_tasks_blocked()
        assert job.state is JobState.RUNNING  # waiting, as it should
        release.set()
        assert await job.wait() == 1
        assert other.state is JobState.SUCCEEDED


@pytest.mark.parametrize("copy_context", [True, False])
async def test_barrier_from_a_thread_job_raises_runtime_error(
    copy_context: bool,
) -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, kind="thread", copy_context=copy_context)]
    ) as d:

        def in_thread() -> str:
            try:
                trio.from_thread.run(d.barrier)
            except RuntimeError as exc:
                return str(exc)
            return "returned"

        job = await d.dispatch(in_thread, priority=1)
        # Real seconds, and only a deadlock waits that long.
        with trio.move_on_after(30) as guard:
            await job.wait()
        assert not guard.cancelled_caught, "deadlocked: waited for itself"
        assert await job.wait() == refusal("barrier()")


async def test_own_pool_barrier_in_a_job_dispatched_from_a_copy_context_false_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Regression: the inner job's context, copied from the outer pool's
    worker, said it ran in pool 2, so its barrier on pool 1 was let through
    and waited for itself for ever (fixed in 5ccd534)."""
    pools = [PoolConfig(1, 1), PoolConfig(2, 1, copy_context=False)]
    async with bulkhead.open_dispatcher(pools) as d:

        async def nesting() -> Job[Any]:
            return await d.dispatch(try_to_wait, d, "barrier(own pool)", priority=1)

        inner: Job[Any] = await (await d.dispatch(nesting, priority=2)).wait()
        with trio.move_on_after(1000):  # a deadlock jumps the clock here
            await inner.wait()
        state = inner.state
        inner.cancel()  # let the dispatcher close if it deadlocked
        assert state is JobState.SUCCEEDED, "deadlocked: waited for itself"
        assert await inner.wait() == refusal("barrier(own pool)")


# ---------------------------------------------------- 5. context variables


async def test_a_job_sees_the_context_of_its_dispatch_not_of_its_start() -> None:
    release = trio.Event()

    async def read() -> str:
        return request_id.get("unset")

    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=2)]) as d:
        await d.dispatch(hang_until, release, priority=1)
        request_id.set("first")
        first = await d.dispatch(read, priority=1)  # queued
        request_id.set("second")
        second = d.dispatch_nowait(read, priority=1)  # queued
        request_id.set("third")
        release.set()
        assert [await first.wait(), await second.wait()] == ["first", "second"]


async def test_what_a_job_sets_stays_in_that_job() -> None:
    async def write(value: str) -> str:
        before = request_id.get("unset")
        request_id.set(value)
        await trio.lowlevel.checkpoint()
        return before

    async with bulkhead.open_dispatcher({1: 1}) as d:  # one worker runs both
        request_id.set("dispatcher")
        first = await d.dispatch(write, "job 1", priority=1)
        second = await d.dispatch(write, "job 2", priority=1)
        assert [await first.wait(), await second.wait()] == ["dispatcher"] * 2
        assert request_id.get() == "dispatcher"


async def test_context_follows_into_spawned_tasks_nested_jobs_and_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[str] = []

    async def record(where: str) -> None:
        seen.append(f"{where}: {request_id.get('unset')}")

    async def parent(d: bulkhead.Dispatcher) -> None:
        await record("job")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record, "spawned task")
        nested = await d.dispatch(record, "nested job", priority=2)
        await nested.wait()

    async def flaky() -> None:
        await record(f"attempt {len([s for s in seen if 'attempt' in s]) + 1}")
        if len([s for s in seen if "attempt" in s]) < 2:
            raise ValueError("again")

    async with bulkhead.open_dispatcher({1: 1, 2: 1}) as d:
        request_id.set("req-7")
        await (await d.dispatch(parent, d, priority=1)).wait()
        retry = Retry(2, backoff=1, jitter=False)
        await (await d.dispatch(flaky, priority=2, retry=retry)).wait()
    assert seen == [
        "job: req-7",
        "spawned task: req-7",
        "nested job: req-7",
        "attempt 1: req-7",
        "attempt 2: req-7",
    ]


@pytest.mark.parametrize("kind", ["async", "thread"])
async def test_copy_context_false_jobs_do_not_see_the_dispatching_context(
    kind: str,
) -> None:
    def read_sync() -> str:
        return request_id.get("unset")

    async def read() -> str:
        return read_sync()

    fn: Callable[[], Any] = read if kind == "async" else read_sync
    pools = [
        PoolConfig(1, 2, kind=kind, copy_context=False),  # type: ignore[arg-type]
        PoolConfig(2, 1, kind=kind),  # type: ignore[arg-type]
    ]
    async with bulkhead.open_dispatcher(pools) as d:
        request_id.set("req-9")
        own = await d.dispatch(fn, priority=1)
        copied = await d.dispatch(fn, priority=2)
        nowait = d.dispatch_nowait(fn, priority=1)
        assert await own.wait() == "unset"
        assert await nowait.wait() == "unset"
        assert await copied.wait() == "req-9"


# ------------------------------------------- 6. many concurrent barrier()s


async def test_many_concurrent_barriers_report_each_job_and_failure_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """150 jobs over three pools, one barrier (global or per pool) started
    after each dispatch, every third barrier cancelled while it waits: the
    reports add up to every job exactly once, and every failure is raised by
    exactly one barrier."""
    reports: list[BatchReport] = []
    raised: list[bulkhead.JobsFailed] = []
    failing: list[Job[Any]] = []
    async with bulkhead.open_dispatcher({1: 2, 2: 1, 3: 3}) as d:

        async def barrier(priority: int | None, scope: trio.CancelScope) -> None:
            with scope:
                try:
                    reports.append(await d.barrier(priority))
                except bulkhead.JobsFailed as exc:
                    raised.append(exc)

        scopes: list[trio.CancelScope] = []
        async with trio.open_nursery() as nursery:
            for i in range(150):
                priority = 1 + i % 3
                seconds = 1 + i % 4
                if i % 5 == 0:
                    failing.append(
                        await d.dispatch(
                            fail_after_sleeping, seconds, f"job {i}", priority=priority
                        )
                    )
                else:
                    await d.dispatch(sleep_then, seconds, priority=priority)
                scopes.append(trio.CancelScope())
                covers = None if i % 2 else priority
                nursery.start_soon(barrier, covers, scopes[-1])
                if i % 3 == 2:
                    scopes[-2].cancel()
        try:
            reports.append(await d.barrier())
        except bulkhead.JobsFailed as exc:
            raised.append(exc)
    for group in raised:
        assert group.report.failed == len(group.exceptions)
    reports += [group.report for group in raised]
    assert sum(report.jobs for report in reports) == 150
    assert sum(report.failed for report in reports) == len(failing) == 30
    assert sum(report.succeeded for report in reports) == 120
    errors = [job.outcome.error for job in failing]  # type: ignore[union-attr]
    raised_errors = [error for group in raised for error in group.exceptions]
    assert sorted(map(id, raised_errors)) == sorted(map(id, errors))


# ------------------------------------- 7. finalize racing with dispatchers


async def test_finalize_racing_with_dispatchers_loses_and_duplicates_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Dispatchers (blocking and nowait) keep coming while two finalize calls
    begin: each dispatch either returned a job that ran once to the end, or
    raised DispatcherClosed and never ran; finalize returns once the last
    accepted job ended, and nothing is left."""
    ran: Counter[int] = Counter()
    ended_at: list[float] = []
    accepted: dict[int, Job[Any]] = {}
    refused: list[int] = []
    finalized_at: list[float] = []

    async def work(key: int) -> None:
        ran[key] += 1
        await trio.sleep(1 + key % 3)
        ended_at.append(trio.current_time())

    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 2, queue=2), PoolConfig(2, 1)]
    ) as d:
        start = trio.current_time()

        async def dispatcher(first_key: int) -> None:
            for key in range(first_key, first_key + 1000):
                try:
                    accepted[key] = await d.dispatch(work, key, priority=1 + key % 2)
                except bulkhead.DispatcherClosed:
                    refused.append(key)
                    return

        async def nowaiter(first_key: int) -> None:
            for key in range(first_key, first_key + 1000):
                try:
                    accepted[key] = d.dispatch_nowait(work, key, priority=1 + key % 2)
                except trio.WouldBlock:
                    await trio.sleep(0.25)
                except bulkhead.DispatcherClosed:
                    refused.append(key)
                    return

        async def finalize() -> None:
            await d.finalize()
            finalized_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(dispatcher, i * 1000)
            for i in range(40, 45):
                nursery.start_soon(nowaiter, i * 1000)
            await trio.sleep(5.5)
            nursery.start_soon(finalize)
            nursery.start_soon(finalize)
            await wait_all_tasks_blocked()
            # Intake stopped at once: every blocked dispatcher was refused.
            assert len([key for key in refused if key < 40_000]) == 40
            assert d.statistics().total.waiting_dispatchers == 0
        assert live_bulkhead_tasks() == []
    assert set(ran) == set(accepted)
    assert set(ran.values()) == {1}
    assert all(job.state is JobState.SUCCEEDED for job in accepted.values())
    assert len(refused) == 45
    assert not set(refused) & set(accepted)
    assert finalized_at == [max(ended_at)] * 2
    # It drained what it held (running jobs, then queued ones), no more.
    assert max(ended_at) - start <= 5.5 + 3 + 3
    stats = d.statistics().total
    assert stats.submitted == stats.succeeded == len(accepted)


# ---------------------------------------------------------------- 8. repr


async def test_reprs_show_the_state_a_debugger_needs_and_never_fail() -> None:
    """Dispatcher, pool and job reprs, taken at awkward moments: before start,
    from inside a job, while dispatchers wait, during teardown, after exit."""
    release = trio.Event()
    seen: list[str] = []

    class Callable_:
        async def __call__(self) -> None:
            seen.append(repr(d))
            await release.wait()

    d = bulkhead.Dispatcher([PoolConfig(1, 2, queue=1), PoolConfig(-5, 1)])
    assert re.fullmatch(
        r"<bulkhead\.Dispatcher new at 0x[0-9a-f]+, pools 1: 0/2 busy, 0 queued, "
        r"0 waiting; -5: 0/1 busy, 0 queued, 0 waiting>",
        repr(d),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        job = await d.dispatch(Callable_(), priority=1)
        await wait_all_tasks_blocked()
        # Taken from inside the job.
        assert seen == [repr(d)]
        assert "pools 1: 1/2 busy, 0 queued, 0 waiting; -5: 0/1 busy" in seen[0]
        await d.dispatch(functools.partial(hang_until, release), priority=1)
        await d.dispatch(noop, priority=1)  # queued

        async def blocked() -> None:
            with pytest.raises(bulkhead.DispatcherClosed):
                await d.dispatch(noop, priority=1)

        nursery.start_soon(blocked)
        await wait_all_tasks_blocked()
        assert "pools 1: 2/2 busy, 1 queued, 1 waiting; -5: 0/1 busy" in repr(d)
        assert re.fullmatch(
            r"<bulkhead pool 1: 2/2 busy, 1 queued, 1 waiting, async>",
            repr(d._pools[1]),
        )
        assert re.fullmatch(
            rf"<bulkhead\.Job #{job.id} '<.*Callable_ object at 0x[0-9a-f]+>' "
            r"priority=1 RUNNING attempts=1 at 0x[0-9a-f]+>",
            repr(job),
        )
        nursery.start_soon(d.finalize)
        await wait_all_tasks_blocked()
        assert repr(d).startswith("<bulkhead.Dispatcher closing at ")
        release.set()
    assert repr(d).startswith("<bulkhead.Dispatcher closed at ")
    assert "SUCCEEDED" in repr(job)
