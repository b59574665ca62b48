"""The SQLite journal: one process owns one file, and it is the queue.

One writer connection, used only from :func:`trio.to_thread.run_sync` under a
:class:`trio.CapacityLimiter` of 1, and a second connection for reads (WAL
lets readers run beside the writer; ``:memory:`` has one connection for
both). A single writer task takes whatever piled up since its last
transaction (submissions, claims, starts, ends, releases, cancels) and
commits it in one (group commit): a burst costs one fsync. WAL, with
``synchronous=FULL`` for a transaction that holds submissions or cancels: an
accepted job survives a crash of the process and of the machine. Transactions of claims,
starts, ends and releases alone skip their fsync (``NORMAL``): a crash of the
process loses none of them, a power loss may queue the last few jobs again
(and forget that they started).

Ownership: :meth:`SQLiteJournal.open` takes an exclusive ``flock`` on
``<file>.lock`` for the life of the process, so a second ``bulkhead serve``
on the same file refuses to start instead of running the first one's jobs.
Rows a dead owner left ``running`` are queued again at open (at least once).

A failed write (disk full, I/O error) fails the submissions and claims of
that transaction at once; the starts, ends and releases in it stay queued in
memory and are retried with backoff until they commit. With nothing to retry, the
writer probes with a one-page write at the same backoff, so
:attr:`~SQLiteJournal.writable` (``/ready``) comes back by itself. SQLite
rolls a transaction back by itself on some errors (``SQLITE_FULL``): the
rollback here runs only if a transaction is still open, so the log shows the
real error.

Counters of rows per pool and state are read once at open (an index scan)
and kept exact by the writer, which is the only one to change rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, final

import attrs
import trio

from ._journal import (
    ACTS_ON,
    MEMORY,
    TERMINAL,
    Accepted,
    Action,
    Claim,
    Claimed,
    Finish,
    JobFilter,
    JobRecord,
    Journal,
    JournalLocked,
    JournalUnavailable,
    NewJob,
    NewOperation,
    OperationRecord,
    OperationState,
    PendingStart,
    Release,
    Start,
    State,
    filter_from_json,
    filter_to_json,
)

log = logging.getLogger("bulkhead.service.journal")
_T = TypeVar("_T")

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    args TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    lease INTEGER NOT NULL DEFAULT 0,
    accepted_at REAL NOT NULL,
    run_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, run_at, id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    filter TEXT NOT NULL,
    reason TEXT NOT NULL,
    who TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    matched INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    last_id INTEGER NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0,
    finished_at REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS operations_state ON operations (state, id);
"""
# Version 1 was 0.1's journal: state 'accepted' for unfinished jobs and a
# 'resumed' count; no run_at, runs or lease.
_FROM_VERSION_1 = """
ALTER TABLE jobs ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN run_at REAL;
UPDATE jobs SET run_at = accepted_at, runs = resumed;
UPDATE jobs SET state = 'queued' WHERE state = 'accepted';
DROP INDEX IF EXISTS jobs_state;
"""
_COLUMNS = (
    "id, type, priority, state, args, idempotency_key, attempts, runs,"
    " accepted_at, run_at, started_at, finished_at, result, error"
)
RETRY_BACKOFF = (0.05, 2.0)
"""First and longest wait, in seconds, before a failed write is tried again."""
CLOSE_TIMEOUT = 10.0
"""Seconds :meth:`SQLiteJournal.run` keeps retrying unwritten ends at close."""


