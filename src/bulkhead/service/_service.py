"""The service's core: a dispatcher fed from the journal, which is the queue.

A job takes one road: :meth:`Service.submit` validates it and writes it to
the journal (the 202 is sent once that commit is done); the pool's
:class:`~bulkhead.service._feeder.Feeder` claims it when it is due and hands
it to a worker with the pool's blocking ``dispatch``, so the pool is the
backpressure; its end is written once. Memory holds the jobs running and a
small prefetch per pool (``_live``), whatever the backlog.

Shutdown stops the feeders (claimed jobs not yet started go back to the
queue), then lets running jobs finish within the grace period; a job the
shutdown stops was accepted and not finished, so it goes back to the queue
too and runs again at the next start. Only ``DELETE /jobs/{id}`` makes a job
``cancelled``. A job is run at most ``max_attempts`` times across restarts,
then failed with a reason (a job that kills its process would otherwise run
for ever).

This module raises domain errors (``_errors.py``); the HTTP edge maps them
to status codes.
"""

from __future__ import annotations

import collections
import datetime
import functools
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, final

import attrs
import outcome
import pydantic_core
import trio
from prometheus_client import CollectorRegistry

from bulkhead import (
    Dispatcher,
    Hooks,
    Job,
    JobCancelled,
    JobState,
    PoolConfig,
    Priority,
    Retry,
    open_dispatcher,
)
from bulkhead.metrics import PrometheusMetrics

from ._config import ServiceConfig
from ._errors import (
    BacklogFull,
    FieldError,
    JobFinished,
    JobNotFound,
    SubmissionInvalid,
    Unavailable,
)
from ._feeder import Feeder, Running
from ._journal import (
    TERMINAL,
    Accepted,
    Claimed,
    Finish,
    JobFilter,
    JobRecord,
    Journal,
    JournalUnavailable,
    NewJob,
    Release,
    State,
    open_journal,
)
from ._registry import ArgumentsInvalid, JobRegistry, resolve_priority
from ._schedules import Scheduler

log = logging.getLogger("bulkhead.service")

STATES = ("scheduled", "queued", "running", "succeeded", "failed", "cancelled")
"""The states a job reports (``GET /jobs/{id}``)."""


def pool_name(priority: int) -> str:
    """``"high"`` for 3, ``"7"`` for a pool with no name."""
    try:
        return Priority(priority).name.lower()
    except ValueError:
        return str(priority)


def _error_text(error: BaseException) -> str:
    if isinstance(error, JobCancelled):
        return "cancelled"
    if isinstance(error, trio.TooSlowError):
        return "TooSlowError: the job overran its timeout"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _utc(seconds: float | None) -> datetime.datetime | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


@final
@attrs.frozen
class Submission:
    """One job a client asks for, before validation."""

    type: str
    args: Mapping[str, Any] = attrs.field(factory=dict)
    priority: str | int | None = None
    idempotency_key: str | None = None
    delay: float | None = None
    """Seconds from now, >= 0."""
    run_at: datetime.datetime | None = None
    """A time with its offset."""


def job_view(record: JobRecord, running: Running | None, now: float) -> dict[str, Any]:
    """A job as ``GET /jobs/{id}`` shows it: its journal record, and what
    only this instance knows of it while it runs here."""
    state: str = record.state
    started_at, attempts = record.started_at, record.attempts
    if state == "queued" and record.run_at > now:
        state = "scheduled"
    elif state == "running" and running is not None:
        if running.job is None:
            state = "queued"  # claimed, waiting for a worker of this instance
        else:
            started_at, attempts = running.started_at, running.job.attempts
    return {
        "id": record.id,
        "type": record.type,
        "priority": record.priority,
        "state": state,
        "attempts": attempts,
        "resumed": max(record.runs - 1, 0),
        "accepted_at": _utc(record.accepted_at),
        "run_at": _utc(record.run_at),
        "started_at": _utc(started_at),
        "finished_at": _utc(record.finished_at),
        "result": None if record.result is None else json.loads(record.result),
        "error": record.error,
    }


