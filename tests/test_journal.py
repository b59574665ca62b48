"""The journal contract (``bulkhead.service._journal.Journal``), run against
every store: what the service relies on, whatever keeps its jobs.

Each test opens a fresh journal from the ``journal`` fixture, whose
parameters list the stores; a store joins by adding itself there.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from bulkhead.service._journal import (
    Action,
    Finish,
    JobFilter,
    Journal,
    JournalLocked,
    JournalUnavailable,
    NewJob,
    NewOperation,
    Release,
    Start,
    State,
)
from bulkhead.service._postgres import PostgresJournal
from bulkhead.service._sqlite import SQLiteJournal

from ._postgres_server import postgres  # noqa: F401 (a fixture journal_factory asks for)

Factory = Callable[[], Journal]


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def journal_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes journals on one store: each call a new handle on the same one."""
    if request.param == "memory":
        return lambda: SQLiteJournal(":memory:")
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").database()
        return lambda: PostgresJournal(url)
    return lambda: SQLiteJournal(str(tmp_path / "journal.sqlite3"))


@contextlib.asynccontextmanager
async def running(journal: Journal) -> AsyncIterator[Journal]:
    """``journal`` opened, its writer running, closed at the end."""
    await journal.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        try:
            yield journal
        finally:
            journal.close()


def contract(
    test: Callable[[Journal], Awaitable[None]],
) -> Callable[[Factory], Awaitable[None]]:
    """A contract test, run on a fresh journal of each store. (Not a fixture:
    the journal's writer must end within the test, which checks that no
    task of bulkhead outlives it.)"""

    @functools.wraps(test)
    async def on_each_store(journal_factory: Factory) -> None:
        async with running(journal_factory()) as journal:
            await test(journal)

    del on_each_store.__wrapped__  # pytest reads the wrapper's signature
    return on_each_store


def job(
    type: str = "add",
    priority: int = 3,
    *,
    key: str | None = None,
    delay: float = 0.0,
    args: str = '{"x": 1}',
) -> NewJob:
    now = time.time()
    return NewJob(type, priority, args, now, now + delay, key)


def ended(claimed_id: int, lease: int, state: State = "succeeded") -> Finish:
    now = time.time()
    succeeded = state == "succeeded"
    result, error = ("2", None) if succeeded else (None, "RuntimeError: boom")
    return Finish(claimed_id, lease, state, 1, now, now, result, error)


async def until_written(journal: Journal, id: int, state: str) -> None:
    """Poll until ``id`` reads ``state`` in the store itself (its end
    committed), 10 s at most."""
    for _ in range(1000):
        counts = await journal.counts()
        record = await journal.get(id)
        assert record is not None
        if record.state == state and any(state in c for c in counts.values()):
            return
        await trio.sleep(0.01)
    raise AssertionError(f"job {id} never reached {state}")


@contract
async def test_accept_then_claim_then_finish(journal: Journal) -> None:
    (accepted,) = await journal.accept([job()])
    assert not accepted.duplicate
    record = await journal.get(accepted.id)
    assert record is not None
    assert (record.state, record.runs, record.attempts) == ("queued", 0, 0)
    claim = await journal.claim(3, 10)
    (claimed,) = claim.jobs
    assert (claimed.id, claimed.type, claimed.args, claimed.runs) == (
        accepted.id,
        "add",
        '{"x": 1}',
        0,
    )
    assert claim.next_run_at is None
    record = await journal.get(accepted.id)
    assert record is not None
    assert (record.state, record.runs) == ("running", 0)  # claimed, not started
    with trio.fail_after(5):
        assert await journal.started(Start(claimed.id, claimed.lease, 7.0))
    record = await journal.get(accepted.id)
    assert record is not None
    assert (record.state, record.runs, record.started_at) == ("running", 1, 7.0)
    journal.finish(ended(claimed.id, claimed.lease))
    # Shown at once, before the writer commits it.
    record = await journal.get(accepted.id)
    assert record is not None
    assert (record.state, record.result) == ("succeeded", "2")
    await until_written(journal, accepted.id, "succeeded")
    assert (await journal.counts())[3] == {"succeeded": 1}


