"""What a competent user would hand-write instead of bulkhead.

Each baseline is written the idiomatic way for its library, bounded like
bulkhead is (never more than ``workers`` jobs running, never an unbounded
backlog of tasks or items), and times the same span as the bulkhead cases in
``_bulkhead_cases.py``: from the first submission until every job has finished.
Setup that happens once (starting worker tasks) is outside the timed span.

Every public function here is synchronous: it starts its own event loop
(``trio.run`` or ``asyncio.run``) and returns seconds, or a dict of figures.
Optional libraries (anyio, aiometer, aiojobs, distributed) are imported
lazily so that the benchmark runs, without those rows, when the ``bench``
extra is not installed.

The ``dask`` scenario is the exception to "starts its own event loop": a Dask
cluster takes a second or two to start, so :func:`distributed_cluster` starts
one for the whole scenario and :func:`distributed_rounds` times rounds on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio
import trio.testing

from _jobs import LatencyProbe, perf_counter, trivial

Job = Callable[..., Awaitable[Any]]


# --------------------------------------------------------------------------
# trio: a pool of workers looping over an unbuffered memory channel
# --------------------------------------------------------------------------


async def _channel_worker(
    receive: trio.MemoryReceiveChannel[tuple[Job, tuple]],
) -> None:
    async for fn, args in receive:
        await fn(*args)


def _start_channel_pool(
    nursery: trio.Nursery, workers: int
) -> trio.MemorySendChannel[tuple[Job, tuple]]:
    """Start ``workers`` tasks on one rendezvous channel; return its send side."""
    send, receive = trio.open_memory_channel[tuple[Job, tuple]](0)
    for _ in range(workers):
        nursery.start_soon(_channel_worker, receive)
    return send


def channel_pool_throughput(n: int, workers: int) -> float:
    async def main() -> float:
        async with trio.open_nursery() as nursery:
            send = _start_channel_pool(nursery, workers)
            t0 = perf_counter()
            async with send:
                for i in range(n):
                    await send.send((trivial, (i,)))
        # Closing the channel ends the workers; the nursery waits for them.
        return perf_counter() - t0

    return trio.run(main)


def channel_pool_nowait_throughput(n: int, workers: int) -> float:
    """The same pool fed like bulkhead's fast path: ``send_nowait`` first."""

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            send = _start_channel_pool(nursery, workers)
            t0 = perf_counter()
            async with send:
                for i in range(n):
                    try:
                        send.send_nowait((trivial, (i,)))
                    except trio.WouldBlock:
                        await send.send((trivial, (i,)))
        return perf_counter() - t0

    return trio.run(main)


# --------------------------------------------------------------------------
# trio: one task per job, bounded by a Semaphore acquired before spawning
# --------------------------------------------------------------------------


async def _release_after(sem: trio.Semaphore, fn: Job, i: int) -> None:
    try:
        await fn(i)
    finally:
        sem.release()


def trio_spawn_semaphore_throughput(n: int, workers: int) -> float:
    async def main() -> float:
        sem = trio.Semaphore(workers)
        t0 = perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                await sem.acquire()
                nursery.start_soon(_release_after, sem, trivial, i)
        return perf_counter() - t0

    return trio.run(main)


# --------------------------------------------------------------------------
# anyio (trio backend): TaskGroup + CapacityLimiter, acquired on the job's behalf
# --------------------------------------------------------------------------


def anyio_taskgroup_limiter_throughput(n: int, workers: int) -> float:
    import anyio

    async def run(limiter: anyio.CapacityLimiter, i: int) -> None:
        try:
            await trivial(i)
        finally:
            limiter.release_on_behalf_of(i)

    async def main() -> float:
        limiter = anyio.CapacityLimiter(workers)
        t0 = perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                await limiter.acquire_on_behalf_of(i)
                tg.start_soon(run, limiter, i)
        return perf_counter() - t0

    return anyio.run(main, backend="trio")


# --------------------------------------------------------------------------
# aiometer (anyio, trio backend): run_on_each with max_at_once
# --------------------------------------------------------------------------


