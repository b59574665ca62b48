"""barrier(): epochs, reports, failures raised once, cancellation claims nothing."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import bulkhead
from bulkhead import BatchReport, JobState, PoolConfig

from ._jobs import fail, hang_until, noop, sleep_then


async def test_barrier_waits_for_every_job_dispatched_before_it(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 2, queue=10), PoolConfig(2, 1)]
    ) as d:
        jobs = [await d.dispatch(sleep_then, i, i, priority=1) for i in range(6)]
        jobs.append(await d.dispatch(sleep_then, 1, "b", priority=2))
        start = trio.current_time()
        with assert_checkpoints():
            report = await d.barrier()
        assert all(job.outcome is not None for job in jobs)
        assert report == BatchReport(
            jobs=7, succeeded=7, failed=0, cancelled=0, elapsed=report.elapsed
        )
        assert report.elapsed == trio.current_time() - start > 0


async def test_barrier_with_nothing_to_wait_for_is_a_checkpoint(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with assert_checkpoints():
            report = await d.barrier()
        assert report == BatchReport(0, 0, 0, 0, 0.0)


async def test_rounds_each_report_only_their_own_jobs(autojump_clock: Any) -> None:
    async with bulkhead.open_dispatcher({1: 4}) as d:
        for round_size in (3, 5, 1):
            for _ in range(round_size):
                await d.dispatch(sleep_then, 0.5, priority=1)
            report = await d.barrier()
            assert (report.jobs, report.succeeded) == (round_size, round_size)


async def test_jobs_accepted_while_a_barrier_waits_belong_to_the_next_batch(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 2, queue=2)]) as d:
        await d.dispatch(sleep_then, 1, priority=1)
        reports: list[BatchReport] = []

        async def keep_dispatching() -> None:
            # Continuous load: a barrier must not starve.
            for _ in range(20):
                await d.dispatch(sleep_then, 1, priority=1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_dispatching)
            await wait_all_tasks_blocked()
            reports.append(await d.barrier())
            assert trio.current_time() == 2
        reports.append(await d.barrier())
        # At time 0 the barrier covers the 4 jobs accepted so far: 2 running
        # and 2 queued, with the 5th dispatch blocked on the full queue. Those
        # 4 end at time 2 (two 1 s jobs per worker); the other 17 were accepted
        # while it waited, so they are the next batch's.
        assert [r.jobs for r in reports] == [4, 17]


async def test_barrier_for_one_pool_ignores_the_others(autojump_clock: Any) -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher({1: 1, 2: 1}) as d:
        await d.dispatch(hang_until, release, priority=1)
        await d.dispatch(sleep_then, 2, priority=2)
        with trio.fail_after(5):
            report = await d.barrier(priority=2)
        assert report.jobs == 1
        release.set()
        assert (await d.barrier()).jobs == 1


async def test_failures_are_raised_once_by_the_first_covering_barrier() -> None:
    async with bulkhead.open_dispatcher({1: 2}) as d:
        await d.dispatch(fail, "a", priority=1)
        await d.dispatch(fail, "b", priority=1)
        await d.dispatch(sleep_then, 0, priority=1)
        with pytest.RaisesGroup(
            pytest.RaisesExc(ValueError, match=r"^a\nin bulkhead job #\d+ \(.+\)$"),
            pytest.RaisesExc(ValueError, match=r"^b\nin bulkhead job #\d+ \(.+\)$"),
            check=lambda group: isinstance(group, bulkhead.JobsFailed),
        ) as info:
            await d.barrier()
        assert isinstance(info.value, bulkhead.JobsFailed)
        assert info.value.report == BatchReport(
            jobs=3,
            succeeded=1,
            failed=2,
            cancelled=0,
            elapsed=info.value.report.elapsed,
        )
        # Reported once: the next barrier and finalize raise nothing.
        assert (await d.barrier()).jobs == 0


async def test_pools_keep_running_after_a_batch_failed() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(fail, "x", priority=1)
        with pytest.RaisesGroup(
            pytest.RaisesExc(ValueError, match=r"^x\nin bulkhead job #\d+ \(.+\)$"),
            match=r"^1 of 1 jobs failed$",
            check=lambda group: isinstance(group, bulkhead.JobsFailed),
        ):
            await d.barrier()
        job = await d.dispatch(sleep_then, 0, 42, priority=1)
        assert await job.wait() == 42


async def test_jobs_failed_survives_split_with_its_report() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(fail, "x", priority=1)
        with pytest.RaisesGroup(
            pytest.RaisesExc(ValueError, match=r"^x\nin bulkhead job #\d+ \(.+\)$"),
            match=r"^1 of 1 jobs failed$",
            check=lambda group: isinstance(group, bulkhead.JobsFailed),
        ) as info:
            await d.barrier()
    assert isinstance(info.value, bulkhead.JobsFailed)
    match, rest = info.value.split(ValueError)
    assert isinstance(match, bulkhead.JobsFailed)
    assert match.report is info.value.report
    assert rest is None


async def test_record_policy_counts_failures_without_raising() -> None:
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        job = await d.dispatch(fail, "x", priority=1)
        report = await d.barrier()
        assert (report.jobs, report.failed) == (1, 1)
        with pytest.raises(ValueError, match=r"^x$"):
            await job.wait()


async def test_cancelled_barrier_claims_nothing(autojump_clock: Any) -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(fail, "x", priority=1)
        await d.dispatch(sleep_then, 10, priority=1)
        with trio.move_on_after(1):
            await d.barrier()
        with pytest.RaisesGroup(
            pytest.RaisesExc(ValueError, match=r"^x\nin bulkhead job #\d+ \(.+\)$"),
            match=r"^1 of 2 jobs failed$",
            check=lambda group: isinstance(group, bulkhead.JobsFailed),
        ) as info:
            await d.barrier()
        assert isinstance(info.value, bulkhead.JobsFailed)
        assert info.value.report.jobs == 2


async def test_many_concurrent_barriers_each_job_reported_once(
    autojump_clock: Any,
) -> None:
    reports: list[BatchReport] = []
    async with bulkhead.open_dispatcher({1: 2}) as d:

        async def barrier() -> None:
            reports.append(await d.barrier())

        async with trio.open_nursery() as nursery:
            for i in range(10):
                await d.dispatch(sleep_then, 1 + i % 3, priority=1)
                nursery.start_soon(barrier)
            await wait_all_tasks_blocked()
        assert len(reports) == 10
        assert sum(report.jobs for report in reports) == 10


WAITS_FOR_ITSELF = (
    r"^barrier\(\) called from inside a job of pool 1 of the same dispatcher "
    r"would wait for that job itself; call barrier\(\) from the task that "
    r"dispatched the jobs instead$"
)


async def test_barrier_from_inside_a_job_of_its_pool_is_an_error() -> None:
    async with bulkhead.open_dispatcher({1: 1, 2: 1}, on_error="record") as d:

        async def waits_for_itself() -> None:
            await d.barrier()

        async def waits_for_own_pool() -> None:
            await d.barrier(priority=1)

        async def waits_for_other_pool() -> str:
            await d.barrier(priority=2)
            return "ok"

        for fn in (waits_for_itself, waits_for_own_pool):
            job = await d.dispatch(fn, priority=1)
            with pytest.raises(RuntimeError, match=WAITS_FOR_ITSELF):
                await job.wait()
        other = await d.dispatch(waits_for_other_pool, priority=1)
        assert await other.wait() == "ok"


async def test_barrier_from_a_task_spawned_by_a_job_is_an_error_too() -> None:
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:

        async def spawns() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(d.barrier)

        job = await d.dispatch(spawns, priority=1)
        # The group is the job's own nursery's, as trio raises it.
        with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match=WAITS_FOR_ITSELF)):
            await job.wait()


async def test_barrier_of_an_unknown_pool() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with pytest.raises(
            bulkhead.UnknownPriority,
            match=r"^no pool has priority 3; configured priorities: 1$",
        ):
            await d.barrier(priority=3)


async def test_barrier_counts_cancelled_jobs(autojump_clock: Any) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        running = await d.dispatch(sleep_then, 10, priority=1)
        queued = await d.dispatch(sleep_then, 10, priority=1)
        queued.cancel()
        running.cancel()
        report = await d.barrier()
        assert (report.jobs, report.cancelled) == (2, 2)


async def test_barrier_runs_jobs_of_many_rounds_in_one_process(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 3, queue=3)]) as d:
        for _ in range(50):
            async with trio.open_nursery() as nursery:
                for _ in range(7):
                    nursery.start_soon(
                        functools.partial(d.dispatch, sleep_then, 0.1, priority=1)
                    )
            assert (await d.barrier()).jobs == 7


# ------------------------------------------- which job failed, and handled ones


async def test_each_failure_in_jobs_failed_names_its_job() -> None:
    async with bulkhead.open_dispatcher({1: 2}) as d:
        first = await d.dispatch(fail, "one", priority=1, name="first")
        second = await d.dispatch(fail, "two", priority=1)
        with pytest.raises(bulkhead.JobsFailed) as caught:
            await d.barrier()
    notes = sorted(getattr(exc, "__notes__", []) for exc in caught.value.exceptions)
    assert notes == [
        [f"in bulkhead job #{first.id} (first)"],
        [f"in bulkhead job #{second.id} (fail)"],
    ]


async def test_a_failure_marked_handled_is_counted_but_not_raised_again() -> None:
    async with bulkhead.open_dispatcher({1: 2}) as d:
        handled = await d.dispatch(fail, "expected", priority=1)
        with pytest.raises(ValueError, match=r"^expected$"):
            await handled.wait()
        handled.mark_handled()
        handled.mark_handled()  # idempotent
        report = await d.barrier()
        assert (report.jobs, report.failed) == (1, 1)

        other = await d.dispatch(fail, "unexpected", priority=1)
        handled_too = await d.dispatch(fail, "expected too", priority=1)
        with pytest.raises(ValueError, match=r"^expected too$"):
            await handled_too.wait()
        handled_too.mark_handled()
        with pytest.raises(bulkhead.JobsFailed) as caught:
            await d.barrier()
        assert [str(e) for e in caught.value.exceptions] == ["unexpected"]
        assert str(caught.value).startswith(
            "1 of 2 jobs failed (1 more failed and were marked handled)"
        )
        assert caught.value.report.failed == 2
        assert other.state is JobState.FAILED
        # Already reported: marking it now changes nothing.
        other.mark_handled()
        succeeded = await d.dispatch(noop, priority=1)
        succeeded.mark_handled()  # not failed: nothing to do
        assert (await d.barrier()).failed == 0
