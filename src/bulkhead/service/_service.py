"""The service's core: one dispatcher, the journal, and the jobs in flight.

The HTTP layer (``_app``) only translates requests into the calls here. A job
lives in memory (``_Entry``) from the moment it is accepted until its end is
committed to the journal; after that it is read back from the journal. The
jobs in memory are bounded by the pools' workers and queues plus the
journal's ``max_pending``.

Submission order, so that a 202 always means "recorded and accepted":
validate, write the job to the journal (awaited), dispatch it with
``max_wait``; if the pool stays full (:exc:`bulkhead.PoolFull`) or the
service is draining, the row is deleted again and the client gets 429 or
503. A crash between the write and the 202 runs the job on restart although
its client never heard of it: delivery is at least once, and an idempotency
key lets the client retry without doubling it.

Shutdown lets jobs finish within the grace period; a job it then stops (or
never started) was accepted and not finished, so, as after a crash, its row
stays ``accepted`` and the next start runs it again. Only ``DELETE
/jobs/{id}`` makes a job ``cancelled``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, final

import attrs
import outcome
import pydantic_core
import trio
from prometheus_client import CollectorRegistry

from bulkhead._dispatcher import Dispatcher, open_dispatcher
from bulkhead._errors import DispatcherClosed, JobCancelled
from bulkhead._hooks import Hooks
from bulkhead._job import Job, JobState
from bulkhead._kinds.protocol import run_abandonable
from bulkhead._policy import PoolConfig, Priority, Retry
from bulkhead.metrics import PrometheusMetrics

from ._config import ServiceConfig
from ._journal import MEMORY, TERMINAL, Finish, Journal
from ._registry import ArgumentsInvalid, JobRegistry, JobType, resolve_priority

log = logging.getLogger("bulkhead.service")

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
"""The states a job reports (``GET /jobs/{id}``)."""


class Rejected(Exception):
    """A submission or request the service refused, with its HTTP status."""

    status: int
    retry_after: int | None

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@attrs.define
class _Entry:
    id: int
    type: str
    priority: int
    accepted_at: float
    resumed: int = 0
    job: Job[Any] | None = None
    state: str = "queued"
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    result: str | None = None
    error: str | None = None
    cancel_requested: bool = False

    def view(self) -> dict[str, Any]:
        if self.job is not None and self.finished_at is None:
            self.attempts = self.job.attempts
        return {
            "id": self.id,
            "type": self.type,
            "priority": self.priority,
            "state": self.state,
            "attempts": self.attempts,
            "resumed": self.resumed,
            "accepted_at": self.accepted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": None if self.result is None else json.loads(self.result),
            "error": self.error,
        }


def row_view(row: dict[str, Any]) -> dict[str, Any]:
    """A journal row as ``GET /jobs/{id}`` shows it."""
    state = row["state"]
    return {
        "id": row["id"],
        "type": row["type"],
        "priority": row["priority"],
        "state": "queued" if state == "accepted" else state,
        "attempts": row["attempts"],
        "resumed": row["resumed"],
        "accepted_at": row["accepted_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "result": None if row["result"] is None else json.loads(row["result"]),
        "error": row["error"],
    }


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


@final
class Service:
    """A running ``bulkhead serve``: dispatcher, journal and jobs in flight.

    Args:
      config: the :class:`ServiceConfig`.
      registry: the job types it runs.
    """

    def __init__(self, config: ServiceConfig, registry: JobRegistry) -> None:
        if not len(registry):
            raise ValueError("the registry has no job types: register at least one")
        self.config = config
        """Its configuration."""
        self.registry = registry
        """Its job types."""
        self.journal = Journal(
            config.journal,
            keep_results=config.keep_results,
            keep_results_for=config.keep_results_for,
            max_pending=max(100, sum(p.workers + p.queue for p in config.pools)),
        )
        self.journal.on_committed = self._committed
        self.metrics = PrometheusMetrics(CollectorRegistry())
        """Prometheus metrics, in a registry of their own."""
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
        self.resumed = 0
        """Jobs found unfinished in the journal at start and run again."""
        self.accepted = 0
        """Jobs accepted since start (resumed ones not included)."""
        self.refused = 0
        """Submissions refused with 429 since start."""
        self.interrupted = 0
        """Jobs the shutdown stopped before they finished (run again on the
        next start, unless the journal is ``:memory:``)."""
        self._dispatcher: Dispatcher | None = None
        self._live: dict[int, _Entry] = {}
        # Sync jobs' threads, per pool: never more than its workers.
        self._threads = {
            p.priority: trio.CapacityLimiter(p.workers) for p in config.pools
        }
        self._stop = trio.Event()
        self.stopped = trio.Event()
        """Set once the service has drained and closed its journal."""

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """Pools up and not draining."""
        return self._dispatcher is not None and not self.draining

    def stop(self) -> None:
        """Begin shutdown: refuse submissions, drain, close (idempotent)."""
        self.draining = True
        self._stop.set()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until :meth:`stop`, then drain within the grace period.

        Use as ``await nursery.start(service.run)``: it returns (to the
        nursery) once the pools are up and unfinished jobs are being resumed.
        """
        config = self.config
        pools = [
            PoolConfig(
                p.priority,
                p.workers,
                queue=p.queue,
                timeout=config.job_timeout,
                retry=Retry(attempts=config.retry_attempts)
                if config.retry_attempts > 1
                else None,
            )
            for p in config.pools
        ]
        hooks = Hooks.combine(
            self.metrics.hooks,
            Hooks(
                on_started=self._started,
                on_retried=self._retried,
                on_finished=self._finished,
            ),
        )
        try:
            await self.journal.open()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.journal.run)
                try:
                    async with open_dispatcher(
                        pools, on_error="record", hooks=hooks
                    ) as dispatcher:
                        self._dispatcher = dispatcher
                        self.metrics.watch(dispatcher)
                        unfinished = await self.journal.unfinished()
                        self.resumed = len(unfinished)
                        log.info(
                            "resuming %d unfinished jobs from the journal",
                            self.resumed,
                            extra={"event": "resumed", "count": self.resumed},
                        )
                        nursery.start_soon(self._resume, unfinished)
                        task_status.started()
                        await self._stop.wait()
                        self.draining = True
                        log.info(
                            "draining",
                            extra={"event": "draining", "grace": config.grace_period},
                        )
                        await dispatcher.finalize(config.grace_period)
                finally:
                    self.journal.close()
        finally:
            self.stopped.set()
        stats = self.statistics()["total"]
        log.info(
            "stopped",
            extra={
                "event": "stopped",
                "succeeded": stats["succeeded"],
                "failed": stats["failed"],
                "cancelled": stats["cancelled"] - self.interrupted,
                "interrupted": self.interrupted,
            },
        )

    async def _resume(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            entry = _Entry(
                row["id"],
                row["type"],
                row["priority"],
                row["accepted_at"],
                resumed=row["resumed"] + 1,
            )
            try:
                job_type = self.registry[row["type"]]
                kwargs = job_type.validate(json.loads(row["args"]))
                if row["priority"] not in self.priorities:
                    raise ValueError(f"pool {row['priority']} is not configured")
            except (KeyError, ValueError) as exc:
                # Registered once, gone now: it can never run; say why.
                reason = exc.args[0] if isinstance(exc, KeyError) else exc
                now = time.time()
                self._live[entry.id] = entry
                self._end(entry, "failed", None, now, None, f"not resumed: {reason}")
                continue
            self._live[entry.id] = entry
            try:
                await self._dispatch(entry, job_type, kwargs, max_wait=math.inf)
            except DispatcherClosed:
                if entry.cancel_requested:  # DELETE answered 202: honour it
                    self._end(entry, "cancelled", None, time.time(), None, "cancelled")
                else:  # left in the journal for the next start
                    del self._live[entry.id]
                return

    # ----------------------------------------------------------- submission

    async def submit(
        self,
        type_name: str,
        priority: str | int | None,
        args: dict[str, Any],
        idempotency_key: str | None,
    ) -> tuple[int, bool]:
        """Validate, record and dispatch one job; return ``(id, created)``.

        Raises:
          Rejected: 422 for an unknown type or priority or arguments that do
            not fit, 429 if the pool stayed full for ``max_wait``, 503 while
            draining or if the journal failed.
        """
        if self.draining or self._dispatcher is None:
            raise Rejected(503, "the service is shutting down", retry_after=5)
        try:
            job_type = self.registry[type_name]
        except KeyError as exc:
            raise Rejected(422, str(exc.args[0])) from None
        number = self._priority(job_type, priority)
        try:
            kwargs = job_type.validate(args)
        except ArgumentsInvalid as exc:
            raise Rejected(422, str(exc)) from None
        if idempotency_key is not None:
            known = await self.journal.find_key(idempotency_key)
            if known is not None:
                return known, False
        await self.journal.wait_for_room()
        accepted_at = time.time()
        with trio.CancelScope(shield=True):  # written means dispatched or deleted
            try:
                id, created = await self.journal.accept(
                    job_type.name,
                    number,
                    json.dumps(args),
                    idempotency_key,
                    accepted_at,
                )
            except Exception as exc:
                log.error("journal write failed", exc_info=exc)
                raise Rejected(503, "the journal could not record the job") from None
            if not created:
                return id, False
            entry = _Entry(id, job_type.name, number, accepted_at)
            self._live[id] = entry
            try:
                await self._dispatch(entry, job_type, kwargs, self.config.max_wait)
            except trio.WouldBlock:  # PoolFull too
                self._withdraw(entry)
                self.refused += 1
                raise Rejected(
                    429,
                    f"pool {pool_name(number)!r} and its queue are full; retry later",
                    retry_after=1,
                ) from None
            except DispatcherClosed:
                self._withdraw(entry)
                raise Rejected(
                    503, "the service is shutting down", retry_after=5
                ) from None
        self.accepted += 1
        return id, True

    def _priority(self, job_type: JobType, priority: str | int | None) -> int:
        if priority is None:
            return job_type.priority
        try:
            number = resolve_priority(priority)
        except ValueError as exc:
            raise Rejected(422, f"priority: {exc}") from None
        if number not in self.priorities:
            names = ", ".join(map(pool_name, sorted(self.priorities)))
            raise Rejected(
                422, f"priority: no pool {priority!r} is configured; pools: {names}"
            )
        return number

    async def _dispatch(
        self, entry: _Entry, job_type: JobType, kwargs: dict[str, Any], max_wait: float
    ) -> None:
        assert self._dispatcher is not None
        call = functools.partial(job_type.fn, **kwargs)
        if not job_type.is_async:
            call = functools.partial(self._in_thread, entry, call)
        job = await self._dispatcher.dispatch(
            call,
            priority=entry.priority,
            name=f"{entry.type}#{entry.id}",
            max_wait=max_wait,
        )
        entry.job = job
        if entry.cancel_requested:
            job.cancel()

    async def _in_thread(self, entry: _Entry, call: Callable[[], Any]) -> Any:
        """Run a sync job's ``call`` as a thread pool runs its jobs.

        A cancelled or timed-out attempt is abandoned: the job ends at once,
        and the pool keeps the worker's slot until the thread returns, so a
        retry never overlaps it, the pool never has more threads than
        workers, and the drain waits for it within the grace period.
        """
        job = entry.job
        assert job is not None  # set by _started, before any attempt
        name = f"bulkhead job {entry.type}#{entry.id}"
        return await run_abandonable(job, call, self._threads[entry.priority], name)

    def _withdraw(self, entry: _Entry) -> None:
        del self._live[entry.id]
        self.journal.forget(entry.id)

    # ---------------------------------------------------------------- hooks

    def _entry(self, job: Job[Any]) -> _Entry:
        return self._live[int(job.name.rpartition("#")[2])]

    def _started(self, job: Job[Any]) -> None:
        entry = self._entry(job)
        entry.job = job  # dispatch() may not have returned it yet
        entry.state = "running"
        entry.started_at = time.time()

    def _retried(self, job: Job[Any], error: Exception, delay: float) -> None:
        entry = self._entry(job)
        log.warning(
            "job %s attempt %d failed; retrying",
            entry.id,
            job.attempts,
            extra={
                "event": "job_retried",
                "job": entry.id,
                "type": entry.type,
                "priority": entry.priority,
                "attempt": job.attempts,
                "error": _error_text(error),
                "delay": round(delay, 6),
            },
        )

    def _finished(self, job: Job[Any], duration: float | None) -> None:
        entry = self._entry(job)
        if job.state is JobState.CANCELLED and not entry.cancel_requested:
            self._interrupted(entry, job)
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
        entry.attempts = job.attempts
        self._end(entry, state, entry.started_at, time.time(), result, error)
        log.info(
            "job %s %s",
            entry.id,
            state,
            extra={
                "event": "job_finished",
                "job": entry.id,
                "type": entry.type,
                "priority": entry.priority,
                "attempt": job.attempts,
                "duration": None if duration is None else round(duration, 6),
                "outcome": state,
                **({"error": error} if error else {}),
            },
        )

    def _interrupted(self, entry: _Entry, job: Job[Any]) -> None:
        # Only the shutdown cancels a job nobody asked to cancel. It was
        # accepted and never finished, so its row stays 'accepted' and the
        # next start runs it again, as after a crash.
        del self._live[entry.id]
        self.interrupted += 1
        resumes = self.journal.path != MEMORY
        log.warning(
            "job %s interrupted by the shutdown; %s",
            entry.id,
            "it runs again on the next start"
            if resumes
            else "lost: the journal is :memory:",
            extra={
                "event": "job_interrupted",
                "job": entry.id,
                "type": entry.type,
                "priority": entry.priority,
                "attempt": job.attempts,
                "resumes": resumes,
            },
        )

    def _end(
        self,
        entry: _Entry,
        state: str,
        started_at: float | None,
        finished_at: float,
        result: str | None,
        error: str | None,
    ) -> None:
        entry.state = state
        entry.finished_at = finished_at
        entry.result = result
        entry.error = error
        self.journal.finished(
            Finish(
                entry.id, state, entry.attempts, started_at, finished_at, result, error
            )
        )

    def _committed(self, finishes: list[Finish]) -> None:
        for finish in finishes:
            self._live.pop(finish.id, None)

    # ---------------------------------------------------------------- reads

    async def job(self, id: int) -> dict[str, Any]:
        """What ``GET /jobs/{id}`` shows.

        Raises:
          Rejected: 404 if no such job is known (or it was pruned).
        """
        entry = self._live.get(id)
        if entry is not None:
            return entry.view()
        row = await self.journal.get(id)
        if row is None:
            raise Rejected(404, f"no job {id} (never accepted, or its result expired)")
        return row_view(row)

    async def jobs(
        self, state: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """What ``GET /jobs`` shows: a page in id order, of one state or all."""
        if state in ("queued", "running"):
            live = sorted(
                (e for e in self._live.values() if e.state == state), key=lambda e: e.id
            )
            return [e.view() for e in live[offset : offset + limit]]
        rows = await self.journal.list_jobs(state, limit, offset)
        views = []
        for row in rows:
            entry = self._live.get(row["id"])
            views.append(row_view(row) if entry is None else entry.view())
        return views

    async def cancel(self, id: int) -> dict[str, Any]:
        """Cancel job ``id`` (``DELETE /jobs/{id}``); return its view.

        Raises:
          Rejected: 404 if unknown, 409 if it has already finished.
        """
        entry = self._live.get(id)
        if entry is None or entry.state in TERMINAL:
            view = await self.job(id)
            if view["state"] not in TERMINAL:  # interrupted by this shutdown
                raise Rejected(
                    503,
                    f"job {id} was stopped by the shutdown and runs again at the "
                    "next start; cancel it then",
                    retry_after=5,
                )
            raise Rejected(409, f"job {id} has already finished: {view['state']}")
        entry.cancel_requested = True
        if entry.job is not None:
            entry.job.cancel()
        return entry.view()

    def statistics(self) -> dict[str, Any]:
        """What ``GET /stats`` shows."""
        if self._dispatcher is None:
            pools: dict[str, Any] = {}
            total: dict[str, Any] = {}
        else:
            stats = self._dispatcher.statistics()
            pools = {pool_name(p): attrs.asdict(s) for p, s in stats.pools.items()}
            total = attrs.asdict(stats.total)
        return {
            "uptime": round(time.time() - self.started_at, 3),
            "draining": self.draining,
            "accepted": self.accepted,
            "refused": self.refused,
            "resumed": self.resumed,
            "interrupted": self.interrupted,
            "in_memory": len(self._live),
            "journal": self.config.journal,
            "pools": pools,
            "total": total,
        }

    def workers(self) -> dict[str, Any]:
        """What ``GET /workers`` shows: each pool's workers and running jobs."""
        running: dict[int, list[dict[str, Any]]] = {p: [] for p in self.priorities}
        for entry in self._live.values():
            if entry.state == "running":
                running[entry.priority].append(
                    {"id": entry.id, "type": entry.type, "started_at": entry.started_at}
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
                "queued": s.queued if s else 0,
                "paused": s.paused if s else False,
                "running": sorted(running[priority], key=lambda r: r["id"]),
            }
        return {"pools": pools}
