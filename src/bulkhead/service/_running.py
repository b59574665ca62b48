"""The jobs this instance runs: from the feeder's hand-over to the end it
writes once.

A claimed job is a :class:`Running` record in :attr:`RunningJobs.live` until
its end is queued to the journal; its :class:`~bulkhead.Job` carries the
record on ``job.tag``, so the dispatcher's hooks find it without ids in
names. A job the shutdown stops (cancelled, not by ``DELETE``) goes back to
the queue, as after a crash.

A run is counted when a worker takes the job, and the job's function is
called only once that count is committed (:meth:`Journal.started`): a job
that kills its process is counted at every run, and one that started
``max_attempts`` times without finishing fails without running again (else
it would run for ever). Jobs claimed beside it but not started are never
counted; jobs running beside it when it kills the process are (they ran).
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Callable
from typing import Any, final

import attrs
import outcome
import pydantic_core
import trio

from bulkhead import Dispatcher, Hooks, Job, JobCancelled, JobState

from ._activity import Activity
from ._journal import Claimed, Finish, Journal, Release, Start, State
from ._registry import JobRegistry, JobType

log = logging.getLogger("bulkhead.service")
_STATES: dict[JobState, State] = {
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


def error_text(error: BaseException) -> str:
    """A job's error as ``GET /jobs/{id}`` shows it: type and message."""
    if isinstance(error, JobCancelled):
        return "cancelled"
    if isinstance(error, trio.TooSlowError):
        return "TooSlowError: the job overran its timeout"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LeaseLost(Exception):
    """This instance's lease on a job expired before the job started (it
    runs elsewhere); the run does not go on."""


@final
@attrs.define(eq=False)
class Running:
    """A claimed job in this instance's memory, until its end is queued."""

    claimed: Claimed
    job: Job[Any] | None = None
    """Its handle once a worker took it (``None`` while prefetched)."""
    started_at: float | None = None
    counted: bool | None = None
    """Whether its run is committed to the journal (see the module
    docstring): ``None`` until the journal answered, ``False`` if its lease
    was lost before it started."""
    cancel_requested: bool = False
    """``DELETE`` asked for it: it ends ``cancelled``."""


@final
class DrainRate:
    """Jobs ended per second over the last minute, per pool (for
    ``Retry-After``)."""

    WINDOW = 60

    def __init__(self) -> None:
        self._ends: dict[int, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=10_000)
        )

    def ended(self, priority: int, now: float) -> None:
        """Count one end in pool ``priority``."""
        self._ends[priority].append(now)

    def per_second(self, priority: int, now: float) -> float:
        """Ends per second in pool ``priority`` lately (0 if none)."""
        ends = self._ends[priority]
        while ends and ends[0] < now - self.WINDOW:
            ends.popleft()
        if not ends:
            return 0.0
        return len(ends) / max(now - ends[0], 1.0)


