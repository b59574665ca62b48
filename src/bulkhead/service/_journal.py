"""The journal is the queue: the one interface every job store implements.

A job takes one road (STYLE.md, section 8): request → validated
:class:`NewJob` → one journal write (:meth:`Journal.accept`, committed before
the 202) → claimed by its pool's feeder (:meth:`Journal.claim`) → run → its
end written once (:meth:`Journal.finish`). Memory holds the jobs running and
a small prefetch per pool; the backlog stays in the store, however long.

Two stores implement it: SQLite (``_sqlite.py``, one process owns the file)
and PostgreSQL (``_postgres.py``, several instances share it, with leases).
The contract tests (``tests/test_journal.py``) run against both.

Design rules every implementation keeps:

* **Nothing accepted is lost.** :meth:`~Journal.accept` returns only after
  its rows are committed; if the write fails it raises
  :exc:`JournalUnavailable` and nothing of that call was recorded.
  :meth:`~Journal.finish` and :meth:`~Journal.release` never fail: they queue
  the write, which is retried until it commits, and :meth:`~Journal.get`
  shows a queued end at once, so a reader never sees a finished job as
  running. While writes fail, :attr:`~Journal.writable` is false (``/ready``
  answers 503).
* **Group commit.** Concurrent calls share transactions: a burst of
  submissions and job ends costs one fsync, not one each.
* **Claims are fenced.** Each claim carries a ``lease`` token; an end or
  release whose token is no longer the row's (the job was rescued and
  claimed again elsewhere) is refused, logged and dropped, never applied.
* **Times are Unix seconds** (``time.time()``); the HTTP edge formats them
  as RFC 3339.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from typing import Literal, final

import attrs
import trio

State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
"""A row's state. A ``queued`` row whose ``run_at`` is still ahead is shown
as ``scheduled``: that is time passing, not a write."""
TERMINAL: tuple[State, ...] = ("succeeded", "failed", "cancelled")
"""The states a job never leaves."""
MEMORY = ":memory:"
"""The journal location that keeps nothing across restarts."""


class JournalUnavailable(Exception):
    """The journal cannot be opened or cannot write now.

    The message names the store (path or URL without password) and the
    cause, e.g. ``journal /data/j.sqlite3: database or disk is full``.
    """


class JournalLocked(JournalUnavailable):
    """Another process owns this SQLite journal."""


@final
@attrs.frozen
class NewJob:
    """A validated submission, ready to be written."""

    type: str
    """The job type's registered name."""
    priority: int
    """The pool it runs in."""
    args: str
    """Its arguments, as JSON text (validated against the type's schema)."""
    accepted_at: float
    """When the service accepted it."""
    run_at: float
    """When it is due (``accepted_at`` unless delayed)."""
    idempotency_key: str | None = None
    """A key the client may repeat: one row per key, ever (while kept)."""


@final
@attrs.frozen
class Accepted:
    """What :meth:`Journal.accept` answers for one :class:`NewJob`."""

    id: int
    """The job's id (the first job's, for a repeated key)."""
    duplicate: bool
    """Whether its idempotency key was already recorded."""


@final
@attrs.frozen
class Claimed:
    """A due job handed to this instance to run."""

    id: int
    type: str
    priority: int
    args: str
    """JSON text."""
    runs: int
    """How often it started before this claim (:meth:`Journal.started`):
    more than zero means an earlier run was interrupted (crash, shutdown,
    lost lease). A claim that never started is not a run."""
    accepted_at: float
    run_at: float
    lease: int
    """The fencing token :meth:`Journal.finish` and :meth:`Journal.release`
    must carry."""


@final
@attrs.frozen
class Claim:
    """What :meth:`Journal.claim` answers."""

    jobs: tuple[Claimed, ...]
    """Due jobs, oldest ``run_at`` first, then lowest id."""
    next_run_at: float | None
    """The earliest ``run_at`` of the pool's jobs still queued (due or not),
    ``None`` if there are none: when to look again."""


@final
@attrs.frozen
class Finish:
    """The end of one run of a job."""

    id: int
    lease: int
    state: State
    """``succeeded``, ``failed`` or ``cancelled``."""
    attempts: int
    """Attempts of this run (retries included)."""
    started_at: float | None
    finished_at: float
    result: str | None
    """The return value as JSON text, for ``succeeded``."""
    error: str | None
    """``Type: message`` for ``failed``; ``cancelled`` for ``cancelled``."""


@final
@attrs.frozen
class Start:
    """A worker took a claimed job: one more run of it."""

    id: int
    lease: int
    started_at: float


@final
@attrs.define(eq=False)
class PendingStart:
    """A :class:`Start` waiting for the writer (both stores queue them)."""

    start: Start
    done: trio.Event = attrs.field(factory=trio.Event)
    applied: bool = False
    """Set with ``done``: whether the lease was still the job's."""

    async def wait(self) -> bool:
        await self.done.wait()
        return self.applied


@final
@attrs.frozen
class Release:
    """A claimed job given back to the queue (shutdown), with its lease."""

    id: int
    lease: int


