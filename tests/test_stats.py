"""statistics(): frozen snapshots, the accounting invariant, counters, repr."""

from __future__ import annotations

import functools
import re
from typing import Any

import attrs
import pytest
import trio
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import bulkhead
from bulkhead import (
    Dispatcher,
    DispatcherStatistics,
    JobState,
    PoolConfig,
    PoolStatistics,
    Retry,
)

from ._jobs import fail, hang_until, noop

GAUGES = ("busy", "idle", "abandoned", "queued", "waiting_dispatchers")


def sync_double(x: int) -> int:
    return 2 * x


def check_invariants(d: Dispatcher, *, running: bool = True) -> DispatcherStatistics:
    """Assert the accounting every snapshot must satisfy; return the snapshot."""
    stats = d.statistics()
    for priority, pool in [*stats.pools.items(), ("total", stats.total)]:
        accounted = pool.queued + pool.busy + pool.succeeded + pool.failed
        assert pool.submitted == accounted + pool.cancelled, (priority, pool)
        assert pool.busy <= pool.workers, (priority, pool)
        assert pool.started <= pool.submitted, (priority, pool)
        if running:
            # Every worker is parked, running a job, or held by an abandoned
            # thread.
            slots = pool.idle + pool.busy + pool.abandoned
            assert slots == pool.workers, (priority, pool)
    if running:
        # A job waits in a pool's queue only while none of its workers is idle.
        for priority, pool in stats.pools.items():
            assert not (pool.queued and pool.idle), (priority, pool)
    assert stats.total.name == "total"
    for field in attrs.fields(PoolStatistics)[1:]:  # every field but the name
        parts = sum(getattr(pool, field.name) for pool in stats.pools.values())
        assert getattr(stats.total, field.name) == parts, field.name
    return stats


# --------------------------------------------------------------- frozen values


async def test_statistics_are_frozen_snapshots() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher({1: 2}) as d:
        before = d.statistics()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            before.closed = True  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            before.total = before.pools[1]  # type: ignore[misc]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            before.pools[1].busy = 5  # type: ignore[misc]
        await d.dispatch(hang_until, release, priority=1)
        # A snapshot never changes; the next call sees the new state.
        assert (before.pools[1].busy, before.pools[1].submitted) == (0, 0)
        after = d.statistics()
        assert after is not before
        assert (after.pools[1].busy, after.pools[1].submitted) == (1, 1)
        release.set()
        report = await d.barrier()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            report.jobs = 0  # type: ignore[misc]


async def test_the_pools_mapping_is_read_only_and_lists_every_pool() -> None:
    async with bulkhead.open_dispatcher({3: 1, -1: 2, 0: 1}) as d:
        pools: Any = d.statistics().pools
        assert list(pools) == [3, -1, 0]
        assert [pools[p].workers for p in pools] == [1, 2, 1]
        with pytest.raises(TypeError):
            pools[7] = pools[3]
        with pytest.raises(TypeError):
            del pools[3]
        assert list(d.statistics().pools) == [3, -1, 0]


async def test_total_sums_every_field_of_every_pool(autojump_clock: Any) -> None:
    release = trio.Event()
    pools = [
        PoolConfig(1, 2, queue=1),
        PoolConfig(2, 3, timeout=1),
        PoolConfig(3, 1, kind="thread"),
    ]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        for _ in range(3):
            await d.dispatch(hang_until, release, priority=1)
        with pytest.raises(trio.WouldBlock):
            d.dispatch_nowait(noop, priority=1)
        await d.dispatch(fail, "x", priority=2)
        await d.dispatch(trio.sleep_forever, priority=2)
        job = await d.dispatch(sync_double, 4, priority=3)
        assert await job.wait() == 8
        await trio.sleep(2)
        stats = check_invariants(d)
        assert stats.total == PoolStatistics(
            name="total",
            workers=6,
            current_workers=6,
            limit=6,
            paused=False,
            busy=2,
            idle=4,
            abandoned=0,
            queued=1,
            waiting_dispatchers=0,
            submitted=6,
            started=5,
            succeeded=1,
            failed=2,
            cancelled=0,
            retried=0,
            timed_out=1,
            rejected=1,
        )
        release.set()


# ------------------------------------------------------------------- invariant


