"""How fast the PostgreSQL journal is, on a durable server (``fsync`` and
``synchronous_commit`` on, as PostgreSQL ships).

The figures come from ``python -m tests.test_postgres_speed`` (add
``--rows 1000000`` for counts at a million rows); the test below runs the
same code small, so the measurement keeps working. No test asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import trio

from bulkhead.service._journal import Finish, NewJob
from bulkhead.service._postgres import PostgresJournal

from ._postgres_server import PostgresServer, postgres_server


@contextlib.asynccontextmanager
async def running(url: str, **options: Any) -> AsyncIterator[PostgresJournal]:
    journal = PostgresJournal(url, **options)
    await journal.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        try:
            yield journal
        finally:
            journal.close()


def jobs(n: int, priority: int = 1) -> list[NewJob]:
    now = time.time()
    return [NewJob("noop", priority, "{}", now, now) for _ in range(n)]


async def accept_rate(url: str, batch: int, batches: int, clients: int) -> float:
    """Durable jobs/s accepted by ``clients`` tasks each sending ``batches``
    batches of ``batch`` jobs."""
    async with running(url) as journal:

        async def client() -> None:
            for _ in range(batches):
                await journal.accept(jobs(batch))

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client)
        return batch * batches * clients / (time.perf_counter() - start)


async def process_rate(url: str, total: int, instances: int, claim: int) -> float:
    """Jobs/s claimed and finished (committed) by ``instances`` journals."""
    async with contextlib.AsyncExitStack() as stack:
        journals = [
            await stack.enter_async_context(running(url)) for _ in range(instances)
        ]
        for _ in range(0, total, 1000):
            await journals[0].accept(jobs(1000, priority=7))
        start = time.perf_counter()

        async def worker(journal: PostgresJournal) -> None:
            while batch := (await journal.claim(7, claim)).jobs:
                now = time.time()
                for c in batch:
                    journal.finish(
                        Finish(c.id, c.lease, "succeeded", 1, now, now, "null", None)
                    )

        async with trio.open_nursery() as nursery:
            for journal in journals:
                for _ in range(2):
                    nursery.start_soon(worker, journal)
        while True:  # until the last end is committed
            done = (await journals[0].counts()).get(7, {}).get("succeeded", 0)
            if done >= total:
                break
            await trio.sleep(0.005)
        return total / (time.perf_counter() - start)


async def counts_cost(url: str, rows: int) -> tuple[float, float]:
    """Seconds per counts() with ``rows`` jobs, against one GROUP BY scan."""
    async with running(url) as journal:
        for start in range(0, rows, 10_000):
            await journal.accept(jobs(min(10_000, rows - start), priority=start % 3))
        await journal.counts()
        samples = []
        for _ in range(50):
            t = time.perf_counter()
            await journal.counts()
            samples.append(time.perf_counter() - t)

        def scan(conn: psycopg.Connection[Any]) -> float:
            t = time.perf_counter()
            conn.execute(
                "SELECT priority, state, count(*) FROM bulkhead_jobs GROUP BY 1, 2"
            ).fetchall()
            return time.perf_counter() - t

        return statistics.median(samples), await journal._conns.run(scan)


async def measure(server: PostgresServer, *, scale: int, rows: int) -> dict[str, float]:
    figures = {}
    for clients in (1, 4):
        figures[
            f"accept, batches of 1,000, {clients} client(s): jobs/s"
        ] = await accept_rate(server.database(), 1000, 5 * scale, clients)
    figures["accept, single jobs, 50 clients: jobs/s"] = await accept_rate(
        server.database(), 1, 20 * scale, 50
    )
    for instances in (1, 2):
        figures[
            f"claim (100) + finish, {instances} instance(s): jobs/s"
        ] = await process_rate(server.database(), 2000 * scale, instances, 100)
    median, scan = await counts_cost(server.database(), rows)
    figures[f"counts() at {rows:,} rows: ms"] = median * 1000
    figures[f"GROUP BY scan at {rows:,} rows: ms"] = scan * 1000
    return figures


async def test_the_speed_measurement_runs() -> None:
    with postgres_server() as server:
        figures = await measure(server, scale=1, rows=20_000)
    assert all(value > 0 for value in figures.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--rows", type=int, default=100_000)
    options = parser.parse_args()
    with postgres_server() as server:
        figures = trio.run(
            lambda: measure(server, scale=options.scale, rows=options.rows)
        )
    for name, value in figures.items():
        print(f"{name:<50} {value:>12,.1f}")


if __name__ == "__main__":
    main()