def aiometer_throughput(n: int, workers: int) -> float:
    import aiometer

    async def main() -> float:
        t0 = perf_counter()
        await aiometer.run_on_each(trivial, range(n), max_at_once=workers)
        return perf_counter() - t0

    return trio.run(main)


# --------------------------------------------------------------------------
# asyncio: TaskGroup + Semaphore acquired before spawning
# --------------------------------------------------------------------------


def asyncio_taskgroup_semaphore_throughput(n: int, workers: int) -> float:
    async def run(sem: asyncio.Semaphore, i: int) -> None:
        try:
            await trivial(i)
        finally:
            sem.release()

    async def main() -> float:
        sem = asyncio.Semaphore(workers)
        t0 = perf_counter()
        async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
            for i in range(n):
                await sem.acquire()
                tg.create_task(run(sem, i))
        return perf_counter() - t0

    return asyncio.run(main())


# --------------------------------------------------------------------------
# asyncio: worker tasks over a bounded asyncio.Queue (maxsize = workers)
# --------------------------------------------------------------------------


async def _queue_worker(queue: asyncio.Queue[tuple[Job, tuple] | None]) -> None:
    while (item := await queue.get()) is not None:
        fn, args = item
        await fn(*args)


def asyncio_queue_pool_throughput(n: int, workers: int) -> float:
    async def main() -> float:
        # asyncio has no rendezvous queue (maxsize=0 means unbounded): bound the
        # backlog to one item per worker.
        queue: asyncio.Queue[tuple[Job, tuple] | None] = asyncio.Queue(workers)
        async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
            for _ in range(workers):
                tg.create_task(_queue_worker(queue))
            t0 = perf_counter()
            for i in range(n):
                await queue.put((trivial, (i,)))
            for _ in range(workers):
                await queue.put(None)
        return perf_counter() - t0

    return asyncio.run(main())


# --------------------------------------------------------------------------
# aiojobs: Scheduler(limit=workers), pending backlog bounded to ``workers``
# --------------------------------------------------------------------------


def aiojobs_throughput(n: int, workers: int) -> float:
    import aiojobs

    async def main() -> float:
        t0 = perf_counter()
        async with aiojobs.Scheduler(limit=workers, pending_limit=workers) as s:
            for i in range(n):
                await s.spawn(trivial(i))
        # Leaving the scheduler waits for every spawned job (wait_and_close).
        return perf_counter() - t0

    return asyncio.run(main())


# --------------------------------------------------------------------------
# rounds: dispatch a batch, wait for all of it, repeat
# --------------------------------------------------------------------------


def trio_nursery_rounds(rounds: int, per_round: int, workers: int) -> float:
    """A fresh nursery per round; the Semaphore bounds the running jobs."""

    async def main() -> float:
        sem = trio.Semaphore(workers)
        t0 = perf_counter()
        for _ in range(rounds):
            async with trio.open_nursery() as nursery:
                for i in range(per_round):
                    await sem.acquire()
                    nursery.start_soon(_release_after, sem, trivial, i)
        return perf_counter() - t0

    return trio.run(main)


class _RoundCounter:
    """Jobs of the current round still to finish, and an Event for zero."""

    def __init__(self, jobs: int) -> None:
        self.pending = jobs
        self.done = trio.Event()


async def _counting_worker(
    receive: trio.MemoryReceiveChannel[tuple[Job, tuple, _RoundCounter]],
) -> None:
    async for fn, args, counter in receive:
        await fn(*args)
        counter.pending -= 1
        if counter.pending == 0:
            counter.done.set()


def channel_pool_rounds(rounds: int, per_round: int, workers: int) -> float:
    """Long-lived channel workers; each round carries a countdown of its jobs."""

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            send, receive = trio.open_memory_channel[tuple[Job, tuple, _RoundCounter]](
                0
            )
            for _ in range(workers):
                nursery.start_soon(_counting_worker, receive)
            t0 = perf_counter()
            async with send:
                for _ in range(rounds):
                    counter = _RoundCounter(per_round)
                    for i in range(per_round):
                        await send.send((trivial, (i,), counter))
                    await counter.done.wait()
                # every job has finished: what is left is closing the workers
                return perf_counter() - t0

    return trio.run(main)