@final
@attrs.define(eq=False)
class RunningJobs:
    """The jobs claimed by this instance, and the hooks that follow them."""

    journal: Journal
    registry: JobRegistry
    priorities: frozenset[int]
    max_attempts: int
    live: dict[int, Running] = attrs.field(factory=dict)
    """Claimed jobs by id, until their end is queued."""
    drain_rate: DrainRate = attrs.field(factory=DrainRate)
    interrupted: int = 0
    """Jobs the shutdown stopped before they finished (queued again)."""
    dispatcher: Dispatcher | None = None
    """Set by the service once its pools run."""
    activity: Activity = attrs.field(factory=Activity)
    """Ends per pool and minute, and the last failures (the dashboard)."""

    def hooks(self) -> Hooks:
        """The dispatcher hooks that follow each job."""
        return Hooks(
            on_started=self._started,
            on_retried=self._retried,
            on_finished=self._finished,
        )

    def cancel(self, id: int) -> bool:
        """Cancel job ``id`` if it runs here (or waits for a worker here);
        return whether it does."""
        running = self.live.get(id)
        if running is None:
            return False
        running.cancel_requested = True
        if running.job is not None:
            running.job.cancel()
        return True

    async def start(self, running: Running) -> None:
        """Hand a claimed job to a worker of its pool (the feeder's call).

        Raises:
          DispatcherClosed: if the shutdown began; the job did not start.
        """
        assert self.dispatcher is not None
        claimed = running.claimed
        if claimed.runs >= self.max_attempts:
            self._refuse(
                running,
                f"started {claimed.runs} times without finishing (its process "
                f"died or was stopped each time); BULKHEAD_MAX_ATTEMPTS is "
                f"{self.max_attempts}",
            )
            return
        try:
            job_type = self.registry[claimed.type]
            kwargs = job_type.validate_json(claimed.args)
            if claimed.priority not in self.priorities:
                raise ValueError(f"pool {claimed.priority} is not configured")
        except (KeyError, ValueError) as exc:
            # Accepted by an earlier version of the registry or the pools.
            reason = exc.args[0] if isinstance(exc, KeyError) else exc
            self._refuse(running, f"cannot run: {reason}")
            return
        # A sync job type runs in a worker thread of its pool, abandoned on
        # cancel or timeout and holding its worker until it returns.
        running.job = await self.dispatcher.dispatch(
            self._counting(running, job_type, kwargs),
            priority=claimed.priority,
            name=claimed.type,
            tag=running,
        )
        if running.cancel_requested:
            running.job.cancel()

    def _counting(
        self, running: Running, job_type: JobType, kwargs: dict[str, Any]
    ) -> Callable[[], Any]:
        """The job's call, once its run is counted; sync or async as the job
        type is, so a sync job still runs in a worker thread of its pool
        (abandoned on cancel or timeout, holding its worker until it
        returns)."""
        fn = job_type.fn
        if job_type.is_async:

            async def run_async() -> Any:
                await self._count(running)
                return await fn(**kwargs)

            return run_async

        def run_sync() -> Any:
            trio.from_thread.run(self._count, running)
            return fn(**kwargs)

        return run_sync

    async def _count(self, running: Running) -> None:
        # Retried attempts of the same run are not counted again.
        claimed = running.claimed
        if running.counted is None:
            started_at = running.started_at or time.time()
            start = Start(claimed.id, claimed.lease, started_at)
            running.counted = await self.journal.started(start)
        if not running.counted:
            raise LeaseLost(f"job {claimed.id} runs on another instance")

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
                "error": error_text(error),
                "delay": round(delay, 6),
            },
        )

    def _finished(self, job: Job[Any], duration: float | None) -> None:
        running: Running = job.tag
        if job.state is JobState.CANCELLED and not running.cancel_requested:
            self._interrupted(running)
            return
        if running.counted is False:
            self._lost(running)
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
            error = error_text(job.outcome.error)
        state: State = _STATES[job.state]
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
        del self.live[claimed.id]
        self.journal.release(Release(claimed.id, claimed.lease))
        self.interrupted += 1
        log.warning(
            "job %s interrupted by the shutdown; %s",
            claimed.id,
            "it is queued again"
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

    def _lost(self, running: Running) -> None:
        # Its lease expired before it started (this instance was stopped or
        # cut off); another instance rescued it: nothing of it is ours to
        # write.
        claimed = running.claimed
        del self.live[claimed.id]
        log.warning(
            "job %s not started: its lease was lost, it runs on another instance",
            claimed.id,
            extra={
                "event": "job_lease_lost",
                "job": claimed.id,
                "type": claimed.type,
                "priority": claimed.priority,
            },
        )

    def _refuse(self, running: Running, reason: str) -> None:
        """End a claimed job as failed without running it, saying why."""
        self._end(running, "failed", None, None, reason)
        claimed = running.claimed
        log.error(
            "job %s failed without running: %s",
            claimed.id,
            reason,
            extra={
                "event": "job_finished",
                "job": claimed.id,
                "type": claimed.type,
                "priority": claimed.priority,
                "attempt": 0,
                "outcome": "failed",
                "error": reason,
            },
        )

    def _end(
        self,
        running: Running,
        state: State,
        started_at: float | None,
        result: str | None,
        error: str | None,
        attempts: int = 0,
    ) -> None:
        claimed = running.claimed
        now = time.time()
        del self.live[claimed.id]
        self.drain_rate.ended(claimed.priority, now)
        self.activity.ended(claimed, state, error, now)
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
