"""AdaptiveLimit: a pool's concurrency follows its jobs' latency (issue 11).

Latency is injected on the virtual clock: each job sleeps for what the test
says the service's latency is at that moment.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import bulkhead
from bulkhead import AdaptiveLimit, PoolConfig


class Service:
    """A dependency whose latency the test sets; records the most jobs it
    saw at once and whether the pool's limit was ever exceeded."""

    def __init__(self) -> None:
        self.latency = 1.0
        self.running = 0
        self.over_limit: list[tuple[int, int]] = []
        self.dispatcher: bulkhead.Dispatcher | None = None

    async def call(self) -> None:
        self.running += 1
        assert self.dispatcher is not None
        limit = self.dispatcher.statistics().pools[1].limit
        if self.running > limit:
            self.over_limit.append((self.running, limit))
        try:
            await trio.sleep(self.latency)
        finally:
            self.running -= 1


async def keep_busy(d: bulkhead.Dispatcher, service: Service, jobs: int) -> None:
    for _ in range(jobs):
        await d.dispatch(service.call)
    await d.barrier()


async def test_the_limit_rises_while_latency_is_flat_and_falls_as_it_grows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = Service()
    limit = AdaptiveLimit(min=1, initial=2)
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 32, queue=64, limit=limit)]
    ) as d:
        service.dispatcher = d
        assert d.statistics().pools[1].limit == 2
        await keep_busy(d, service, 300)  # flat latency
        risen = d.statistics().pools[1].limit
        assert risen >= 10
        for _ in range(6):  # latency doubles every 40 jobs
            service.latency *= 2
            await keep_busy(d, service, 40)
        fallen = d.statistics().pools[1].limit
        assert fallen < risen / 2
    assert service.over_limit == []


async def test_timeouts_count_as_congestion(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow() -> None:
        await trio.sleep(10)

    limit = AdaptiveLimit(initial=8)
    pools = [PoolConfig(1, 8, queue=16, limit=limit, timeout=1)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        for _ in range(16):
            await d.dispatch(slow)
        await d.barrier()
        assert d.statistics().pools[1].limit < 8


async def test_the_limit_stays_within_its_bounds_and_the_pools_workers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service = Service()
    limit = AdaptiveLimit(min=2, max=5)
    async with bulkhead.open_dispatcher([PoolConfig(1, 8, queue=8, limit=limit)]) as d:
        service.dispatcher = d
        await keep_busy(d, service, 200)
        assert d.statistics().pools[1].limit == 5
        d.resize(1, 3)
        await keep_busy(d, service, 20)
        assert d.statistics().pools[1].limit == 3
        service.latency = 1000.0
        await keep_busy(d, service, 10)
        assert d.statistics().pools[1].limit == 2
    assert service.over_limit == []


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"min": 0}, ValueError, r"^min must be >= 1, got 0$"),
        ({"max": 1.5}, TypeError, r"^max must be an int, got 1\.5$"),
        ({"min": 3, "max": 2}, ValueError, r"^min \(3\) must be <= max \(2\)$"),
        ({"initial": 9, "max": 4}, ValueError,
         r"^initial \(9\) must be within min and max \(1, 4\)$"),
        ({"tolerance": 1}, ValueError,
         r"^tolerance must be a finite number > 1, got 1$"),
        ({"backoff": 1.0}, ValueError, r"^backoff must be > 0 and < 1, got 1\.0$"),
        ({"smoothing": "x"}, TypeError, r"^smoothing must be a number, got 'x'$"),
    ],
)  # fmt: skip
def test_adaptive_limit_options_are_validated(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        AdaptiveLimit(**options)


def test_pool_config_takes_only_an_adaptive_limit() -> None:
    with pytest.raises(
        TypeError, match=r"^limit must be a bulkhead\.AdaptiveLimit or None, got 4$"
    ):
        PoolConfig(1, 8, limit=4)  # type: ignore[arg-type]
