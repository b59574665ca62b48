"""The PostgreSQL journal: several service instances share one queue.

Every instance holds a :class:`PostgresJournal` on the same database. A job
is a row of ``bulkhead_jobs``; what makes sharing safe:

* **Claims** take due rows of one pool with ``FOR UPDATE SKIP LOCKED``,
  ordered by ``(run_at, id)``, a batch per statement. A claim writes the
  instance's name, a lease expiry and bumps the row's ``lease`` counter: that
  counter is the fencing token (:attr:`Claimed.lease`).
* **Leases** are kept in the database's clock (``clock_timestamp()``), so
  the instances' clocks may disagree. Each instance renews its own every
  ``heartbeat`` seconds, and rescues (back to ``queued``, their ``runs``
  kept) rows whose lease expired: a dead, hung or partitioned instance's
  jobs run again within ``lease + heartbeat``. Right after PostgreSQL itself
  restarted, nothing is rescued for one lease: the live instances renew
  first (their leases ran out while nobody could renew them).
* **Fencing**: a start (:meth:`~PostgresJournal.started`), an end
  (:meth:`~PostgresJournal.finish`) or a release updates its row only
  ``WHERE lease = <its token> AND state = 'running'``; a stale owner's late
  write matches nothing, is logged and dropped (a stale start also stops
  the run before it begins).
* **Group commit**: one writer task per instance commits every accept,
  start, finish and release queued since its last transaction in one
  transaction. With submissions in it, ``synchronous_commit`` is as the
  server has it (``on`` by default: a 202 survives a crash of PostgreSQL);
  without, it is ``off``: a crash of the instance loses none of them, a
  crash of PostgreSQL may run the last few jobs again.
* **Counts** are deltas the same transactions append to
  ``bulkhead_counts`` (insert-only: no row every writer fights over);
  the heartbeat folds them into one row per pool and state, so
  :meth:`~PostgresJournal.counts` sums a few dozen rows, whatever the
  number of jobs.
* **Wake-ups**: after a commit that queued jobs, ``NOTIFY bulkhead_jobs``
  (outside that transaction) tells the other instances which pools have
  work; a listening connection turns those into wake-ups. They are hints:
  every feeder also polls every ``poll`` seconds, which is what a lost
  notification, or ``listen=False`` (PgBouncer's transaction pooling,
  where LISTEN does not work), costs.

The driver is psycopg 3, synchronous, run in trio's worker threads under the
journal's own :class:`trio.CapacityLimiter`, on a few connections the
journal owns (:class:`_Connections`). psycopg's async API needs asyncio, and
psycopg_pool would run its own threads and timers outside the service's
nursery; a dozen lines of pool keep every connection and thread owned by
:meth:`PostgresJournal.run`. The listening connection needs no thread: it
waits on its socket with :func:`trio.lowlevel.wait_readable`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
import os
import socket
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar, cast, final

import attrs
import psycopg
import psycopg.errors
import trio

from ._journal import (
    ACTS_ON,
    TERMINAL,
    Accepted,
    Action,
    Claim,
    Claimed,
    Finish,
    JobFilter,
    JobRecord,
    Journal,
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

T = TypeVar("T")

CHANNEL: Final = "bulkhead_jobs"
"""The NOTIFY channel; the payload is the sending instance's name, a space,
and a comma-separated list of pools (an instance ignores its own)."""
MIGRATION_LOCK: Final = 0x62756C6B68656164  # "bulkhead"
"""The advisory lock key that serialises schema migrations."""
RETRY_MIN: Final = 0.05
RETRY_MAX: Final = 2.0
"""Seconds between write attempts while PostgreSQL cannot be reached."""
GROUP_LIMIT: Final = 20_000
"""Jobs one group-commit transaction takes at most (whole requests)."""
PURGE_BATCH: Final = 10_000
"""Rows the retention purge or a rescue handles per heartbeat at most."""
NOW: Final = "extract(epoch FROM clock_timestamp())::float8"
"""The database's clock, in Unix seconds: the one leases are kept in."""

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the queue, its counters.
    """
    CREATE SEQUENCE bulkhead_job_ids;
    CREATE TABLE bulkhead_jobs (
        id bigint PRIMARY KEY DEFAULT nextval('bulkhead_job_ids'),
        type text NOT NULL,
        priority integer NOT NULL,
        state text NOT NULL CHECK (
            state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
        args text NOT NULL,
        idempotency_key text UNIQUE,
        attempts integer NOT NULL DEFAULT 0,
        runs integer NOT NULL DEFAULT 0,
        accepted_at double precision NOT NULL,
        run_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        result text,
        error text,
        lease bigint NOT NULL DEFAULT 0,
        instance text,
        lease_expires double precision
    );
    ALTER SEQUENCE bulkhead_job_ids OWNED BY bulkhead_jobs.id;
    CREATE INDEX bulkhead_jobs_due ON bulkhead_jobs (priority, run_at, id)
        WHERE state = 'queued';
    CREATE INDEX bulkhead_jobs_leases ON bulkhead_jobs (lease_expires)
        WHERE state = 'running';
    CREATE INDEX bulkhead_jobs_instance ON bulkhead_jobs (instance)
        WHERE state = 'running';
    CREATE INDEX bulkhead_jobs_finished ON bulkhead_jobs (finished_at)
        WHERE state IN ('succeeded', 'failed', 'cancelled');
    CREATE TABLE bulkhead_counts (
        priority integer NOT NULL,
        state text NOT NULL,
        n bigint NOT NULL
    );
    """,
    # 2: operations (requeue, cancel, purge by filter) and their audit log.
    """
    CREATE TABLE bulkhead_operations (
        id bigserial PRIMARY KEY,
        action text NOT NULL,
        filter text NOT NULL,
        reason text NOT NULL,
        who text NOT NULL,
        created_at double precision NOT NULL,
        state text NOT NULL,
        matched bigint NOT NULL,
        done bigint NOT NULL DEFAULT 0,
        last_id bigint NOT NULL,
        scanned_to bigint NOT NULL DEFAULT 0,
        finished_at double precision,
        error text
    );
    CREATE INDEX bulkhead_operations_state ON bulkhead_operations (state, id);
    """,
)
"""Schema migrations; version N is ``MIGRATIONS[N - 1]``. Append, never edit."""

COLUMNS: Final = (
    "id, type, priority, state, args, idempotency_key, attempts, runs,"
    " accepted_at, run_at, started_at, finished_at, result, error"
)

_Deltas = dict[tuple[int, str], int]


def redact(url: str) -> str:
    """``url`` without its password, as logs and errors show it."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_SECONDS: Final = frozenset({"lease", "heartbeat", "poll", "keep_results_for"})


def _number(name: str, text: str, kind: type[float] | type[int]) -> float:
    try:
        return kind(text)
    except ValueError:
        what = "a count" if kind is int else "seconds"
        raise ValueError(f"{name} must be {what}, got {text!r}") from None


def _stale(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection was closed by the server (a restart): its
    goodbye is waiting on the socket, which libpq reads without blocking."""
    if conn.closed:
        return True
    try:
        conn.pgconn.consume_input()
    except psycopg.OperationalError:
        return True
    return conn.pgconn.status != psycopg.pq.ConnStatus.OK


