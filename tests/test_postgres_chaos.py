"""Several worker processes on one PostgreSQL queue, killed, stopped and cut
off from the database under load.

Each worker (``python -m tests.test_postgres_chaos URL NAME RUNS``) is what
a service instance does with the journal: claim due jobs, run them (a
sleep), record each run's start and end in its own file (flushed, so a
SIGKILL keeps what was written), and finish them with its name as the
result. The service-level versions of these tests, with real ``bulkhead
serve`` processes, build on the same journal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from bulkhead.service._journal import (
    Finish,
    JobFilter,
    JobRecord,
    JournalUnavailable,
    NewJob,
    Start,
)
from bulkhead.service._postgres import PostgresJournal

from ._postgres_server import PostgresServer, postgres, postgres_server

__all__ = ["postgres"]  # a fixture, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
LEASE = 2.0
HEARTBEAT = 0.25
SLACK = 3.0
"""Real seconds a shared 2-core machine may add to a promised delay."""
GUARD = 30.0


# -- the worker process ---------------------------------------------------


async def work(url: str, name: str, runs: Path) -> None:
    """Run jobs from the queue until SIGTERM."""
    journal = PostgresJournal(
        url, instance=name, lease=LEASE, heartbeat=HEARTBEAT, poll=0.1
    )
    await journal.open()
    with (
        trio.open_signal_receiver(signal.SIGTERM) as signals,
        runs.open("a") as out,
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)

            async def stop() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop)
            try:
                while True:
                    try:
                        claim = await journal.claim(1, 5)
                    except JournalUnavailable:
                        await trio.sleep(0.1)
                        continue
                    for job in claim.jobs:
                        started = time.time()
                        start = Start(job.id, job.lease, started)
                        if not await journal.started(start):
                            continue  # rescued elsewhere meanwhile
                        await trio.sleep(json.loads(job.args)["seconds"])
                        ended = time.time()
                        out.write(
                            json.dumps([job.id, job.lease, started, ended]) + "\n"
                        )
                        out.flush()
                        journal.finish(
                            Finish(
                                job.id,
                                job.lease,
                                "succeeded",
                                1,
                                started,
                                ended,
                                json.dumps(name),
                                None,
                            )
                        )
                    if not claim.jobs:
                        await journal.wait_for_jobs(1, claim.next_run_at)
            finally:
                journal.close()


def main() -> None:
    from bulkhead.service._logging import configure_logging

    url, name, runs = sys.argv[1:4]
    configure_logging("INFO")
    trio.run(work, url, name, Path(runs))


# -- the tests ------------------------------------------------------------


def run_record(line: str) -> tuple[int, int, float, float]:
    job, lease, started, ended = json.loads(line)
    return int(job), int(lease), float(started), float(ended)


class Worker:
    """A worker process whose log and run records are in ``base``."""

    def __init__(self, base: Path, url: str, name: str) -> None:
        self.name = name
        self.log = base / f"{name}.log"
        self.runs = base / f"{name}.runs"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.test_postgres_chaos",
                    url,
                    name,
                    str(self.runs),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )

    def records(self) -> list[tuple[int, int, float, float]]:
        """(job, lease, started, ended) of every run it completed."""
        if not self.runs.exists():
            return []
        return [
            run_record(line)
            for line in self.runs.read_text().splitlines()
            if line.endswith("]")
        ]

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("event") == event:
                found.append(data)
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def sleeps(n: int, seconds: float) -> list[NewJob]:
    now = time.time()
    return [NewJob("sleep", 1, json.dumps({"seconds": seconds}), now, now)] * n


async def all_jobs(journal: PostgresJournal) -> list[JobRecord]:
    records: list[JobRecord] = []
    while batch := await journal.list(
        JobFilter(), after=records[-1].id if records else 0, limit=1000, now=time.time()
    ):
        records.extend(batch)
    return records


async def until_all_succeeded(journal: PostgresJournal, total: int) -> float:
    start = time.monotonic()
    while True:
        try:
            counts = await journal.counts()
        except JournalUnavailable:
            counts = {}
        if counts.get(1, {}).get("succeeded", 0) >= total:
            return time.monotonic() - start
        assert time.monotonic() - start < GUARD, f"not all succeeded: {counts}"
        await trio.sleep(0.05)


async def until(condition: Any, failure: str) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < GUARD, failure
        await trio.sleep(0.02)


async def holding(journal: PostgresJournal, name: str) -> set[int]:
    """Jobs the database shows running under worker ``name``'s claim."""

    def read(conn: psycopg.Connection[Any]) -> set[int]:
        rows = conn.execute(
            "SELECT id FROM bulkhead_jobs WHERE state = 'running' AND instance = %s",
            (name,),
        )
        return {id for (id,) in rows}

    return await journal._conns.run(read)


async def until_holding(journal: PostgresJournal, worker: Worker) -> None:
    """Wait until ``worker`` ran a few jobs and holds claimed ones."""
    start = time.monotonic()
    while len(worker.records()) < 5 or not await holding(journal, worker.name):
        assert time.monotonic() - start < GUARD, f"{worker.name} never ran jobs"
        await trio.sleep(0.02)


async def taken_back(journal: PostgresJournal, worker: Worker, held: set[int]) -> bool:
    """Whether ``worker`` holds no job of ``held`` any more (rescued)."""
    return not await holding(journal, worker.name) & held


async def wait_past_server_start(server: PostgresServer) -> None:
    await trio.sleep(max(0.0, server.started + LEASE - time.monotonic()))


