"""A service that sheds load, grows and shrinks with it, and exports metrics.

Requests arrive in three waves (quiet, a burst, quiet again) and each needs a
call to a backend whose latency rises when it is pushed. One bulkhead pool
serves them, run the way a production service would run it:

* every request is dispatched with ``max_wait``: when the pool and its queue
  stay full that long, the dispatch fails with :exc:`bulkhead.PoolFull` and
  the request is turned away (the service's 429), instead of piling up;
* a controller task looks at :meth:`~bulkhead.Dispatcher.statistics` every
  second and :meth:`~bulkhead.Dispatcher.resize` s the pool: more workers
  while requests wait, fewer when workers sit idle;
* an :class:`bulkhead.AdaptiveLimit` keeps the pool from pushing the backend
  into its slow zone: when latency climbs, it runs fewer calls at once;
* :mod:`bulkhead.metrics` exports Prometheus metrics; at the end the example
  prints a few of the lines a scrape would return.

The whole run is simulated on trio's virtual clock (``MockClock``), so it
takes a moment of real time whatever ``--seconds`` says.

Run it::

    python examples/elastic_service.py
    python examples/elastic_service.py --seconds 30 --burst-rate 400
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest

import bulkhead
import bulkhead.metrics

SERVICE = bulkhead.Priority.NORMAL
SHOWN = (
    "bulkhead_jobs_succeeded_total",
    "bulkhead_jobs_rejected_total",
    "bulkhead_pool_workers",
    "bulkhead_pool_limit",
)
"""The metrics printed from the scrape at the end."""


@dataclass
class Backend:
    """A backend that slows down once more than ``comfortable`` calls run."""

    comfortable: int
    base_latency: float
    running: int = 0

    async def call(self, request: int) -> int:
        self.running += 1
        try:
            overload = max(0, self.running - self.comfortable)
            await trio.sleep(self.base_latency * (1 + overload))  # simulated I/O
            return request
        finally:
            self.running -= 1


@dataclass
class Tally:
    served: int = 0
    shed: int = 0
    sizes: list[str] = field(default_factory=list)
    """Workers/limit of the pool, each second."""


async def handle(
    d: bulkhead.Dispatcher, backend: Backend, request: int, tally: Tally
) -> None:
    """One request: a job in the pool, or a 429 when the pool stays full."""
    try:
        job = await d.dispatch(backend.call, request, max_wait=0.05)
    except bulkhead.PoolFull:
        tally.shed += 1  # the service answers 429 Too Many Requests
        return
    await job.wait()
    tally.served += 1


async def autoscale(
    d: bulkhead.Dispatcher, smallest: int, largest: int, tally: Tally
) -> None:
    """Every second: grow while requests wait, shrink while workers idle."""
    while True:
        await trio.sleep(1)
        stats = d.statistics().pools[SERVICE]
        if stats.waiting_dispatchers or stats.queued:
            d.resize(SERVICE, min(largest, stats.workers * 2))
        elif stats.idle > stats.workers // 2:
            d.resize(SERVICE, max(smallest, stats.workers // 2))
        stats = d.statistics().pools[SERVICE]
        tally.sizes.append(f"{stats.workers}/{stats.limit}")


async def traffic(
    d: bulkhead.Dispatcher, backend: Backend, config: Config, tally: Tally
) -> None:
    """Quiet, a burst, quiet again: requests at a given rate per second."""
    waves = [(config.quiet_rate, config.seconds / 3)] * 3
    waves[1] = (config.burst_rate, config.seconds / 3)
    request = 0
    async with trio.open_nursery() as nursery:
        for rate, seconds in waves:
            for _ in range(int(rate * seconds)):
                request += 1
                nursery.start_soon(handle, d, backend, request, tally)
                await trio.sleep(1 / rate)


@dataclass(frozen=True)
class Config:
    seconds: float
    quiet_rate: float
    burst_rate: float


async def run(config: Config) -> tuple[Tally, str]:
    backend = Backend(comfortable=16, base_latency=0.05)
    registry = CollectorRegistry()
    metrics = bulkhead.metrics.PrometheusMetrics(registry)
    pools = [
        bulkhead.PoolConfig(
            SERVICE,
            4,
            queue=8,
            limit=bulkhead.AdaptiveLimit(min=2, initial=4),
        )
    ]
    tally = Tally()
    async with bulkhead.open_dispatcher(pools, hooks=metrics.hooks) as d:
        metrics.watch(d)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(autoscale, d, 2, 64, tally)
            await traffic(d, backend, config, tally)
            nursery.cancel_scope.cancel()
        scrape = generate_latest(registry).decode()
    return tally, scrape


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30, help="simulated time")
    parser.add_argument("--quiet-rate", type=float, default=20, help="requests/s")
    parser.add_argument("--burst-rate", type=float, default=300, help="requests/s")
    args = parser.parse_args(argv)
    return Config(args.seconds, args.quiet_rate, args.burst_rate)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    clock = trio.testing.MockClock(autojump_threshold=0)
    tally, scrape = trio.run(run, config, clock=clock)
    print(
        f"{tally.served + tally.shed} requests in {config.seconds:g} simulated "
        f"seconds: {tally.served} served, {tally.shed} shed with PoolFull (429)"
    )
    print(f"pool workers/limit each second: {' '.join(tally.sizes)}")
    print("from the Prometheus scrape:")
    for line in scrape.splitlines():
        if line.startswith(SHOWN):
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