@contract
async def test_a_batch_is_one_transaction_in_order(journal: Journal) -> None:
    answers = await journal.accept([job(args=f'{{"x": {i}}}') for i in range(100)])
    ids = [a.id for a in answers]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100
    assert (await journal.counts())[3] == {"queued": 100}
    claimed = (await journal.claim(3, 1000)).jobs
    assert [c.id for c in claimed] == ids  # due time, then id


@contract
async def test_a_repeated_key_answers_the_first_id(journal: Journal) -> None:
    first, again_in_batch = await journal.accept([job(key="k"), job(key="k")])
    (later,) = await journal.accept([job(key="k", args='{"x": 9}')])
    assert not first.duplicate
    assert again_in_batch.duplicate
    assert later.duplicate
    assert first.id == again_in_batch.id == later.id
    assert (await journal.counts())[3] == {"queued": 1}


@contract
async def test_claims_take_due_jobs_of_one_pool_in_due_order(journal: Journal) -> None:
    late, soon, other_pool, now = await journal.accept(
        [job(delay=60), job(delay=0.2), job(priority=1), job()]
    )
    claim = await journal.claim(3, 10)
    assert [c.id for c in claim.jobs] == [now.id]
    assert claim.next_run_at is not None
    record = await journal.get(soon.id)
    assert record is not None
    assert claim.next_run_at == record.run_at
    page = await journal.list(
        JobFilter(state="scheduled"), after=0, limit=10, now=time.time()
    )
    assert [r.id for r in page] == [late.id, soon.id]
    with trio.fail_after(5):  # wakes at the due time, not later
        await journal.wait_for_jobs(3, claim.next_run_at)
    assert time.time() >= claim.next_run_at
    assert [c.id for c in (await journal.claim(3, 10)).jobs] == [soon.id]
    assert [c.id for c in (await journal.claim(1, 10)).jobs] == [other_pool.id]


@contract
async def test_a_submission_wakes_the_pools_waiter(journal: Journal) -> None:
    async with trio.open_nursery() as nursery:
        woken = trio.Event()

        async def waiter() -> None:
            await journal.wait_for_jobs(3, None)
            woken.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await journal.accept([job(priority=1)])  # another pool: no wake-up
        assert not woken.is_set()
        await journal.accept([job()])
        with trio.fail_after(5):
            await woken.wait()


@contract
async def test_a_release_puts_a_claimed_job_back(journal: Journal) -> None:
    await journal.accept([job(), job()])
    first, second = (await journal.claim(3, 2)).jobs
    assert await journal.started(Start(second.id, second.lease, 7.0))
    journal.release(Release(first.id, first.lease))
    journal.release(Release(second.id, second.lease))
    await until_written(journal, first.id, "queued")
    await until_written(journal, second.id, "queued")
    again = {c.id: c.runs for c in (await journal.claim(3, 2)).jobs}
    assert again == {first.id: 0, second.id: 1}  # a job never started is no run


@contract
async def test_a_start_and_an_end_in_one_transaction_both_count(
    journal: Journal,
) -> None:
    (accepted,) = await journal.accept([job()])
    (claimed,) = (await journal.claim(3, 1)).jobs
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.started, Start(claimed.id, claimed.lease, 7.0))
        await trio.testing.wait_all_tasks_blocked()
        journal.finish(ended(claimed.id, claimed.lease))
    await until_written(journal, accepted.id, "succeeded")
    record = await journal.get(accepted.id)
    assert record is not None
    assert (record.state, record.runs) == ("succeeded", 1)


@contract
async def test_a_stale_lease_cannot_end_or_release_a_job(journal: Journal) -> None:
    (accepted,) = await journal.accept([job()])
    (claimed,) = (await journal.claim(3, 1)).jobs
    assert not await journal.started(Start(claimed.id, claimed.lease + 1, 7.0))
    journal.finish(ended(claimed.id, claimed.lease + 1, "failed"))
    journal.release(Release(claimed.id, claimed.lease + 1))
    journal.finish(ended(claimed.id, claimed.lease))
    await until_written(journal, accepted.id, "succeeded")
    record = await journal.get(accepted.id)
    assert record is not None
    assert (record.state, record.error, record.runs) == ("succeeded", None, 0)


