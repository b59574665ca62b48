"""as_completed: jobs in the order they end."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import assert_checkpoints, wait_all_tasks_blocked
from typing_extensions import assert_type

import bulkhead
from bulkhead import Job, JobState

from ._jobs import fail, ret, sleep_then


async def test_jobs_come_in_the_order_they_end(autojump_clock: Any) -> None:
    async with bulkhead.open_dispatcher({1: 3}, on_error="record") as d:
        slow = await d.dispatch(sleep_then, 3, "slow", priority=1)
        fast = await d.dispatch(sleep_then, 1, "fast", priority=1)
        failing = await d.dispatch(fail, "boom", priority=1)
        seen: list[Job[Any]] = []
        async for job in bulkhead.as_completed([slow, fast, failing]):
            seen.append(job)
        assert seen == [failing, fast, slow]
        assert failing.state is JobState.FAILED


async def test_ended_jobs_come_first_in_the_order_given(autojump_clock: Any) -> None:
    async with bulkhead.open_dispatcher({1: 2}) as d:
        a = await d.dispatch(ret, "a", priority=1)
        b = await d.dispatch(ret, "b", priority=1)
        await d.barrier()
        running = await d.dispatch(sleep_then, 1, "c", priority=1)
        order = [job async for job in bulkhead.as_completed([b, running, a])]
        assert order == [b, a, running]


async def test_each_step_is_a_checkpoint_and_a_cancelled_step_loses_nothing(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher({1: 2}) as d:
        first = await d.dispatch(sleep_then, 1, 1, priority=1)
        second = await d.dispatch(sleep_then, 2, 2, priority=1)
        completed = bulkhead.as_completed([first, second])
        with trio.move_on_after(0.5):
            await completed.__anext__()  # blocking path, cancelled
        await trio.sleep(5)  # both end meanwhile
        with assert_checkpoints():
            assert await completed.__anext__() is first  # fast path
        with assert_checkpoints():
            assert await completed.__anext__() is second
        with assert_checkpoints(), pytest.raises(StopAsyncIteration):
            await completed.__anext__()


async def test_it_is_typed_by_the_jobs_result() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(ret, 3, priority=1)
        async for done in bulkhead.as_completed([job]):
            assert_type(done, Job[Any])
            assert await done.wait() == 3


async def test_nothing_to_wait_for_ends_at_once() -> None:
    with assert_checkpoints():
        none: list[Job[int]] = []
        assert [job async for job in bulkhead.as_completed(none)] == []


async def test_it_takes_jobs_only() -> None:
    with pytest.raises(
        TypeError, match=r"^as_completed\(\) takes an iterable of bulkhead\.Job, got 3$"
    ):
        bulkhead.as_completed(3)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^as_completed\(\) takes an iterable of bulkhead\.Job, got an item "
        r"'x': pass the handles dispatch\(\) returned$",
    ):
        bulkhead.as_completed(["x"])  # type: ignore[arg-type]


async def test_a_waiter_and_as_completed_share_the_jobs_end(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(sleep_then, 1, "v", priority=1)
        got: list[object] = []
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                got.append(await job.wait())

            nursery.start_soon(waiter)
            await wait_all_tasks_blocked()
            got.extend([j async for j in bulkhead.as_completed([job])])
        assert sorted(map(str, got)) == sorted(["v", str(job)])