def _is_outage(exc: psycopg.Error) -> bool:
    """Whether ``exc`` means PostgreSQL cannot be reached or cannot write
    (not a deadlock or a serialisation failure, which a retry resolves)."""
    return isinstance(
        exc, (psycopg.OperationalError, psycopg.InterfaceError)
    ) and not isinstance(
        exc, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
    )


def _execute(conn: psycopg.Connection[Any], query: str, params: Sequence[Any]) -> None:
    conn.execute(query, params)


def _record(row: Sequence[Any]) -> JobRecord:
    return JobRecord(*row)


def _add_deltas(deltas: _Deltas, rows: Iterable[tuple[int, str, int]]) -> None:
    for priority, state, n in rows:
        deltas[priority, state] = deltas.get((priority, state), 0) + n


def _write_deltas(conn: psycopg.Connection[Any], deltas: _Deltas) -> None:
    """Append counter deltas (in the caller's transaction)."""
    items = [(p, s, n) for (p, s), n in deltas.items() if n]
    if items:
        conn.execute(
            "INSERT INTO bulkhead_counts (priority, state, n)"
            " SELECT * FROM unnest(%s::integer[], %s::text[], %s::bigint[])",
            ([i[0] for i in items], [i[1] for i in items], [i[2] for i in items]),
        )