@final
@attrs.define(eq=False)
class _Pending:
    """A call waiting for the writer's next transaction."""

    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: JournalUnavailable | None = None

    async def wait(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


@final
@attrs.define(eq=False)
class _Batch:
    """What one transaction writes."""

    accepts: list[tuple[Sequence[NewJob], _Pending]] = attrs.field(factory=list)
    claims: list[tuple[int, int, _Pending]] = attrs.field(factory=list)
    cancels: list[tuple[int, _Pending]] = attrs.field(factory=list)
    starts: list[PendingStart] = attrs.field(factory=list)
    finishes: list[Finish] = attrs.field(factory=list)
    releases: list[Release] = attrs.field(factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.accepts
            or self.claims
            or self.cancels
            or self.starts
            or self.finishes
            or self.releases
        )

    def waiters(self) -> Iterator[_Pending]:
        yield from (pending for _, pending in self.accepts)
        yield from (pending for *_, pending in self.claims)
        yield from (pending for _, pending in self.cancels)


@final
class SQLiteJournal(Journal):
    """The journal in a SQLite file (see the module docstring).

    Args:
      path: the file, or ``":memory:"`` (nothing survives a restart).
      keep_results: most finished jobs kept.
      keep_results_for: seconds a finished job is kept.
    """

    def __init__(
        self, path: str, *, keep_results: int = 10_000, keep_results_for: float = 3600
    ) -> None:
        self.location = path
        self.durable = path != MEMORY
        self._keep_results = keep_results
        self._keep_results_for = keep_results_for
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(1)
        self._lock_fd: int | None = None
        self._batch = _Batch()
        self._work = trio.Event()
        self._closing = False
        self._writable = True
        self._last_prune = 0.0
        self._counts: Counter[tuple[int, State]] = Counter()
        # Ends queued but not committed yet: get() shows them at once.
        self._ending: dict[int, Finish] = {}
        self._wakers: dict[int, tuple[trio.Event, float | None]] = {}
        self._synchronous = "FULL"

    def __repr__(self) -> str:
        return f"<bulkhead.service.SQLiteJournal {self.location!r}>"

    @property
    def writable(self) -> bool:
        return self._writable

    # ------------------------------------------------------------- opening

    async def open(self) -> int:
        try:
            return await trio.to_thread.run_sync(self._open)
        except (sqlite3.Error, OSError) as exc:
            self._close_connections()
            raise JournalUnavailable(self._why(exc)) from None

    def _why(self, exc: BaseException) -> str:
        text = exc.strerror if isinstance(exc, OSError) else str(exc)
        return f"journal {self.location}: {text}"

    def _open(self) -> int:
        if self.durable:
            self._lock()
        writer = sqlite3.connect(
            self.location, check_same_thread=False, isolation_level=None
        )
        self._writer = writer
        if self.durable:
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA synchronous=FULL")
        self._migrate(writer)
        requeued = writer.execute(
            "UPDATE jobs SET state = 'queued' WHERE state = 'running'"
        ).rowcount
        for priority, state, count in writer.execute(
            "SELECT priority, state, count(*) FROM jobs GROUP BY priority, state"
        ):
            self._counts[priority, state] = count
        if self.durable:
            self._reader = sqlite3.connect(
                self.location, check_same_thread=False, isolation_level=None
            )
            self._reader.execute("PRAGMA query_only=1")
        else:
            self._reader = writer
            self._read_limiter = self._write_limiter
        return requeued

    def _lock(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.location))
        if not os.path.isdir(directory):
            raise JournalUnavailable(
                f"journal {self.location}: directory {directory} does not exist"
            )
        if os.path.isdir(self.location):
            raise JournalUnavailable(
                f"journal {self.location}: is a directory; give a file path"
            )
        fd = os.open(self.location + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(
                f"journal {self.location}: another bulkhead serve process owns "
                "it; stop that one, or give this one another --journal"
            ) from None
        self._lock_fd = fd

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalUnavailable(
                f"journal {self.location}: written by a newer bulkhead (schema "
                f"{version}, this one knows {SCHEMA_VERSION}); upgrade bulkhead"
            )
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        with self._transaction(db):
            if "resumed" in columns and "runs" not in columns:
                _execute_script(db, _FROM_VERSION_1)
            _execute_script(db, _SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    @contextlib.contextmanager
    def _transaction(db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # SQLite has rolled back by itself after SQLITE_FULL and a few
            # other errors; a second ROLLBACK would hide the real error.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -------------------------------------------------------------- writer

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        backoff = RETRY_BACKOFF[0]
        give_up_at = float("inf")
        try:
            while True:
                if not self._batch:
                    if self._closing:
                        return
                    if self._writable:
                        await self._work.wait()
                        self._work = trio.Event()
                    # Else the last write failed and nothing is left to retry:
                    # commit an empty batch as a probe (the failure below
                    # waited already). /ready answers 503 until a write
                    # succeeds, and a load balancer sends none to an instance
                    # that is not ready.
                batch, self._batch = self._batch, _Batch()
                if await self._commit(batch):
                    backoff = RETRY_BACKOFF[0]
                    continue
                # Starts, ends and releases go back to the head of the queue.
                self._batch.starts[:0] = batch.starts
                self._batch.finishes[:0] = batch.finishes
                self._batch.releases[:0] = batch.releases
                if self._closing:
                    give_up_at = min(give_up_at, trio.current_time() + CLOSE_TIMEOUT)
                    if trio.current_time() >= give_up_at:
                        self._abandon_unwritten()
                        return
                with trio.move_on_after(backoff):
                    await self._work.wait()
                backoff = min(backoff * 2, RETRY_BACKOFF[1])
        finally:
            with trio.CancelScope(shield=True):
                await self._close_when_idle()

    async def _close_when_idle(self) -> None:
        # Each connection is used by one thread at a time, under its limiter:
        # closing the reader while a read runs on it crashes SQLite, so the
        # close waits for both limiters.
        if self._read_limiter is self._write_limiter:
            await trio.to_thread.run_sync(
                self._close_connections, limiter=self._write_limiter
            )
            return
        async with self._read_limiter:
            await trio.to_thread.run_sync(
                self._close_connections, limiter=self._write_limiter
            )

    def _abandon_unwritten(self) -> None:
        ids = [f.id for f in self._batch.finishes] + [
            r.id for r in self._batch.releases
        ]
        # Jobs still waiting for their start to be counted: they never ran.
        for pending in self._batch.starts:
            pending.done.set()
        log.error(
            "journal %s: %d job ends could not be written; those jobs run "
            "again at the next start",
            self.location,
            len(ids),
            extra={"event": "journal_unwritten", "jobs": ids},
        )

    async def _commit(self, batch: _Batch) -> bool:
        now = time.time()
        prune = now - self._last_prune >= 1.0
        try:
            changes = await trio.to_thread.run_sync(
                self._write, batch, prune, now, limiter=self._write_limiter
            )
        except sqlite3.Error as exc:
            error = JournalUnavailable(self._why(exc))
            if self._writable:
                log.error(
                    "journal write failed: %s", error, extra={"event": "journal_failed"}
                )
            self._writable = False
            for pending in batch.waiters():
                pending.error = error
                pending.done.set()
            return False
        if not self._writable:
            log.info(
                "journal %s writes again",
                self.location,
                extra={"event": "journal_recovered"},
            )
        self._writable = True
        if prune:
            self._last_prune = now
        self._counts.update(changes)
        for finish in batch.finishes:
            if self._ending.get(finish.id) is finish:
                del self._ending[finish.id]
        for pending in batch.waiters():
            pending.done.set()
        for start in batch.starts:
            start.done.set()
        self._wake(batch)
        return True

    def _wake(self, batch: _Batch) -> None:
        for jobs, _ in batch.accepts:
            for job in jobs:
                waker = self._wakers.get(job.priority)
                if waker is not None and (waker[1] is None or job.run_at < waker[1]):
                    waker[0].set()
        if batch.releases:
            for event, _ in self._wakers.values():
                event.set()

    def _write(self, batch: _Batch, prune: bool, now: float) -> Counter[Any]:
        db = self._writer
        if db is None:
            raise sqlite3.OperationalError("the journal is closed")
        changes: Counter[Any] = Counter()
        if self.durable:
            self._sync_for(db, batch)
        with self._transaction(db):
            if not batch:
                # A probe: rewriting the schema version writes a page.
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for jobs, pending in batch.accepts:
                pending.result = self._insert(db, jobs, changes)
            # Before the ends: a job's start and end may share a transaction.
            for start in batch.starts:
                start.applied = self._start(db, start.start)
            for finish in batch.finishes:
                self._finish(db, finish, changes)
            for release in batch.releases:
                self._release(db, release, changes)
            for id, pending in batch.cancels:
                pending.result = self._cancel(db, id, now, changes)
            for priority, limit, pending in batch.claims:
                pending.result = self._claim(db, priority, limit, now, changes)
            if prune:
                self._prune(db, now, changes)
        return changes

    def _sync_for(self, db: sqlite3.Connection, batch: _Batch) -> None:
        # Only what a client was promised must reach the disk before the
        # answer: submissions and cancels. Claims, ends and releases commit
        # without an fsync of their own (WAL, synchronous=NORMAL): a crashed
        # process loses none of them; a power loss may undo the last few,
        # which queues those jobs again (at least once), and the next durable
        # commit syncs them all.
        level = "FULL" if batch.accepts or batch.cancels else "NORMAL"
        if level != self._synchronous:
            db.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level

    def _insert(
        self, db: sqlite3.Connection, jobs: Sequence[NewJob], changes: Counter[Any]
    ) -> list[Accepted]:
        answers = []
        for job in jobs:
            row = db.execute(
                "INSERT INTO jobs (type, priority, args, idempotency_key, state,"
                " accepted_at, run_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                (
                    job.type,
                    job.priority,
                    job.args,
                    job.idempotency_key,
                    job.accepted_at,
                    job.run_at,
                ),
            ).fetchone()
            if row is not None:
                answers.append(Accepted(row[0], duplicate=False))
                changes[job.priority, "queued"] += 1
            else:
                (id,) = db.execute(
                    "SELECT id FROM jobs WHERE idempotency_key = ?",
                    (job.idempotency_key,),
                ).fetchone()
                answers.append(Accepted(id, duplicate=True))
        return answers

    def _start(self, db: sqlite3.Connection, start: Start) -> bool:
        applied = db.execute(
            "UPDATE jobs SET runs = runs + 1, started_at = ?"
            " WHERE id = ? AND lease = ? AND state = 'running'",
            (start.started_at, start.id, start.lease),
        ).rowcount
        if not applied:
            self._fenced(start.id, start.lease, "start")
        return bool(applied)

    def _finish(
        self, db: sqlite3.Connection, finish: Finish, changes: Counter[Any]
    ) -> None:
        row = db.execute(
            "UPDATE jobs SET state = ?, attempts = ?, started_at = ?,"
            " finished_at = ?, result = ?, error = ?"
            " WHERE id = ? AND lease = ? AND state = 'running' RETURNING priority",
            (
                finish.state,
                finish.attempts,
                finish.started_at,
                finish.finished_at,
                finish.result,
                finish.error,
                finish.id,
                finish.lease,
            ),
        ).fetchone()
        if row is None:
            self._fenced(finish.id, finish.lease, "end")
            return
        changes[row[0], "running"] -= 1
        changes[row[0], finish.state] += 1

    def _release(
        self, db: sqlite3.Connection, release: Release, changes: Counter[Any]
    ) -> None:
        row = db.execute(
            "UPDATE jobs SET state = 'queued'"
            " WHERE id = ? AND lease = ? AND state = 'running' RETURNING priority",
            (release.id, release.lease),
        ).fetchone()
        if row is None:
            self._fenced(release.id, release.lease, "release")
            return
        changes[row[0], "running"] -= 1
        changes[row[0], "queued"] += 1

    def _fenced(self, id: int, lease: int, what: str) -> None:
        log.warning(
            "job %s: %s dropped, its lease %d is no longer the job's",
            id,
            what,
            lease,
            extra={"event": "journal_fenced", "job": id, "lease": lease},
        )

    def _cancel(
        self, db: sqlite3.Connection, id: int, now: float, changes: Counter[Any]
    ) -> JobRecord | None:
        found = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (id,))
        before = _record(found.fetchone())
        if before is not None and before.state == "queued":
            db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?,"
                " error = 'cancelled' WHERE id = ?",
                (now, id),
            )
            changes[before.priority, "queued"] -= 1
            changes[before.priority, "cancelled"] += 1
        return before

    def _claim(
        self,
        db: sqlite3.Connection,
        priority: int,
        limit: int,
        now: float,
        changes: Counter[Any],
    ) -> Claim:
        rows = db.execute(
            "UPDATE jobs SET state = 'running', lease = lease + 1"
            " WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'"
            " AND priority = ? AND run_at <= ? ORDER BY run_at, id LIMIT ?)"
            " RETURNING id, type, priority, args, runs, accepted_at, run_at, lease",
            (priority, now, limit),
        ).fetchall()
        jobs = sorted((Claimed(*row) for row in rows), key=lambda c: (c.run_at, c.id))
        changes[priority, "queued"] -= len(jobs)
        changes[priority, "running"] += len(jobs)
        (next_run_at,) = db.execute(
            "SELECT min(run_at) FROM jobs WHERE state = 'queued' AND priority = ?",
            (priority,),
        ).fetchone()
        return Claim(tuple(jobs), next_run_at)

    def _prune(self, db: sqlite3.Connection, now: float, changes: Counter[Any]) -> None:
        pruned = db.execute(
            "DELETE FROM jobs WHERE finished_at < ? RETURNING priority, state",
            (now - self._keep_results_for,),
        ).fetchall()
        finished = sum(
            n for (_, state), n in (self._counts + changes).items() if state in TERMINAL
        ) - len(pruned)
        if finished > self._keep_results:
            pruned += db.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at"
                " IS NOT NULL ORDER BY finished_at LIMIT ?) RETURNING priority, state",
                (finished - self._keep_results,),
            ).fetchall()
        for priority, state in pruned:
            changes[priority, state] -= 1

    async def _submit(self, add: Callable[[_Pending], None]) -> Any:
        if self._closing:
            raise JournalUnavailable(f"journal {self.location}: closing")
        pending = _Pending()
        add(pending)
        self._work.set()
        return await pending.wait()

    # --------------------------------------------------------- the queue

    async def accept(self, jobs: Sequence[NewJob]) -> list[Accepted]:
        result: list[Accepted] = await self._submit(
            lambda p: self._batch.accepts.append((jobs, p))
        )
        return result

    async def claim(self, priority: int, limit: int) -> Claim:
        result: Claim = await self._submit(
            lambda p: self._batch.claims.append((priority, limit, p))
        )
        return result

    async def wait_for_jobs(self, priority: int, until: float | None) -> None:
        event = trio.Event()
        self._wakers[priority] = (event, until)
        deadline = (
            float("inf")
            if until is None
            else trio.current_time() + max(0.0, until - time.time())
        )
        try:
            with trio.move_on_at(deadline):
                await event.wait()
        finally:
            del self._wakers[priority]

    async def started(self, start: Start) -> bool:
        pending = PendingStart(start)
        self._batch.starts.append(pending)
        self._work.set()
        return await pending.wait()

    def finish(self, finish: Finish) -> None:
        self._ending[finish.id] = finish
        self._batch.finishes.append(finish)
        self._work.set()

    def release(self, release: Release) -> None:
        self._batch.releases.append(release)
        self._work.set()

    async def cancel(self, id: int) -> JobRecord | None:
        result: JobRecord | None = await self._submit(
            lambda p: self._batch.cancels.append((id, p))
        )
        return result

    def close(self) -> None:
        self._closing = True
        self._work.set()

    # --------------------------------------------------------------- reads

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        def query() -> list[tuple[Any, ...]]:
            db = self._reader
            if db is None:
                raise sqlite3.OperationalError("the journal is closed")
            return db.execute(sql, params).fetchall()

        try:
            return await trio.to_thread.run_sync(query, limiter=self._read_limiter)
        except sqlite3.Error as exc:
            raise JournalUnavailable(self._why(exc)) from None

    def _with_ending(
        self, record: JobRecord, before: Mapping[int, Finish] | None = None
    ) -> JobRecord:
        # ``before``: the ends queued when the read began. An end committed
        # (and dropped from _ending) while the read ran is in neither the
        # row the read saw nor _ending.
        finish = self._ending.get(record.id) or (before or {}).get(record.id)
        if finish is None or record.state != "running":
            return record
        return attrs.evolve(
            record,
            state=finish.state,
            attempts=finish.attempts,
            started_at=finish.started_at,
            finished_at=finish.finished_at,
            result=finish.result,
            error=finish.error,
        )

    async def get(self, id: int) -> JobRecord | None:
        before = dict(self._ending)
        rows = await self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (id,))
        record = _record(rows[0] if rows else None)
        return None if record is None else self._with_ending(record, before)

    async def list(
        self, filter: JobFilter, *, after: int, limit: int, now: float
    ) -> list[JobRecord]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [after]
        if filter.state == "scheduled":
            where += ["state = 'queued'", "run_at > ?"]
            params.append(now)
        elif filter.state == "queued":
            where += ["state = 'queued'", "run_at <= ?"]
            params.append(now)
        elif filter.state is not None:
            where.append("state = ?")
            params.append(filter.state)
        _match_columns(filter, where, params)
        before = dict(self._ending)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM jobs WHERE {' AND '.join(where)}"
            " ORDER BY id LIMIT ?",
            [*params, limit],
        )
        return [
            self._with_ending(r, before) for r in map(_record, rows) if r is not None
        ]

    async def last_of(self, keys: Sequence[str]) -> JobRecord | None:
        if not keys:
            await trio.lowlevel.checkpoint()
            return None
        before = dict(self._ending)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key IN"
            f" ({', '.join('?' * len(keys))}) ORDER BY run_at DESC, id DESC LIMIT 1",
            keys,
        )
        record = _record(rows[0] if rows else None)
        return None if record is None else self._with_ending(record, before)

    async def counts(self) -> Mapping[int, Mapping[State, int]]:
        await trio.lowlevel.checkpoint()
        counts: dict[int, dict[State, int]] = {}
        for (priority, state), n in self._counts.items():
            if n:
                counts.setdefault(priority, {})[state] = n
        return counts

    # ---------------------------------------------------------- operations
    # Each call is its own transaction on the writer connection, under the
    # writer's limiter, beside the group-commit batches: a chunk of 5,000
    # rows is one statement per action and should not wait for a batch, nor
    # make a batch wait longer than one chunk.

    async def _operate(
        self, write: Callable[[sqlite3.Connection, Counter[Any]], _T]
    ) -> _T:
        def transaction() -> tuple[_T, Counter[Any]]:
            db = self._writer
            if db is None or self._closing:
                raise sqlite3.OperationalError("the journal is closed")
            changes: Counter[Any] = Counter()
            with self._transaction(db):
                result = write(db, changes)
            return result, changes

        try:
            result, changes = await trio.to_thread.run_sync(
                transaction, limiter=self._write_limiter
            )
        except sqlite3.Error as exc:
            raise JournalUnavailable(self._why(exc)) from None
        self._counts.update(changes)
        if changes:
            # Requeued jobs are due now: every feeder looks again.
            for event, _ in self._wakers.values():
                event.set()
        return result

    async def start_operation(self, operation: NewOperation) -> OperationRecord:
        def write(db: sqlite3.Connection, changes: Counter[Any]) -> OperationRecord:
            (last_id,) = db.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()
            where, params = _matching(
                operation.filter, operation.action, operation.created_at
            )
            (matched,) = db.execute(
                f"SELECT count(*) FROM jobs WHERE id <= ? AND {where}",
                [last_id, *params],
            ).fetchone()
            row = db.execute(
                "INSERT INTO operations (action, filter, reason, who, created_at,"
                " state, matched, last_id) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)"
                f" RETURNING {_OPERATION_COLUMNS}",
                (
                    operation.action,
                    filter_to_json(operation.filter),
                    operation.reason,
                    operation.who,
                    operation.created_at,
                    matched,
                    last_id,
                ),
            ).fetchone()
            return _operation(row)  # type: ignore[return-value]  # just inserted

        return await self._operate(write)

    async def advance_operation(
        self, id: int, *, limit: int, now: float, also_done: int = 0
    ) -> OperationRecord | None:
        def write(
            db: sqlite3.Connection, changes: Counter[Any]
        ) -> OperationRecord | None:
            found = db.execute(
                f"SELECT {_OPERATION_COLUMNS} FROM operations WHERE id = ?", (id,)
            )
            op = _operation(found.fetchone())
            if op is None or op.state != "running":
                return op
            where, params = _matching(op.filter, op.action, op.created_at)
            rows = db.execute(
                "SELECT id, priority, state FROM jobs WHERE id > ? AND id <= ?"
                f" AND {where} ORDER BY id LIMIT ?",
                [op.cursor, op.last_id, *params, limit],
            ).fetchall()
            cursor = rows[-1][0] if rows else op.cursor
            # The chunk is (cursor, new cursor] under the same filter, in the
            # same transaction: exactly the rows selected above.
            chunk = f"id > ? AND id <= ? AND {where} AND state IN ({{}})"
            bounds = [op.cursor, cursor, *params]
            changed = _CHANGES[op.action]
            marks = ", ".join("?" * len(changed))
            if op.action == "requeue":
                db.execute(
                    "UPDATE jobs SET state = 'queued', run_at = ?, attempts = 0,"
                    " runs = 0, started_at = NULL, finished_at = NULL,"
                    " result = NULL, error = NULL WHERE " + chunk.format(marks),
                    [now, *bounds, *changed],
                )
            elif op.action == "cancel":
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?,"
                    " error = 'cancelled' WHERE " + chunk.format(marks),
                    [now, *bounds, *changed],
                )
            else:
                db.execute(
                    "DELETE FROM jobs WHERE " + chunk.format(marks),
                    [*bounds, *changed],
                )
            done = 0
            for _, priority, state in rows:
                if state in changed:
                    done += 1
                    changes[priority, state] -= 1
                    if op.action != "purge":
                        changes[priority, _BECOMES[op.action]] += 1
            finished = len(rows) < limit
            row = db.execute(
                "UPDATE operations SET cursor = ?, done = done + ?,"
                " state = ?, finished_at = ? WHERE id = ?"
                f" RETURNING {_OPERATION_COLUMNS}",
                (
                    cursor,
                    done + also_done,
                    "done" if finished else "running",
                    now if finished else None,
                    id,
                ),
            ).fetchone()
            return _operation(row)

        return await self._operate(write)

    async def end_operation(
        self, id: int, state: OperationState, *, now: float, error: str | None = None
    ) -> OperationRecord | None:
        def write(
            db: sqlite3.Connection, changes: Counter[Any]
        ) -> OperationRecord | None:
            found = db.execute(
                f"SELECT {_OPERATION_COLUMNS} FROM operations WHERE id = ?", (id,)
            )
            before = _operation(found.fetchone())
            if before is not None and before.state == "running":
                db.execute(
                    "UPDATE operations SET state = ?, finished_at = ?, error = ?"
                    " WHERE id = ?",
                    (state, now, error, id),
                )
            return before

        return await self._operate(write)

    async def get_operation(self, id: int) -> OperationRecord | None:
        rows = await self._read(
            f"SELECT {_OPERATION_COLUMNS} FROM operations WHERE id = ?", (id,)
        )
        return _operation(rows[0] if rows else None)

    async def list_operations(
        self,
        *,
        before: int | None = None,
        limit: int,
        state: OperationState | None = None,
    ) -> Sequence[OperationRecord]:
        where: list[str] = ["id < ?"]
        params: list[Any] = [2**63 - 1 if before is None else before]
        if state is not None:
            where.append("state = ?")
            params.append(state)
        rows = await self._read(
            f"SELECT {_OPERATION_COLUMNS} FROM operations"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [op for op in map(_operation, rows) if op is not None]

    # --------------------------------------------------------------- close

    def _close_connections(self) -> None:
        for db in {id(c): c for c in (self._reader, self._writer) if c}.values():
            db.close()
        self._reader = self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _record(row: tuple[Any, ...] | None) -> JobRecord | None:
    return None if row is None else JobRecord(*row)


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits the open transaction first.
    for statement in filter(str.strip, script.split(";")):
        db.execute(statement)


_OPERATION_COLUMNS = (
    "id, action, filter, reason, who, created_at, state, matched, done,"
    " last_id, cursor, finished_at, error"
)
_CHANGES: Mapping[Action, tuple[State, ...]] = {
    "requeue": ("failed", "cancelled"),
    "cancel": ("queued",),
    "purge": TERMINAL,
}
"""The rows an operation's chunk changes in the journal (a running job is
cancelled by its instance, not here)."""
_BECOMES: Mapping[Action, State] = {"requeue": "queued", "cancel": "cancelled"}


def _operation(row: tuple[Any, ...] | None) -> OperationRecord | None:
    if row is None:
        return None
    id, action, filter, *rest = row
    return OperationRecord(id, action, filter_from_json(filter), *rest)


def _matching(filter: JobFilter, action: Action, now: float) -> tuple[str, list[Any]]:
    """The ``WHERE`` condition for rows ``action`` acts on that ``filter``
    matches (as :meth:`SQLiteJournal.list` reads a filter), ``now`` telling
    scheduled from queued."""
    acts_on = ACTS_ON[action]
    where: list[str] = []
    params: list[Any] = []
    state = filter.state
    if state in ("scheduled", "queued"):
        where += [
            "state = 'queued'",
            "run_at > ?" if state == "scheduled" else "run_at <= ?",
        ]
        params.append(now)
        if "queued" not in acts_on:
            where.append("0")
    elif state is not None:
        where.append("state = ?")
        params.append(state)
        if state not in acts_on:
            where.append("0")
    else:
        where.append(f"state IN ({', '.join('?' * len(acts_on))})")
        params += acts_on
    _match_columns(filter, where, params)
    return " AND ".join(where), params


def _match_columns(filter: JobFilter, where: list[str], params: list[Any]) -> None:
    """Add the conditions on ``filter``'s type, pool and acceptance time."""
    for column, value, test in (
        ("type", filter.type, "="),
        ("priority", filter.priority, "="),
        ("accepted_at", filter.since, ">="),
        ("accepted_at", filter.until, "<"),
    ):
        if value is not None:
            where.append(f"{column} {test} ?")
            params.append(value)
