"""kind="process" pools: real worker processes, isolated per pool, killed on cancel."""

from __future__ import annotations

import math
import multiprocessing
import sys
import threading

import pytest
import trio

import bulkhead
from bulkhead import JobState, PoolConfig

from . import _process_jobs as jobs


async def test_process_pool_runs_sync_functions_in_its_own_processes() -> None:
    pools = [
        PoolConfig(1, 2, kind="process", queue=8),
        PoolConfig(2, 1, kind="process"),
    ]
    async with bulkhead.open_dispatcher(pools) as d:
        squares = [await d.dispatch(jobs.square, x, priority=1) for x in range(8)]
        assert (await d.barrier()).succeeded == 8
        assert [await job.wait() for job in squares] == [x * x for x in range(8)]
        pids_1 = {await (await d.dispatch(jobs.pid_of_worker, priority=1)).wait()}
        pid_2 = await (await d.dispatch(jobs.pid_of_worker, priority=2)).wait()
        assert pid_2 not in pids_1
        assert multiprocessing.active_children()
        await d.finalize()
        assert multiprocessing.active_children() == []


async def test_process_job_errors_are_job_failures() -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, kind="process")], on_error="record"
    ) as d:
        job = await d.dispatch(jobs.raise_value_error, "bad", priority=1)
        with pytest.raises(ValueError, match=r"^bad$"):
            await job.wait()
        assert d.statistics().pools[1].failed == 1


async def test_timeout_kills_the_process_and_frees_the_slot_at_once() -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, kind="process")], on_error="record"
    ) as d:
        job = await d.dispatch(jobs.sleep_for, 30, priority=1, timeout=0.2)
        with trio.fail_after(10), pytest.raises(trio.TooSlowError):
            await job.wait()
        stats = d.statistics().pools[1]
        assert (stats.timed_out, stats.busy, stats.idle, stats.abandoned) == (
            1,
            0,
            1,
            0,
        )
        again = await d.dispatch(jobs.square, 3, priority=1, timeout=math.inf)
        assert await again.wait() == 9


async def test_cancel_and_grace_period_stop_process_jobs() -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind="process")]) as d:
        job = await d.dispatch(jobs.sleep_for, 30, priority=1)
        job.cancel()
        with trio.fail_after(10):
            with pytest.raises(bulkhead.JobCancelled):
                await job.wait()
            straggler = await d.dispatch(jobs.sleep_for, 30, priority=1)
            await d.finalize(grace_period=0.2)
        assert straggler.state is JobState.CANCELLED


async def test_unpicklable_functions_are_rejected_at_dispatch() -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind="process")]) as d:
        with pytest.raises(
            TypeError,
            match=r"cannot be sent to a worker process .*: a process pool needs a "
            r"picklable function, such as one defined at module level",
        ):
            await d.dispatch(lambda: 1, priority=1)
        assert d.statistics().pools[1].submitted == 0


async def test_arguments_that_cannot_be_sent_are_refused_before_acceptance() -> None:
    lock = threading.Lock()
    refused = (
        r"^the arguments \(<unlocked _th.*>,\) cannot be sent "
        r"to a worker process \(cannot pickle '_thread\.lock' object\): a process "
        r"pool's jobs need arguments that pickle; nothing was accepted$"
    )
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind="process")]) as d:
        with pytest.raises(TypeError, match=refused):
            await d.dispatch(jobs.square, lock)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=refused):
            d.dispatch_nowait(jobs.square, lock)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=refused):
            await d.dispatch_many(jobs.square, [(2,), (lock,)])  # type: ignore[arg-type]
        assert d.statistics().pools[1].submitted == 0
        assert await (await d.dispatch(jobs.square, 3)).wait() == 9


def test_process_pool_without_the_extra_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "trio_parallel", None)
    with pytest.raises(
        ImportError,
        match=r"""^kind="process" pools need trio-parallel: """
        r"""pip install 'bulkhead\[process\]'$""",
    ):
        bulkhead.Dispatcher([PoolConfig(1, 1, kind="process")])