@final
class _Connections:
    """A few psycopg connections the journal owns, used in trio's worker
    threads under the journal's own limiter (never ``to_thread``'s global
    one). A connection that broke is closed and replaced by a new one at the
    next call, which is how the journal reconnects."""

    def __init__(
        self,
        url: str,
        size: int,
        options: Mapping[str, Any],
        setup: str | None = None,
    ) -> None:
        self._url = url
        self._options = dict(options)
        self._setup = setup
        self._limiter = trio.CapacityLimiter(size)
        # Threads are bounded by ``_limiter`` already; this one only keeps
        # them off to_thread's process-wide default limiter.
        self._threads = trio.CapacityLimiter(size)
        self._idle: list[psycopg.Connection[Any]] = []
        self._closed = False

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection (blocking: call it in a thread)."""
        conn = psycopg.connect(self._url, autocommit=True, **self._options)
        if self._setup is not None:
            conn.execute(self._setup)
        return conn

    async def run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Call ``fn(connection)`` in a worker thread; psycopg's errors
        propagate (the connection is dropped if it broke)."""
        async with self._limiter:
            idle = self._idle.pop() if self._idle else None
            try:
                conn, result, error = await trio.to_thread.run_sync(
                    self._call, idle, fn, limiter=self._threads
                )
            except BaseException:
                # Cancelled before the thread started (once started, the
                # call runs to its end): the connection was not used.
                if idle is not None:
                    self._idle.append(idle)
                raise
            if conn is not None:
                if self._closed:  # closed while this call ran
                    await trio.to_thread.run_sync(conn.close, limiter=self._threads)
                else:
                    self._idle.append(conn)
            if error is not None:
                raise error
            return result  # type: ignore[return-value]

    def _call(
        self,
        conn: psycopg.Connection[Any] | None,
        fn: Callable[[psycopg.Connection[Any]], T],
    ) -> tuple[psycopg.Connection[Any] | None, T | None, Exception | None]:
        try:
            if conn is not None and _stale(conn):
                conn.close()
                conn = None
            if conn is None:
                conn = self.connect()
            return conn, fn(conn), None
        except Exception as exc:
            if conn is not None and (
                conn.broken
                or conn.closed
                or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            ):
                conn.close()
                conn = None
            return conn, None, exc

    def close(self) -> None:
        """Close every idle connection, and any in use once its call
        returns (blocking)."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


@attrs.define(eq=False)
class _AcceptRequest:
    jobs: Sequence[NewJob]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: list[Accepted] | None = None
    error: JournalUnavailable | None = None


_WHAT = {Start: "start", Finish: "end", Release: "release"}
"""How the log names each write a stale lease drops."""


@final
@attrs.define(eq=False)
class _Written:
    """What one group-commit transaction did."""

    accepted: list[list[Accepted]]
    started: set[int]
    applied: list[int]
    dropped: list[Finish | Release | Start]
    queued: set[int]
    """Pools that got due work (for wake-ups)."""


@final
class PostgresJournal(Journal):
    """A journal in a PostgreSQL database that several instances share (see
    the module docstring for leases, fencing and wake-ups).

    Args:
      url: a ``postgresql://`` URL (libpq's keywords work as query
        parameters, e.g. ``?sslmode=require``).
      instance: this instance's name in claims and logs; unique per process
        (default: host, pid and a random suffix).
      lease: seconds a claim lasts without renewal; a job whose owner
        stopped renewing runs again after at most ``lease + heartbeat``.
      heartbeat: seconds between lease renewals (and rescues, counter
        folding and retention); at most half of ``lease``.
      poll: seconds a feeder waits at most before looking again, whatever
        the notifications say.
      listen: LISTEN for other instances' submissions. ``False`` for
        PgBouncer's transaction pooling: wake-ups come from the poll only.
      keep_results: keep at most this many finished jobs (oldest go first);
        ``None`` keeps all.
      keep_results_for: seconds a finished job is kept; ``None``: forever.
      connections: connections used for writes and reads (plus one to
        listen).
      connect_timeout: seconds to wait for a connection.
      close_timeout: seconds :meth:`run` keeps retrying queued writes after
        :meth:`close` while PostgreSQL cannot be reached.
    """

    durable = True

    def __init__(
        self,
        url: str,
        *,
        instance: str | None = None,
        lease: float = 15.0,
        heartbeat: float = 3.0,
        poll: float = 1.0,
        listen: bool = True,
        keep_results: int | None = None,
        keep_results_for: float | None = None,
        connections: int = 4,
        connect_timeout: float = 5.0,
        close_timeout: float = 10.0,
    ) -> None:
        for name, value in (
            ("lease", lease),
            ("heartbeat", heartbeat),
            ("poll", poll),
            ("connect_timeout", connect_timeout),
            ("close_timeout", close_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive seconds, got {value!r}")
        if heartbeat * 2 > lease:
            raise ValueError(
                f"heartbeat must be at most half the lease, got heartbeat="
                f"{heartbeat!r} and lease={lease!r}: one late renewal would "
                "lose every lease"
            )
        if isinstance(connections, bool) or not isinstance(connections, int):
            raise TypeError(f"connections must be an int, got {connections!r}")
        if connections < 2:
            raise ValueError(f"connections must be at least 2, got {connections!r}")
        if keep_results is not None and (
            isinstance(keep_results, bool)
            or not isinstance(keep_results, int)
            or keep_results < 0
        ):
            raise ValueError(
                f"keep_results must be a count >= 0 or None, got {keep_results!r}"
            )
        if keep_results_for is not None and not keep_results_for >= 0:
            raise ValueError(
                f"keep_results_for must be seconds >= 0 or None, "
                f"got {keep_results_for!r}"
            )
        self.location = redact(url)
        self.instance = instance or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.lease = float(lease)
        self.heartbeat = float(heartbeat)
        self.poll = float(poll)
        self.listen = listen
        self.keep_results = keep_results
        self.keep_results_for = keep_results_for
        self._close_timeout = close_timeout
        options: dict[str, Any] = {
            "connect_timeout": max(1, math.ceil(connect_timeout)),
            "application_name": f"bulkhead {self.instance}"[:63],
            # A peer that vanished (a cut network) is noticed in about 25 s
            # on TCP, rather than never, by the listening connection too.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        # A process stopped inside a transaction (SIGSTOP, a long pause)
        # keeps its rows locked, and the rescue skips locked rows: without
        # this its jobs would wait for it however long it stays stopped.
        # None of our transactions waits for anything between statements.
        setup: str | None = (
            "SET idle_in_transaction_session_timeout = "
            f"{max(1, round(self.lease * 1000))}"
        )
        if not listen:
            # PgBouncer's transaction pooling: no server-side prepared
            # statements (a statement may land on another server connection),
            # and no session settings (PgBouncer's own
            # idle_transaction_timeout takes the one above).
            options["prepare_threshold"] = None
            setup = None
        self._url = url
        self._conns = _Connections(url, connections, options, setup)
        self._listener = trio.CapacityLimiter(1)
        self._writable = False
        self._closed = False
        self._last_error = f"journal {self.location}: not opened"
        self._wake = trio.Event()
        self._accepts: list[_AcceptRequest] = []
        self._ends: dict[int, Finish | Release] = {}
        self._starts: list[PendingStart] = []
        self._wakeups: dict[int, trio.Event] = {}
        self._dirty: set[int] = set()
        self._last_counts: Mapping[int, Mapping[State, int]] = {}

    @classmethod
    def from_url(cls, url: str, **defaults: Any) -> PostgresJournal:
        """A journal for ``url``, whose query may carry this class's settings
        next to libpq's: ``lease``, ``heartbeat``, ``poll`` (seconds),
        ``listen`` (``on``/``off``), ``instance``, ``keep_results`` (a
        count) and ``keep_results_for`` (seconds); ``defaults`` fill in the
        rest. They are removed from the URL handed to libpq, e.g.
        ``postgresql://bulkhead@db/jobs?sslmode=require&lease=30&listen=off``.

        Raises:
          ValueError: for a setting that is not a number, or ``listen`` not
            ``on``/``off``.
        """
        parts = urllib.parse.urlsplit(url)
        kept: list[tuple[str, str]] = []
        options = dict(defaults)
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if name in _SECONDS:
                options[name] = _number(name, value, float)
            elif name == "keep_results":
                options[name] = _number(name, value, int)
            elif name == "listen":
                if value not in ("on", "off"):
                    raise ValueError(f"listen must be on or off, got {value!r}")
                options[name] = value == "on"
            elif name == "instance":
                options[name] = value
            else:
                kept.append((name, value))
        query = urllib.parse.urlencode(kept)
        return cls(urllib.parse.urlunsplit(parts._replace(query=query)), **options)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._writable else "down"
        return (
            f"<bulkhead PostgresJournal {self.location} instance={self.instance!r}"
            f" {state}, {len(self._accepts)} accepts and {len(self._ends)} ends"
            f" queued at {id(self):#x}>"
        )

    @property
    def writable(self) -> bool:
        """False while writes fail (``/ready`` answers 503)."""
        return self._writable and not self._closed

    def _unavailable(self, exc: BaseException) -> JournalUnavailable:
        return JournalUnavailable(f"journal {self.location}: {_cause(exc)}")

    # -- opening ----------------------------------------------------------

    async def open(self) -> int:
        """Connect and migrate the schema (under an advisory lock, so
        instances starting together migrate once). Returns 0: leases, not
        a restart, bring jobs back.

        Raises:
          JournalUnavailable: naming the URL (without password) and why.
        """
        try:
            await self._conns.run(self._migrate)
        except psycopg.Error as exc:
            await trio.to_thread.run_sync(self._conns.close, limiter=self._listener)
            raise self._unavailable(exc) from None
        self._writable = True
        self._last_error = ""
        return 0

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            with conn.transaction():
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS bulkhead_schema_version"
                    " (version integer NOT NULL)"
                )
                row = conn.execute(
                    "SELECT max(version) FROM bulkhead_schema_version"
                ).fetchone()
            version = (row[0] if row else None) or 0
            if version > len(MIGRATIONS):
                raise psycopg.DataError(
                    f"schema version {version} is newer than this bulkhead's "
                    f"({len(MIGRATIONS)}): upgrade bulkhead"
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                with conn.transaction():
                    conn.execute(MIGRATIONS[number - 1])
                    conn.execute(
                        "INSERT INTO bulkhead_schema_version VALUES (%s)", (number,)
                    )
                log.info(
                    "journal schema migrated to version %d",
                    number,
                    extra={"event": "journal_migrated", "version": number},
                )
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    # -- the background tasks ---------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write (group commit), renew leases, rescue, listen; return after
        :meth:`close` once everything queued is committed (or, if writes
        keep failing, once ``close_timeout`` passed, logging what stays
        unwritten)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._maintain)
                if self.listen:
                    nursery.start_soon(self._listen)
                task_status.started()
                await self._write_loop()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._conns.close, limiter=self._listener)

    def close(self) -> None:
        """Make :meth:`run` flush and return (idempotent)."""
        self._closed = True
        self._wake.set()

    async def _write_loop(self) -> None:
        backoff = RETRY_MIN
        deadline = math.inf
        while True:
            if self._closed:
                deadline = min(deadline, trio.current_time() + self._close_timeout)
            if not (self._accepts or self._ends or self._starts):
                if self._closed:
                    return
                if self._writable:
                    await self._wake.wait()
            self._wake = trio.Event()
            accepts = self._take_accepts()
            ends = list(self._ends.values())
            starts, self._starts = self._starts, []
            try:
                written = await self._conns.run(
                    functools.partial(
                        self._write,
                        batches=[a.jobs for a in accepts],
                        starts=[p.start for p in starts],
                        ends=ends,
                    )
                )
            except psycopg.Error as exc:
                error = self._unavailable(exc)
                if _is_outage(exc):
                    self._down(error)
                else:
                    # Not PostgreSQL being away: one bad write (e.g. a NUL
                    # character, which text cannot hold) fails the accepts
                    # that shared its transaction; ends are retried.
                    log.error(
                        "%s",
                        error,
                        extra={"event": "journal_write_failed"},
                    )
                for request in accepts:
                    request.error = error
                    request.done.set()
                self._starts[:0] = starts  # retried, as the ends
                if trio.current_time() >= deadline:
                    log.error(
                        "journal closed with %d job ends unwritten: they run "
                        "again once their leases expire",
                        len(self._ends),
                        extra={
                            "event": "journal_unwritten",
                            "jobs": sorted(self._ends),
                        },
                    )
                    for pending in self._starts:  # never ran: not counted
                        pending.done.set()
                    return
                await trio.sleep(min(backoff, max(0.0, deadline - trio.current_time())))
                backoff = min(backoff * 2, RETRY_MAX)
                continue
            backoff = RETRY_MIN
            self._up()
            # Wake this instance's feeders before the submitters return, so a
            # claim made after an accept returned consumes the wake-up.
            self._wake_pools(written.queued)
            for request, result in zip(accepts, written.accepted, strict=True):
                request.result = result
                request.done.set()
            for pending in starts:
                pending.applied = pending.start.id in written.started
                pending.done.set()
            for end in ends:
                if self._ends.get(end.id) is end:
                    del self._ends[end.id]
            for stale in written.dropped:
                log.warning(
                    "dropped a stale %s of job %d: its lease %d is no longer "
                    "the job's (it was rescued and claimed again)",
                    _WHAT[type(stale)],
                    stale.id,
                    stale.lease,
                    extra={
                        "event": "stale_write_dropped",
                        "job": stale.id,
                        "write": _WHAT[type(stale)],
                    },
                )
            if written.queued:
                await self._notify(written.queued)

    def _take_accepts(self) -> list[_AcceptRequest]:
        """The queued accepts for one transaction: all of them, or as many
        whole requests as fit in ``GROUP_LIMIT`` jobs (at least one)."""
        total = 0
        for count, request in enumerate(self._accepts):
            total += len(request.jobs)
            if total > GROUP_LIMIT and count:
                taken, self._accepts = self._accepts[:count], self._accepts[count:]
                self._wake.set()  # the rest go in the next transaction
                return taken
        taken, self._accepts = self._accepts, []
        return taken

    def _down(self, error: JournalUnavailable) -> None:
        if self._writable or str(error) != self._last_error:
            log.error(
                "%s; retrying",
                error,
                extra={"event": "journal_unavailable"},
            )
        self._writable = False
        self._last_error = str(error)
        self._wake.set()  # the writer probes until PostgreSQL answers again

    def _up(self) -> None:
        if not self._writable:
            log.warning(
                "journal %s writes again",
                self.location,
                extra={"event": "journal_available"},
            )
        self._writable = True
        self._last_error = ""

    def _write(
        self,
        conn: psycopg.Connection[Any],
        batches: list[Sequence[NewJob]],
        starts: list[Start],
        ends: list[Finish | Release],
    ) -> _Written:
        """One group-commit transaction (blocking)."""
        written = _Written(
            accepted=[], started=set(), applied=[], dropped=[], queued=set()
        )
        if not batches and not starts and not ends:
            conn.execute("SELECT 1")  # a probe while PostgreSQL was away
            return written
        deltas: _Deltas = {}
        with conn.transaction():
            if batches:
                written.accepted = self._insert(conn, batches, deltas, written.queued)
            else:
                # Starts and ends alone need not wait for the WAL's flush: a
                # crash of this process loses none of them; a crash of
                # PostgreSQL may run the last few jobs again (at least once).
                conn.execute("SET LOCAL synchronous_commit = off")
            if starts:
                # Before the ends: a job's start and end may share a commit.
                written.started = self._start(conn, starts)
            finishes = sorted(
                (e for e in ends if isinstance(e, Finish)), key=lambda e: e.id
            )
            releases = sorted(
                (e for e in ends if isinstance(e, Release)), key=lambda e: e.id
            )
            applied: set[int] = set()
            if finishes:
                rows = conn.execute(
                    "UPDATE bulkhead_jobs AS j SET state = v.state,"
                    " attempts = v.attempts,"
                    " started_at = coalesce(v.started_at, j.started_at),"
                    " finished_at = v.finished_at, result = v.result,"
                    " error = v.error, instance = NULL, lease_expires = NULL"
                    " FROM unnest(%s::bigint[], %s::bigint[], %s::text[],"
                    " %s::integer[], %s::float8[], %s::float8[], %s::text[],"
                    " %s::text[]) AS v(id, lease, state, attempts, started_at,"
                    " finished_at, result, error)"
                    " WHERE j.id = v.id AND j.lease = v.lease"
                    " AND j.state = 'running'"
                    " RETURNING j.id, j.priority, j.state",
                    (
                        [f.id for f in finishes],
                        [f.lease for f in finishes],
                        [f.state for f in finishes],
                        [f.attempts for f in finishes],
                        [f.started_at for f in finishes],
                        [f.finished_at for f in finishes],
                        [f.result for f in finishes],
                        [f.error for f in finishes],
                    ),
                ).fetchall()
                for id_, priority, state in rows:
                    applied.add(id_)
                    _add_deltas(
                        deltas, [(priority, "running", -1), (priority, state, 1)]
                    )
            if releases:
                rows = conn.execute(
                    "UPDATE bulkhead_jobs AS j SET state = 'queued',"
                    " instance = NULL, lease_expires = NULL"
                    " FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, lease)"
                    " WHERE j.id = v.id AND j.lease = v.lease"
                    " AND j.state = 'running'"
                    " RETURNING j.id, j.priority",
                    ([r.id for r in releases], [r.lease for r in releases]),
                ).fetchall()
                for id_, priority in rows:
                    applied.add(id_)
                    written.queued.add(priority)
                    _add_deltas(
                        deltas, [(priority, "running", -1), (priority, "queued", 1)]
                    )
            _write_deltas(conn, deltas)
        written.applied = sorted(applied)
        written.dropped = [
            *(s for s in starts if s.id not in written.started),
            *(e for e in ends if e.id not in applied),
        ]
        return written

    @staticmethod
    def _start(conn: psycopg.Connection[Any], starts: list[Start]) -> set[int]:
        """Count a run of each job whose lease is still the one started."""
        starts = sorted(starts, key=lambda s: s.id)
        rows = conn.execute(
            "UPDATE bulkhead_jobs AS j SET runs = j.runs + 1,"
            " started_at = v.started_at"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::float8[])"
            " AS v(id, lease, started_at)"
            " WHERE j.id = v.id AND j.lease = v.lease AND j.state = 'running'"
            " RETURNING j.id",
            (
                [s.id for s in starts],
                [s.lease for s in starts],
                [s.started_at for s in starts],
            ),
        ).fetchall()
        return {id_ for (id_,) in rows}

    def _insert(
        self,
        conn: psycopg.Connection[Any],
        batches: list[Sequence[NewJob]],
        deltas: _Deltas,
        queued: set[int],
    ) -> list[list[Accepted]]:
        """Insert every batch's new jobs; answer each job's id."""
        jobs = [job for batch in batches for job in batch]
        first: dict[str, int] = {}  # key -> index of its first job here
        fresh: list[int] = []  # indexes of the jobs to insert
        for index, job in enumerate(jobs):
            key = job.idempotency_key
            if key is None:
                fresh.append(index)
            elif key not in first:
                first[key] = index
                fresh.append(index)
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT nextval('bulkhead_job_ids') FROM generate_series(1, %s)",
                (len(fresh),),
            )
        ]
        ids.sort()
        id_of = dict(zip(fresh, ids, strict=True))
        # Keyed rows go in key order, so two instances inserting the same
        # keys lock them in the same order (no deadlock).
        order = sorted(
            fresh,
            key=lambda i: (
                jobs[i].idempotency_key is not None,
                jobs[i].idempotency_key or "",
            ),
        )
        rows = conn.execute(
            "INSERT INTO bulkhead_jobs (id, type, priority, state, args,"
            " idempotency_key, accepted_at, run_at)"
            " SELECT v.id, v.type, v.priority, 'queued', v.args, v.key,"
            " v.accepted_at, v.run_at"
            " FROM unnest(%s::bigint[], %s::text[], %s::integer[], %s::text[],"
            " %s::text[], %s::float8[], %s::float8[])"
            " AS v(id, type, priority, args, key, accepted_at, run_at)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (
                [id_of[i] for i in order],
                [jobs[i].type for i in order],
                [jobs[i].priority for i in order],
                [jobs[i].args for i in order],
                [jobs[i].idempotency_key for i in order],
                [jobs[i].accepted_at for i in order],
                [jobs[i].run_at for i in order],
            ),
        ).fetchall()
        inserted = {row[0] for row in rows}
        existing: dict[str, int] = {}
        taken = [k for k, i in first.items() if id_of[i] not in inserted]
        if taken:
            existing = dict(
                conn.execute(
                    "SELECT idempotency_key, id FROM bulkhead_jobs"
                    " WHERE idempotency_key = ANY(%s::text[])",
                    (taken,),
                ).fetchall()
            )
        per_pool = collections.Counter(
            jobs[i].priority for i in fresh if id_of[i] in inserted
        )
        _add_deltas(deltas, [(p, "queued", n) for p, n in per_pool.items()])
        queued.update(per_pool)
        answers: list[Accepted] = []
        for index, job in enumerate(jobs):
            key = job.idempotency_key
            if key is None:
                answers.append(Accepted(id_of[index], duplicate=False))
            elif key in existing:
                answers.append(Accepted(existing[key], duplicate=True))
            else:
                own = first[key] == index
                answers.append(Accepted(id_of[first[key]], duplicate=not own))
        result: list[list[Accepted]] = []
        start = 0
        for batch in batches:
            result.append(answers[start : start + len(batch)])
            start += len(batch)
        return result

    async def _notify(self, pools: set[int]) -> None:
        payload = f"{self.instance} {','.join(str(p) for p in sorted(pools))}"
        # A hint: the other instances' polls find the jobs anyway.
        with contextlib.suppress(psycopg.Error):
            await self._conns.run(
                functools.partial(
                    _execute,
                    query="SELECT pg_notify(%s, %s)",
                    params=(CHANNEL, payload),
                )
            )

    async def _maintain(self) -> None:
        """Every heartbeat: renew this instance's leases, rescue expired
        ones, fold counters, purge old results."""
        while True:
            try:
                await self._conns.run(self._renew)
                rescued = await self._conns.run(self._rescue)
                await self._conns.run(self._fold)
            except psycopg.Error as exc:
                if _is_outage(exc):
                    self._down(self._unavailable(exc))
                log.warning(
                    "journal %s: heartbeat failed: %s",
                    self.location,
                    _cause(exc),
                    extra={"event": "heartbeat_failed"},
                )
            else:
                if rescued:
                    self._wake_pools(rescued)
                    await self._notify(rescued)
            await trio.sleep(self.heartbeat)

    def _renew(self, conn: psycopg.Connection[Any]) -> None:
        # Rows the writer is finishing are locked: skip them rather than
        # wait (no lock cycle); they will not need a lease.
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(
                f"UPDATE bulkhead_jobs SET lease_expires = {NOW} + %s"
                " WHERE id IN (SELECT id FROM bulkhead_jobs WHERE state = 'running'"
                " AND instance = %s FOR UPDATE SKIP LOCKED)",
                (self.lease, self.instance),
            )

    def _rescue(self, conn: psycopg.Connection[Any]) -> set[int]:
        with conn.transaction():
            rows = conn.execute(
                "WITH expired AS (SELECT id, instance FROM bulkhead_jobs"
                f" WHERE state = 'running' AND lease_expires < {NOW}"
                " AND pg_postmaster_start_time()"
                " < clock_timestamp() - make_interval(secs => %s)"
                " ORDER BY lease_expires LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE bulkhead_jobs AS j SET state = 'queued',"
                " instance = NULL, lease_expires = NULL"
                " FROM expired WHERE j.id = expired.id"
                " RETURNING j.id, j.priority, expired.instance",
                (self.lease, PURGE_BATCH),
            ).fetchall()
            deltas: _Deltas = {}
            for _, priority, _ in rows:
                _add_deltas(
                    deltas, [(priority, "running", -1), (priority, "queued", 1)]
                )
            _write_deltas(conn, deltas)
        for id_, _, owner in rows:
            log.warning(
                "rescued job %d: the lease of %s expired",
                id_,
                owner,
                extra={"event": "job_rescued", "job": id_, "owner": owner},
            )
        return {priority for _, priority, _ in rows}

    def _fold(self, conn: psycopg.Connection[Any]) -> None:
        """Purge old results, then fold counter deltas into one row per pool
        and state (one instance at a time)."""
        with conn.transaction():
            row = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s)", (MIGRATION_LOCK + 1,)
            ).fetchone()
            if not (row and row[0]):
                return
            deltas: _Deltas = {}
            if self.keep_results_for is not None:
                rows = conn.execute(
                    "DELETE FROM bulkhead_jobs WHERE id IN (SELECT id FROM"
                    " bulkhead_jobs WHERE state IN ('succeeded', 'failed',"
                    " 'cancelled') AND finished_at < %s ORDER BY finished_at"
                    " LIMIT %s) RETURNING priority, state",
                    (time.time() - self.keep_results_for, PURGE_BATCH),
                ).fetchall()
                _add_deltas(deltas, ((p, s, -1) for p, s in rows))
            if self.keep_results is not None:
                total = conn.execute(
                    "SELECT coalesce(sum(n), 0) FROM bulkhead_counts WHERE state IN"
                    " ('succeeded', 'failed', 'cancelled')"
                ).fetchone()
                excess = (
                    int(total[0] if total else 0)
                    + sum(deltas.values())
                    - self.keep_results
                )
                if excess > 0:
                    rows = conn.execute(
                        "DELETE FROM bulkhead_jobs WHERE id IN (SELECT id FROM"
                        " bulkhead_jobs WHERE state IN ('succeeded', 'failed',"
                        " 'cancelled') ORDER BY finished_at LIMIT %s)"
                        " RETURNING priority, state",
                        (min(excess, PURGE_BATCH),),
                    ).fetchall()
                    _add_deltas(deltas, ((p, s, -1) for p, s in rows))
            _write_deltas(conn, deltas)
            conn.execute(
                "WITH gone AS (DELETE FROM bulkhead_counts RETURNING *)"
                " INSERT INTO bulkhead_counts (priority, state, n)"
                " SELECT priority, state, sum(n) FROM gone"
                " GROUP BY priority, state HAVING sum(n) <> 0"
            )

    async def _listen(self) -> None:
        """Turn other instances' NOTIFYs into wake-ups; reconnect on loss."""
        backoff = RETRY_MIN
        listened = False
        while True:
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = await trio.to_thread.run_sync(
                    self._conns.connect, limiter=self._listener
                )
                await trio.to_thread.run_sync(
                    conn.execute, f"LISTEN {CHANNEL}", limiter=self._listener
                )
                if listened:  # notifications were missed while away
                    self._wake_pools(set(self._wakeups))
                listened = True
                backoff = RETRY_MIN
                while True:
                    await trio.lowlevel.wait_readable(conn.pgconn.socket)
                    conn.pgconn.consume_input()
                    pools: set[int] = set()
                    while (note := conn.pgconn.notifies()) is not None:
                        sender, _, named = note.extra.decode().rpartition(" ")
                        if sender != self.instance:
                            pools.update(int(p) for p in named.split(",") if p)
                    if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
                        raise psycopg.OperationalError("the connection was lost")
                    self._wake_pools(pools)
            except (psycopg.Error, OSError) as exc:
                log.info(
                    "journal %s: listening failed: %s",
                    self.location,
                    _cause(exc),
                    extra={"event": "listen_failed"},
                )
            finally:
                if conn is not None:
                    conn.close()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX)

    def _wake_pools(self, pools: Iterable[int]) -> None:
        for priority in pools:
            self._dirty.add(priority)
            event = self._wakeups.pop(priority, None)
            if event is not None:
                event.set()

    # -- the calls ----------------------------------------------------------

    async def accept(self, jobs: Sequence[NewJob]) -> list[Accepted]:
        """Record ``jobs`` in one transaction (shared with other calls'),
        all or nothing; return once committed.

        A checkpoint; once the jobs are handed to the writer, cancelling the
        caller does not withdraw them (the call waits for the commit).

        Raises:
          JournalUnavailable: if the write failed or PostgreSQL is away:
            nothing was recorded.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not jobs:
            return []
        if self._closed:
            raise JournalUnavailable(f"journal {self.location}: closing")
        if not self._writable:
            raise JournalUnavailable(self._last_error)
        for index, job in enumerate(jobs):
            if "\x00" in f"{job.type}{job.args}{job.idempotency_key or ''}":
                # Refused here, alone: in the shared transaction it would fail
                # every other submission with it.
                raise JournalUnavailable(
                    f"journal {self.location}: job {index} holds a NUL character,"
                    " which PostgreSQL text cannot store; nothing was recorded"
                )
        request = _AcceptRequest(jobs)
        self._accepts.append(request)
        self._wake.set()
        with trio.CancelScope(shield=True):
            await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def claim(self, priority: int, limit: int) -> Claim:
        """Take up to ``limit`` due jobs of pool ``priority`` (``SKIP
        LOCKED``: instances never wait for, nor take, each other's rows);
        each gets a lease for this instance.

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """
        now = time.time()

        def claim(conn: psycopg.Connection[Any]) -> Claim:
            with conn.transaction():
                # As for ends: a claim PostgreSQL's crash forgets runs again.
                conn.execute("SET LOCAL synchronous_commit = off")
                rows = conn.execute(
                    "WITH picked AS (SELECT id FROM bulkhead_jobs"
                    " WHERE state = 'queued' AND priority = %s AND run_at <= %s"
                    " ORDER BY run_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
                    " UPDATE bulkhead_jobs AS j SET state = 'running',"
                    " lease = j.lease + 1, instance = %s,"
                    f" lease_expires = {NOW} + %s"
                    " FROM picked WHERE j.id = picked.id"
                    " RETURNING j.id, j.type, j.priority, j.args, j.runs,"
                    " j.accepted_at, j.run_at, j.lease",
                    (priority, now, limit, self.instance, self.lease),
                ).fetchall()
                if rows:
                    _write_deltas(
                        conn,
                        {
                            (priority, "queued"): -len(rows),
                            (priority, "running"): len(rows),
                        },
                    )
                # Not min(run_at): before ANALYZE, the planner aggregates
                # over every queued row (9 ms at 50,000) instead of reading
                # the first entry of the due index.
                row = conn.execute(
                    "SELECT run_at FROM bulkhead_jobs"
                    " WHERE state = 'queued' AND priority = %s"
                    " ORDER BY run_at LIMIT 1",
                    (priority,),
                ).fetchone()
            jobs = sorted((Claimed(*r) for r in rows), key=lambda c: (c.run_at, c.id))
            return Claim(tuple(jobs), row[0] if row else None)

        await trio.lowlevel.checkpoint_if_cancelled()
        if limit <= 0:
            return Claim((), None)
        # This claim sees every job committed before it: a wake-up already
        # pending for the pool is consumed.
        self._dirty.discard(priority)
        return await self._call(claim)

    async def _call(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            return await self._conns.run(fn)
        except psycopg.Error as exc:
            error = self._unavailable(exc)
            if _is_outage(exc):
                self._down(error)
            raise error from None

    async def wait_for_jobs(self, priority: int, until: float | None) -> None:
        """Return when pool ``priority`` may have due work: a submission here,
        a notification from another instance, ``until`` passing, or ``poll``
        seconds, whichever comes first. A checkpoint."""
        if priority in self._dirty:
            self._dirty.discard(priority)
            await trio.lowlevel.checkpoint()
            return
        delay = self.poll
        if until is not None:
            delay = min(delay, max(0.0, until - time.time()))
        event = self._wakeups.setdefault(priority, trio.Event())
        with trio.move_on_after(delay):
            await event.wait()
        self._dirty.discard(priority)

    async def started(self, start: Start) -> bool:
        """Count one run of a claimed job once committed (retried while
        PostgreSQL is away); ``False`` if its lease was lost meanwhile."""
        pending = PendingStart(start)
        self._starts.append(pending)
        self._wake.set()
        return await pending.wait()

    def finish(self, finish: Finish) -> None:
        """Queue the end of a run; the writer commits it (retrying while
        PostgreSQL is away); :meth:`get` shows it at once. An end whose lease
        is stale is logged and dropped. A NUL character in its error (text
        columns cannot hold one) is written as U+FFFD."""
        if finish.error is not None and "\x00" in finish.error:
            finish = attrs.evolve(finish, error=finish.error.replace("\x00", "\ufffd"))
        self._ends[finish.id] = finish
        self._wake.set()

    def release(self, release: Release) -> None:
        """Queue giving a claimed job back to the queue (as :meth:`finish`)."""
        self._ends[release.id] = release
        self._wake.set()

    async def cancel(self, id: int) -> JobRecord | None:
        """Cancel job ``id`` if it is queued (or scheduled); return its record
        as it was before (``queued``: this call cancelled it).

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """

        def cancel(conn: psycopg.Connection[Any]) -> JobRecord | None:
            with conn.transaction():
                row = conn.execute(
                    f"SELECT {COLUMNS} FROM bulkhead_jobs WHERE id = %s FOR UPDATE",
                    (id,),
                ).fetchone()
                if row is None:
                    return None
                before = _record(row)
                if before.state == "queued":
                    conn.execute(
                        "UPDATE bulkhead_jobs SET state = 'cancelled',"
                        " finished_at = %s, error = 'cancelled' WHERE id = %s",
                        (time.time(), id),
                    )
                    _write_deltas(
                        conn,
                        {
                            (before.priority, "queued"): -1,
                            (before.priority, "cancelled"): 1,
                        },
                    )
            return before

        await trio.lowlevel.checkpoint_if_cancelled()
        return self._overlay(await self._call(cancel))

    async def get(self, id: int) -> JobRecord | None:
        """Job ``id`` (with any end not yet committed), or ``None``.

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """

        def get(conn: psycopg.Connection[Any]) -> JobRecord | None:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM bulkhead_jobs WHERE id = %s", (id,)
            ).fetchone()
            return None if row is None else _record(row)

        await trio.lowlevel.checkpoint_if_cancelled()
        return self._overlay(await self._call(get))

    async def last_of(self, keys: Sequence[str]) -> JobRecord | None:
        """Of the jobs with these idempotency keys, the one with the latest
        ``run_at``, or ``None`` (probes of the unique key's index).

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """

        def last_of(conn: psycopg.Connection[Any]) -> JobRecord | None:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM bulkhead_jobs"
                " WHERE idempotency_key = ANY(%s::text[])"
                " ORDER BY run_at DESC, id DESC LIMIT 1",
                (list(keys),),
            ).fetchone()
            return None if row is None else _record(row)

        await trio.lowlevel.checkpoint_if_cancelled()
        return self._overlay(await self._call(last_of))

    def _overlay(self, record: JobRecord | None) -> JobRecord | None:
        """``record`` as it is once its queued end is written."""
        if record is None or record.state != "running":
            return record
        end = self._ends.get(record.id)
        if isinstance(end, Finish):
            return attrs.evolve(
                record,
                state=end.state,
                attempts=end.attempts,
                started_at=end.started_at or record.started_at,
                finished_at=end.finished_at,
                result=end.result,
                error=end.error,
            )
        if isinstance(end, Release):
            return attrs.evolve(record, state="queued")
        return record

    async def list(
        self, filter: JobFilter, *, after: int, limit: int, now: float
    ) -> list[JobRecord]:
        """Up to ``limit`` jobs matching ``filter`` with ids above ``after``,
        in id order.

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """
        clauses = ["id > %s"]
        params: list[Any] = [after]
        if filter.state == "scheduled":
            clauses.append("state = 'queued' AND run_at > %s")
            params.append(now)
        elif filter.state == "queued":
            clauses.append("state = 'queued' AND run_at <= %s")
            params.append(now)
        elif filter.state is not None:
            clauses.append("state = %s")
            params.append(filter.state)
        for column, op, value in (
            ("type", "=", filter.type),
            ("priority", "=", filter.priority),
            ("accepted_at", ">=", filter.since),
            ("accepted_at", "<", filter.until),
        ):
            if value is not None:
                clauses.append(f"{column} {op} %s")
                params.append(value)
        query = (
            f"SELECT {COLUMNS} FROM bulkhead_jobs WHERE {' AND '.join(clauses)}"
            " ORDER BY id LIMIT %s"
        )
        params.append(limit)

        def select(conn: psycopg.Connection[Any]) -> list[JobRecord]:
            return [_record(r) for r in conn.execute(query, params).fetchall()]

        await trio.lowlevel.checkpoint_if_cancelled()
        records = await self._call(select)
        return [r for r in map(self._overlay, records) if r is not None]

    async def counts(self) -> Mapping[int, Mapping[State, int]]:
        """Jobs per pool and state in the whole queue (every instance's),
        summed from the counter rows the writes append (a few dozen rows
        between heartbeats; never a scan of the jobs).

        While PostgreSQL cannot be reached it answers the last counts it
        read (the interface gives it no error to raise): a bounded
        estimate, as stale as the outage is long.
        """

        def counts(conn: psycopg.Connection[Any]) -> list[tuple[int, str, int]]:
            return conn.execute(
                "SELECT priority, state, sum(n)::bigint FROM bulkhead_counts"
                " GROUP BY priority, state"
            ).fetchall()

        await trio.lowlevel.checkpoint_if_cancelled()
        # Read even while writes fail: the counts must not stay stale after
        # PostgreSQL is back just because this instance has written nothing.
        try:
            rows = await self._call(counts)
        except JournalUnavailable:
            return self._last_counts
        result: dict[int, dict[State, int]] = {}
        for priority, state, n in rows:
            if n:
                result.setdefault(priority, {})[cast(State, state)] = n
        self._last_counts = result
        return result

    # -- operations ---------------------------------------------------------
    # An operation's chunk locks its jobs (FOR UPDATE, in id order) and its
    # own row, so instances that carry out the same operation take turns a
    # chunk at a time and never count a job twice.

    async def start_operation(self, operation: NewOperation) -> OperationRecord:
        """Record ``operation`` as running, with ``last_id`` and ``matched``.

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """
        where, params = _operation_where(
            operation.filter, operation.action, operation.created_at
        )

        def start(conn: psycopg.Connection[Any]) -> OperationRecord:
            with conn.transaction():
                (last_id,) = conn.execute(
                    "SELECT coalesce(max(id), 0) FROM bulkhead_jobs"
                ).fetchone() or (0,)
                (matched,) = conn.execute(
                    f"SELECT count(*) FROM bulkhead_jobs WHERE id <= %s AND {where}",
                    [last_id, *params],
                ).fetchone() or (0,)
                row = conn.execute(
                    "INSERT INTO bulkhead_operations (action, filter, reason, who,"
                    " created_at, state, matched, last_id)"
                    " VALUES (%s, %s, %s, %s, %s, 'running', %s, %s)"
                    f" RETURNING {OPERATION_COLUMNS}",
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
            assert row is not None
            return _operation(row)

        await trio.lowlevel.checkpoint_if_cancelled()
        return await self._call(start)

    async def advance_operation(
        self, id: int, *, limit: int, now: float, also_done: int = 0
    ) -> OperationRecord | None:
        """Apply operation ``id`` to its next ``limit`` jobs (see
        :meth:`Journal.advance_operation`).

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """

        def advance(
            conn: psycopg.Connection[Any],
        ) -> tuple[OperationRecord | None, set[int]]:
            with conn.transaction():
                row = conn.execute(
                    f"SELECT {OPERATION_COLUMNS} FROM bulkhead_operations"
                    " WHERE id = %s FOR UPDATE",
                    (id,),
                ).fetchone()
                if row is None:
                    return None, set()
                op = _operation(row)
                if op.state != "running":
                    return op, set()
                where, params = _operation_where(op.filter, op.action, op.created_at)
                rows = conn.execute(
                    "SELECT id, priority, state FROM bulkhead_jobs"
                    f" WHERE id > %s AND id <= %s AND {where}"
                    " ORDER BY id LIMIT %s FOR UPDATE",
                    [op.cursor, op.last_id, *params, limit],
                ).fetchall()
                changes = _CHANGES[op.action]
                ids = [r[0] for r in rows if r[2] in changes]
                deltas: _Deltas = {}
                for _, priority, state in rows:
                    if state in changes:
                        _add_deltas(deltas, [(priority, state, -1)])
                        if op.action != "purge":
                            _add_deltas(deltas, [(priority, _BECOMES[op.action], 1)])
                if ids and op.action == "requeue":
                    conn.execute(
                        "UPDATE bulkhead_jobs SET state = 'queued', run_at = %s,"
                        " attempts = 0, runs = 0, started_at = NULL,"
                        " finished_at = NULL, result = NULL, error = NULL,"
                        " instance = NULL, lease_expires = NULL"
                        " WHERE id = ANY(%s)",
                        (now, ids),
                    )
                elif ids and op.action == "cancel":
                    conn.execute(
                        "UPDATE bulkhead_jobs SET state = 'cancelled',"
                        " finished_at = %s, error = 'cancelled' WHERE id = ANY(%s)",
                        (now, ids),
                    )
                elif ids:
                    conn.execute("DELETE FROM bulkhead_jobs WHERE id = ANY(%s)", (ids,))
                _write_deltas(conn, deltas)
                finished = len(rows) < limit
                row = conn.execute(
                    "UPDATE bulkhead_operations SET scanned_to = %s,"
                    " done = done + %s, state = %s, finished_at = %s WHERE id = %s"
                    f" RETURNING {OPERATION_COLUMNS}",
                    (
                        rows[-1][0] if rows else op.cursor,
                        len(ids) + also_done,
                        "done" if finished else "running",
                        now if finished else None,
                        id,
                    ),
                ).fetchone()
            assert row is not None
            requeued = {p for _, p, s in rows if s in changes}
            return _operation(row), requeued if op.action == "requeue" else set()

        await trio.lowlevel.checkpoint_if_cancelled()
        record, pools = await self._call(advance)
        if pools:
            self._wake_pools(pools)
            await self._notify(pools)
        return record

    async def end_operation(
        self, id: int, state: OperationState, *, now: float, error: str | None = None
    ) -> OperationRecord | None:
        """End operation ``id`` if running; return it as it was before.

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """

        def end(conn: psycopg.Connection[Any]) -> OperationRecord | None:
            with conn.transaction():
                row = conn.execute(
                    f"SELECT {OPERATION_COLUMNS} FROM bulkhead_operations"
                    " WHERE id = %s FOR UPDATE",
                    (id,),
                ).fetchone()
                if row is None:
                    return None
                before = _operation(row)
                if before.state == "running":
                    conn.execute(
                        "UPDATE bulkhead_operations SET state = %s,"
                        " finished_at = %s, error = %s WHERE id = %s",
                        (state, now, error, id),
                    )
            return before

        await trio.lowlevel.checkpoint_if_cancelled()
        return await self._call(end)

    async def get_operation(self, id: int) -> OperationRecord | None:
        """Operation ``id``, or ``None``.

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """

        def get(conn: psycopg.Connection[Any]) -> OperationRecord | None:
            row = conn.execute(
                f"SELECT {OPERATION_COLUMNS} FROM bulkhead_operations WHERE id = %s",
                (id,),
            ).fetchone()
            return None if row is None else _operation(row)

        await trio.lowlevel.checkpoint_if_cancelled()
        return await self._call(get)

    async def list_operations(
        self,
        *,
        before: int | None = None,
        limit: int,
        state: OperationState | None = None,
    ) -> Sequence[OperationRecord]:
        """The audit log, newest first (see :meth:`Journal.list_operations`).

        Raises:
          JournalUnavailable: if PostgreSQL cannot be reached.
        """
        clauses = ["id < %s"]
        params: list[Any] = [2**63 - 1 if before is None else before]
        if state is not None:
            clauses.append("state = %s")
            params.append(state)
        query = (
            f"SELECT {OPERATION_COLUMNS} FROM bulkhead_operations"
            f" WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT %s"
        )
        params.append(limit)

        def select(conn: psycopg.Connection[Any]) -> list[OperationRecord]:
            return [_operation(r) for r in conn.execute(query, params).fetchall()]

        await trio.lowlevel.checkpoint_if_cancelled()
        return await self._call(select)


OPERATION_COLUMNS: Final = (
    "id, action, filter, reason, who, created_at, state, matched, done,"
    " last_id, scanned_to, finished_at, error"
)
_CHANGES: Mapping[Action, tuple[str, ...]] = {
    "requeue": ("failed", "cancelled"),
    "cancel": ("queued",),
    "purge": TERMINAL,
}
"""The rows an operation's chunk changes (a running job is cancelled by its
instance, not here)."""
_BECOMES: Mapping[Action, str] = {"requeue": "queued", "cancel": "cancelled"}


def _operation(row: Sequence[Any]) -> OperationRecord:
    id, action, filter, *rest = row
    return OperationRecord(id, action, filter_from_json(filter), *rest)


def _operation_where(
    filter: JobFilter, action: Action, now: float
) -> tuple[str, list[Any]]:
    """The condition for rows ``action`` acts on that ``filter`` matches."""
    acts_on = ACTS_ON[action]
    clauses: list[str] = []
    params: list[Any] = []
    state = filter.state
    if state in ("scheduled", "queued"):
        due = "> %s" if state == "scheduled" else "<= %s"
        clauses.append(f"state = 'queued' AND run_at {due}")
        params.append(now)
        if "queued" not in acts_on:
            clauses.append("false")
    elif state is not None:
        clauses.append("state = %s")
        params.append(state)
        if state not in acts_on:
            clauses.append("false")
    else:
        clauses.append("state = ANY(%s)")
        params.append(list(acts_on))
    for column, op, value in (
        ("type", "=", filter.type),
        ("priority", "=", filter.priority),
        ("accepted_at", ">=", filter.since),
        ("accepted_at", "<", filter.until),
    ):
        if value is not None:
            clauses.append(f"{column} {op} %s")
            params.append(value)
    return " AND ".join(clauses), params


__all__ = ["TERMINAL", "PostgresJournal"]
