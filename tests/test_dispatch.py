"""dispatch / dispatch_nowait: hand-off, queue, fairness, cancellation, validation."""

from __future__ import annotations

import contextvars
import functools
import math
import re
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import bulkhead
from bulkhead import JobState, PoolConfig

from ._jobs import hang_until, noop, ret

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def test_open_dispatcher_returns_with_every_worker_idle() -> None:
    async with bulkhead.open_dispatcher({1: 3, 2: 2}) as d:
        stats = d.statistics()
        assert stats.pools[1].idle == 3
        assert stats.pools[2].idle == 2
        # ...so dispatch_nowait succeeds straight away.
        job = d.dispatch_nowait(noop, priority=1)
        assert job.state is JobState.RUNNING


async def test_rendezvous_dispatch_returns_with_the_job_running() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with assert_checkpoints():
            job = await d.dispatch(hang_until, release, priority=1)
        assert job.state is JobState.RUNNING
        stats = d.statistics().pools[1]
        assert (stats.submitted, stats.started, stats.busy, stats.idle) == (1, 1, 1, 0)
        release.set()


async def test_rendezvous_dispatch_blocks_until_a_worker_is_free() -> None:
    release = trio.Event()
    record: list[str] = []
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(hang_until, release, priority=1)

        async def second() -> None:
            with assert_checkpoints():
                job = await d.dispatch(hang_until, trio.Event(), priority=1)
            record.append(f"accepted {job.state.name}")
            job.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second)
            await wait_all_tasks_blocked()
            assert record == []
            assert d.statistics().pools[1].waiting_dispatchers == 1
            release.set()
        assert record == ["accepted RUNNING"]


async def test_queue_accepts_up_to_its_size_then_blocks() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=2)]) as d:
        running = await d.dispatch(hang_until, release, priority=1)
        queued = [await d.dispatch(noop, priority=1) for _ in range(2)]
        assert running.state is JobState.RUNNING
        assert [job.state for job in queued] == [JobState.QUEUED] * 2
        with pytest.raises(trio.WouldBlock, match=r"^$"):
            d.dispatch_nowait(noop, priority=1)
        stats = d.statistics().pools[1]
        assert (stats.queued, stats.busy, stats.rejected) == (2, 1, 1)
        release.set()
        await d.barrier()
        assert [job.state for job in queued] == [JobState.SUCCEEDED] * 2


async def test_queued_jobs_start_in_arrival_order() -> None:
    release = trio.Event()
    order: list[int] = []

    async def record(i: int) -> None:
        order.append(i)

    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=5)]) as d:
        await d.dispatch(hang_until, release, priority=1)
        for i in range(5):
            await d.dispatch(record, i, priority=1)
        release.set()
        await d.barrier()
    assert order == [0, 1, 2, 3, 4]


async def test_blocked_dispatchers_are_served_first_in_first_out() -> None:
    release = trio.Event()
    order: list[int] = []

    async def record(i: int) -> None:
        order.append(i)

    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        await d.dispatch(hang_until, release, priority=1)
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(functools.partial(d.dispatch, record, i, priority=1))
                await wait_all_tasks_blocked()
            assert d.statistics().pools[1].waiting_dispatchers == 3
            release.set()
        await d.barrier()
    assert order == [0, 1, 2, 3]


async def test_dispatch_nowait_never_barges_a_blocked_dispatcher() -> None:
    first, second = trio.Event(), trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        await d.dispatch(hang_until, first, priority=1)
        await d.dispatch(hang_until, second, priority=1)  # queued
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(d.dispatch, noop, priority=1))
            await wait_all_tasks_blocked()
            # Fairness: the queue slot freed below goes to the blocked dispatcher,
            # not to whoever calls dispatch_nowait first.
            first.set()
            await wait_all_tasks_blocked()
            stats = d.statistics().pools[1]
            assert (stats.busy, stats.queued, stats.waiting_dispatchers) == (1, 1, 0)
            with pytest.raises(trio.WouldBlock, match=r"^$"):
                d.dispatch_nowait(noop, priority=1)
            second.set()