@final
@attrs.frozen
class JobRecord:
    """One job as the journal has it: the only view of a job there is."""

    id: int
    type: str
    priority: int
    state: State
    args: str
    idempotency_key: str | None
    attempts: int
    runs: int
    accepted_at: float
    run_at: float
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None


@final
@attrs.frozen
class JobFilter:
    """Which jobs :meth:`Journal.list` returns; ``None`` matches all.

    ``state="scheduled"`` means queued with ``run_at`` after ``now``;
    ``state="queued"`` means queued and due by ``now``.
    """

    state: State | Literal["scheduled"] | None = None
    type: str | None = None
    priority: int | None = None
    since: float | None = None
    """Accepted at or after this time."""
    until: float | None = None
    """Accepted before this time."""


Action = Literal["requeue", "cancel", "purge"]
"""What an operation does to every job its filter matches."""
OperationState = Literal["running", "done", "aborted", "failed"]
"""An operation's state: ``running`` until its last chunk is written
(``done``), it is aborted, or it fails."""
ACTS_ON: Mapping[Action, tuple[State, ...]] = {
    "requeue": ("failed", "cancelled"),
    "cancel": ("queued", "running"),
    "purge": TERMINAL,
}
"""The rows each action may change: a filter narrows these, never widens
them. ``cancel`` changes ``queued`` rows (scheduled ones too) in the journal;
``running`` ones are cancelled by the instance running them."""


def filter_to_json(filter: JobFilter) -> str:
    """``filter`` as the JSON text an operation stores."""
    return json.dumps(attrs.asdict(filter), sort_keys=True)


def filter_from_json(text: str) -> JobFilter:
    """The :class:`JobFilter` :func:`filter_to_json` wrote."""
    return JobFilter(**json.loads(text))


@final
@attrs.frozen
class NewOperation:
    """An operation to record (``POST /operations``)."""

    action: Action
    filter: JobFilter
    reason: str
    """Why, in the operator's words (the audit log shows it)."""
    who: str
    """The name of the token that asked for it."""
    created_at: float


@final
@attrs.frozen
class OperationRecord:
    """One operation as the journal has it: its audit entry and progress."""

    id: int
    action: Action
    filter: JobFilter
    reason: str
    who: str
    created_at: float
    state: OperationState
    matched: int
    """Rows the filter matched among those the action acts on
    (:data:`ACTS_ON`), counted when it was recorded."""
    done: int
    """Rows changed so far (and running jobs cancelled on this instance)."""
    last_id: int
    """The highest job id when it was recorded: jobs accepted later are
    never touched."""
    cursor: int
    """Every matching job with an id up to here has been dealt with."""
    finished_at: float | None
    error: str | None
    """Why it failed, for ``failed``."""


