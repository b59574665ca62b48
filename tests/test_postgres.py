"""The PostgreSQL journal against a real server: what several instances
sharing one queue rely on (leases, rescue, fencing, wake-ups, outages).

Two :class:`PostgresJournal` objects on one database are two instances.
Times are real: the journal's work happens in PostgreSQL and in threads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import trio

from bulkhead.service._journal import (
    Finish,
    JobFilter,
    JournalUnavailable,
    NewJob,
    Release,
    Start,
)
from bulkhead.service._postgres import MIGRATIONS, PostgresJournal, redact

from ._postgres_server import (
    PostgresServer,
    postgres,
    postgres_server,
    postgres_url,
)

__all__ = ["postgres", "postgres_url"]  # fixtures, imported for pytest

LEASE = 2.0
HEARTBEAT = 0.25
FAST: dict[str, Any] = {"lease": LEASE, "heartbeat": HEARTBEAT, "poll": 0.25}
SLACK = 3.0
"""Real seconds a shared 2-core machine may add to any promised delay."""


def job(
    priority: int = 1, key: str | None = None, delay: float = 0.0, args: str = "{}"
) -> NewJob:
    now = time.time()
    return NewJob("add", priority, args, now, now + delay, key)


def succeeded(id: int, lease: int, result: str = "1") -> Finish:
    now = time.time()
    return Finish(id, lease, "succeeded", 1, now, now, result, None)


@contextlib.asynccontextmanager
async def running(url: str, **options: Any) -> AsyncIterator[PostgresJournal]:
    """An open journal whose :meth:`~PostgresJournal.run` is going; closed
    (and flushed) at exit."""
    journal = PostgresJournal(url, **{**FAST, **options})
    assert await journal.open() == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        try:
            yield journal
        finally:
            journal.close()


async def eventually(condition: Any, failure: str, guard: float = 10.0) -> float:
    """Wait (real time) until ``await condition()`` is true; return how long."""
    start = time.monotonic()
    while not await condition():
        assert time.monotonic() - start < guard, failure
        await trio.sleep(0.02)
    return time.monotonic() - start


async def committed(journal: PostgresJournal, id: int, state: str) -> bool:
    """Whether job ``id`` is ``state`` in the database (not just queued)."""

    def read(conn: psycopg.Connection[Any]) -> Any:
        row = conn.execute(
            "SELECT state FROM bulkhead_jobs WHERE id = %s", (id,)
        ).fetchone()
        return row[0] if row else None

    return bool(await journal._conns.run(read) == state)


async def test_accept_claim_finish_round_trip(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        accepted = await journal.accept([job(), job(args='{"x": 2}'), job(2)])
        ids = [a.id for a in accepted]
        assert ids == sorted(ids)
        assert not any(a.duplicate for a in accepted)
        claim = await journal.claim(1, 10)
        assert [c.id for c in claim.jobs] == ids[:2]
        assert [(c.runs, c.lease, c.type) for c in claim.jobs] == [(0, 1, "add")] * 2
        assert claim.jobs[1].args == '{"x": 2}'
        assert claim.next_run_at is None
        first = claim.jobs[0]
        assert await journal.started(Start(first.id, first.lease, 7.0))
        journal.finish(succeeded(first.id, first.lease, "42"))
        record = await journal.get(first.id)  # shown before the commit
        assert record is not None
        assert (record.state, record.result, record.runs) == ("succeeded", "42", 1)
        await eventually(
            lambda: committed(journal, first.id, "succeeded"), "never committed"
        )
        assert await journal.get(first.id) == record
        assert await journal.get(10**9) is None
        assert await journal.counts() == {
            1: {"running": 1, "succeeded": 1},
            2: {"queued": 1},
        }
        assert journal.writable


async def test_claim_takes_due_jobs_oldest_run_at_first(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        late, early = await journal.accept([job(delay=-1), job(delay=-5)])
        claim = await journal.claim(1, 1)
        assert [c.id for c in claim.jobs] == [early.id]
        assert claim.next_run_at is not None
        assert (await journal.claim(1, 0)).jobs == ()
        assert [c.id for c in (await journal.claim(1, 5)).jobs] == [late.id]


async def test_batch_is_all_or_nothing(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        # Text cannot hold a NUL: the second job fails the whole batch.
        with pytest.raises(
            JournalUnavailable, match=r"^journal postgresql://.*: job 1 holds a NUL"
        ):
            await journal.accept([job(key="a"), job(args='{"x": "\x00"}')])
        # Had it reached the shared transaction, it would fail every
        # submission with it, and nothing of them would be recorded either.
        bad = NewJob("a\x00", 1, "{}", time.time(), time.time())
        with pytest.raises(JournalUnavailable, match=r"^journal postgresql://"):
            await journal._call(
                lambda conn: journal._write(conn, [[job(key="b"), bad]], [], [])
            )
        assert await journal.counts() == {}
        assert await journal.list(JobFilter(), after=0, limit=10, now=time.time()) == []
        assert journal.writable  # a bad write is not an outage
        (again,) = await journal.accept([job(key="a")])
        assert not again.duplicate


async def test_idempotency_keys_are_unique_across_instances(postgres_url: str) -> None:
    async with running(postgres_url) as one, running(postgres_url) as two:
        (first,) = await one.accept([job(key="k")])
        (second,) = await two.accept([job(key="k")])
        assert second.id == first.id
        assert second.duplicate
        batch = await two.accept([job(key="n"), job(key="n"), job(key="k")])
        assert [a.duplicate for a in batch] == [False, True, True]
        assert batch[0].id == batch[1].id
        assert batch[2].id == first.id

        # The same key from both instances at once: one row, one winner.
        results: list[Any] = []

        async def submit(journal: PostgresJournal) -> None:
            results.extend(await journal.accept([job(key="race"), job()]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, one)
            nursery.start_soon(submit, two)
        keyed = [a for a in results if a.id == results[0].id or a.duplicate]
        assert len({a.id for a in keyed}) == 1
        assert sorted(a.duplicate for a in keyed) == [False, True]
        counts = await one.counts()
        assert counts == {1: {"queued": 5}}


async def test_delayed_jobs_wait_until_due(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        (later,) = await journal.accept([job(delay=0.6)])
        claim = await journal.claim(1, 10)
        assert claim.jobs == ()
        assert claim.next_run_at is not None
        assert claim.next_run_at > time.time()
        now = time.time()
        scheduled = await journal.list(
            JobFilter(state="scheduled"), after=0, limit=10, now=now
        )
        assert [r.id for r in scheduled] == [later.id]
        assert (
            await journal.list(JobFilter(state="queued"), after=0, limit=10, now=now)
            == []
        )
        await journal.wait_for_jobs(1, claim.next_run_at)
        while not (claim := await journal.claim(1, 10)).jobs:
            assert time.time() < later_deadline(now), "the delayed job never came due"
            await journal.wait_for_jobs(1, claim.next_run_at)
        assert [c.id for c in claim.jobs] == [later.id]


def later_deadline(now: float) -> float:
    return now + 0.6 + SLACK


async def test_claims_from_two_instances_never_overlap(postgres_url: str) -> None:
    async with running(postgres_url) as one, running(postgres_url) as two:
        ids = {a.id for a in await one.accept([job() for _ in range(600)])}
        taken: dict[str, list[int]] = {"one": [], "two": []}

        async def drain(name: str, journal: PostgresJournal) -> None:
            while claim := (await journal.claim(1, 7)).jobs:
                taken[name].extend(c.id for c in claim)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(drain, "one", one)
                nursery.start_soon(drain, "two", two)
        assert not set(taken["one"]) & set(taken["two"])
        assert len(taken["one"]) + len(taken["two"]) == len(ids)
        assert set(taken["one"]) | set(taken["two"]) == ids
        assert taken["one"]
        assert taken["two"]
        assert await one.counts() == {1: {"running": 600}}


async def wait_past_server_start(server: PostgresServer) -> None:
    """Rescue waits one lease after PostgreSQL started: let it pass."""
    await trio.sleep(max(0.0, server.started + LEASE - time.monotonic()))


async def test_an_expired_lease_is_rescued_within_lease_and_heartbeat(
    postgres: PostgresServer, postgres_url: str
) -> None:
    await wait_past_server_start(postgres)
    async with running(postgres_url) as survivor:
        async with running(postgres_url) as dying:
            (accepted,) = await dying.accept([job()])
            (claimed,) = (await dying.claim(1, 1)).jobs
            assert await dying.started(Start(claimed.id, claimed.lease, 7.0))
            await trio.sleep(2 * HEARTBEAT)  # renewed: still its own
            assert await committed(survivor, accepted.id, "running")
        # `dying` stopped renewing (as if killed) right now, at the latest.
        stopped = time.monotonic()

        async def rescued() -> bool:
            return await committed(survivor, accepted.id, "queued")

        await eventually(rescued, "the job was never rescued")
        assert time.monotonic() - stopped <= LEASE + HEARTBEAT + SLACK
        (again,) = (await survivor.claim(1, 1)).jobs
        assert (again.id, again.runs, again.lease) == (claimed.id, 1, claimed.lease + 1)
        assert await survivor.counts() == {1: {"running": 1}}


async def test_an_instance_stopped_inside_a_transaction_is_rescued_all_the_same(
    postgres: PostgresServer, postgres_url: str
) -> None:
    await wait_past_server_start(postgres)
    async with running(postgres_url) as survivor:
        async with running(postgres_url) as stopped:
            (accepted,) = await stopped.accept([job()])
            (claimed,) = (await stopped.claim(1, 1)).jobs
            # As if SIGSTOP hit between two statements of its end: the row
            # stays locked by a transaction nobody will finish.
            conn = await trio.to_thread.run_sync(stopped._conns.connect)

            def lock_and_stop() -> None:
                conn.execute("BEGIN")
                conn.execute(
                    "SELECT id FROM bulkhead_jobs WHERE id = %s FOR UPDATE",
                    (claimed.id,),
                )

            await trio.to_thread.run_sync(lock_and_stop)
        frozen = time.monotonic()
        await eventually(
            lambda: committed(survivor, accepted.id, "queued"), "never rescued"
        )
        assert time.monotonic() - frozen <= LEASE + HEARTBEAT + SLACK
        # The server ended the stuck session; its owner learns so when it
        # continues, and its transaction did not commit.
        with pytest.raises(psycopg.Error, match="idle-in-transaction timeout"):
            await trio.to_thread.run_sync(
                lambda: conn.execute("UPDATE bulkhead_jobs SET state = 'x'")
            )
        conn.close()


async def test_a_live_lease_is_renewed_and_never_rescued(
    postgres: PostgresServer, postgres_url: str
) -> None:
    await wait_past_server_start(postgres)
    async with running(postgres_url) as one, running(postgres_url) as two:
        await one.accept([job()])
        (claimed,) = (await one.claim(1, 1)).jobs
        await trio.sleep(2 * LEASE)
        assert (await two.claim(1, 1)).jobs == ()
        one.finish(succeeded(claimed.id, claimed.lease))
        await eventually(
            lambda: committed(two, claimed.id, "succeeded"), "the end was dropped"
        )


async def test_a_stale_owner_cannot_finish_a_rescued_job(
    postgres: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_past_server_start(postgres)
    async with running(postgres_url) as survivor:
        async with running(postgres_url, instance="stale") as stale:
            (accepted,) = await stale.accept([job()])
            (old,) = (await stale.claim(1, 1)).jobs
            assert await stale.started(Start(old.id, old.lease, 7.0))
        # "stale" stopped renewing; its job is rescued and runs elsewhere.
        await eventually(
            lambda: committed(survivor, accepted.id, "queued"), "never rescued"
        )
        (new,) = (await survivor.claim(1, 1)).jobs
        assert new.lease == old.lease + 1
        assert await survivor.started(Start(new.id, new.lease, 8.0))
        # The stale owner wakes up (same instance name) and reports late.
        async with running(postgres_url, instance="stale") as woken:
            assert not await woken.started(Start(old.id, old.lease, 9.0))
            woken.finish(succeeded(old.id, old.lease, "stale"))
            woken.release(Release(old.id, old.lease))
        assert any(
            getattr(r, "event", None) == "stale_write_dropped" for r in caplog.records
        )
        record = await survivor.get(new.id)
        assert record is not None
        assert (record.state, record.result, record.runs) == ("running", None, 2)
        survivor.finish(succeeded(new.id, new.lease, "fresh"))
        await eventually(
            lambda: committed(survivor, new.id, "succeeded"), "the live end dropped"
        )
        record = await survivor.get(new.id)
        assert record is not None
        assert record.result == "fresh"
        assert await survivor.counts() == {1: {"succeeded": 1}}


async def test_release_gives_a_job_back(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        await journal.accept([job(), job()])
        started, unstarted = (await journal.claim(1, 2)).jobs
        assert await journal.started(Start(started.id, started.lease, 7.0))
        journal.release(Release(started.id, started.lease))
        journal.release(Release(unstarted.id, unstarted.lease))
        shown = await journal.get(unstarted.id)
        assert shown is not None
        assert (shown.state, shown.runs) == ("queued", 0)
        await eventually(
            lambda: committed(journal, unstarted.id, "queued"), "never released"
        )
        again = {c.id: c.runs for c in (await journal.claim(1, 2)).jobs}
        assert again == {started.id: 1, unstarted.id: 0}


async def test_notify_wakes_another_instance_at_once(postgres_url: str) -> None:
    async with (
        running(postgres_url, poll=30.0) as listener,
        running(postgres_url) as submitter,
    ):
        await trio.sleep(0.2)  # its LISTEN is in place
        woke = trio.Event()

        async def wait() -> None:
            await listener.wait_for_jobs(3, None)
            woke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.1)
            assert not woke.is_set()
            start = time.monotonic()
            await submitter.accept([job(3)])
            with trio.fail_after(SLACK):
                await woke.wait()
        assert time.monotonic() - start < SLACK
        assert [c.type for c in (await listener.claim(3, 5)).jobs] == ["add"]


async def test_poll_only_mode_finds_jobs_within_the_poll_interval(
    postgres_url: str,
) -> None:
    async with (
        running(postgres_url, listen=False, poll=30.0) as deaf,
        running(postgres_url, listen=False, poll=0.3) as polling,
        running(postgres_url) as submitter,
    ):
        await submitter.accept([job(4)])
        with trio.move_on_after(0.8) as deaf_scope:
            await deaf.wait_for_jobs(4, None)
        assert deaf_scope.cancelled_caught  # no LISTEN: no wake-up but its poll
        start = time.monotonic()
        await polling.wait_for_jobs(4, None)
        assert time.monotonic() - start < 0.3 + SLACK
        assert len((await polling.claim(4, 5)).jobs) == 1


async def test_a_local_submission_wakes_its_pool_at_once(postgres_url: str) -> None:
    async with running(postgres_url, listen=False, poll=30.0) as journal:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.wait_for_jobs, 5, None)
            await trio.sleep(0.1)
            with trio.fail_after(SLACK):
                await journal.accept([job(5)])
        # A submission before the wait counts too.
        await journal.accept([job(5)])
        with trio.fail_after(SLACK):
            await journal.wait_for_jobs(5, None)
        # ``until`` in the past returns at once.
        with trio.fail_after(SLACK):
            await journal.wait_for_jobs(5, time.time() - 1)


async def test_postgres_restart_refuses_then_recovers_losing_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with postgres_server(fsync=False) as server:
        url = server.database()
        async with running(url, close_timeout=30.0) as journal:
            accepted = await journal.accept([job() for _ in range(20)])
            claimed = (await journal.claim(1, 5)).jobs
            known = await journal.counts()
            assert known == {1: {"queued": 15, "running": 5}}
            await trio.to_thread.run_sync(server.stop)
            assert await journal.counts() == known  # the last it read
            with pytest.raises(JournalUnavailable, match=r"^journal postgresql://"):
                await journal.accept([job()])
            assert not journal.writable
            assert await journal.counts() == known
            with pytest.raises(JournalUnavailable):
                await journal.accept([job()])  # refused at once while down
            with pytest.raises(JournalUnavailable):
                await journal.get(accepted[0].id)
            for c in claimed:  # ends while it is down are kept
                journal.finish(succeeded(c.id, c.lease))
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(server.start)

            async def writable() -> bool:
                return journal.writable

            await eventually(writable, "never writable again")
            # Every pooled connection died with the server: none is used.
            async with trio.open_nursery() as nursery:
                for a in accepted[:8]:
                    nursery.start_soon(journal.get, a.id)
            more = await journal.accept([job() for _ in range(5)])
            for c in claimed:
                await eventually(
                    lambda c=c: committed(journal, c.id, "succeeded"), "end lost"
                )
            ids = {a.id for a in accepted + more}
            listed = await journal.list(
                JobFilter(), after=0, limit=100, now=time.time()
            )
            assert {r.id for r in listed} == ids
            assert await journal.counts() == {1: {"queued": 20, "succeeded": 5}}
            await trio.sleep(3 * HEARTBEAT)  # the listener reconnects too
        events = {getattr(r, "event", None) for r in caplog.records}
        assert {"journal_unavailable", "journal_available"} <= events


async def test_close_gives_up_after_its_timeout_while_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with postgres_server(fsync=False) as server:
        url = server.database()
        async with running(url, close_timeout=0.5) as journal:
            await journal.accept([job()])
            (claimed,) = (await journal.claim(1, 1)).jobs
            await trio.to_thread.run_sync(server.stop)
            journal.finish(succeeded(claimed.id, claimed.lease))
        unwritten = [
            r for r in caplog.records if r.message.startswith("journal closed")
        ]
        assert [getattr(r, "jobs", None) for r in unwritten] == [[claimed.id]]
        with pytest.raises(JournalUnavailable, match=r"closing$"):
            await journal.accept([job()])
        assert not journal.writable


async def test_counts_come_from_counters_not_the_table(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        ids = [a.id for a in await journal.accept([job(1)] * 3 + [job(2)] * 2)]
        claimed = (await journal.claim(1, 2)).jobs
        journal.finish(succeeded(claimed[0].id, claimed[0].lease))
        now = time.time()
        journal.finish(
            Finish(claimed[1].id, claimed[1].lease, "failed", 2, now, now, None, "E: x")
        )
        cancelled = await journal.cancel(ids[3])
        assert cancelled is not None
        assert cancelled.state == "queued"  # as it was: this call cancelled it
        assert (await journal.cancel(claimed[0].id)) is not None  # left running
        assert await journal.cancel(10**9) is None
        await eventually(
            lambda: committed(journal, claimed[1].id, "failed"), "never failed"
        )
        expected = {
            1: {"queued": 1, "succeeded": 1, "failed": 1},
            2: {"queued": 1, "cancelled": 1},
        }
        assert await journal.counts() == expected

        def table(conn: psycopg.Connection[Any]) -> Any:
            return conn.execute(
                "SELECT priority, state, count(*) FROM bulkhead_jobs GROUP BY 1, 2"
            ).fetchall()

        truth = await journal._conns.run(table)
        assert {(p, s, n) for p, s, n in truth} == {
            (p, s, n) for p, by in expected.items() for s, n in by.items()
        }

        def rows(conn: psycopg.Connection[Any]) -> Any:
            row = conn.execute("SELECT count(*) FROM bulkhead_counts").fetchone()
            return row[0] if row else None

        async def folded() -> bool:  # the heartbeat folds the deltas
            return bool(await journal._conns.run(rows) == 5)

        await eventually(folded, "counters never folded")
        assert await journal.counts() == expected


async def test_list_filters_and_pages(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        a, b, c, d = await journal.accept([job(1), job(2), job(1, delay=60), job(1)])
        (claimed,) = (await journal.claim(1, 1)).jobs
        assert claimed.id == a.id
        journal.finish(succeeded(a.id, claimed.lease))
        now = time.time()

        async def ids(filter: JobFilter, after: int = 0, limit: int = 10) -> list[int]:
            return [
                r.id
                for r in await journal.list(filter, after=after, limit=limit, now=now)
            ]

        assert await ids(JobFilter()) == [a.id, b.id, c.id, d.id]
        assert await ids(JobFilter(), after=a.id, limit=2) == [b.id, c.id]
        assert await ids(JobFilter(priority=1)) == [a.id, c.id, d.id]
        assert await ids(JobFilter(state="scheduled")) == [c.id]
        assert await ids(JobFilter(state="queued", priority=1)) == [d.id]
        assert await ids(JobFilter(type="nope")) == []
        assert await ids(JobFilter(since=now + 10)) == []
        assert await ids(JobFilter(until=now + 10, priority=2)) == [b.id]
        await eventually(lambda: committed(journal, a.id, "succeeded"), "not written")
        assert await ids(JobFilter(state="succeeded")) == [a.id]


async def test_finished_jobs_are_purged_as_configured(postgres_url: str) -> None:
    async with running(postgres_url, keep_results=1, keep_results_for=3600) as journal:
        accepted = await journal.accept([job(key=f"k{i}") for i in range(3)])
        for c in (await journal.claim(1, 3)).jobs:
            journal.finish(succeeded(c.id, c.lease))

        async def one_left() -> bool:
            return await journal.counts() == {1: {"succeeded": 1}}

        await eventually(one_left, "never purged to keep_results")
        assert await journal.get(accepted[0].id) is None
        assert await journal.get(accepted[2].id) is not None
    async with running(postgres_url, keep_results_for=0) as journal:

        async def none_left() -> bool:
            return await journal.counts() == {}

        await eventually(none_left, "never purged after keep_results_for")
        (again,) = await journal.accept([job(key="k0")])  # its key is free again
        assert not again.duplicate


async def test_two_instances_migrate_once(postgres_url: str) -> None:
    journals = [PostgresJournal(postgres_url) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for journal in journals:
            nursery.start_soon(journal.open)

    def versions(conn: psycopg.Connection[Any]) -> Any:
        return conn.execute("SELECT version FROM bulkhead_schema_version").fetchall()

    latest = len(MIGRATIONS)
    assert await journals[0]._conns.run(versions) == [
        (v,) for v in range(1, latest + 1)
    ]

    def newer(conn: psycopg.Connection[Any]) -> None:
        conn.execute("INSERT INTO bulkhead_schema_version VALUES (99)")

    await journals[0]._conns.run(newer)
    with pytest.raises(
        JournalUnavailable,
        match=rf"^journal .*: schema version 99 is newer than this bulkhead's"
        rf" \({latest}\)",
    ):
        await PostgresJournal(postgres_url).open()
    for journal in journals:
        await trio.to_thread.run_sync(journal._conns.close)


async def test_open_names_the_server_without_its_password(
    postgres: PostgresServer,
) -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{postgres.port}/missing"
    journal = PostgresJournal(url)
    with pytest.raises(
        JournalUnavailable,
        match=r'^journal postgresql://postgres@127.0.0.1:\d+/missing: .*"missing"',
    ):
        await journal.open()
    assert (
        journal.location == f"postgresql://postgres@127.0.0.1:{postgres.port}/missing"
    )
    assert not journal.writable
    with pytest.raises(JournalUnavailable, match=r"not opened$"):
        await journal.accept([job()])
    assert await journal.accept([]) == []


def test_redact_keeps_everything_but_the_password() -> None:
    assert redact("postgresql://u:p@h:5/d?x=1") == "postgresql://u@h:5/d?x=1"
    assert redact("postgresql://u:p@[::1]/d") == "postgresql://u@[::1]/d"
    assert redact("postgresql://h/d") == "postgresql://h/d"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"lease": 0}, ValueError, "lease must be positive seconds, got 0"),
        ({"poll": "1"}, TypeError, "poll must be a number of seconds, got '1'"),
        (
            {"heartbeat": True},
            TypeError,
            "heartbeat must be a number of seconds, got True",
        ),
        (
            {"lease": 4, "heartbeat": 3},
            ValueError,
            "heartbeat must be at most half the lease, got heartbeat=3 and "
            "lease=4: one late renewal would lose every lease",
        ),
        ({"connections": 1}, ValueError, "connections must be at least 2, got 1"),
        ({"connections": 2.0}, TypeError, "connections must be an int, got 2.0"),
        (
            {"keep_results": -1},
            ValueError,
            "keep_results must be a count >= 0 or None, got -1",
        ),
        (
            {"keep_results_for": -1},
            ValueError,
            "keep_results_for must be seconds >= 0 or None, got -1",
        ),
    ],
)
def test_options_are_checked(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{message}$"):
        PostgresJournal("postgresql://h/d", **options)


async def test_repr_shows_state(postgres_url: str) -> None:
    journal = PostgresJournal(postgres_url, instance="a")
    assert " down, 0 accepts and 0 ends queued" in repr(journal)
    async with running(postgres_url, instance="b") as live:
        assert repr(live).startswith(
            "<bulkhead PostgresJournal postgresql://postgres@127.0.0.1:"
        )
        assert " instance='b' open," in repr(live)
    assert " closed," in repr(live)


async def test_a_nul_in_an_error_is_written(postgres_url: str) -> None:
    async with running(postgres_url) as journal:
        await journal.accept([job()])
        (claimed,) = (await journal.claim(1, 1)).jobs
        now = time.time()
        journal.finish(
            Finish(claimed.id, claimed.lease, "failed", 1, now, now, None, "E: a\x00b")
        )
        await eventually(lambda: committed(journal, claimed.id, "failed"), "lost")
        record = await journal.get(claimed.id)
        assert record is not None
        assert record.error == "E: a\ufffdb"


def test_from_url_takes_its_settings_from_the_query() -> None:
    journal = PostgresJournal.from_url(
        "postgresql://u:pw@h:5/d?sslmode=disable&lease=30&heartbeat=5&poll=0.5"
        "&listen=off&instance=web-1&keep_results=10&keep_results_for=60",
        poll=9.0,
    )
    assert journal.location == "postgresql://u@h:5/d?sslmode=disable"
    assert (journal.lease, journal.heartbeat, journal.poll) == (30.0, 5.0, 0.5)
    assert (journal.listen, journal.instance) == (False, "web-1")
    assert (journal.keep_results, journal.keep_results_for) == (10, 60.0)
    default = PostgresJournal.from_url("postgresql://h/d?listen=on", poll=9.0)
    assert (default.listen, default.poll, default.lease) == (True, 9.0, 15.0)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lease=soon", "lease must be seconds, got 'soon'"),
        ("keep_results=1.5", "keep_results must be a count, got '1.5'"),
        ("listen=yes", "listen must be on or off, got 'yes'"),
    ],
)
def test_from_url_refuses_bad_settings(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        PostgresJournal.from_url(f"postgresql://h/d?{query}")


async def test_a_connection_in_use_at_close_is_closed_after_its_call(
    postgres_url: str,
) -> None:
    journal = PostgresJournal(postgres_url)
    seen: list[psycopg.Connection[Any]] = []

    def slow(conn: psycopg.Connection[Any]) -> None:
        seen.append(conn)
        conn.execute("SELECT pg_sleep(0.3)")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal._conns.run, slow)
        await trio.sleep(0.1)
        await trio.to_thread.run_sync(journal._conns.close)
    assert seen[0].closed


async def test_a_burst_of_accepts_is_split_into_bounded_transactions(
    postgres_url: str,
) -> None:
    async with running(postgres_url) as journal:
        answers: dict[int, list[int]] = {}

        async def submit(n: int) -> None:
            answers[n] = [a.id for a in await journal.accept([job()] * 9000)]

        async with trio.open_nursery() as nursery:
            for n in range(4):  # 36,000 jobs: more than one transaction
                nursery.start_soon(submit, n)
        ids = [i for n in range(4) for i in answers[n]]
        assert len(set(ids)) == 36_000
        assert all(a == sorted(a) for a in answers.values())
        assert await journal.counts() == {1: {"queued": 36_000}}