async def test_dispatch_nowait_is_refused_and_counted_while_a_dispatcher_waits() -> (
    None
):
    release = trio.Event()
    async with bulkhead.open_dispatcher([PoolConfig(1, 1)]) as d:
        await d.dispatch(hang_until, release, priority=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(d.dispatch, noop, priority=1))
            await wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock, match=r"^$"):
                d.dispatch_nowait(noop, priority=1)
            assert d.statistics().pools[1].rejected == 1
            release.set()


async def test_cancelled_blocked_dispatch_was_never_accepted() -> None:
    release = trio.Event()
    ran: list[int] = []

    async def record(i: int) -> None:
        ran.append(i)

    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(hang_until, release, priority=1)
        scopes = [trio.CancelScope() for _ in range(3)]
        accepted: list[int] = []

        async def dispatch_in(scope: trio.CancelScope, i: int) -> None:
            with scope:
                await d.dispatch(record, i, priority=1)
                accepted.append(i)

        async with trio.open_nursery() as nursery:
            for i, scope in enumerate(scopes):
                nursery.start_soon(dispatch_in, scope, i)
                await wait_all_tasks_blocked()
            scopes[1].cancel()
            await wait_all_tasks_blocked()
            stats = d.statistics().pools[1]
            assert (stats.waiting_dispatchers, stats.submitted) == (2, 1)
            release.set()
        await d.barrier()
        assert sorted(accepted) == [0, 2]  # both wake in one batch: any order
        assert ran == [0, 2]
        stats = d.statistics().pools[1]
        assert (stats.submitted, stats.succeeded, stats.idle) == (3, 3, 1)


async def test_already_cancelled_dispatch_accepts_nothing_even_with_idle_workers() -> (
    None
):
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with trio.CancelScope() as scope:
            scope.cancel()
            await d.dispatch(noop, priority=1)
        assert scope.cancelled_caught
        assert d.statistics().pools[1].submitted == 0


async def test_accepted_dispatch_returns_even_if_cancelled_meanwhile() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        with trio.CancelScope() as scope:
            job = await d.dispatch(ret, 7, priority=1)
            scope.cancel()
        assert await job.wait() == 7


async def test_isolation_a_hung_pool_never_delays_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 2, queue=10), PoolConfig(2, 1)]
    ) as d:
        for _ in range(12):
            await d.dispatch(hang_until, release, priority=1)
        start = trio.current_time()
        finished_at: list[float] = []
        # Virtual time moves only once every task is blocked: a pool 2 job
        # held up by pool 1 would let the clock jump to this deadline at once.
        with trio.fail_after(60):
            for i in range(50):
                job = await d.dispatch(ret, i, priority=2)
                assert await job.wait() == i
                finished_at.append(trio.current_time())
        # Each ran without pool 2 waiting on anything: no virtual time passed...
        assert finished_at == [start] * 50
        # ...while pool 1 stayed hung: both workers busy, its queue full.
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.queued, stats.succeeded) == (2, 10, 0)
        release.set()


async def test_a_pool_never_runs_more_than_its_workers(autojump_clock: Any) -> None:
    running = 0
    peak = 0

    async def work(duration: float) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(duration)
        running -= 1

    async with bulkhead.open_dispatcher([PoolConfig(1, 3, queue=4)]) as d:
        for i in range(40):
            await d.dispatch(work, (i % 5) / 10, priority=1)
            assert d.statistics().pools[1].busy <= 3
        await d.barrier()
    assert peak == 3


async def test_dispatch_after_finalize_raises_dispatcher_closed_every_time() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.finalize()
        closed = (
            r"^the dispatcher takes no more jobs: finalize\(\) has begun; "
            r"dispatch before finalizing$"
        )
        for _ in range(2):
            with pytest.raises(bulkhead.DispatcherClosed, match=closed):
                await d.dispatch(noop, priority=1)
            with pytest.raises(bulkhead.DispatcherClosed, match=closed):
                d.dispatch_nowait(noop, priority=1)
    assert isinstance(bulkhead.DispatcherClosed(), trio.ClosedResourceError)


