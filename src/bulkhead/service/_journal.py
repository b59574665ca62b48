"""The journal: every accepted job, in SQLite, before its 202 is sent.

One ``sqlite3`` connection, used only through :func:`trio.to_thread.run_sync`
under a :class:`trio.CapacityLimiter` of 1, so one thread at a time touches
it and trio never blocks on disk. Writes go through a single writer task
that commits whatever has piled up since its last commit in one transaction
(group commit): a burst of submissions costs one fsync, not one each.

What is written:

* an accepted job (``state = 'accepted'``), awaited by :meth:`Journal.accept`
  before the service answers 202;
* its end (``succeeded``, ``failed``, ``cancelled`` with result or error),
  queued by :meth:`Journal.finished` and committed by the next batch; the
  service keeps the job in memory until then, and holds new submissions back
  while more than ``max_pending`` ends wait (memory stays bounded).

On start, rows still ``accepted`` are jobs that never finished: the service
runs them again (at-least-once). Finished rows are pruned past
``keep_results`` rows or ``keep_results_for`` seconds, so the file stays flat.
WAL mode with ``synchronous=FULL``: a committed job survives a crash of the
process and of the machine.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any, final

import attrs
import trio

MEMORY = ":memory:"
TERMINAL = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    args TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    resumed INTEGER NOT NULL DEFAULT 0,
    accepted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""
COLUMNS = (
    "id",
    "type",
    "priority",
    "args",
    "idempotency_key",
    "state",
    "attempts",
    "resumed",
    "accepted_at",
    "started_at",
    "finished_at",
    "result",
    "error",
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM jobs"


class JournalError(RuntimeError):
    """The journal could not record a job (disk full, file unreadable...)."""


@final
@attrs.define
class _Accept:
    type: str
    priority: int
    args: str
    idempotency_key: str | None
    accepted_at: float
    done: trio.Event = attrs.field(factory=trio.Event)
    id: int = 0
    created: bool = False
    error: str | None = None


@final
@attrs.frozen
class Finish:
    """The end of one job, as :meth:`Journal.finished` records it."""

    id: int
    state: str
    attempts: int
    started_at: float | None
    finished_at: float
    result: str | None
    error: str | None


@final
class Journal:
    """The service's job store (see the module docstring).

    Args:
      path: the SQLite file, or ``":memory:"`` (nothing survives a restart).
      keep_results: most finished jobs kept.
      keep_results_for: seconds a finished job is kept.
      max_pending: most job ends waiting to be written before
        :meth:`wait_for_room` holds submissions back.
    """

    def __init__(
        self,
        path: str,
        *,
        keep_results: int,
        keep_results_for: float,
        max_pending: int = 1000,
    ) -> None:
        self.path = path
        """The SQLite file, or ``":memory:"``."""
        self._keep_results = keep_results
        self._keep_results_for = keep_results_for
        self._max_pending = max_pending
        self._limiter = trio.CapacityLimiter(1)
        self._connection: sqlite3.Connection | None = None
        self._accepts: list[_Accept] = []
        self._forgets: list[int] = []
        self._finishes: list[Finish] = []
        self._work = trio.Event()
        self._room = trio.Event()
        self._committed = trio.Event()
        self._closing = False
        self._last_prune = 0.0
        self.on_committed: Any = None
        """Called with the list of :class:`Finish` each batch committed."""

    # --------------------------------------------------------------- set-up

    async def open(self) -> None:
        """Open (or create) the file and its table."""
        await self._run(self._open)

    def _open(self) -> None:
        connection = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None
        )
        if self.path != MEMORY:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA)
        self._connection = connection

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # --------------------------------------------------------------- writes

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer task: commit batches until :meth:`close`, then flush
        what is left and close the file."""
        task_status.started()
        try:
            while True:
                await self._work.wait()
                self._work = trio.Event()
                accepts, self._accepts = self._accepts, []
                forgets, self._forgets = self._forgets, []
                finishes, self._finishes = self._finishes, []
                if accepts or forgets or finishes:
                    await self._commit(accepts, forgets, finishes)
                if self._closing and not (
                    self._accepts or self._forgets or self._finishes
                ):
                    break
        finally:
            with trio.CancelScope(shield=True):
                await self._run(self._close)

    async def _commit(
        self, accepts: list[_Accept], forgets: list[int], finishes: list[Finish]
    ) -> None:
        now = time.time()
        prune = now - self._last_prune >= 1.0
        if prune:
            self._last_prune = now
        try:
            await self._run(self._write, accepts, forgets, finishes, prune, now)
        except sqlite3.Error as exc:
            for accept in accepts:
                accept.error = f"journal write failed: {exc}"
        for accept in accepts:
            accept.done.set()
        if self.on_committed is not None and finishes:
            self.on_committed(finishes)
        self._room.set()
        self._room = trio.Event()
        self._committed.set()
        self._committed = trio.Event()

    def _write(
        self,
        accepts: Sequence[_Accept],
        forgets: Sequence[int],
        finishes: Sequence[Finish],
        prune: bool,
        now: float,
    ) -> None:
        db = self._connection
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            for a in accepts:
                cursor = db.execute(
                    "INSERT INTO jobs (type, priority, args, idempotency_key, state,"
                    " accepted_at) VALUES (?, ?, ?, ?, 'accepted', ?)"
                    " ON CONFLICT (idempotency_key) DO NOTHING",
                    (a.type, a.priority, a.args, a.idempotency_key, a.accepted_at),
                )
                if cursor.rowcount == 1:
                    assert cursor.lastrowid is not None
                    a.id, a.created = cursor.lastrowid, True
                else:
                    row = db.execute(
                        "SELECT id FROM jobs WHERE idempotency_key = ?",
                        (a.idempotency_key,),
                    ).fetchone()
                    a.id, a.created = row[0], False
            db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in forgets])
            db.executemany(
                "UPDATE jobs SET state = ?, attempts = ?, started_at = ?,"
                " finished_at = ?, result = ?, error = ? WHERE id = ?",
                [
                    (
                        f.state,
                        f.attempts,
                        f.started_at,
                        f.finished_at,
                        f.result,
                        f.error,
                        f.id,
                    )
                    for f in finishes
                ],
            )
            if prune:
                self._prune(db, now)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        db.execute(
            "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
            (now - self._keep_results_for,),
        )
        db.execute(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at"
            " IS NOT NULL ORDER BY id DESC LIMIT -1 OFFSET ?)",
            (self._keep_results,),
        )

    async def accept(
        self,
        type: str,
        priority: int,
        args: str,
        idempotency_key: str | None,
        accepted_at: float,
    ) -> tuple[int, bool]:
        """Record an accepted job; return ``(id, created)`` once committed.

        ``created`` is false when ``idempotency_key`` was already used: the
        id is then the earlier job's, and nothing new was recorded.

        Raises:
          JournalError: if the write failed (nothing was recorded).
        """
        entry = _Accept(type, priority, args, idempotency_key, accepted_at)
        self._accepts.append(entry)
        self._work.set()
        await entry.done.wait()
        if entry.error is not None:
            raise JournalError(entry.error)
        return entry.id, entry.created

    def forget(self, id: int) -> None:
        """Delete job ``id``, which was recorded but never dispatched."""
        self._forgets.append(id)
        self._work.set()

    def finished(self, finish: Finish) -> None:
        """Record the end of a job, in the next batch."""
        self._finishes.append(finish)
        self._work.set()

    async def wait_for_room(self) -> None:
        """Wait while more than ``max_pending`` job ends wait to be written."""
        while len(self._finishes) > self._max_pending:
            await self._room.wait()

    async def flush(self) -> None:
        """Return once everything recorded so far is committed."""
        while self._accepts or self._forgets or self._finishes:
            await self._committed.wait()

    def close(self) -> None:
        """Make :meth:`run` flush what is pending and return."""
        self._closing = True
        self._work.set()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # ---------------------------------------------------------------- reads

    async def get(self, id: int) -> dict[str, Any] | None:
        """The row of job ``id``, or ``None``."""
        rows = await self._select(" WHERE id = ?", (id,))
        return rows[0] if rows else None

    async def find_key(self, idempotency_key: str) -> int | None:
        """The id of the job submitted with ``idempotency_key``, if kept."""
        rows = await self._select(" WHERE idempotency_key = ?", (idempotency_key,))
        return int(rows[0]["id"]) if rows else None

    async def list_jobs(
        self, state: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """Rows in id order, of one ``state`` (``"accepted"`` for unfinished)."""
        if state is None:
            return await self._select(" ORDER BY id LIMIT ? OFFSET ?", (limit, offset))
        return await self._select(
            " WHERE state = ? ORDER BY id LIMIT ? OFFSET ?", (state, limit, offset)
        )

    async def unfinished(self) -> list[dict[str, Any]]:
        """Accepted jobs that never finished, oldest first, each counted as
        one more resume."""
        return await self._run(self._take_unfinished)  # type: ignore[no-any-return]

    def _take_unfinished(self) -> list[dict[str, Any]]:
        db = self._connection
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        rows = db.execute(f"{_SELECT} WHERE state = 'accepted' ORDER BY id").fetchall()
        db.execute("UPDATE jobs SET resumed = resumed + 1 WHERE state = 'accepted'")
        db.execute("COMMIT")
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    async def count(self) -> int:
        """How many rows the journal holds."""
        rows = await self._run(self._query, "SELECT count(*) FROM jobs", ())
        return rows[0][0]  # type: ignore[no-any-return]

    async def _select(
        self, where: str, params: tuple[Any, ...]
    ) -> list[dict[str, Any]]:
        rows = await self._run(self._query, _SELECT + where, params)
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        db = self._connection
        if db is None:
            raise JournalError("the journal is closed")
        return db.execute(sql, params).fetchall()