@contract
async def test_cancel_answers_the_record_as_it_was(journal: Journal) -> None:
    queued, running_job = await journal.accept([job(), job(delay=0)])
    (claimed,) = (await journal.claim(3, 1)).jobs
    assert claimed.id == queued.id
    before = await journal.cancel(running_job.id)
    assert before is not None
    assert before.state == "queued"
    after = await journal.get(running_job.id)
    assert after is not None
    assert (after.state, after.error) == (
        "cancelled",
        "cancelled",
    )
    running_before = await journal.cancel(queued.id)
    assert running_before is not None
    assert running_before.state == "running"
    assert await journal.cancel(10**9) is None
    assert (await journal.counts())[3] == {"running": 1, "cancelled": 1}


@contract
async def test_list_is_keyed_and_filtered(journal: Journal) -> None:
    answers = await journal.accept(
        [job(), job(type="sleep"), job(priority=1), job(type="sleep")]
    )
    ids = [a.id for a in answers]
    now = time.time()
    first = await journal.list(JobFilter(), after=0, limit=2, now=now)
    rest = await journal.list(JobFilter(), after=first[-1].id, limit=10, now=now)
    assert [r.id for r in first + rest] == ids
    sleeps = await journal.list(JobFilter(type="sleep"), after=0, limit=10, now=now)
    assert [r.id for r in sleeps] == [ids[1], ids[3]]
    low = await journal.list(JobFilter(priority=1), after=0, limit=10, now=now)
    assert [r.id for r in low] == [ids[2]]
    none = await journal.list(JobFilter(since=now + 60), after=0, limit=10, now=now)
    assert none == []
    queued = await journal.list(JobFilter(state="queued"), after=0, limit=10, now=now)
    assert len(queued) == 4


@contract
async def test_after_close_nothing_is_accepted(journal: Journal) -> None:
    journal.close()
    with pytest.raises(JournalUnavailable, match="closing"):
        await journal.accept([job()])


async def test_a_reopened_journal_queues_again_what_was_left_running(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "journal.sqlite3")
    async with running(SQLiteJournal(path)) as first:
        await first.accept([job(), job(), job()])
        claimed = (await first.claim(3, 3)).jobs
        journal_ended, started = claimed[:2]
        first.finish(ended(journal_ended.id, journal_ended.lease))
        assert await first.started(Start(started.id, started.lease, 7.0))
    second = SQLiteJournal(path)
    assert await second.open() == 2  # the two left running
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        counts = await second.counts()
        assert counts[3] == {"queued": 2, "succeeded": 1}
        again = (await second.claim(3, 5)).jobs
        # The one that started counts a run; the one only claimed does not.
        assert sorted(c.runs for c in again) == [0, 1]
        second.close()