async def test_blocked_dispatchers_get_dispatcher_closed_when_finalize_begins() -> None:
    release = trio.Event()
    outcomes: list[str] = []
    async with bulkhead.open_dispatcher({1: 1}) as d:
        await d.dispatch(hang_until, release, priority=1)

        async def blocked() -> None:
            try:
                await d.dispatch(noop, priority=1)
            except bulkhead.DispatcherClosed:
                outcomes.append("closed")

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(blocked)
            await wait_all_tasks_blocked()
            nursery.start_soon(d.finalize)
            await wait_all_tasks_blocked()
            assert outcomes == ["closed"] * 3
            release.set()
        assert d.statistics().pools[1].submitted == 1


async def test_job_runs_in_a_copy_of_the_dispatching_context() -> None:
    async def read_and_write() -> str:
        seen = request_id.get("unset")
        request_id.set("changed by the job")
        return seen

    async with bulkhead.open_dispatcher({1: 1}) as d:
        request_id.set("req-42")
        job = await d.dispatch(read_and_write, priority=1)
        assert await job.wait() == "req-42"
        assert request_id.get() == "req-42"


async def test_copy_context_false_runs_jobs_in_the_workers_context() -> None:
    async def read() -> str:
        return request_id.get("unset")

    async with bulkhead.open_dispatcher([PoolConfig(1, 1, copy_context=False)]) as d:
        request_id.set("req-42")
        job = await d.dispatch(read, priority=1)
        assert await job.wait() == "unset"


async def test_a_job_may_dispatch_into_another_pool() -> None:
    async with bulkhead.open_dispatcher({1: 1, 2: 1}) as d:

        async def parent() -> int:
            child = await d.dispatch(ret, 5, priority=2)
            return int(await child.wait()) + 1

        job = await d.dispatch(parent, priority=1)
        assert await job.wait() == 6


async def test_default_priority_is_used_when_none_is_given() -> None:
    async with bulkhead.open_dispatcher({1: 1, 2: 1}, default_priority=2) as d:
        job = await d.dispatch(noop)
        assert job.priority == 2


async def test_priority_accepts_intenum_and_negative_ints() -> None:
    pools = {bulkhead.Priority.HIGH: 1, -5: 1}
    async with bulkhead.open_dispatcher(pools) as d:
        assert (await d.dispatch(noop, priority=bulkhead.Priority.HIGH)).priority == 3
        assert (await d.dispatch(noop, priority=-5)).priority == -5


async def coroutine_factory() -> None:
    pass


class AsyncCallable:
    async def __call__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"priority": 9},
            bulkhead.UnknownPriority,
            r"^no pool has priority 9; configured priorities: 1, 2$",
        ),
        (
            {},
            TypeError,
            r"^no priority given and this dispatcher has no default_priority: "
            r"pass priority=\.\.\. or open the dispatcher with "
            r"default_priority=\.\.\.$",
        ),
        (
            {"priority": True},
            TypeError,
            r"^priority must be an int \(or an IntEnum such as Priority\.HIGH\), "
            r"got True$",
        ),
        (
            {"priority": 1.0},
            TypeError,
            r"^priority must be an int \(or an IntEnum such as Priority\.HIGH\), "
            r"got 1\.0$",
        ),
        (
            {"priority": 1, "timeout": -1},
            ValueError,
            r"^timeout must be >= 0 seconds \(or None\), got -1$",
        ),
        (
            {"priority": 1, "timeout": math.nan},
            ValueError,
            r"^timeout must be >= 0 seconds \(or None\), got nan$",
        ),
        (
            {"priority": 1, "timeout": "1"},
            TypeError,
            r"^timeout must be a number of seconds or None, got '1'$",
        ),
        (
            {"priority": 1, "retry": 3},
            TypeError,
            r"^retry must be a bulkhead\.Retry or None, got 3$",
        ),
        (
            {"priority": 1, "name": 3},
            TypeError,
            r"^name must be a str or None, got 3$",
        ),
    ],
)
async def test_bad_dispatch_arguments_are_rejected_before_anything_is_accepted(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1), PoolConfig(2, 1)]) as d:
        with pytest.raises(error, match=message):
            await d.dispatch(noop, **kwargs)
        with pytest.raises(error, match=message):
            d.dispatch_nowait(noop, **kwargs)
        assert d.statistics().total.submitted == 0


