"""bulkhead's side of every scenario, written as its documentation suggests.

The timed span matches ``_alternatives.py``: from the first dispatch until the
covering ``barrier()`` returns. ``open_dispatcher`` (worker start-up) and the
final ``finalize`` stay outside it. After each timed run the dispatcher's
statistics are checked, so a fast but wrong dispatcher cannot post a figure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import trio
import trio.testing

import bulkhead
from _jobs import LatencyProbe, perf_counter, trivial

P = 0  # the priority of the one pool most scenarios use


def _pool(priority: int, workers: int, copy_context: bool) -> bulkhead.PoolConfig:
    if copy_context:  # leave the default to the library
        return bulkhead.PoolConfig(priority, workers)
    return bulkhead.PoolConfig(priority, workers, copy_context=False)


def _check(d: bulkhead.Dispatcher, jobs: int) -> None:
    total = d.statistics().total
    if total.succeeded != jobs or total.failed or total.cancelled:
        raise RuntimeError(f"expected {jobs} jobs to succeed, statistics say {total}")


def throughput(n: int, workers: int, *, copy_context: bool, nowait: bool) -> float:
    """``n`` trivial jobs through one pool, then ``barrier()``.

    ``nowait``: try ``dispatch_nowait`` first and fall back to a blocking
    ``dispatch`` on ``trio.WouldBlock`` (the documented fast path).
    """

    async def main() -> float:
        async with bulkhead.open_dispatcher([_pool(P, workers, copy_context)]) as d:
            t0 = perf_counter()
            if nowait:
                for i in range(n):
                    try:
                        d.dispatch_nowait(trivial, i, priority=P)
                    except trio.WouldBlock:
                        await d.dispatch(trivial, i, priority=P)
            else:
                for i in range(n):
                    await d.dispatch(trivial, i, priority=P)
            await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, n)
        return elapsed

    return trio.run(main)


def rounds(
    rounds: int, per_round: int, workers: int, *, copy_context: bool, nowait: bool
) -> float:
    """The bulk-synchronous loop: dispatch a round, ``barrier()``, repeat."""

    async def main() -> float:
        async with bulkhead.open_dispatcher([_pool(P, workers, copy_context)]) as d:
            t0 = perf_counter()
            for _ in range(rounds):
                if nowait:
                    for i in range(per_round):
                        try:
                            d.dispatch_nowait(trivial, i, priority=P)
                        except trio.WouldBlock:
                            await d.dispatch(trivial, i, priority=P)
                else:
                    for i in range(per_round):
                        await d.dispatch(trivial, i, priority=P)
                await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, rounds * per_round)
        return elapsed

    return trio.run(main)


def isolation(
    *, shared: bool, flood: int, slow: float, probes: int, interval: float
) -> list[float]:
    """Flood one pool of 4 with slow jobs; time small jobs through the other.

    ``shared``: one pool of 8 takes both the flood and the small jobs.
    Returns the dispatch-to-start latency of each small job, in seconds.
    """
    busy, quiet = (1, 1) if shared else (1, 2)
    pools = (
        [bulkhead.PoolConfig(1, 8)]
        if shared
        else [
            bulkhead.PoolConfig(busy, 4),
            bulkhead.PoolConfig(quiet, 4),
        ]
    )

    async def slow_job() -> None:
        await trio.sleep(slow)

    async def main() -> list[float]:
        probe = LatencyProbe(probes, trio.Event())
        async with bulkhead.open_dispatcher(pools) as d:
            async with trio.open_nursery() as nursery:
                flood_one = functools.partial(d.dispatch, slow_job, priority=busy)
                for _ in range(flood):
                    nursery.start_soon(flood_one)
                await trio.testing.wait_all_tasks_blocked()

                async def send_probe() -> None:
                    await d.dispatch(probe.job, perf_counter(), priority=quiet)

                for _ in range(probes):
                    nursery.start_soon(send_probe)
                    await trio.sleep(interval)
                await probe.done.wait()  # type: ignore[attr-defined]
                nursery.cancel_scope.cancel()  # blocked flood dispatchers leave
            await d.finalize(grace_period=0)  # running flood jobs end CANCELLED
        return probe.samples

    return trio.run(main)


def scaling(n: int, pools: int, workers: int) -> float:
    """``pools`` pools of ``workers`` each, ``n`` jobs dispatched round-robin."""

    async def main() -> float:
        configs = [bulkhead.PoolConfig(p, workers) for p in range(pools)]
        async with bulkhead.open_dispatcher(configs) as d:
            t0 = perf_counter()
            for i in range(n):
                await d.dispatch(trivial, i, priority=i % pools)
            await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, n)
        return elapsed

    return trio.run(main)


def stream(
    n: int, workers: int, sample: Callable[[int], None], *, copy_context: bool
) -> None:
    """Dispatch ``n`` jobs with no barrier in between and no handle kept.

    ``sample(i)`` is called every ``n // 20`` jobs and once after the final
    ``barrier()``, for the memory scenario.
    """

    async def main() -> None:
        every = max(1, n // 20)
        async with bulkhead.open_dispatcher([_pool(P, workers, copy_context)]) as d:
            for i in range(n):
                await d.dispatch(trivial, i, priority=P)
                if i % every == 0:
                    sample(i)
            await d.barrier()
            sample(n)
            _check(d, n)

    trio.run(main)