@final
class _DrainRate:
    """Jobs ended per second over the last minute, per pool (for
    ``Retry-After``)."""

    WINDOW = 60

    def __init__(self) -> None:
        self._ends: dict[int, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=10_000)
        )

    def ended(self, priority: int, now: float) -> None:
        self._ends[priority].append(now)

    def per_second(self, priority: int, now: float) -> float:
        ends = self._ends[priority]
        while ends and ends[0] < now - self.WINDOW:
            ends.popleft()
        if not ends:
            return 0.0
        return len(ends) / max(now - ends[0], 1.0)


@final
class Service:
    """A running ``bulkhead serve``: dispatcher, journal and feeders.

    Args:
      config: the :class:`ServiceConfig`.
      registry: the job types it runs.
      journal: the job store; by default the one ``config.journal`` names.

    Raises:
      ValueError: for an empty registry, or a job type whose pool is not
        configured.
    """

    def __init__(
        self,
        config: ServiceConfig,
        registry: JobRegistry,
        journal: Journal | None = None,
    ) -> None:
        if not len(registry):
            raise ValueError("the registry has no job types: register at least one")
        self.config = config
        """Its configuration."""
        self.registry = registry
        """Its job types."""
        self.journal = journal or open_journal(
            config.journal,
            keep_results=config.keep_results,
            keep_results_for=config.keep_results_for,
        )
        """The job store (the queue)."""
        self.metrics = PrometheusMetrics(CollectorRegistry())
        """Prometheus metrics, in a registry of their own."""
        self.scheduler = Scheduler(
            registry.schedules, self.journal, self.metrics.registry
        )
        """Enqueues the registry's periodic jobs (``GET /schedules``)."""
        self.priorities = frozenset(p.priority for p in config.pools)
        """The configured pools."""
        for job_type in registry:
            if job_type.priority not in self.priorities:
                raise ValueError(
                    f"job type {job_type.name!r} runs in pool "
                    f"{pool_name(job_type.priority)!r}, which is not configured "
                    f"(pools: {', '.join(map(pool_name, sorted(self.priorities)))})"
                )
        self.started_at = time.time()
        self.draining = False
        """Whether shutdown has begun (``/ready`` answers 503)."""
        self.requeued = 0
        """Jobs an earlier process left running, queued again at start."""
        self.accepted = 0
        """Jobs accepted since start."""
        self.refused = 0
        """Submissions refused for a full backlog since start."""
        self.interrupted = 0
        """Jobs the shutdown stopped before they finished (queued again)."""
        self._dispatcher: Dispatcher | None = None
        self._live: dict[int, Running] = {}
        self._drain_rate = _DrainRate()
        self._opened = False
        self._stop = trio.Event()
        self.stopped = trio.Event()
        """Set once the service has drained and closed its journal."""
        self.journal_closed = trio.Event()
        """Set once the journal has written what it had and closed."""

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Pools up, not draining, and the journal writes."""
        return (
            self._dispatcher is not None and not self.draining and self.journal.writable
        )

    async def open(self) -> None:
        """Open the journal (:meth:`run` does it if this was not called).

        Raises:
          JournalUnavailable: naming the journal and why it cannot be
            opened, or that another process owns it.
        """
        self.requeued = await self.journal.open()
        self._opened = True

    def stop(self) -> None:
        """Begin shutdown: refuse submissions, drain, close (idempotent)."""
        self.draining = True
        self._stop.set()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until :meth:`stop`, then drain within the grace period.

        Use as ``await nursery.start(service.run)``: it returns (to the
        nursery) once the journal is open and the pools take jobs. It opens
        the journal unless :meth:`open` did.

        Raises:
          JournalUnavailable: if the journal cannot be opened (before
            ``started``).
        """
        if not self._opened:
            await self.open()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._run_journal)
                try:
                    await self._serve(task_status)
                finally:
                    self.journal.close()
        finally:
            self.stopped.set()
        total = self._dispatcher.statistics().total if self._dispatcher else None
        log.info(
            "stopped",
            extra={
                "event": "stopped",
                "accepted": self.accepted,
                "succeeded": total.succeeded if total else 0,
                "failed": total.failed if total else 0,
                "cancelled": (total.cancelled if total else 0) - self.interrupted,
                "interrupted": self.interrupted,
            },
        )

    async def _run_journal(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self.journal.run(task_status=task_status)
        finally:
            self.journal_closed.set()

    def _pools(self) -> list[PoolConfig]:
        config = self.config
        retry = (
            Retry(attempts=config.retry_attempts) if config.retry_attempts > 1 else None
        )
        return [
            PoolConfig(p.priority, p.workers, timeout=config.job_timeout, retry=retry)
            for p in config.pools
        ]

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        hooks = Hooks.combine(
            self.metrics.hooks,
            Hooks(
                on_started=self._started,
                on_retried=self._retried,
                on_finished=self._finished,
            ),
        )
        async with open_dispatcher(
            self._pools(), on_error="record", hooks=hooks
        ) as dispatcher:
            self._dispatcher = dispatcher
            self.metrics.watch(dispatcher)
            counts = await self.journal.counts()
            self._log_backlog(counts)
            # Jobs of a pool configured no more are fed too, to fail saying so.
            prefetch = {p.priority: p.queue for p in self.config.pools}
            prefetch.update(dict.fromkeys(counts.keys() - self.priorities, 1))
            async with trio.open_nursery() as feeders:
                for priority, n in prefetch.items():
                    feeder = Feeder(
                        self.journal, priority, n, start=self._start, live=self._live
                    )
                    feeders.start_soon(feeder.run)
                # Periodic jobs: enqueued as long as the feeders run.
                feeders.start_soon(self.scheduler.run)
                task_status.started()
                await self._stop.wait()
                self.draining = True
                log.info(
                    "draining",
                    extra={"event": "draining", "grace": self.config.grace_period},
                )
                feeders.cancel_scope.cancel()
            await dispatcher.finalize(self.config.grace_period)

    def _log_backlog(self, counts: Mapping[int, Mapping[State, int]]) -> None:
        if not self.journal.durable:
            return
        backlog = {pool_name(p): n.get("queued", 0) for p, n in sorted(counts.items())}
        log.info(
            "journal %s: %d jobs queued, %d of them left running by the last process",
            self.journal.location,
            sum(backlog.values()),
            self.requeued,
            extra={
                "event": "resumed",
                "backlog": backlog,
                "requeued": self.requeued,
            },
        )

    def abandon(self) -> list[int]:
        """Give up on jobs that ignored the shutdown's cancellation past the
        grace period: return their ids, which stay ``running`` in the journal
        and run again at the next start; close the journal."""
        ids = sorted(i for i, r in self._live.items() if r.job is not None)
        log.error(
            "%d jobs ignored cancellation past the grace period; abandoned, "
            "they run again at the next start",
            len(ids),
            extra={"event": "jobs_abandoned", "jobs": ids},
        )
        self.journal.close()
        return ids

    # ----------------------------------------------------------- submission

    async def submit(
        self, submissions: Sequence[Submission], *, batch: bool = False
    ) -> list[Accepted]:
        """Validate and record ``submissions``, all or nothing, in one
        transaction; return their ids in order once committed. With
        ``batch``, errors name the index of their item.

        Raises:
          SubmissionInvalid: naming each item and field that does not fit;
            nothing is recorded.
          BacklogFull: if a pool's backlog would pass ``max_backlog``.
          Unavailable: while draining, or if the journal cannot write.
        """
        if self.draining or self._dispatcher is None:
            raise Unavailable("the service is shutting down")
        now = time.time()
        jobs = self._validate(submissions, now, batch)
        await self._check_backlog(jobs, now)
        try:
            answers = await self.journal.accept(jobs)
        except JournalUnavailable as exc:
            raise Unavailable(f"{exc}; nothing was recorded") from None
        self.accepted += sum(not a.duplicate for a in answers)
        return answers

    def _validate(
        self, submissions: Sequence[Submission], now: float, batch: bool
    ) -> list[NewJob]:
        jobs, errors = [], []
        for index, submission in enumerate(submissions):
            try:
                jobs.append(self._new_job(submission, now))
            except SubmissionInvalid as exc:
                errors += [
                    attrs.evolve(f, index=index if batch else None) for f in exc.fields
                ]
        if errors:
            raise SubmissionInvalid(errors)
        return jobs

    def _new_job(self, submission: Submission, now: float) -> NewJob:
        try:
            job_type = self.registry[submission.type]
        except KeyError as exc:
            raise SubmissionInvalid([FieldError("type", exc.args[0])]) from None
        errors = []
        priority = job_type.priority
        if submission.priority is not None:
            try:
                priority = self._priority(submission.priority)
            except ValueError as exc:
                errors.append(FieldError("priority", str(exc)))
        try:
            job_type.validate(submission.args)
        except ArgumentsInvalid as exc:
            errors += [FieldError(field, message) for field, message in exc.errors]
        run_at = now
        if submission.delay is not None and submission.run_at is not None:
            errors.append(FieldError("delay", "give delay or run_at, not both"))
        elif submission.delay is not None:
            run_at = now + submission.delay
        elif submission.run_at is not None:
            run_at = max(now, submission.run_at.timestamp())
        if errors:
            raise SubmissionInvalid(errors)
        return NewJob(
            job_type.name,
            priority,
            json.dumps(submission.args),
            now,
            run_at,
            submission.idempotency_key,
        )

    def _priority(self, priority: str | int) -> int:
        number = resolve_priority(priority)
        if number not in self.priorities:
            names = ", ".join(map(pool_name, sorted(self.priorities)))
            raise ValueError(f"no pool {priority!r} is configured; pools: {names}")
        return number

    async def _check_backlog(self, jobs: Sequence[NewJob], now: float) -> None:
        adding = collections.Counter(job.priority for job in jobs)
        counts = await self.journal.counts()
        for priority, n in adding.items():
            backlog = counts.get(priority, {}).get("queued", 0)
            if backlog + n <= self.config.max_backlog:
                continue
            self.refused += len(jobs)
            rate = self._drain_rate.per_second(priority, now)
            excess = backlog + n - self.config.max_backlog
            wait = 60 if rate == 0 else math.ceil(excess / rate)
            raise BacklogFull(
                f"pool {pool_name(priority)!r} has {backlog} jobs waiting, its "
                f"limit is {self.config.max_backlog} (BULKHEAD_MAX_BACKLOG); "
                "retry later",
                retry_after=min(max(wait, 1), 3600),
            )

    # -------------------------------------------------------------- running

    async def _start(self, running: Running) -> None:
        """Hand a claimed job to a worker of its pool (the feeder's call).

        Raises:
          DispatcherClosed: if the shutdown began; the job did not start.
        """
        assert self._dispatcher is not None
        claimed = running.claimed
        if claimed.runs > self.config.max_attempts:
            self._end(
                running,
                "failed",
                None,
                None,
                f"run {claimed.runs - 1} times without finishing (its process "
                f"died or was stopped each time); BULKHEAD_MAX_ATTEMPTS is "
                f"{self.config.max_attempts}",
            )
            return
        try:
            job_type = self.registry[claimed.type]
            kwargs = job_type.validate(json.loads(claimed.args))
            if claimed.priority not in self.priorities:
                raise ValueError(f"pool {claimed.priority} is not configured")
        except (KeyError, ValueError) as exc:
            # Accepted by an earlier version of the registry or the pools.
            reason = exc.args[0] if isinstance(exc, KeyError) else exc
            self._end(running, "failed", None, None, f"cannot run: {reason}")
            return
        # A sync job type runs in a worker thread of its pool, abandoned on
        # cancel or timeout and holding its worker until it returns.
        running.job = await self._dispatcher.dispatch(
            functools.partial(job_type.fn, **kwargs),
            priority=claimed.priority,
            name=claimed.type,
            tag=running,
        )
        if running.cancel_requested:
            running.job.cancel()

    def _started(self, job: Job[Any]) -> None:
        running: Running = job.tag
        running.job = job  # dispatch() may not have returned it yet
        running.started_at = time.time()

    def _retried(self, job: Job[Any], error: Exception, delay: float) -> None:
        claimed: Claimed = job.tag.claimed
        log.warning(
            "job %s attempt %d failed; retrying",
            claimed.id,
            job.attempts,
            extra={
                "event": "job_retried",
                "job": claimed.id,
                "type": claimed.type,
                "priority": claimed.priority,
                "attempt": job.attempts,
                "error": _error_text(error),
                "delay": round(delay, 6),
            },
        )

    def _finished(self, job: Job[Any], duration: float | None) -> None:
        running: Running = job.tag
        if job.state is JobState.CANCELLED and not running.cancel_requested:
            self._interrupted(running)
            return
        result: str | None = None
        error: str | None = None
        if isinstance(job.outcome, outcome.Value):
            try:
                result = json.dumps(
                    pydantic_core.to_jsonable_python(job.outcome.value, fallback=repr)
                )
            except (TypeError, ValueError) as exc:
                error = f"the result is not JSON: {exc}"
        elif isinstance(job.outcome, outcome.Error):
            error = _error_text(job.outcome.error)
        state = job.state.value
        if error is not None and job.state is JobState.SUCCEEDED:
            state = "failed"
        self._end(running, state, running.started_at, result, error, job.attempts)
        log.info(
            "job %s %s",
            running.claimed.id,
            state,
            extra={
                "event": "job_finished",
                "job": running.claimed.id,
                "type": running.claimed.type,
                "priority": running.claimed.priority,
                "attempt": job.attempts,
                "duration": None if duration is None else round(duration, 6),
                "outcome": state,
                **({"error": error} if error else {}),
            },
        )

    def _interrupted(self, running: Running) -> None:
        # Only the shutdown cancels a job nobody asked to cancel. It was
        # accepted and never finished: back to the queue, as after a crash.
        claimed = running.claimed
        del self._live[claimed.id]
        self.journal.release(Release(claimed.id, claimed.lease, ran=True))
        self.interrupted += 1
        log.warning(
            "job %s interrupted by the shutdown; %s",
            claimed.id,
            "it runs again on the next start"
            if self.journal.durable
            else "lost: the journal is :memory:",
            extra={
                "event": "job_interrupted",
                "job": claimed.id,
                "type": claimed.type,
                "priority": claimed.priority,
                "resumes": self.journal.durable,
            },
        )

    def _end(
        self,
        running: Running,
        state: Any,
        started_at: float | None,
        result: str | None,
        error: str | None,
        attempts: int = 0,
    ) -> None:
        claimed = running.claimed
        now = time.time()
        del self._live[claimed.id]
        self._drain_rate.ended(claimed.priority, now)
        self.journal.finish(
            Finish(
                claimed.id,
                claimed.lease,
                state,
                attempts,
                started_at,
                now,
                result,
                error,
            )
        )

    # ---------------------------------------------------------------- reads

    async def job(self, id: int) -> dict[str, Any]:
        """What ``GET /jobs/{id}`` shows.

        Raises:
          JobNotFound: if no such job is known (or it was pruned).
          Unavailable: if the journal cannot be read.
        """
        record = await self._read(self.journal.get(id))
        if record is None:
            raise JobNotFound(f"no job {id} (never accepted, or its result expired)")
        return job_view(record, self._live.get(id), time.time())

    async def jobs(
        self, filter: JobFilter, after: int, limit: int
    ) -> list[dict[str, Any]]:
        """What ``GET /jobs`` shows: a page in id order after ``after``."""
        now = time.time()
        records = await self._read(
            self.journal.list(filter, after=after, limit=limit, now=now)
        )
        return [job_view(r, self._live.get(r.id), now) for r in records]

    async def _read(self, read: Any) -> Any:
        try:
            return await read
        except JournalUnavailable as exc:
            raise Unavailable(str(exc)) from None

    async def cancel(self, id: int) -> dict[str, Any]:
        """Cancel job ``id`` (``DELETE /jobs/{id}``); return its view.

        A queued or scheduled job is cancelled in the journal at once; a
        running one is cancelled here and ends ``cancelled`` soon after.

        Raises:
          JobNotFound: if unknown.
          JobFinished: if it has already ended.
          Unavailable: if the journal cannot write.
        """
        running = self._live.get(id)
        if running is not None:
            running.cancel_requested = True
            if running.job is not None:
                running.job.cancel()
            return await self.job(id)
        before = await self._read(self.journal.cancel(id))
        if before is None:
            raise JobNotFound(f"no job {id} (never accepted, or its result expired)")
        if before.state in TERMINAL:
            raise JobFinished(f"job {id} has already finished: {before.state}")
        if before.state == "running":
            raise Unavailable(
                f"job {id} is running on another instance; retry to cancel it",
                retry_after=1,
            )
        record = attrs.evolve(
            before, state="cancelled", finished_at=time.time(), error="cancelled"
        )
        return job_view(record, None, time.time())

    async def statistics(self) -> dict[str, Any]:
        """What ``GET /stats`` shows."""
        pools: dict[str, Any] = {}
        total: dict[str, Any] = {}
        if self._dispatcher is not None:
            stats = self._dispatcher.statistics()
            pools = {pool_name(p): attrs.asdict(s) for p, s in stats.pools.items()}
            total = attrs.asdict(stats.total)
        counts = await self.journal.counts()
        journal = {
            pool_name(p): dict(counts.get(p, {})) for p in sorted(self.priorities)
        }
        return {
            "uptime": round(time.time() - self.started_at, 3),
            "draining": self.draining,
            "accepted": self.accepted,
            "refused": self.refused,
            "requeued": self.requeued,
            "interrupted": self.interrupted,
            "in_memory": len(self._live),
            "journal": {
                "location": self.journal.location,
                "writable": self.journal.writable,
                "pools": journal,
            },
            "pools": pools,
            "total": total,
        }

    async def schedules(self) -> list[dict[str, Any]]:
        """What ``GET /schedules`` shows: each periodic job and its runs.

        Raises:
          Unavailable: if the journal cannot be read.
        """
        views: list[dict[str, Any]] = await self._read(self.scheduler.view())
        return views

    def workers(self) -> dict[str, Any]:
        """What ``GET /workers`` shows: each pool's workers and running jobs."""
        running: dict[int, list[dict[str, Any]]] = {p: [] for p in self.priorities}
        for entry in self._live.values():
            if entry.job is not None:
                running[entry.claimed.priority].append(
                    {
                        "id": entry.claimed.id,
                        "type": entry.claimed.type,
                        "started_at": _utc(entry.started_at),
                    }
                )
        pools = {}
        stats = self._dispatcher.statistics().pools if self._dispatcher else {}
        for priority in sorted(self.priorities):
            s = stats.get(priority)
            pools[pool_name(priority)] = {
                "priority": priority,
                "workers": s.workers if s else 0,
                "busy": s.busy if s else 0,
                "idle": s.idle if s else 0,
                "paused": s.paused if s else False,
                "running": sorted(running[priority], key=lambda r: r["id"]),
            }
        return {"pools": pools}
