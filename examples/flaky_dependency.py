"""Per-attempt timeouts and retries against a flaky dependency.

``FlakyService`` stands in for a remote dependency: most calls answer after a
few milliseconds, some fail at once with ``ConnectionError`` and some hang far
longer than we are willing to wait. It is seeded, and each call's fate depends
only on (seed, key, attempt), so a run is reproducible whatever order the
workers interleave in.

The ``LOOKUP`` pool gives every attempt a ``timeout`` (an attempt that overruns
fails with :exc:`trio.TooSlowError`) and a ``Retry`` policy with exponential
backoff for both kinds of failure. It records failures (``on_error="record"``):
the program inspects each :class:`bulkhead.Job` afterwards instead of catching
a :exc:`bulkhead.JobsFailed`.

For contrast, a few keys are also dispatched with ``retry=Retry(attempts=1)``,
a per-job override that disables retrying.

Run it::

    python examples/flaky_dependency.py
    python examples/flaky_dependency.py --keys 10 --seed 3
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import outcome
import trio

import bulkhead

LOOKUP = bulkhead.Priority.NORMAL


@dataclass
class FlakyService:
    """A fake remote service: slow, failing or fine, reproducibly at random."""

    seed: int
    fail_rate: float = 0.3
    hang_rate: float = 0.15
    latency: float = 0.01
    hang_time: float = 5.0
    calls: collections.Counter[str] = field(default_factory=collections.Counter)

    async def get(self, key: str) -> str:
        self.calls[key] += 1
        rng = random.Random(f"{self.seed}:{key}:{self.calls[key]}")
        draw = rng.random()
        if draw < self.fail_rate:
            await trio.sleep(self.latency / 10)  # simulated work
            raise ConnectionError(f"{key}: connection reset by peer")
        if draw < self.fail_rate + self.hang_rate:
            await trio.sleep(self.hang_time)  # simulated hang, the timeout ends it
        await trio.sleep(self.latency * rng.uniform(0.5, 2))  # simulated work
        return f"value of {key}"


@dataclass(frozen=True)
class Config:
    keys: int
    no_retry_keys: int
    workers: int
    timeout: float
    attempts: int
    backoff: float
    seed: int


async def fetch_all(config: Config) -> list[bulkhead.Job]:
    """Look up every key through the pool; return the finished jobs."""
    service = FlakyService(seed=config.seed)
    retry = bulkhead.Retry(
        attempts=config.attempts,
        backoff=config.backoff,
        max_backoff=1.0,
        on=(ConnectionError, trio.TooSlowError),
    )
    pool = bulkhead.PoolConfig(
        LOOKUP,
        config.workers,
        queue=config.keys + config.no_retry_keys,
        timeout=config.timeout,
        retry=retry,
        on_error="record",
    )
    jobs = []
    async with bulkhead.open_dispatcher([pool]) as d:
        for i in range(config.keys):
            key = f"key-{i}"
            jobs.append(await d.dispatch(service.get, key, priority=LOOKUP, name=key))
        for i in range(config.no_retry_keys):
            key = f"once-{i}"
            jobs.append(
                await d.dispatch(
                    service.get,
                    key,
                    priority=LOOKUP,
                    name=key,
                    retry=bulkhead.Retry(attempts=1),  # this job: no retries
                )
            )
        report = await d.barrier()
        stats = d.statistics().pools[LOOKUP]
    print(
        f"batch of {report.jobs}: {report.succeeded} succeeded, {report.failed} "
        f"failed, in {report.elapsed:.2f}s; {stats.retried} attempts retried, "
        f"{stats.timed_out} timed out"
    )
    return jobs


def describe(job: bulkhead.Job) -> str:
    """One line: the job's state, its attempts and its value or error."""
    result = job.outcome
    if isinstance(result, outcome.Value):
        how = repr(result.value)
    elif isinstance(result, outcome.Error):
        how = f"{type(result.error).__name__}: {result.error}"
    else:
        how = "(not finished)"
    return f"  {job.name:<8} {job.state.name:<9} {job.attempts} attempt(s) -> {how}"


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="Timeouts and retries.")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--no-retry-keys", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=0.2, help="per attempt")
    parser.add_argument("--attempts", type=int, default=4, help="attempts in all")
    parser.add_argument("--backoff", type=float, default=0.05, help="first delay")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return Config(
        keys=args.keys,
        no_retry_keys=args.no_retry_keys,
        workers=args.workers,
        timeout=args.timeout,
        attempts=args.attempts,
        backoff=args.backoff,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the lookups and print how each ended; ``argv`` as on the command line."""
    config = parse_args(argv)
    print(
        f"{config.keys} lookups with up to {config.attempts} attempts of at most "
        f"{config.timeout}s each, and {config.no_retry_keys} with a single attempt"
    )
    jobs = trio.run(partial(fetch_all, config))
    for job in jobs:
        print(describe(job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
