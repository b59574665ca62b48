"""A service isolating a noisy job class in its own pool.

Two kinds of work share one dispatcher:

* ``API`` requests: quick (a few milliseconds), latency-sensitive;
* ``REPORTS``: a flood of slow jobs that mostly fail (a broken upstream, say).

With a bulkhead per class the flood fills only its own pool: the report
producer blocks on its own pool's dispatch (back-pressure) while API requests
keep finding an idle API worker. The report pool records its failures
(``on_error="record"``) instead of raising them, so they crash nothing; the API
pool keeps the dispatcher's default, ``"raise"``.

For contrast the same traffic is then sent through one shared pool with as
many workers in total: API requests queue behind the reports and their latency
jumps to the length of a report job.

Run it::

    python examples/noisy_neighbour.py
    python examples/noisy_neighbour.py --requests 50 --report-time 0.1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import trio

import bulkhead

API = bulkhead.Priority.HIGH
REPORTS = bulkhead.Priority.LOW


class UpstreamDown(Exception):
    """The report backend failed (it usually does, in this example)."""


async def answer(request: int, work: float) -> int:
    """An API request: a little work, then a reply."""
    await trio.sleep(work)  # simulated work
    return request


async def build_report(number: int, duration: float, fail_every: int) -> str:
    """A report: slow, and failing except every ``fail_every``-th one."""
    await trio.sleep(duration)  # simulated slow work
    if number % fail_every:
        raise UpstreamDown(f"report {number}: upstream returned 503")
    return f"report {number}"


@dataclass(frozen=True)
class Config:
    requests: int
    clients: int
    pause: float
    api_workers: int
    api_work: float
    report_workers: int
    report_time: float
    fail_every: int


@dataclass(frozen=True)
class Result:
    """Latencies of the API requests and what became of the reports."""

    name: str
    latencies: list[float]
    reports: int
    """Reports accepted."""
    report_pool: bulkhead.PoolStatistics
    """The pool that ran the reports (in the shared run, the API requests too)."""


async def flood(
    d: bulkhead.Dispatcher, priority: int, config: Config, accepted: list[int]
) -> None:
    """Dispatch reports as fast as the pool takes them, until intake closes."""
    number = 0
    try:
        while True:
            number += 1
            await d.dispatch(
                build_report,
                number,
                config.report_time,
                config.fail_every,
                priority=priority,
                name=f"report-{number}",
            )
            accepted.append(number)
    except bulkhead.DispatcherClosed:
        pass  # finalize() has begun: stop producing


async def client(
    d: bulkhead.Dispatcher,
    priority: int,
    requests: range,
    config: Config,
    latencies: list[float],
) -> None:
    """Send requests one after another; time each from dispatch to reply."""
    for request in requests:
        start = trio.current_time()
        job = await d.dispatch(answer, request, config.api_work, priority=priority)
        assert await job.wait() == request
        latencies.append(trio.current_time() - start)
        await trio.sleep(config.pause)  # the client's next request comes later


async def scenario(config: Config, *, isolated: bool) -> Result:
    """Run the clients while reports flood in; return their latencies."""
    if isolated:
        pools = [
            bulkhead.PoolConfig(API, config.api_workers),
            bulkhead.PoolConfig(REPORTS, config.report_workers, on_error="record"),
        ]
        api, reports = API, REPORTS
    else:
        workers = config.api_workers + config.report_workers
        pools = [bulkhead.PoolConfig(API, workers, on_error="record")]
        api = reports = API
    latencies: list[float] = []
    reports_accepted: list[int] = []
    async with bulkhead.open_dispatcher(pools) as d, trio.open_nursery() as producers:
        producers.start_soon(flood, d, reports, config, reports_accepted)
        async with trio.open_nursery() as clients:
            for c in range(config.clients):
                mine = range(c, config.requests, config.clients)
                clients.start_soon(client, d, api, mine, config, latencies)
        # Every request answered: stop intake. The producer gets
        # DispatcherClosed; reports still running get a short grace
        # period, then end CANCELLED.
        await d.finalize(grace_period=config.report_time / 2)
    return Result(
        name="isolated pools" if isolated else "one shared pool",
        latencies=latencies,
        reports=len(reports_accepted),
        report_pool=d.statistics().pools[reports],
    )


def describe(result: Result) -> str:
    lat = sorted(result.latencies)
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return (
        f"{result.name:>16}: {len(lat)} API requests, latency "
        f"p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  "
        f"max {lat[-1] * 1000:7.1f} ms"
    )


def describe_reports(result: Result) -> str:
    stats = result.report_pool
    return (
        f"{'':>16}  {result.reports} reports accepted; their pool: "
        f"{stats.succeeded} jobs succeeded, {stats.failed} failed (recorded), "
        f"{stats.cancelled} cancelled at shutdown"
    )


def parse_args(argv: Sequence[str] | None) -> tuple[Config, bool]:
    parser = argparse.ArgumentParser(description="Isolating a noisy job class.")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--pause", type=float, default=0.01, help="seconds between a client's requests"
    )
    parser.add_argument("--api-workers", type=int, default=4)
    parser.add_argument("--api-work", type=float, default=0.002, help="seconds")
    parser.add_argument("--report-workers", type=int, default=4)
    parser.add_argument("--report-time", type=float, default=0.1, help="seconds")
    parser.add_argument(
        "--fail-every", type=int, default=5, help="one report in N succeeds"
    )
    parser.add_argument(
        "--no-contrast", action="store_true", help="skip the shared-pool run"
    )
    args = parser.parse_args(argv)
    config = Config(
        requests=args.requests,
        clients=args.clients,
        pause=args.pause,
        api_workers=args.api_workers,
        api_work=args.api_work,
        report_workers=args.report_workers,
        report_time=args.report_time,
        fail_every=args.fail_every,
    )
    return config, not args.no_contrast


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario(s); ``argv`` as on the command line."""
    config, contrast = parse_args(argv)
    print(
        f"{config.requests} API requests from {config.clients} clients while "
        f"{config.report_time}s reports (all but 1 in {config.fail_every} failing) "
        "flood in",
        flush=True,
    )
    isolated = trio.run(partial(scenario, config, isolated=True))
    print(describe(isolated))
    print(describe_reports(isolated), flush=True)
    if contrast:
        shared = trio.run(partial(scenario, config, isolated=False))
        print(describe(shared))
        print(describe_reports(shared))
    return 0


if __name__ == "__main__":
    sys.exit(main())