async def test_sigkill_one_of_two_workers_mid_load(
    postgres: PostgresServer,
    workers: list[Worker],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = postgres.database()
    await wait_past_server_start(postgres)
    journal = PostgresJournal(url, lease=LEASE, heartbeat=HEARTBEAT)
    await journal.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        ids = {a.id for a in await journal.accept(sleeps(400, 0.02))}
        victim, survivor = (Worker(tmp_path, url, n) for n in ("victim", "survivor"))
        workers.extend([victim, survivor])
        await until_holding(journal, victim)
        victim.process.kill()
        killed = time.monotonic()
        victim.process.wait()
        held = await holding(journal, victim.name)  # its claims, ownerless now
        assert held, "the victim held no claimed job when it was killed"
        while not await taken_back(journal, victim, held):
            assert time.monotonic() - killed < GUARD, "its jobs were never rescued"
            await trio.sleep(0.05)
        assert time.monotonic() - killed <= LEASE + HEARTBEAT + SLACK
        await until_all_succeeded(journal, len(ids))
        records = await all_jobs(journal)
        journal.close()
    assert {r.id for r in records} == ids
    assert {r.state for r in records} == {"succeeded"}
    done_by_victim = {job for job, *_ in victim.records()}
    # Rescued: what the victim held. A run counts only where one started: a
    # job it was running twice, one it had claimed ahead once.
    rescued = held
    assert {r.runs for r in records if r.id in held} <= {1, 2}
    # A rescued job may have run to its end on the victim, its end not yet
    # committed when it died: it runs again all the same (at least once).
    assert done_by_victim
    for job in rescued:
        assert json.loads(next(r.result for r in records if r.id == job) or "") == (
            "survivor"
        )
    # Any live instance rescues: the survivor, or the test's own journal.
    rescues = [(e["job"], e["owner"]) for e in survivor.events("job_rescued")]
    rescues += [
        (r.job, r.owner)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == "job_rescued"
    ]
    assert {job for job, _ in rescues} == rescued
    assert {owner for _, owner in rescues} == {"victim"}


async def test_sigstop_past_the_lease_then_sigcont(
    postgres: PostgresServer, workers: list[Worker], tmp_path: Path
) -> None:
    url = postgres.database()
    await wait_past_server_start(postgres)
    journal = PostgresJournal(url, lease=LEASE, heartbeat=HEARTBEAT)
    await journal.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        ids = {a.id for a in await journal.accept(sleeps(400, 0.02))}
        frozen, other = (Worker(tmp_path, url, n) for n in ("frozen", "other"))
        workers.extend([frozen, other])
        while True:  # stop it while it holds claims
            await until_holding(journal, frozen)
            frozen.process.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            if held := await holding(journal, frozen.name):
                break
            frozen.process.send_signal(signal.SIGCONT)
        # Past its lease: what it held runs again elsewhere.
        while not await taken_back(journal, frozen, held):
            assert time.monotonic() - stopped < GUARD, "its jobs were never rescued"
            await trio.sleep(0.05)
        assert time.monotonic() - stopped <= LEASE + HEARTBEAT + SLACK
        await trio.sleep(LEASE)
        frozen.process.send_signal(signal.SIGCONT)
        await until_all_succeeded(journal, len(ids))
        # Its run in progress at SIGSTOP ends after SIGCONT: late, refused.
        await until(
            lambda: bool(frozen.events("stale_write_dropped")),
            "the stopped worker's late end was never refused",
        )
        records = await all_jobs(journal)
        journal.close()
    assert {r.id for r in records} == ids
    assert {r.state for r in records} == {"succeeded"}
    late = {e["job"] for e in frozen.events("stale_write_dropped")}
    result_of = {r.id: json.loads(r.result or "") for r in records}
    assert {result_of[job] for job in late} == {"other"}, "a late result was kept"
    # One result per job, from a worker that ran it.
    ran = {w.name: {job for job, *_ in w.records()} for w in workers}
    assert all(r.id in ran[result_of[r.id]] for r in records)


async def test_postgres_restart_mid_load(workers: list[Worker], tmp_path: Path) -> None:
    with postgres_server(fsync=False) as server:
        url = server.database()
        journal = PostgresJournal(url, lease=LEASE, heartbeat=HEARTBEAT)
        await journal.open()
        accepted: set[int] = set()
        refused = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            workers.extend(Worker(tmp_path, url, n) for n in ("one", "two"))

            async def submit() -> None:
                nonlocal refused
                while True:
                    try:
                        accepted.update(
                            a.id for a in await journal.accept(sleeps(10, 0.005))
                        )
                    except JournalUnavailable:
                        refused += 1
                    await trio.sleep(0.05)

            async with trio.open_nursery() as load:
                load.start_soon(submit)
                # Mid load: both workers run jobs before PostgreSQL stops. A
                # worker that finds it down at start exits (as `bulkhead
                # serve` does), and under coverage on a fresh clone a worker
                # takes more than a second to import and connect.
                await until(
                    lambda: all(w.records() for w in workers),
                    "a worker never ran a job",
                )
                await trio.to_thread.run_sync(server.stop)
                await trio.sleep(1.0)
                await trio.to_thread.run_sync(server.start)
                restarted = time.time()
                # Submissions go on until each worker ran a job after the
                # restart: each reconnected, not only one.
                await until(
                    lambda: all(
                        any(started > restarted for _, _, started, _ in w.records())
                        for w in workers
                    ),
                    "a worker ran no job after the restart",
                )
                load.cancel_scope.cancel()
            await until_all_succeeded(journal, len(accepted))
            records = await all_jobs(journal)
            journal.close()
            # Before the server's removal, whose stop the workers see too.
            for worker in workers:
                assert worker.events("journal_unavailable"), worker.name
    assert refused > 0, "no submission was refused while PostgreSQL was down"
    assert {r.id for r in records} == accepted
    assert {r.state for r in records} == {"succeeded"}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
