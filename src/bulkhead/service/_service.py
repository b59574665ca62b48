"""The service's core: a dispatcher fed from the journal, which is the queue.

A job takes one road: :meth:`Service.submit` validates it and writes it to
the journal (the 202 is sent once that commit is done); the pool's
feeder (``_feeder.py``) claims it when it is due and hands
it to a worker with the pool's blocking ``dispatch``, so the pool is the
backpressure; its end is written once. Memory holds the jobs running and a
small prefetch per pool, whatever the backlog.

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

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, final

import attrs
import trio
from prometheus_client import CollectorRegistry

from bulkhead import Dispatcher, Hooks, PoolConfig, Retry, open_dispatcher
from bulkhead.metrics import PrometheusMetrics

from ._config import ServiceConfig
from ._errors import JobFinished, JobNotFound, Unavailable
from ._feeder import ClaimsInFlight, Feeder
from ._intake import Intake, Submission
from ._journal import (
    TERMINAL,
    Accepted,
    JobFilter,
    Journal,
    JournalUnavailable,
    State,
    open_journal,
)
from ._operations import Operations
from ._registry import JobRegistry
from ._running import RunningJobs
from ._schedules import Scheduler
from ._views import job_view, pool_name, utc

log = logging.getLogger("bulkhead.service")


@final
class Service:
    """A running ``bulkhead serve``: journal, intake, feeders and pools.

    It holds one small part per concept, as trio's ``Runner`` does: the
    intake (``_intake.py``) writes submissions, a feeder per pool
    (``_feeder.py``) claims them, and the running jobs (``_running.py``)
    follow what runs.

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
        self.running = RunningJobs(
            self.journal, registry, self.priorities, config.max_attempts
        )
        """The jobs this instance runs."""
        self.intake = Intake(
            config, registry, self.priorities, self.journal, self.running.drain_rate
        )
        """Where submissions are validated and written."""
        self.started_at = time.time()
        self.draining = False
        """Whether shutdown has begun (``/ready`` answers 503)."""
        self.requeued = 0
        """Jobs an earlier process left running, queued again at start."""
        self._dispatcher: Dispatcher | None = None
        self._claims = ClaimsInFlight()
        self.operations = Operations(
            self.journal, running=self.running, chunk=config.operation_chunk
        )
        """Requeue, cancel and purge by filter, with the audit log."""
        self.activity = self.running.activity
        """Ends per pool and minute, and the last failures (the dashboard)."""
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
                "accepted": self.intake.accepted,
                "succeeded": total.succeeded if total else 0,
                "failed": total.failed if total else 0,
                "cancelled": (total.cancelled if total else 0)
                - self.running.interrupted,
                "interrupted": self.running.interrupted,
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
        # Named as the service names them, so metrics and logs say "high".
        return [
            PoolConfig(
                p.priority,
                p.workers,
                timeout=config.job_timeout,
                retry=retry,
                name=pool_name(p.priority),
            )
            for p in config.pools
        ]

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        hooks = Hooks.combine(self.metrics.hooks, self.running.hooks())
        async with open_dispatcher(
            self._pools(), on_error="record", hooks=hooks
        ) as dispatcher:
            self._dispatcher = self.running.dispatcher = dispatcher
            self.metrics.watch(dispatcher)
            counts = await self.journal.counts()
            self._log_backlog(counts)
            # Jobs of a pool configured no more are fed too, to fail saying so.
            prefetch = {p.priority: p.queue for p in self.config.pools}
            prefetch.update(dict.fromkeys(counts.keys() - self.priorities, 1))
            async with trio.open_nursery() as feeders:
                for priority, n in prefetch.items():
                    feeder = Feeder(
                        self.journal,
                        priority,
                        n,
                        start=self.running.start,
                        live=self.running.live,
                        in_flight=self._claims,
                    )
                    feeders.start_soon(feeder.run)
                feeders.start_soon(self.operations.run)
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
        ids = sorted(i for i, r in self.running.live.items() if r.job is not None)
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
        return await self.intake.submit(submissions, batch=batch)

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
        return job_view(record, self.running.live.get(id), time.time())

    async def jobs(
        self, filter: JobFilter, after: int, limit: int
    ) -> list[dict[str, Any]]:
        """What ``GET /jobs`` shows: a page in id order after ``after``."""
        now = time.time()
        records = await self._read(
            self.journal.list(filter, after=after, limit=limit, now=now)
        )
        return [job_view(r, self.running.live.get(r.id), now) for r in records]

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
          Unavailable: if the journal cannot write, or the job runs on
            another instance.
        """
        for landed in (False, True):
            if self.running.cancel(id):
                return await self.job(id)
            before = await self._read(self.journal.cancel(id))
            if before is None:
                raise JobNotFound(
                    f"no job {id} (never accepted, or its result expired)"
                )
            if before.state in TERMINAL:
                raise JobFinished(f"job {id} has already finished: {before.state}")
            if before.state != "running":
                record = attrs.evolve(
                    before,
                    state="cancelled",
                    finished_at=time.time(),
                    error="cancelled",
                )
                return job_view(record, None, time.time())
            if not landed:
                # Running and not in memory: claimed by another instance, or
                # by a feeder here whose claim's answer is on its way.
                await self._claims.landed()
        raise Unavailable(
            f"job {id} is running on another instance; retry to cancel it",
            retry_after=1,
        )

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
            "accepted": self.intake.accepted,
            "refused": self.intake.refused,
            "requeued": self.requeued,
            "interrupted": self.running.interrupted,
            "in_memory": len(self.running.live),
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
        for entry in self.running.live.values():
            if entry.job is not None:
                running[entry.claimed.priority].append(
                    {
                        "id": entry.claimed.id,
                        "type": entry.claimed.type,
                        "started_at": utc(entry.started_at),
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
