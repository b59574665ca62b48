"""How should a trio program talk to a Dask cluster? Two ways, measured.

Issue 10 asks that the Dask client run outside trio's loop and that trio never
block on it. Two ways do that:

* ``sync-client-threads``: the synchronous ``distributed.Client`` (it runs its
  own event loop in a thread of its own), each attempt waiting for its result
  with ``future.result()`` in a trio worker thread
  (``trio.to_thread.run_sync``).
* ``async-client-loop``: an asynchronous ``Client`` living in a dedicated
  thread that runs an asyncio loop; each attempt is a coroutine sent there
  with ``asyncio.run_coroutine_threadsafe`` and its completion wakes trio
  through ``TrioToken.run_sync_soon``: no thread per attempt.

Run: ``.venv/bin/python benchmarks/dask_client_options.py`` (needs
``bulkhead[dask]``). It prints the per-job round trip of each on a
``LocalCluster`` of 2 single-threaded worker processes, plus raw
``client.map`` + ``wait`` for reference.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import trio
from distributed import Client, LocalCluster, wait

JOBS = 400
SLOTS = 2


def inc(x: int) -> int:
    return x + 1


async def sync_client_threads(client: Client) -> float:
    limiter = trio.CapacityLimiter(SLOTS)

    async def one(i: int) -> None:
        future = client.submit(inc, i, pure=False)
        assert await trio.to_thread.run_sync(future.result, limiter=limiter) == i + 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(JOBS):
            nursery.start_soon(one, i)
    return time.perf_counter() - started


async def async_client_loop(address: str) -> float:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dask-client-loop")
    thread.start()

    async def connect() -> Any:
        return await Client(address, asynchronous=True)

    client: Any = asyncio.run_coroutine_threadsafe(connect(), loop).result()
    token = trio.lowlevel.current_trio_token()
    slots = trio.Semaphore(SLOTS)

    async def attempt(i: int) -> int:
        return await client.submit(inc, i, pure=False)  # type: ignore[no-any-return]

    async def one(i: int) -> None:
        async with slots:
            done = trio.Event()
            handle = asyncio.run_coroutine_threadsafe(attempt(i), loop)
            handle.add_done_callback(lambda _: token.run_sync_soon(done.set))
            await done.wait()
            assert handle.result() == i + 1

    try:
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(JOBS):
                nursery.start_soon(one, i)
        return time.perf_counter() - started
    finally:

        async def close() -> None:
            await client.close()

        asyncio.run_coroutine_threadsafe(close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def raw_map(client: Client) -> float:
    started = time.perf_counter()
    futures = client.map(inc, range(JOBS), pure=False)
    wait(futures)
    assert client.gather(futures) == [i + 1 for i in range(JOBS)]
    return time.perf_counter() - started


def main() -> None:
    with (
        LocalCluster(
            n_workers=SLOTS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        results: dict[str, list[float]] = {}
        for _ in range(3):
            results.setdefault("sync-client-threads", []).append(
                trio.run(sync_client_threads, client)
            )
            results.setdefault("async-client-loop", []).append(
                trio.run(async_client_loop, cluster.scheduler_address)
            )
            results.setdefault("raw client.map + wait", []).append(raw_map(client))
    for name, seconds in results.items():
        print(f"{name:24s} {min(seconds) / JOBS * 1e3:7.3f} ms/job (best of 3)")


if __name__ == "__main__":
    main()