class Journal(abc.ABC):
    """A durable job queue (see the module docstring).

    Life cycle: :meth:`open`, then ``await nursery.start(journal.run)`` (the
    writer and any background task), then the calls below; :meth:`close`
    makes :meth:`run` commit what is queued and return.
    """

    location: str
    """Where it stores jobs, as logs show it (a path, or a URL without its
    password)."""
    durable: bool
    """False for ``:memory:``: nothing survives a restart."""

    @property
    @abc.abstractmethod
    def writable(self) -> bool:
        """False while writes fail (``/ready`` answers 503)."""

    @abc.abstractmethod
    async def open(self) -> int:
        """Open or create the store, migrating its schema; return how many
        jobs an earlier process left running, now queued again (0 where
        leases do that, on PostgreSQL).

        Raises:
          JournalUnavailable: naming the store and why it cannot be opened.
          JournalLocked: if another process owns it (SQLite).
        """

    @abc.abstractmethod
    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write (group commit), renew leases, rescue; return after
        :meth:`close` once everything queued is committed (or, if writes
        keep failing, once the close timeout passed, saying what stays
        unwritten)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Make :meth:`run` flush and return (idempotent)."""

    @abc.abstractmethod
    async def accept(self, jobs: Sequence[NewJob]) -> list[Accepted]:
        """Record ``jobs`` in one transaction, all or nothing; return once
        committed, one :class:`Accepted` per job in order.

        A key seen before (earlier, or earlier in ``jobs``) answers the first
        job's id with ``duplicate=True`` and records nothing new.

        Raises:
          JournalUnavailable: if the write failed: nothing was recorded.
        """

    @abc.abstractmethod
    async def claim(self, priority: int, limit: int) -> Claim:
        """Take up to ``limit`` due jobs of pool ``priority``: they become
        ``running`` here (their ``runs`` are counted when they start).

        Raises:
          JournalUnavailable: if the store cannot be read or written now.
        """

    @abc.abstractmethod
    async def wait_for_jobs(self, priority: int, until: float | None) -> None:
        """Return when a job of pool ``priority`` may have become due: a
        submission to it, ``until`` (Unix time) passing, or, where other
        instances submit, a notification or the poll interval."""

    @abc.abstractmethod
    async def started(self, start: Start) -> bool:
        """Count one run of a claimed job and record when it started; return
        once committed (retried until it is, as :meth:`finish`), before the
        job's function is called. So a job that kills its process is counted
        at every run, and a job claimed beside it that never started is not.

        Returns whether the job is still this instance's: ``False`` if its
        lease was lost (rescued elsewhere): the run must not go on.
        """

    @abc.abstractmethod
    def finish(self, finish: Finish) -> None:
        """Queue the end of a run; it is committed by the writer, retried
        until it is, and shown by :meth:`get` at once."""

    @abc.abstractmethod
    def release(self, release: Release) -> None:
        """Queue giving a claimed job back to the queue (as :meth:`finish`)."""

    @abc.abstractmethod
    async def cancel(self, id: int) -> JobRecord | None:
        """Cancel job ``id`` if it is queued (or scheduled); return its record
        as it was *before* (``None`` if unknown), so its state says what
        happened: ``queued`` means this call cancelled it; a running job is
        left as it is (the instance running it cancels it and records the
        end); a finished one too.

        Raises:
          JournalUnavailable: if the write failed.
        """

    @abc.abstractmethod
    async def get(self, id: int) -> JobRecord | None:
        """Job ``id`` (with any end not yet committed), or ``None``."""

    @abc.abstractmethod
    async def list(
        self, filter: JobFilter, *, after: int, limit: int, now: float
    ) -> list[JobRecord]:
        """Up to ``limit`` jobs matching ``filter`` with ids above ``after``,
        in id order (keyset pagination: stable under inserts)."""

    @abc.abstractmethod
    async def last_of(self, keys: Sequence[str]) -> JobRecord | None:
        """Of the jobs with these idempotency keys, the one with the latest
        ``run_at`` (then the highest id); ``None`` if none is kept. How a
        schedule finds its last run after a restart: it knows the keys its
        recent fire times would have. One probe of the unique key's index
        per key (at most a few hundred keys a call), never a scan.

        Raises:
          JournalUnavailable: if the store cannot be read now.
        """

    @abc.abstractmethod
    async def counts(self) -> Mapping[int, Mapping[State, int]]:
        """Rows per pool and state, from counters the writes keep (never a
        scan of the table)."""

    # ---------------------------------------------------------- operations
    # Set-based changes to every job a filter matches, in chunks keyed by
    # id: each chunk and the operation's progress commit together, so an
    # operation resumes exactly where a crash left it.

    @abc.abstractmethod
    async def start_operation(self, operation: NewOperation) -> OperationRecord:
        """Record ``operation`` as ``running``, with ``last_id`` (the highest
        job id now) and ``matched`` (rows of :data:`ACTS_ON` its filter
        matches up to ``last_id``), in one transaction.

        Raises:
          JournalUnavailable: if the write failed: nothing was recorded.
        """

    @abc.abstractmethod
    async def advance_operation(
        self, id: int, *, limit: int, now: float, also_done: int = 0
    ) -> OperationRecord | None:
        """Apply operation ``id`` to its next ``limit`` matching jobs (ids
        after its ``cursor``, up to its ``last_id``) and move the cursor, in
        one transaction; mark it ``done`` once none are left. ``also_done``
        is added to ``done`` (running jobs the caller cancelled). Counters
        stay exact. An operation that is not ``running`` is returned as it
        is; an unknown one is ``None``.

        requeue: ``failed``/``cancelled`` rows become ``queued``, due
        ``now``, with ``attempts`` and ``runs`` reset and their end cleared.
        cancel: ``queued`` rows become ``cancelled`` (``finished_at`` is
        ``now``). purge: finished rows are deleted.

        Raises:
          JournalUnavailable: if the write failed: nothing of that chunk was
            recorded.
        """

    @abc.abstractmethod
    async def end_operation(
        self, id: int, state: OperationState, *, now: float, error: str | None = None
    ) -> OperationRecord | None:
        """End operation ``id`` as ``state`` (``aborted`` or ``failed``) if it
        is ``running``; return its record as it was *before* (``None`` if
        unknown), so its state says whether this call ended it. Chunks
        already written stay written.

        Raises:
          JournalUnavailable: if the write failed.
        """

    @abc.abstractmethod
    async def get_operation(self, id: int) -> OperationRecord | None:
        """Operation ``id``, or ``None``."""

    @abc.abstractmethod
    async def list_operations(
        self,
        *,
        before: int | None = None,
        limit: int,
        state: OperationState | None = None,
    ) -> Sequence[OperationRecord]:
        """Up to ``limit`` operations (in ``state``, if given) with ids below
        ``before``, newest first: the audit log, a page at a time."""


def open_journal(
    location: str, *, keep_results: int, keep_results_for: float
) -> Journal:
    """The journal ``location`` names: a ``postgresql://`` URL, else a SQLite
    file path (``:memory:`` for none)."""
    # Imported here: each store pulls in its own driver, and the PostgreSQL
    # one is an optional extra.
    if location.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresJournal

        return PostgresJournal.from_url(
            location, keep_results=keep_results, keep_results_for=keep_results_for
        )
    from ._sqlite import SQLiteJournal

    return SQLiteJournal(
        location, keep_results=keep_results, keep_results_for=keep_results_for
    )