async def test_the_accounting_invariant_holds_throughout_a_busy_scenario(
    autojump_clock: Any,
) -> None:
    pools = [
        PoolConfig(1, 2, queue=2),
        PoolConfig(2, 1, timeout=3, retry=Retry(attempts=2, backoff=5, jitter=False)),
        PoolConfig(3, 1, kind="thread"),
    ]
    gates = [trio.Event() for _ in range(4)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        check_invariants(d)
        running = [await d.dispatch(hang_until, gates[i], priority=1) for i in (0, 1)]
        queued = [await d.dispatch(hang_until, gates[i], priority=1) for i in (2, 3)]
        stats = check_invariants(d).pools[1]
        assert (stats.busy, stats.queued, stats.submitted) == (2, 2, 4)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(d.dispatch, noop, priority=1))
            await wait_all_tasks_blocked()
            stats = check_invariants(d).pools[1]
            assert (stats.waiting_dispatchers, stats.submitted) == (1, 4)

            queued[0].cancel()  # its slot goes to the blocked dispatcher
            await wait_all_tasks_blocked()
            stats = check_invariants(d).pools[1]
            assert (stats.waiting_dispatchers, stats.queued) == (0, 2)
            assert (stats.submitted, stats.cancelled) == (5, 1)

        with pytest.raises(trio.WouldBlock):
            d.dispatch_nowait(noop, priority=1)
        check_invariants(d)

        slow = await d.dispatch(trio.sleep_forever, priority=2)
        await trio.sleep(4)  # first attempt timed out at 3 s, backing off
        stats = check_invariants(d).pools[2]
        assert (stats.busy, stats.timed_out, stats.retried) == (1, 1, 1)
        assert slow.state is JobState.RUNNING

        threaded = await d.dispatch(sync_double, 21, priority=3)
        assert await threaded.wait() == 42
        check_invariants(d)

        gates[0].set()
        await wait_all_tasks_blocked()
        stats = check_invariants(d).pools[1]
        assert (stats.busy, stats.queued, stats.succeeded) == (2, 1, 1)

        running[1].cancel()  # its worker takes the queued noop, then idles
        await wait_all_tasks_blocked()
        stats = check_invariants(d).pools[1]
        assert (stats.busy, stats.queued, stats.idle) == (1, 0, 1)
        assert (stats.succeeded, stats.cancelled) == (2, 2)

        await d.dispatch(fail, "boom", priority=1)
        check_invariants(d)

        await trio.sleep(10)  # second attempt of `slow` times out too
        stats = check_invariants(d).pools[2]
        assert (stats.busy, stats.failed, stats.timed_out) == (0, 1, 2)

        gates[3].set()
        await d.barrier()
        check_invariants(d)
        await d.finalize()
        assert check_invariants(d, running=False).closed
    final = check_invariants(d, running=False)
    assert final.closed
    total = final.total
    assert (total.submitted, total.started, total.queued, total.busy) == (8, 7, 0, 0)
    assert (total.succeeded, total.failed, total.cancelled) == (4, 2, 2)


# -------------------------------------------------------------------- counters


async def test_rejected_counts_dispatch_nowait_refusals_only() -> None:
    release = trio.Event()
    async with bulkhead.open_dispatcher({1: 1, 2: 1}) as d:
        d.dispatch_nowait(hang_until, release, priority=1)  # accepted
        assert d.statistics().total.rejected == 0
        with pytest.raises(trio.WouldBlock):
            d.dispatch_nowait(noop, priority=1)
        stats = d.statistics()
        assert (stats.pools[1].rejected, stats.pools[2].rejected) == (1, 0)
        assert stats.pools[1].submitted == 1  # a refused job was not accepted

        # A blocking dispatch that waits and is cancelled is no refusal...
        scope = trio.CancelScope()

        async def blocked_then_cancelled() -> None:
            with scope, assert_checkpoints():
                await d.dispatch(noop, priority=1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_then_cancelled)
            await wait_all_tasks_blocked()
            assert d.statistics().pools[1].waiting_dispatchers == 1
            scope.cancel()
        assert scope.cancelled_caught
        # ...nor is bad input, which is rejected before reaching a pool.
        with pytest.raises(bulkhead.UnknownPriority):
            d.dispatch_nowait(noop, priority=9)
        with pytest.raises(TypeError):
            d.dispatch_nowait(42, priority=1)  # type: ignore[call-overload]

        assert d.statistics().total.rejected == 1
        release.set()
        await d.finalize()
        # A closed dispatcher raises DispatcherClosed: not a WouldBlock refusal.
        with pytest.raises(bulkhead.DispatcherClosed):
            d.dispatch_nowait(noop, priority=1)
        assert d.statistics().total.rejected == 1