async def test_one_process_owns_a_sqlite_journal(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.sqlite3")
    async with running(SQLiteJournal(path)):
        with pytest.raises(JournalLocked, match=r"another bulkhead serve process"):
            await SQLiteJournal(path).open()
    async with running(SQLiteJournal(path)):  # free again once closed
        pass


@pytest.mark.parametrize("kind", ["missing directory", "a directory", "not sqlite"])
async def test_a_journal_that_cannot_be_opened_says_where_and_why(
    tmp_path: Path, kind: str
) -> None:
    path = {
        "missing directory": tmp_path / "nowhere" / "j.sqlite3",
        "a directory": tmp_path,
        "not sqlite": tmp_path / "notes.txt",
    }[kind]
    (tmp_path / "notes.txt").write_text("hello, not a database\n" * 100)
    with pytest.raises(JournalUnavailable, match=rf"^journal {path}: "):
        await SQLiteJournal(str(path)).open()


async def test_a_wave_2_journal_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "journal.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            """
            CREATE TABLE jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL,
                priority INTEGER NOT NULL, args TEXT NOT NULL,
                idempotency_key TEXT UNIQUE, state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                resumed INTEGER NOT NULL DEFAULT 0, accepted_at REAL NOT NULL,
                started_at REAL, finished_at REAL, result TEXT, error TEXT);
            CREATE INDEX jobs_state ON jobs (state, id);
            INSERT INTO jobs (type, priority, args, state, resumed, accepted_at)
                VALUES ('add', 3, '{}', 'accepted', 2, 5.0);
            INSERT INTO jobs (type, priority, args, state, accepted_at, finished_at)
                VALUES ('add', 3, '{}', 'succeeded', 5.0, 6.0);
            """
        )
    async with running(SQLiteJournal(str(path))) as journal:
        assert (await journal.counts())[3] == {"queued": 1, "succeeded": 1}
        (claimed,) = (await journal.claim(3, 5)).jobs
        assert (claimed.run_at, claimed.runs) == (5.0, 2)


# ------------------------------------------------------------- operations


async def failed_and_succeeded(journal: Journal, failed: int, succeeded: int) -> None:
    """Record ``failed`` failed then ``succeeded`` succeeded jobs, all
    committed."""
    n = failed + succeeded
    await journal.accept([job() for _ in range(n)])
    claimed = (await journal.claim(3, n)).jobs
    for i, c in enumerate(claimed):
        assert await journal.started(Start(c.id, c.lease, 7.0))  # runs = 1
        journal.finish(ended(c.id, c.lease, "failed" if i < failed else "succeeded"))
    await until_written(journal, claimed[-1].id, "succeeded" if succeeded else "failed")
    for _ in range(1000):
        if (await journal.counts())[3].get("running", 0) == 0:
            return
        await trio.sleep(0.01)  # pragma: no cover


def operation(action: Action, **filter: Any) -> NewOperation:
    return NewOperation(action, JobFilter(**filter), "because", "ops", time.time())


@contract
async def test_requeue_resets_failed_jobs_in_chunks_and_keeps_counts(
    journal: Journal,
) -> None:
    await failed_and_succeeded(journal, 3, 1)
    op = await journal.start_operation(operation("requeue", state="failed"))
    assert (op.state, op.matched, op.done, op.cursor, op.last_id) == (
        "running",
        3,
        0,
        0,
        4,
    )
    assert op.filter == JobFilter(state="failed")
    (later,) = await journal.accept([job()])  # after the operation began
    progress = []
    while op.state == "running":
        step = await journal.advance_operation(op.id, limit=2, now=time.time())
        assert step is not None
        op = step
        progress.append((op.done, op.cursor))
    assert progress == [(2, 2), (3, 3)]
    assert op.finished_at is not None
    assert (await journal.counts())[3] == {"queued": 4, "succeeded": 1}
    for id in (1, 2, 3):
        record = await journal.get(id)
        assert record is not None
        assert (record.state, record.attempts, record.runs, record.error) == (
            "queued",
            0,
            0,
            None,
        )
    assert {c.id for c in (await journal.claim(3, 10)).jobs} == {1, 2, 3, later.id}
    # A finished operation stays as it is.
    again = await journal.advance_operation(op.id, limit=2, now=time.time())
    assert again == op


@contract
async def test_cancel_by_filter_cancels_queued_and_scheduled_jobs_only(
    journal: Journal,
) -> None:
    await journal.accept([job("add"), job("add", delay=3600), job("mul"), job("add")])
    (_claimed,) = (await journal.claim(3, 1)).jobs  # job 1 runs
    op = await journal.start_operation(operation("cancel", type="add"))
    assert op.matched == 3  # running job 1 matches; it is cancelled where it runs
    op = await journal.advance_operation(op.id, limit=100, now=time.time(), also_done=1)  # type: ignore[assignment]
    assert op is not None
    assert (op.state, op.done) == ("done", 3)
    states = [(await journal.get(i)).state for i in (1, 2, 3, 4)]  # type: ignore[union-attr]
    assert states == ["running", "cancelled", "queued", "cancelled"]
    assert (await journal.counts())[3] == {"running": 1, "queued": 1, "cancelled": 2}
    scheduled = await journal.start_operation(operation("cancel", state="scheduled"))
    assert scheduled.matched == 0


@contract
async def test_purge_deletes_finished_rows_matching(journal: Journal) -> None:
    await failed_and_succeeded(journal, 2, 2)
    op = await journal.start_operation(operation("purge", state="succeeded"))
    op = await journal.advance_operation(op.id, limit=10, now=time.time())  # type: ignore[assignment]
    assert op is not None
    assert (op.state, op.matched, op.done) == ("done", 2, 2)
    assert await journal.get(3) is None
    assert await journal.get(4) is None
    assert (await journal.counts())[3] == {"failed": 2}
    # A state the action does not act on matches nothing.
    none = await journal.start_operation(operation("purge", state="queued"))
    assert none.matched == 0
    none = await journal.start_operation(operation("requeue", state="running"))
    assert none.matched == 0


@contract
async def test_an_aborted_operation_stops_and_the_audit_log_lists_it(
    journal: Journal,
) -> None:
    await failed_and_succeeded(journal, 3, 0)
    first = await journal.start_operation(operation("requeue"))
    await journal.advance_operation(first.id, limit=1, now=time.time())
    before = await journal.end_operation(first.id, "aborted", now=time.time())
    assert before is not None
    assert before.state == "running"
    again = await journal.end_operation(first.id, "aborted", now=time.time())
    assert again is not None
    assert again.state == "aborted"
    assert await journal.end_operation(99, "aborted", now=time.time()) is None
    stopped = await journal.advance_operation(first.id, limit=1, now=time.time())
    assert stopped is not None
    assert (stopped.state, stopped.done) == ("aborted", 1)
    assert await journal.advance_operation(99, limit=1, now=time.time()) is None
    assert [(await journal.get(i)).state for i in (1, 2, 3)] == [  # type: ignore[union-attr]
        "queued",
        "failed",
        "failed",
    ]
    second = await journal.start_operation(operation("purge", type="add"))
    log = await journal.list_operations(limit=10)
    assert [(o.id, o.action, o.state, o.who, o.reason) for o in log] == [
        (second.id, "purge", "running", "ops", "because"),
        (first.id, "requeue", "aborted", "ops", "because"),
    ]
    assert [
        o.id for o in await journal.list_operations(before=second.id, limit=10)
    ] == [first.id]
    assert [o.id for o in await journal.list_operations(limit=10, state="running")] == [
        second.id
    ]
    assert await journal.get_operation(first.id) == stopped
    assert await journal.get_operation(99) is None


async def test_an_operation_resumes_after_a_reopen_where_it_stopped(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "journal.sqlite3")
    async with running(SQLiteJournal(path)) as first:
        await failed_and_succeeded(first, 5, 0)
        op = await first.start_operation(operation("requeue", state="failed"))
        await first.advance_operation(op.id, limit=2, now=time.time())
    async with running(SQLiteJournal(path)) as second:
        (resumed,) = await second.list_operations(limit=10, state="running")
        assert (resumed.done, resumed.cursor) == (2, 2)
        while resumed.state == "running":
            step = await second.advance_operation(resumed.id, limit=2, now=time.time())
            assert step is not None
            resumed = step
        assert (resumed.matched, resumed.done) == (5, 5)
        assert (await second.counts())[3] == {"queued": 5}


async def test_operations_fail_cleanly_once_the_journal_is_closed(
    tmp_path: Path,
) -> None:
    async with running(SQLiteJournal(str(tmp_path / "j.sqlite3"))) as journal:
        journal.close()
        with pytest.raises(JournalUnavailable, match="closed"):
            await journal.start_operation(operation("purge"))


def reader_open(journal: SQLiteJournal) -> bool:
    return journal._reader is not None


async def test_closing_waits_for_reads_in_flight(tmp_path: Path) -> None:
    # Regression: the reader connection was closed while a read ran on it in
    # another thread, which crashed the process (SIGSEGV in sqlite3).
    journal = SQLiteJournal(str(tmp_path / "journal.sqlite3"))
    await journal.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        (accepted,) = await journal.accept([job()])
        async with journal._read_limiter:  # a read in flight
            journal.close()
            # Long enough for the close to run if it did not wait for it.
            await trio.sleep(0.3)
            assert reader_open(journal)
        # The read done, the close goes on.
    assert not reader_open(journal)
    with pytest.raises(JournalUnavailable, match="closed"):
        await journal.get(accepted.id)
