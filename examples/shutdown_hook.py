"""A shutdown hook: SIGINT or SIGTERM finalizes the dispatcher gracefully.

A small service accepts requests (simulated: one every ``--interval``
seconds, each taking a random time) into a pool with a queue. When SIGINT
(Ctrl-C) or SIGTERM arrives:

1. ``finalize(grace_period=...)`` stops intake at once: the request producer
   gets :exc:`bulkhead.DispatcherClosed` and stops;
2. every accepted request, running or queued, may finish within the grace
   period;
3. what is still running when it expires is cancelled and ends ``CANCELLED``;
   a second signal cuts the grace period to zero (a shorter grace period from
   a later ``finalize`` caller wins).

At the end the program checks the accounting: every accepted request finished
or was cancelled (none lost), no job is left running or queued, and no task
outlived the dispatcher.

Run it, then press Ctrl-C or send ``kill -TERM <pid>``::

    python examples/shutdown_hook.py
    python examples/shutdown_hook.py --kill-after 20   # signals itself
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import trio

import bulkhead

WORK = bulkhead.Priority.NORMAL


@dataclass(frozen=True)
class Config:
    workers: int
    queue: int
    interval: float
    grace_period: float
    slow_share: float
    slow_time: float
    kill_after: int | None
    seed: int


async def handle(request: int, duration: float) -> None:
    """Serve one request (a sleep stands in for the work)."""
    try:
        await trio.sleep(duration)  # simulated work
    except trio.Cancelled:
        print(f"  request {request:3d}: cancelled at the grace deadline")
        raise
    print(f"  request {request:3d}: done after {duration:.2f}s")


async def accept_requests(d: bulkhead.Dispatcher, config: Config) -> None:
    """Produce requests until the dispatcher closes."""
    rng = random.Random(config.seed)
    request = 0
    while True:
        request += 1
        if rng.random() < config.slow_share:
            duration = config.slow_time
        else:
            duration = rng.uniform(0.5, 4) * config.interval
        try:
            await d.dispatch(handle, request, duration, priority=WORK)
        except bulkhead.DispatcherClosed:
            print(f"  request {request:3d}: refused, the service is shutting down")
            return
        if request == config.kill_after:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill -TERM <pid>` would
        await trio.sleep(config.interval)  # the next request arrives later


def count_tasks() -> int:
    """How many tasks this trio run has, system tasks included."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child)
            for nursery in task.child_nurseries
            for child in nursery.child_tasks
        )

    root = trio.lowlevel.current_root_task()
    assert root is not None  # we are inside trio.run
    return count(root)


async def serve(config: Config) -> bool:
    """Run the service until a signal; return whether the accounting holds."""
    tasks_before = count_tasks()
    pools = [bulkhead.PoolConfig(WORK, config.workers, queue=config.queue)]
    async with bulkhead.open_dispatcher(pools) as d, trio.open_nursery() as nursery:
        # SIGINT or SIGTERM finalizes with the grace period; a second one
        # cancels what is left at once.
        await nursery.start(bulkhead.finalize_on_signals, d, config.grace_period)
        nursery.start_soon(accept_requests, d, config)
        # The nursery ends when both tasks are done: the producer saw
        # DispatcherClosed and the hook saw the dispatcher finalized. Leaving
        # the dispatcher's block then calls finalize() again, which returns
        # at once (it is idempotent) and raises any unreported failure.
    tasks_after = count_tasks()

    stats = d.statistics().total
    ended = stats.succeeded + stats.failed + stats.cancelled
    print(
        f"accepted {stats.submitted} requests: {stats.succeeded} finished, "
        f"{stats.cancelled} cancelled at the grace deadline, "
        f"{stats.failed} failed, {stats.submitted - ended} lost"
    )
    print(
        f"after finalize: busy {stats.busy}, queued {stats.queued}, "
        f"abandoned {stats.abandoned}; tasks before the dispatcher "
        f"{tasks_before}, after {tasks_after}"
    )
    return (
        ended == stats.submitted
        and stats.busy == stats.queued == stats.abandoned == 0
        and tasks_after == tasks_before
    )


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(description="Graceful shutdown on a signal.")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds")
    parser.add_argument("--grace-period", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--slow-share", type=float, default=0.1, help="share of slow requests"
    )
    parser.add_argument(
        "--slow-time", type=float, default=5.0, help="seconds a slow request takes"
    )
    parser.add_argument(
        "--kill-after",
        type=int,
        help="send ourselves SIGTERM after this many requests were accepted",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return Config(
        workers=args.workers,
        queue=args.queue,
        interval=args.interval,
        grace_period=args.grace_period,
        slow_share=args.slow_share,
        slow_time=args.slow_time,
        kill_after=args.kill_after,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; exit status 0 if nothing was lost or leaked."""
    config = parse_args(argv)
    if config.kill_after is None:
        print(f"serving as pid {os.getpid()}: press Ctrl-C or `kill -TERM` it")
    ok = trio.run(partial(serve, config))
    print("clean shutdown" if ok else "UNCLEAN SHUTDOWN")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