async def test_closed_turns_true_as_soon_as_finalize_begins() -> None:
    release = trio.Event()
    d = Dispatcher({1: 1})
    assert not d.statistics().closed
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        assert not d.statistics().closed
        job = await d.dispatch(hang_until, release, priority=1)
        nursery.start_soon(d.finalize)
        await wait_all_tasks_blocked()
        # Still draining the running job, but intake has stopped.
        assert job.state is JobState.RUNNING
        assert d.statistics().closed
        release.set()
    assert d.statistics().closed

    never_started = Dispatcher({1: 1})
    await never_started.finalize()
    assert never_started.statistics().closed


async def test_statistics_are_readable_after_finalize(autojump_clock: Any) -> None:
    pools = [PoolConfig(1, 2, queue=3), PoolConfig(2, 1)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        for i in range(5):
            await d.dispatch(trio.sleep, i, priority=1)
        await d.dispatch(fail, "x", priority=2)
        hung = await d.dispatch(trio.sleep_forever, priority=1)
        await d.finalize(grace_period=10)
    assert hung.state is JobState.CANCELLED
    stats = check_invariants(d, running=False)
    assert stats.closed
    one, two = stats.pools[1], stats.pools[2]
    assert (one.workers, one.submitted, one.succeeded, one.cancelled) == (2, 6, 5, 1)
    assert (two.workers, two.submitted, two.failed) == (1, 1, 1)
    for pool in (one, two):
        assert [getattr(pool, gauge) for gauge in GAUGES] == [0] * len(GAUGES)
    assert d.statistics() == stats  # and stays put


# ------------------------------------------------------------------------ repr


async def test_dispatcher_repr_in_every_state() -> None:
    def pattern(state: str, pools: str) -> str:
        return rf"^<bulkhead\.Dispatcher {state} at 0x[0-9a-f]+, pools {pools}>$"

    release = trio.Event()
    d = Dispatcher([PoolConfig(1, 2, queue=1), PoolConfig(-2, 1)])

    async def turned_away() -> None:
        with pytest.raises(bulkhead.DispatcherClosed):
            await d.dispatch(noop, priority=1)

    idle = "1: 0/2 busy, 0 queued, 0 waiting; -2: 0/1 busy, 0 queued, 0 waiting"
    assert re.match(pattern("new", idle), repr(d))
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        assert re.match(pattern("open", idle), repr(d))
        for _ in range(3):
            await d.dispatch(hang_until, release, priority=1)
        nursery.start_soon(turned_away)
        await wait_all_tasks_blocked()
        busy = "1: 2/2 busy, 1 queued, 1 waiting; -2: 0/1 busy, 0 queued, 0 waiting"
        assert re.match(pattern("open", busy), repr(d))
        nursery.start_soon(d.finalize)
        await wait_all_tasks_blocked()
        # The blocked dispatcher was turned away; accepted jobs still drain.
        closing = "1: 2/2 busy, 1 queued, 0 waiting; -2: 0/1 busy, 0 queued, 0 waiting"
        assert re.match(pattern("closing", closing), repr(d))
        release.set()
    assert re.match(pattern("closed", idle), repr(d))


# ----------------------------------------------------------------- named pools


async def test_a_pool_is_named_everywhere_by_its_name_or_its_enum_member() -> None:
    from ._jobs import live_bulkhead_tasks

    pools = [PoolConfig(10, 1, name="email"), PoolConfig(bulkhead.Priority.LOW, 2)]
    async with bulkhead.open_dispatcher(pools) as d:
        stats = d.statistics()
        assert (stats.pools[10].name, stats.pools[1].name) == ("email", "low")
        assert stats.total.name == "total"
        assert "email: 0/1 busy" in repr(d)
        assert "low: 0/2 busy" in repr(d)
        assert repr(d._pools[10]).startswith("<bulkhead pool email: ")
        assert sorted(live_bulkhead_tasks()) == [
            "bulkhead worker email#0",
            "bulkhead worker low#0",
            "bulkhead worker low#1",
        ]
        job = await d.dispatch(noop, priority=10)
        assert job.pool_name == "email"
    async with bulkhead.open_dispatcher({3: 1}) as d:
        assert d.statistics().pools[3].name == "3"


def test_pool_names_are_checked() -> None:
    with pytest.raises(TypeError, match=r"^name must be a str or None, got 3$"):
        PoolConfig(1, 1, name=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^name must be a non-empty str, got ' '$"):
        PoolConfig(1, 1, name=" ")
    with pytest.raises(
        ValueError, match=r"^two pools are named 'high': give each pool its own name$"
    ):
        bulkhead.Dispatcher(
            [PoolConfig(1, 1, name="high"), PoolConfig(bulkhead.Priority.HIGH, 1)]
        )
