"""Lifecycle and references: startup, context markers, what a finished job
pins, when a job counts as started, and memory under unreported failures
(issue 12, items 5-9)."""

from __future__ import annotations

import functools
import gc
import tracemalloc
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import bulkhead
from bulkhead import JobState, PoolConfig
from bulkhead._policy import Kind

from ._jobs import live_bulkhead_tasks, noop
from .test_cancellation import Injector, inject_everywhere

# ------------------------------------------------ 5. a startup cancelled midway


@pytest.mark.parametrize("kind", ["async", "thread", "process"])
async def test_finalize_returns_after_a_startup_cancelled_at_any_step(
    kind: Kind,
) -> None:
    """``nursery.start(d.run)`` cancelled at each of its steps: a later
    ``finalize()`` returns at once, and nothing is left running."""

    async def scenario(injector: Injector) -> None:
        d = bulkhead.Dispatcher([PoolConfig(1, 2, kind=kind), PoolConfig(2, 1)])
        async with trio.open_nursery() as nursery:
            started = await injector.call(lambda: nursery.start(d.run))
            # Real seconds, and only a hang waits that long.
            with trio.fail_after(30):
                await d.finalize()
            assert d.statistics().closed
            if not started.cancelled:
                assert d.statistics().total.idle == 0  # all stopped
        assert live_bulkhead_tasks() == []

    assert await inject_everywhere(scenario, "caller") >= 1


# ------------------------------------- 6. context markers do not leak into tasks


async def start_elsewhere(
    nursery: trio.Nursery, d: bulkhead.Dispatcher, reports: list[Any]
) -> None:
    async def later() -> None:
        reports.append(await d.barrier())

    nursery.start_soon(later)


@pytest.mark.parametrize("copy_context", [True, False])
async def test_a_task_a_job_starts_in_an_outer_nursery_is_not_part_of_it(
    copy_context: bool,
) -> None:
    """That task is not inside the job, so its barrier waits for the job
    instead of refusing: the same with or without ``copy_context``, a speed
    knob that must not change behaviour."""
    reports: list[Any] = []
    async with trio.open_nursery() as outer:
        pools = [PoolConfig(1, 1, copy_context=copy_context)]
        async with bulkhead.open_dispatcher(pools) as d:
            job = await d.dispatch(start_elsewhere, outer, d, reports, priority=1)
            await job.wait()
            await wait_all_tasks_blocked()
            assert [r.jobs for r in reports] == [1]


# ------------------------------------ 7. a finished job pins nothing it used


class Payload:
    async def method(self) -> None:
        pass


async def takes(payload: Payload) -> None:
    pass


@pytest.mark.parametrize("how", ["partial", "bound method", "argument"])
async def test_a_finished_job_pins_neither_its_function_nor_its_arguments(
    how: str,
) -> None:
    """Neither the dispatcher (while it keeps running) nor the handle the
    user keeps holds what the job used; the handle keeps its name."""
    payload = Payload()
    gone = weakref.ref(payload)
    async with bulkhead.open_dispatcher({1: 1}) as d:
        if how == "partial":
            job = await d.dispatch(functools.partial(takes, payload), priority=1)
        elif how == "bound method":
            job = await d.dispatch(payload.method, priority=1)
        else:
            job = await d.dispatch(takes, payload, priority=1)
        await job.wait()
        del payload
        gc.collect()
        assert gone() is None
        expected = "Payload.method" if how == "bound method" else "takes"
        assert job.name == expected
        assert repr(job).startswith(f"<bulkhead.Job #{job.id} {expected!r} ")
        # The check the dispatcher skipped for a function it knows still
        # happens for a new one.
        with pytest.raises(TypeError, match=r"^dispatch\(\) needs a function "):
            await d.dispatch(42, priority=1)  # type: ignore[call-overload]


# ------------------------------------------- 8. when a job counts as started


async def test_a_job_cancelled_between_hand_off_and_call_began_its_attempt() -> None:
    """``started`` counts the job as soon as a worker took it, and its first
    attempt began then too: a RUNNING job always has ``attempts >= 1``, even
    if it is cancelled before its function is called."""
    ran: list[str] = []

    async def record() -> None:
        ran.append("ran")

    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        job = d.dispatch_nowait(record, priority=1)  # its worker has not run yet
        assert (job.state, job.attempts) == (JobState.RUNNING, 1)
        assert d.statistics().pools[1].started == 1
        job.cancel()
        await d.barrier()
    assert (job.state, job.attempts, ran) == (JobState.CANCELLED, 1, [])
    stats = d.statistics().pools[1]
    assert (stats.started, stats.cancelled) == (1, 1)


async def test_a_queued_job_has_not_begun_an_attempt() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        await d.dispatch(release.wait, priority=1)
        queued = await d.dispatch(noop, priority=1)
        assert (queued.state, queued.attempts) == (JobState.QUEUED, 0)
        queued.cancel()
        release.set()
    assert (queued.state, queued.attempts) == (JobState.CANCELLED, 0)
    assert d.statistics().pools[1].started == 1


# ------------------------------ 9. unreported failures do not grow without bound


async def fail(i: int) -> None:
    raise ValueError(f"job {i} failed")


def bulkhead_and_test_bytes() -> int:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(True, "*/bulkhead/*"),
            tracemalloc.Filter(True, __file__),
        ]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def fail_without_barriers(sizes: list[int]) -> None:
    """6000 failures under "raise" with no barrier; memory sampled at 1000
    and 6000."""
    async with bulkhead.open_dispatcher({1: 2}) as d:
        for i in range(6000):
            await d.dispatch(fail, i, priority=1)
            if i in (999, 5999):
                sizes.append(bulkhead_and_test_bytes())


async def test_failures_nobody_reports_keep_memory_flat() -> None:
    """A service under ``"raise"`` that never calls barrier(): each batch keeps
    at most ``keep_failures`` exceptions (with their tracebacks); the rest are
    counted, and finalize says how many."""
    sizes: list[int] = []
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        # JobsFailed itself (not RaisesGroup, which wants every member listed).
        with pytest.raises(
            bulkhead.JobsFailed,
            match=(
                r"^6000 of 6000 jobs failed; the first 100 are in this group, "
                r"the other 5900 only in their Job handles \(keep_failures\)$"
            ),
        ) as raised:
            await fail_without_barriers(sizes)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    # Kept, each failure would pin its exception and traceback (~1 KiB).
    warm, after = sizes
    assert after - warm < 16 * 1024, (warm, after)
    assert [str(e) for e in raised.value.exceptions] == [
        f"job {i} failed" for i in range(100)
    ]
    assert raised.value.report.failed == 6000


async def test_keep_failures_sets_how_many_a_barrier_raises() -> None:
    with pytest.RaisesGroup(
        pytest.RaisesExc(
            ValueError, match=r"^job 0 failed\nin bulkhead job #\d+ \(.+\)$"
        ),
        match=(
            r"^3 of 3 jobs failed; the first 1 are in this group, "
            r"the other 2 only in their Job handles \(keep_failures\)$"
        ),
    ):
        async with bulkhead.open_dispatcher({1: 1}, keep_failures=1) as d:
            for i in range(3):
                await d.dispatch(fail, i, priority=1)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, ValueError, r"^keep_failures must be >= 1, got 0$"),
        (True, TypeError, r"^keep_failures must be an int, got True$"),
        (1.5, TypeError, r"^keep_failures must be an int, got 1\.5$"),
    ],
)
def test_keep_failures_is_validated(
    value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        bulkhead.Dispatcher({1: 1}, keep_failures=value)