async def test_unknown_priority_is_a_key_error_with_a_readable_message() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        # Anchored: KeyError's own str() would put the message in quotes.
        with pytest.raises(
            KeyError, match=r"^no pool has priority 2; configured priorities: 1$"
        ):
            await d.dispatch(noop, priority=2)


async def test_a_coroutine_object_gets_the_did_you_mean_hint() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        coro = coroutine_factory()
        with pytest.raises(
            TypeError,
            match=rf"^dispatch\(\) got a coroutine object {re.escape(repr(coro))} "
            r"instead of a function: did you mean dispatch\(f, x\) instead of "
            r"dispatch\(f\(x\)\)\?$",
        ):
            await d.dispatch(coro, priority=1)  # type: ignore[call-overload]
        assert d.statistics().total.submitted == 0


NOT_SYNC = (
    r"^{fn} is an async function, but this is a thread pool that calls sync "
    r"functions: dispatch it to an async pool$"
)


@pytest.mark.parametrize(
    ("fn", "kind", "message"),
    [
        (noop, "thread", NOT_SYNC),
        (AsyncCallable(), "thread", NOT_SYNC),
        (42, "async", r"^dispatch\(\) needs a function to call, got {fn}$"),
    ],
)
async def test_function_kind_must_match_the_pool(
    fn: Any, kind: Any, message: str
) -> None:
    """``message`` names the function as ``{fn}``: its repr, escaped."""
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind=kind)]) as d:
        with pytest.raises(TypeError, match=message.format(fn=re.escape(repr(fn)))):
            await d.dispatch(fn, priority=1)


async def test_async_callable_objects_and_partials_are_accepted() -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        assert await (await d.dispatch(AsyncCallable(), priority=1)).wait() == 1
        job = await d.dispatch(functools.partial(ret, 3), priority=1)
        assert await job.wait() == 3


async def test_dispatch_before_the_dispatcher_runs_is_a_clear_error() -> None:
    d = bulkhead.Dispatcher({1: 1})
    with pytest.raises(
        RuntimeError,
        match=r"^this Dispatcher is not running yet: use "
        r"`async with open_dispatcher\(\.\.\.\)` or "
        r"`await nursery\.start\(dispatcher\.run\)` first$",
    ):
        await d.dispatch(noop, priority=1)


@pytest.mark.parametrize(
    ("pools", "kwargs", "error", "message"),
    [
        ({}, {}, ValueError, r"^pools is empty: configure at least one pool$"),
        (
            [PoolConfig(1, 1), PoolConfig(1, 2)],
            {},
            ValueError,
            r"^priority 1 is configured twice: each priority names exactly one pool$",
        ),
        ({1: 0}, {}, ValueError, r"^workers must be >= 1, got 0$"),
        ({1: True}, {}, TypeError, r"^workers must be an int, got True$"),
        (
            {"a": 1},
            {},
            TypeError,
            r"^priority must be an int \(or an IntEnum such as Priority\.HIGH\), "
            r"got 'a'$",
        ),
        (
            {1: PoolConfig(1, 1)},
            {},
            TypeError,
            r"^pools must map priority -> workers, or be an iterable of PoolConfig; "
            r"got a PoolConfig as the value for 1: pass \[PoolConfig\(\.\.\.\), "
            r"\.\.\.\] instead$",
        ),
        (
            42,
            {},
            TypeError,
            r"^pools must be a mapping \{priority: workers\} or an iterable of "
            r"bulkhead\.PoolConfig, got 42$",
        ),
        (
            [1],
            {},
            TypeError,
            r"^pools must be a mapping \{priority: workers\} or an iterable of "
            r"bulkhead\.PoolConfig, got an item 1$",
        ),
        (
            {1: 1},
            {"default_priority": 2},
            bulkhead.UnknownPriority,
            r"^no pool has priority 2; configured priorities: 1$",
        ),
        (
            {1: 1},
            {"on_error": "ignore"},
            ValueError,
            r'^on_error must be "raise", "record", "cancel" or a callable '
            r"handler\(job, exc\), got 'ignore'$",
        ),
    ],
)
def test_bad_pool_configurations_are_rejected(
    pools: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        bulkhead.Dispatcher(pools, **kwargs)