# --------------------------------------------------------------------------
# isolation: a flooded pool next to a quiet one, or one shared pool
# --------------------------------------------------------------------------


def channel_pool_isolation(
    *, shared: bool, flood: int, slow: float, probes: int, interval: float
) -> list[float]:
    """Two channel pools of 4 (or one of 8 if ``shared``); returns probe latencies."""

    async def slow_job() -> None:
        await trio.sleep(slow)

    async def main() -> list[float]:
        probe = LatencyProbe(probes, trio.Event())
        async with trio.open_nursery() as nursery:
            if shared:
                busy = quiet = _start_channel_pool(nursery, 8)
            else:
                busy = _start_channel_pool(nursery, 4)
                quiet = _start_channel_pool(nursery, 4)
            for _ in range(flood):
                nursery.start_soon(busy.send, (slow_job, ()))
            await trio.testing.wait_all_tasks_blocked()

            async def send_probe() -> None:
                await quiet.send((probe.job, (perf_counter(),)))

            for _ in range(probes):
                nursery.start_soon(send_probe)
                await trio.sleep(interval)
            await probe.done.wait()  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()
        return probe.samples

    return trio.run(main)


# --------------------------------------------------------------------------
# scaling: per-job cost across many pools / many workers
# --------------------------------------------------------------------------


def channel_pool_scaling(n: int, pools: int, workers: int) -> float:
    """``pools`` channel pools of ``workers`` each, jobs sent round-robin."""

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            sends = [_start_channel_pool(nursery, workers) for _ in range(pools)]
            await trio.testing.wait_all_tasks_blocked()
            t0 = perf_counter()
            for i in range(n):
                await sends[i % pools].send((trivial, (i,)))
            for send in sends:
                await send.aclose()
        return perf_counter() - t0

    return trio.run(main)


# --------------------------------------------------------------------------
# memory: the same stream through a channel pool, as a reference
# --------------------------------------------------------------------------


def channel_pool_stream(n: int, workers: int, sample: Callable[[int], None]) -> None:
    """Send ``n`` jobs, calling ``sample(i)`` every ``n // 20`` jobs and at the end."""

    async def main() -> None:
        every = max(1, n // 20)
        async with trio.open_nursery() as nursery:
            send = _start_channel_pool(nursery, workers)
            async with send:
                for i in range(n):
                    await send.send((trivial, (i,)))
                    if i % every == 0:
                        sample(i)
                sample(n)

    trio.run(main)


# --------------------------------------------------------------------------
# dask: BSP rounds of a CPU job, serially and with raw distributed
# --------------------------------------------------------------------------


def serial_rounds(
    fn: Callable[[int], Any], arg: int, rounds: int, per_round: int
) -> float:
    """The baseline: every job of every round called in turn, in this process."""
    t0 = perf_counter()
    for _ in range(rounds):
        for _ in range(per_round):
            fn(arg)
    return perf_counter() - t0


@contextlib.contextmanager
def distributed_cluster(workers: int) -> Iterator[Any]:
    """A ``LocalCluster`` shaped like a dask pool's own, and its (default) client.

    One single-threaded worker process per worker, on loopback, as
    ``PoolConfig(kind="dask")`` starts it.
    """
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # ":0" (what the pool's own cluster passes) would serve HTTP on
            # every interface; the port is all that matters here.
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def distributed_rounds(
    client: Any, fn: Callable[[int], Any], arg: int, rounds: int, per_round: int
) -> float:
    """Each round: ``client.map`` of the round's jobs, then ``distributed.wait``.

    What a Dask user writes for a barrier: every task of the round is on the
    scheduler at once (no bound of its own), and the results stay on the
    workers (``wait``, not ``gather``). ``pure=False``: equal arguments must
    not collapse into one task.
    """
    import distributed

    t0 = perf_counter()
    for _ in range(rounds):
        futures = client.map(fn, [arg] * per_round, pure=False)
        distributed.wait(futures)
        failed = [f for f in futures if f.status != "finished"]
        if failed:
            raise RuntimeError(f"{len(failed)} tasks did not finish: {failed[0]}")
    return perf_counter() - t0
