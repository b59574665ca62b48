"""Model-based test: random programs against a plain-Python model of the pools.

Hypothesis draws a pool configuration, then one action per step (dispatch,
with or without a ``max_wait``, dispatch_nowait, release a hanging job,
job.cancel(), cancel a blocked dispatcher, barriers global and per pool,
finalize with a grace period, job.wait(), cancel a waiting barrier or finalize
caller, resize, pause or resume a pool, advance the clock). The
real dispatcher runs under ``trio.run`` with an autojumping ``MockClock``; the
model is a discrete-event simulation of the contract in DESIGN.md. After every
step the two must agree exactly: statistics, every job's state, attempts and
outcome, which dispatches returned or raised (and when), which barriers and
finalize calls returned (when, and with which report and failures), which
resize, pause and resume calls raised.

Virtual time is laid out so that no two events whose order matters ever
coincide: jobs start, end, time out and back off on whole seconds, the program
acts on whole seconds after everything due at that instant has happened, and
grace periods end on half seconds. Where two deadlines do coincide, trio
decides, the same way every time: it expires every deadline due at an instant
before any task runs. So an attempt whose timeout equals its duration times
out, and a ``max_wait`` running out at the very instant a job ends (and would
free a worker for that dispatcher) wins: the dispatch raises ``PoolFull`` and
the freed worker goes to the next dispatcher in line.

Only async pools are modelled: a thread job runs in real time, which an
autojumping clock cannot follow deterministically (tests/test_threads.py
covers thread pools).

On failure, Hypothesis prints the program as a ``run_program(...)`` call that
can be pasted into a regression test.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeAlias

import attrs
import trio
import trio.testing
from hypothesis import (
    Phase,
    currently_in_test_context,
    event,
    given,
    note,
    settings,
    target,
)
from hypothesis import strategies as st
from outcome import Error, Value

import bulkhead
from bulkhead import BatchReport, Job, JobState, PoolConfig, PoolStatistics, Retry

from ._jobs import live_bulkhead_tasks

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

# --------------------------------------------------------------------- program


class JobError(Exception):
    """What a failing attempt of a test job raises."""

    def __init__(self, key: int, attempt: int) -> None:
        super().__init__(f"job #{key} failed attempt {attempt}")
        self.key = key
        self.attempt = attempt


@attrs.frozen
class PoolSpec:
    """One pool of the configuration; ``record`` selects on_error="record",
    ``max_wait`` is the pool's default for blocking dispatches."""

    priority: int
    workers: int
    queue: int = 0
    record: bool = False
    copy_context: bool = True
    max_wait: float | None = None

    def config(self) -> PoolConfig:
        return PoolConfig(
            self.priority,
            self.workers,
            queue=self.queue,
            on_error="record" if self.record else None,
            copy_context=self.copy_context,
            max_wait=self.max_wait,
        )


@attrs.frozen(repr=False)
class Work:
    """What a job does: each attempt sleeps ``duration`` seconds (``None``: hangs
    until released), the first ``fails`` attempts raise ``JobError``. ``attempts``
    > 1 gives it ``Retry(attempts, backoff=1, jitter=False)``, retrying timeouts
    only if ``retry_timeouts``. ``cancels_dispatcher``: when it starts, the job
    cancels the task that dispatched it (the hand-off moment).
    ``cancelled_at_once``: ``job.cancel()`` right after ``dispatch_nowait``
    returns, before the worker it was handed to has run."""

    duration: int | None = None
    fails: int = 0
    timeout: int | None = None
    attempts: int = 1
    retry_timeouts: bool = False
    cancels_dispatcher: bool = False
    cancelled_at_once: bool = False

    def __repr__(self) -> str:
        fields = [
            f"{a.name}={getattr(self, a.name)!r}"
            for a in attrs.fields(Work)
            if getattr(self, a.name) != a.default
        ]
        return f"Work({', '.join(fields)})"

    def retry(self) -> Retry | None:
        if self.attempts == 1:
            return None
        on: tuple[type[Exception], ...] = (
            (Exception,) if self.retry_timeouts else (JobError,)
        )
        return Retry(
            attempts=self.attempts, backoff=1, max_backoff=1000, jitter=False, on=on
        )


@attrs.frozen(repr=False)
class Dispatch:
    """``await d.dispatch(..., max_wait=max_wait)`` in a task of its own (it may
    block); ``max_wait=None`` takes the pool's default, ``math.inf`` waits for
    ever whatever the pool says."""

    key: int
    pool: int
    work: Work
    max_wait: float | None = None

    def __repr__(self) -> str:
        fields = f"key={self.key!r}, pool={self.pool!r}, work={self.work!r}"
        if self.max_wait == math.inf:
            fields += ", max_wait=math.inf"
        elif self.max_wait is not None:
            fields += f", max_wait={self.max_wait!r}"
        return f"Dispatch({fields})"


@attrs.frozen
class DispatchNowait:
    key: int
    pool: int
    work: Work


@attrs.frozen
class Release:
    """Let the hanging job ``key`` finish its attempt (and any later ones)."""

    key: int


@attrs.frozen
class CancelJob:
    key: int


@attrs.frozen
class CancelDispatch:
    """Cancel the task blocked in ``dispatch`` for job ``key``."""

    key: int


@attrs.frozen
class Barrier:
    """``await d.barrier(pool)`` in a task of its own."""

    key: int
    pool: int | None


@attrs.frozen
class CancelBarrier:
    key: int


@attrs.frozen
class Finalize:
    """``await d.finalize(grace)`` in a task of its own."""

    key: int
    grace: float | None


@attrs.frozen
class CancelFinalize:
    key: int


@attrs.frozen
class Wait:
    """``await job.wait()`` on job ``job`` in a task of its own."""

    key: int
    job: int


@attrs.frozen
class Advance:
    seconds: int


@attrs.frozen
class Resize:
    """``d.resize(pool, workers)``."""

    pool: int
    workers: int


@attrs.frozen
class Pause:
    """``d.pause(pool)``; ``None`` pauses every pool."""

    pool: int | None


@attrs.frozen
class Resume:
    """``d.resume(pool)``; ``None`` resumes every pool."""

    pool: int | None


Control: TypeAlias = Resize | Pause | Resume
"""Synchronous calls that raise ``DispatcherClosed`` once finalize has begun."""

Action: TypeAlias = (
    Dispatch
    | DispatchNowait
    | Release
    | CancelJob
    | CancelDispatch
    | Barrier
    | CancelBarrier
    | Finalize
    | CancelFinalize
    | Wait
    | Advance
    | Control
)

# ----------------------------------------------------------------------- model

State: TypeAlias = Literal[
    "waiting", "refused", "queued", "running", "succeeded", "failed", "cancelled"
]
TERMINAL: tuple[State, ...] = ("succeeded", "failed", "cancelled")
COUNTERS = (
    "submitted",
    "started",
    "succeeded",
    "failed",
    "cancelled",
    "retried",
    "timed_out",
    "rejected",
)


@attrs.define(eq=False)
class MJob:
    key: int
    pool: int
    work: Work
    state: State = "waiting"
    refusal: str | None = None
    """Why dispatch raised: "closed", "cancelled", "wouldblock" or "poolfull"."""
    refused_at: float | None = None
    max_wait: float | None = None
    """How long a blocking dispatch waits for room (None: for ever)."""
    deadline: float = math.inf
    """When the blocked dispatch gives up with ``PoolFull``."""
    seq: int | None = None
    """Acceptance order; None if never accepted."""
    accepted_at: float | None = None
    attempts: int = 0
    calls: int = 0
    """Attempts whose function was called (the first begins at hand-off, so a
    job cancelled before its worker ran it has one attempt and no call)."""
    in_attempt: bool = False
    """Inside its function (else backing off, or not running)."""
    until: float = math.inf
    """When the current attempt or backoff ends."""
    timing_out: bool = False
    released: bool = False
    ended_at: float | None = None
    error: str | None = None
    reported_by: str | None = None


@attrs.define(eq=False)
class MPool:
    spec: PoolSpec
    size: int
    """The number of workers the pool is to have (``resize`` sets it)."""
    paused: bool = False
    running: list[MJob] = attrs.Factory(list)
    queue: deque[MJob] = attrs.Factory(deque)
    waiting: deque[MJob] = attrs.Factory(deque)
    count: Counter[str] = attrs.Factory(Counter)

    def can_start(self) -> bool:
        """Whether a worker is free to start a job now."""
        return not self.paused and len(self.running) < self.size

    def statistics(self, closed: bool) -> PoolStatistics:
        busy = len(self.running)
        # Idle workers beyond the size retire at once, busy ones once their job
        # has ended; from finalize on, workers exit when nothing is left to run.
        alive = busy if closed else max(self.size, busy)
        return PoolStatistics(
            name=str(self.spec.priority),
            workers=self.size,
            current_workers=alive,
            limit=self.size,
            paused=self.paused,
            busy=busy,
            idle=alive - busy,
            abandoned=0,
            queued=len(self.queue),
            waiting_dispatchers=len(self.waiting),
            **{name: self.count[name] for name in COUNTERS},
        )


@attrs.define(eq=False)
class MWaiter:
    """A barrier or finalize call: what it covers and how it ended."""

    name: str
    called_at: float
    covered: frozenset[int] | None
    """Keys of the jobs a barrier waits for; None for finalize (everything)."""
    pool: int | None = None
    state: Literal["waiting", "returned", "cancelled"] = "waiting"
    cancel_requested: bool = False


class Model:
    """The contract of DESIGN.md as a discrete-event simulation."""

    def __init__(self, pools: list[PoolSpec]) -> None:
        self.now = 0.0
        self.pools = {spec.priority: MPool(spec, spec.workers) for spec in pools}
        self.jobs: dict[int, MJob] = {}
        self.next_key = 1
        self.seq = itertools.count()
        self.closed = False
        self.grace_deadline = math.inf
        self.done_at: float | None = None
        self.barriers: dict[int, MWaiter] = {}
        self.finalizers: dict[int, MWaiter] = {}
        self.waits: dict[int, tuple[int, float]] = {}
        """wait key -> (job key, called at)."""
        self.controls: list[str] = []
        """How each resize, pause and resume call ended: "ok" or "closed"."""
        self.situations: set[str] = set()
        """Interesting things that happened, reported as Hypothesis events."""

    # -- queries used to draw actions

    def keys(self, *states: State) -> list[int]:
        return [key for key, job in self.jobs.items() if job.state in states]

    def hanging(self) -> list[int]:
        return [
            key
            for key, job in self.jobs.items()
            if job.work.duration is None
            and not job.released
            and job.state in ("waiting", "queued", "running")
        ]

    def waiting_barriers(self) -> list[int]:
        return [k for k, b in self.barriers.items() if b.state == "waiting"]

    def waiting_finalizers(self) -> list[int]:
        return [k for k, f in self.finalizers.items() if f.state == "waiting"]

    # -- actions

    def apply(self, action: Action) -> None:
        if isinstance(action, (Dispatch, DispatchNowait)):
            self.next_key = max(self.next_key, action.key + 1)
            self._dispatch(action)
        elif isinstance(action, Release):
            job = self.jobs[action.key]
            job.released = True
            if job.in_attempt and job.work.duration is None:
                job.until, job.timing_out = self.now, False
        elif isinstance(action, CancelJob):
            self._cancel(self.jobs[action.key])
        elif isinstance(action, CancelDispatch):
            job = self.jobs[action.key]
            if job.state == "waiting":
                self._refuse(job, "cancelled")
        elif isinstance(action, Barrier):
            self.next_key = max(self.next_key, action.key + 1)
            covered = frozenset(
                key
                for key, job in self.jobs.items()
                if job.seq is not None and action.pool in (None, job.pool)
            )
            self.barriers[action.key] = MWaiter(
                f"barrier B{action.key}", self.now, covered, action.pool
            )
        elif isinstance(action, CancelBarrier):
            self.barriers[action.key].cancel_requested = True
        elif isinstance(action, Finalize):
            self.next_key = max(self.next_key, action.key + 1)
            self.finalizers[action.key] = MWaiter(
                f"finalize F{action.key}", self.now, None
            )
            self._finalize(action.grace)
        elif isinstance(action, CancelFinalize):
            self.finalizers[action.key].cancel_requested = True
        elif isinstance(action, Wait):
            self.next_key = max(self.next_key, action.key + 1)
            self.waits[action.key] = (action.job, self.now)
        elif isinstance(action, (Resize, Pause, Resume)):
            self._control(action)
        else:
            self._advance_to(self.now + action.seconds)
        self._settle()

    def _control(self, action: Control) -> None:
        if self.closed:
            self.controls.append("closed")
            self.situations.add(f"{type(action).__name__.lower()} after finalize")
            return
        self.controls.append("ok")
        if isinstance(action, Resize):
            pool = self.pools[action.pool]
            busy, waiting = len(pool.running), pool.queue or pool.waiting
            if action.workers < pool.size:
                if busy > action.workers:
                    self.situations.add("shrunk while busy")
                if busy < pool.size:
                    self.situations.add("shrunk, idle workers retired")
            elif action.workers > pool.size:
                if busy > pool.size:
                    self.situations.add("grew while busy workers were to retire")
                if waiting:
                    self.situations.add(
                        "grew while paused" if pool.paused else "grew with waiters"
                    )
            pool.size = action.workers
            self._fill(pool)
            return
        covered = (
            list(self.pools.values())
            if action.pool is None
            else [self.pools[action.pool]]
        )
        for pool in covered:
            if isinstance(action, Pause):
                if pool.queue or pool.running:
                    self.situations.add(
                        "paused with queue" if pool.queue else "paused while busy"
                    )
                pool.paused = True
            else:
                if pool.paused and (pool.queue or pool.waiting):
                    self.situations.add("resumed with jobs waiting")
                pool.paused = False
                self._fill(pool)

    def _dispatch(self, action: Dispatch | DispatchNowait) -> None:
        job = self.jobs[action.key] = MJob(action.key, action.pool, action.work)
        pool = self.pools[action.pool]
        if isinstance(action, Dispatch):
            max_wait = (
                pool.spec.max_wait if action.max_wait is None else action.max_wait
            )
            job.max_wait = None if max_wait == math.inf else max_wait
        if self.closed:
            self._refuse(job, "closed")
            self.situations.add("dispatch after finalize")
        elif not pool.waiting and pool.can_start():
            self._accept(pool, job)
            if job.work.cancelled_at_once:
                # Handed off, cancelled before its worker called it: its first
                # attempt began with the hand-off, its function never ran.
                job.state = "running"
                job.attempts = 1
                pool.count["started"] += 1
                self._end(pool, job, "cancelled", "JobCancelled")
                self.situations.add("job cancelled between hand-off and start")
            else:
                self._start(pool, job)
        elif not pool.waiting and len(pool.queue) < pool.spec.queue:
            self._accept(pool, job)
            job.state = "queued"
            pool.queue.append(job)
            if pool.paused:
                self.situations.add("paused pool queued a job")
            if job.work.cancelled_at_once:
                self._cancel(job)
        elif isinstance(action, DispatchNowait):
            self._refuse(job, "wouldblock")
            pool.count["rejected"] += 1
            self.situations.add("dispatch_nowait refused")
        elif job.max_wait == 0:
            self._refuse(job, "poolfull")
            pool.count["rejected"] += 1
            self.situations.add("max_wait=0 refused at once")
        else:
            pool.waiting.append(job)
            self.situations.add("dispatcher blocked")
            if pool.paused:
                self.situations.add("dispatcher blocked by a paused pool")
            if job.max_wait is not None:
                job.deadline = self.now + job.max_wait

    def _refuse(self, job: MJob, refusal: str) -> None:
        if job.state == "waiting" and job in self.pools[job.pool].waiting:
            self.pools[job.pool].waiting.remove(job)
        job.state, job.refusal, job.refused_at = "refused", refusal, self.now

    def _accept(self, pool: MPool, job: MJob) -> None:
        job.seq = next(self.seq)
        job.accepted_at = self.now
        pool.count["submitted"] += 1
        if job.deadline < math.inf:
            self.situations.add("dispatcher admitted before its max_wait ran out")

    def _start(self, pool: MPool, job: MJob) -> None:
        assert pool.can_start(), f"#{job.key} started with pool {job.pool} full"
        job.state = "running"
        pool.running.append(job)
        pool.count["started"] += 1
        self._begin_attempt(job)

    def _begin_attempt(self, job: MJob) -> None:
        job.attempts += 1
        job.calls += 1
        job.in_attempt = True
        if job.work.duration is not None:
            duration = float(job.work.duration)
        else:
            duration = 0.0 if job.released else math.inf
        timeout = job.work.timeout
        job.timing_out = False
        if timeout is not None and timeout <= duration:
            job.timing_out, duration = True, float(timeout)
        job.until = self.now + duration

    def _fill(self, pool: MPool) -> None:
        """Free workers take the queued jobs, then the blocked dispatchers' jobs,
        in order (a queue slot freed goes to the head blocked dispatcher)."""
        while pool.can_start() and (pool.queue or pool.waiting):
            if pool.queue:
                self._start(pool, pool.queue.popleft())
                if pool.waiting:
                    admitted = pool.waiting.popleft()
                    self._accept(pool, admitted)
                    admitted.state = "queued"
                    pool.queue.append(admitted)
            else:
                job = pool.waiting.popleft()
                self._accept(pool, job)
                self._start(pool, job)
                if job.work.cancels_dispatcher:
                    self.situations.add("dispatcher cancelled at hand-off")

    def _free_worker(self, pool: MPool) -> None:
        """A worker of ``pool`` finished its job: it retires if the pool shrank
        below the jobs it runs, else takes the next job unless paused."""
        if len(pool.running) >= pool.size:
            self.situations.add("worker retired after its job")
            if pool.queue or pool.waiting:
                self.situations.add("shrunk pool kept jobs waiting")
        self._fill(pool)

    def _end(self, pool: MPool, job: MJob, state: State, error: str | None) -> None:
        if job in pool.running:
            pool.running.remove(job)
        job.state, job.error, job.ended_at = state, error, self.now
        job.in_attempt, job.until = False, math.inf
        pool.count[state] += 1

    def _cancel(self, job: MJob) -> None:
        pool = self.pools[job.pool]
        if job.state == "queued":
            pool.queue.remove(job)
            self._end(pool, job, "cancelled", "JobCancelled")
            self.situations.add("queued job cancelled")
            if pool.waiting:
                self.situations.add("queued job cancelled, dispatcher admitted")
                admitted = pool.waiting.popleft()
                self._accept(pool, admitted)
                admitted.state = "queued"
                pool.queue.append(admitted)
        elif job.state == "running":
            self._end(pool, job, "cancelled", "JobCancelled")
            self.situations.add("running job cancelled")
            self._free_worker(pool)

    def _phase_ended(self, job: MJob) -> None:
        pool = self.pools[job.pool]
        if not job.in_attempt:  # backoff over
            self._begin_attempt(job)
            return
        if job.timing_out:
            self.situations.add("attempt timed out")
            pool.count["timed_out"] += 1
            error = "TooSlowError"
        elif job.attempts <= job.work.fails:
            error = "JobError"
        else:
            self._end(pool, job, "succeeded", None)
            self._free_worker(pool)
            return
        if job.attempts < job.work.attempts and (
            error == "JobError" or job.work.retry_timeouts
        ):
            pool.count["retried"] += 1
            self.situations.add("attempt retried")
            job.in_attempt = False
            job.until = self.now + 2 ** (job.attempts - 1)
            return
        self._end(pool, job, "failed", error)
        self._free_worker(pool)

    def _give_up_dispatches(self) -> None:
        """Blocked dispatches whose max_wait has run out raise ``PoolFull``.

        Done before the jobs' events of the same instant: trio expires every
        deadline due (cancelling the dispatch's wait) before any task runs, so
        a worker freed at that instant finds the dispatcher gone.
        """
        for pool in self.pools.values():
            for job in [job for job in pool.waiting if job.deadline <= self.now]:
                self._refuse(job, "poolfull")
                pool.count["rejected"] += 1
                self.situations.add("dispatch timed out with PoolFull")
                if job.max_wait == pool.spec.max_wait:
                    self.situations.add("pool's max_wait ran out")
                if any(other.until == self.now for other in pool.running):
                    self.situations.add("max_wait ran out as a job's phase ended")

    def _settle(self) -> None:
        """Run everything due at or before ``now``."""
        self._give_up_dispatches()
        while True:
            due = [
                job
                for pool in self.pools.values()
                for job in pool.running
                if job.until <= self.now
            ]
            if not due:
                break
            self._phase_ended(due[0])
        if (
            self.closed
            and self.done_at is None
            and not any(p.running or p.queue for p in self.pools.values())
        ):
            self.done_at = self.now

    def _next_event(self) -> float:
        times = [job.until for pool in self.pools.values() for job in pool.running]
        times += [job.deadline for pool in self.pools.values() for job in pool.waiting]
        if self.closed and self.done_at is None:
            times.append(self.grace_deadline)
        return min(times, default=math.inf)

    def _advance_to(self, time: float) -> None:
        while (event := self._next_event()) <= time:
            self.now = event
            if self.done_at is None and self.grace_deadline <= self.now:
                self._expire()
            self._settle()
        self.now = time

    def _finalize(self, grace: float | None) -> None:
        if not self.closed:
            self.closed = True
            for pool in self.pools.values():
                for job in list(pool.waiting):
                    self.situations.add("blocked dispatcher closed")
                    self._refuse(job, "closed")
                if pool.paused:
                    # Intake stopped, so what the pool accepted drains.
                    pool.paused = False
                    if pool.queue:
                        self.situations.add("finalize resumed a paused queue")
                    self._fill(pool)
        self._settle()
        if grace is not None and self.done_at is None:
            if self.now + grace < self.grace_deadline < math.inf:
                self.situations.add("later finalize shortened the grace period")
            self.grace_deadline = min(self.grace_deadline, self.now + grace)
            if self.grace_deadline <= self.now:
                self._expire()

    def _expire(self) -> None:
        self.situations.add("grace period expired")
        for pool in self.pools.values():
            if pool.queue:
                self.situations.add("grace period expired with queued jobs")
            while pool.queue:
                self._end(pool, pool.queue.popleft(), "cancelled", "JobCancelled")
            for job in list(pool.running):
                self._end(pool, job, "cancelled", "JobCancelled")
        self._settle()

    # -- barrier and finalize completion

    def finished_at(self, waiter: MWaiter) -> float | None:
        """When ``waiter`` should return, or None if it should still wait."""
        if waiter.covered is None:
            if self.done_at is None:
                return None
            return max(waiter.called_at, self.done_at)
        ends = [waiter.called_at]
        for key in waiter.covered:
            ended_at = self.jobs[key].ended_at
            if ended_at is None:
                return None
            ends.append(ended_at)
        return max(ends)

    def claim(self, waiter: MWaiter) -> list[MJob]:
        """The jobs a returning barrier or finalize reports: those it covers that
        no earlier one reported."""
        if waiter.covered is None:
            keys = [k for k, job in self.jobs.items() if job.seq is not None]
        else:
            keys = sorted(waiter.covered)
        claimed = [self.jobs[k] for k in keys if self.jobs[k].reported_by is None]
        for job in claimed:
            job.reported_by = waiter.name
        return claimed


# ------------------------------------------------------------------- real side


@attrs.define(eq=False)
class Record:
    """A barrier or finalize call that left, in the order they left."""

    kind: Literal["barrier", "finalize"]
    key: int
    time: float
    result: BatchReport | bulkhead.JobsFailed | Literal["cancelled"] | None


def value_of(key: int) -> str:
    return f"value of #{key}"


class Harness:
    """Runs actions against the real dispatcher and records what it sees."""

    def __init__(self, d: bulkhead.Dispatcher, nursery: trio.Nursery) -> None:
        self.d = d
        self.nursery = nursery
        self.t0 = trio.current_time()
        self.works: dict[int, Work] = {}
        self.pool_of: dict[int, int] = {}
        self.releases: dict[int, trio.Event] = {}
        self.handles: dict[int, Job[Any]] = {}
        self.dispatched: dict[int, tuple[str, float]] = {}
        """key -> ("accepted" | "closed" | "cancelled" | "wouldblock" |
        "poolfull", when)."""
        self.pool_full: dict[int, bulkhead.PoolFull] = {}
        self.dispatch_scopes: dict[int, trio.CancelScope] = {}
        self.waiter_scopes: dict[int, trio.CancelScope] = {}
        self.records: list[Record] = []
        self.checked_records = 0
        self.attempts: Counter[int] = Counter()
        """Attempts each job's function really began."""
        self.inside: dict[int, set[int]] = {p: set() for p in d.statistics().pools}
        self.sizes = {p: s.workers for p, s in d.statistics().pools.items()}
        """Each pool's size as the program last set it."""
        self.overruns: list[str] = []
        """Jobs that began while their pool already ran as many as its size."""
        self.controls: list[str] = []
        """How each resize, pause and resume call ended: "ok" or "closed"."""
        self.wait_results: dict[int, tuple[float, Value[Any] | Error]] = {}
        self.terminal: dict[int, tuple[JobState, object]] = {}

    def now(self) -> float:
        return trio.current_time() - self.t0

    async def job(self, key: int) -> str:
        """The function of every job: ``Work`` says what it does."""
        work, pool = self.works[key], self.pool_of[key]
        self.attempts[key] += 1
        attempt = self.attempts[key]
        self.inside[pool].add(key)
        if attempt == 1:  # it started: room was free, counting itself
            busy = self.d.statistics().pools[pool].busy
            if max(busy, len(self.inside[pool])) > self.sizes[pool]:
                self.overruns.append(f"#{key} started in pool {pool} with {busy} busy")
        if attempt == 1 and work.cancels_dispatcher and key in self.dispatch_scopes:
            self.dispatch_scopes[key].cancel()
        try:
            if work.duration is None:
                await self.releases[key].wait()
            else:
                await trio.sleep(work.duration)
        finally:
            self.inside[pool].discard(key)
        if attempt <= work.fails:
            raise JobError(key, attempt)
        return value_of(key)

    def key_of_error(self, error: BaseException) -> int:
        for key, handle in self.handles.items():
            if isinstance(handle.outcome, Error) and handle.outcome.error is error:
                return key
        raise AssertionError(f"{error!r} is the error of no job")

    async def perform(self, action: Action) -> None:
        if isinstance(action, (Dispatch, DispatchNowait)):
            self.works[action.key] = action.work
            self.pool_of[action.key] = action.pool
            self.releases[action.key] = trio.Event()
        if isinstance(action, Dispatch):
            self.dispatch_scopes[action.key] = trio.CancelScope()
            self.nursery.start_soon(self._dispatch, action)
        elif isinstance(action, (Resize, Pause, Resume)):
            try:
                if isinstance(action, Resize):
                    self.d.resize(action.pool, action.workers)
                    self.sizes[action.pool] = action.workers
                elif isinstance(action, Pause):
                    self.d.pause(action.pool)
                else:
                    self.d.resume(action.pool)
            except bulkhead.DispatcherClosed:
                self.controls.append("closed")
            else:
                self.controls.append("ok")
        elif isinstance(action, DispatchNowait):
            try:
                job = self.d.dispatch_nowait(
                    self.job,
                    action.key,
                    priority=action.pool,
                    timeout=action.work.timeout,
                    retry=action.work.retry(),
                )
            except trio.WouldBlock:
                self.dispatched[action.key] = ("wouldblock", self.now())
            except bulkhead.DispatcherClosed:
                self.dispatched[action.key] = ("closed", self.now())
            else:
                self.handles[action.key] = job
                self.dispatched[action.key] = ("accepted", self.now())
                if action.work.cancelled_at_once:
                    job.cancel()
        elif isinstance(action, Release):
            self.releases[action.key].set()
        elif isinstance(action, CancelJob):
            self.handles[action.key].cancel()
        elif isinstance(action, CancelDispatch):
            self.dispatch_scopes[action.key].cancel()
        elif isinstance(action, Barrier):
            self.waiter_scopes[action.key] = trio.CancelScope()
            self.nursery.start_soon(self._barrier, action)
        elif isinstance(action, Finalize):
            self.waiter_scopes[action.key] = trio.CancelScope()
            self.nursery.start_soon(self._finalize, action)
        elif isinstance(action, (CancelBarrier, CancelFinalize)):
            self.waiter_scopes[action.key].cancel()
        elif isinstance(action, Wait):
            self.nursery.start_soon(self._wait, action)
        else:
            await trio.sleep(action.seconds)
        await trio.testing.wait_all_tasks_blocked()

    async def _dispatch(self, action: Dispatch) -> None:
        key = action.key
        with self.dispatch_scopes[key]:
            try:
                job = await self.d.dispatch(
                    self.job,
                    key,
                    priority=action.pool,
                    timeout=action.work.timeout,
                    retry=action.work.retry(),
                    max_wait=action.max_wait,
                )
            except bulkhead.DispatcherClosed:
                self.dispatched[key] = ("closed", self.now())
                return
            except bulkhead.PoolFull as exc:
                self.dispatched[key] = ("poolfull", self.now())
                self.pool_full[key] = exc
                return
            self.handles[key] = job
            self.dispatched[key] = ("accepted", self.now())
        if key not in self.dispatched:
            self.dispatched[key] = ("cancelled", self.now())

    async def _barrier(self, action: Barrier) -> None:
        result: BatchReport | bulkhead.JobsFailed | Literal["cancelled"] = "cancelled"
        with self.waiter_scopes[action.key]:
            try:
                result = await self.d.barrier(action.pool)
            except bulkhead.JobsFailed as exc:
                result = exc
        self.records.append(Record("barrier", action.key, self.now(), result))

    async def _finalize(self, action: Finalize) -> None:
        result: bulkhead.JobsFailed | Literal["cancelled"] | None = "cancelled"
        with self.waiter_scopes[action.key]:
            try:
                await self.d.finalize(action.grace)
                result = None
            except bulkhead.JobsFailed as exc:
                result = exc
        self.records.append(Record("finalize", action.key, self.now(), result))

    async def _wait(self, action: Wait) -> None:
        result: Value[Any] | Error
        try:
            result = Value(await self.handles[action.job].wait())
        except Exception as exc:
            result = Error(exc)
        self.wait_results[action.key] = (self.now(), result)


# --------------------------------------------------------------------- checker


def describe(result: Value[Any] | Error | None) -> str:
    if result is None:
        return "no outcome"
    if isinstance(result, Value):
        return f"returned {result.value!r}"
    if isinstance(result.error, JobError):
        return f"JobError on attempt {result.error.attempt}"
    return type(result.error).__name__


def expected_outcome(job: MJob) -> str:
    if job.state == "succeeded":
        return f"returned {value_of(job.key)!r}"
    if job.error == "JobError":
        return f"JobError on attempt {job.attempts}"
    return str(job.error)


def check(model: Model, h: Harness) -> None:
    """Compare the real dispatcher with the model; check the invariants."""
    stats = h.d.statistics()
    # Invariants any correct dispatcher keeps, model or not.
    assert not h.overruns, f"a job started in a full pool: {h.overruns}"
    for priority, pool_stats in stats.pools.items():
        s = pool_stats
        assert s.submitted == s.queued + s.busy + s.succeeded + s.failed + s.cancelled
        assert s.workers == h.sizes[priority], f"size of pool {priority}"
        assert s.limit == s.workers, f"limit of pool {priority}"
        # Every worker is busy or idle; surplus idle workers have retired, and
        # busy ones above the size only finish their job (after a shrink).
        assert s.busy + s.idle + s.abandoned == s.current_workers, priority
        assert s.current_workers <= max(s.workers, s.busy), f"pool {priority}"
        if s.idle and not s.paused:
            assert s.queued == s.waiting_dispatchers == 0, f"pool {priority} idles"
    assert stats.total.name == "total"
    for field in attrs.fields(PoolStatistics)[1:]:  # every field but the name
        parts = [getattr(s, field.name) for s in stats.pools.values()]
        total = any(parts) if field.name == "paused" else sum(parts)
        assert getattr(stats.total, field.name) == total, field.name
    # The ledger.
    assert stats.closed == model.closed
    assert h.controls == model.controls, "resize, pause or resume"
    for priority, pool in model.pools.items():
        expected = pool.statistics(model.closed)
        assert stats.pools[priority] == expected, f"statistics of pool {priority}"
        inside = {job.key for job in pool.running if job.in_attempt}
        assert h.inside[priority] == inside, f"jobs running in pool {priority}"
    for job in model.jobs.values():
        check_job(h, job)
    if len(h.records) - h.checked_records > 1:
        model.situations.add("several barriers or finalize calls returned at once")
    for record in h.records[h.checked_records :]:
        check_record(model, h, record)
    h.checked_records = len(h.records)
    for waiter in [*model.barriers.values(), *model.finalizers.values()]:
        if waiter.state == "waiting":
            assert model.finished_at(waiter) is None, f"{waiter.name} did not return"
    for wait_key, (job_key, called_at) in model.waits.items():
        job = model.jobs[job_key]
        if job.ended_at is None:
            assert wait_key not in h.wait_results, f"wait W{wait_key} returned early"
            continue
        when, result = h.wait_results[wait_key]
        assert when == max(called_at, job.ended_at), f"wait W{wait_key} returned late"
        outcome = h.handles[job_key].outcome
        if isinstance(result, Error):
            assert isinstance(outcome, Error)
            assert result.error is outcome.error
        else:
            assert result == outcome


def check_job(h: Harness, job: MJob) -> None:
    key = job.key
    dispatched = h.dispatched.get(key)
    if job.state == "waiting":
        assert dispatched is None, f"#{key} should still be blocked in dispatch"
        return
    if job.state == "refused":
        assert dispatched is not None, f"#{key} should have been refused"
        assert dispatched == (job.refusal, job.refused_at), f"#{key} refused"
        assert key not in h.handles
        assert not h.attempts[key], f"#{key} ran though its dispatch raised"
        if job.refusal == "poolfull":
            error = h.pool_full[key]
            assert isinstance(error, trio.WouldBlock)
            assert (error.priority, error.max_wait) == (job.pool, job.max_wait)
        return
    assert dispatched == ("accepted", job.accepted_at), f"#{key} accepted"
    handle = h.handles[key]
    assert handle.priority == job.pool
    assert handle.state is JobState[job.state.upper()], f"state of #{key}"
    assert handle.attempts == job.attempts, f"attempts of #{key}"
    assert h.attempts[key] == job.calls, f"calls of #{key}"
    if job.state in TERMINAL:
        assert describe(handle.outcome) == expected_outcome(job), f"outcome of #{key}"
        first = h.terminal.setdefault(key, (handle.state, handle.outcome))
        assert first[0] is handle.state, f"terminal state of #{key} changed"
        assert first[1] is handle.outcome, f"outcome of #{key} changed"
    else:
        assert handle.outcome is None


def check_record(model: Model, h: Harness, record: Record) -> None:
    waiters = model.barriers if record.kind == "barrier" else model.finalizers
    waiter = waiters[record.key]
    assert waiter.state == "waiting", f"{waiter.name} returned twice"
    if record.result == "cancelled":
        assert waiter.cancel_requested, f"{waiter.name} was cancelled by nobody"
        waiter.state = "cancelled"
        model.situations.add(f"{record.kind} cancelled")
        return
    finished = model.finished_at(waiter)
    assert finished is not None, f"{waiter.name} returned before its jobs ended"
    assert record.time == finished, f"{waiter.name} returned late"
    waiter.state = "returned"
    claimed = model.claim(waiter)
    report = BatchReport(
        jobs=len(claimed),
        succeeded=sum(job.state == "succeeded" for job in claimed),
        failed=sum(job.state == "failed" for job in claimed),
        cancelled=sum(job.state == "cancelled" for job in claimed),
        elapsed=finished - waiter.called_at,
    )
    failures = sorted(
        job.key
        for job in claimed
        if job.state == "failed" and not model.pools[job.pool].spec.record
    )
    if failures:
        model.situations.add(f"{record.kind} raised JobsFailed")
        assert isinstance(record.result, bulkhead.JobsFailed), waiter.name
        assert record.result.report == report, f"report of {waiter.name}"
        raised = sorted(h.key_of_error(exc) for exc in record.result.exceptions)
        assert raised == failures, f"failures raised by {waiter.name}"
    elif record.kind == "finalize":
        assert record.result is None, f"{waiter.name} raised"
    else:
        assert record.result == report, f"report of {waiter.name}"


# --------------------------------------------------------------------- running


def say(line: str) -> None:
    """Note a line of the program (replays outside Hypothesis stay quiet)."""
    if currently_in_test_context():
        note(line)


async def step(model: Model, h: Harness, action: Action, *, wind_down: bool) -> None:
    say(f"    {'# then: ' if wind_down else ''}{action!r},")
    await h.perform(action)
    model.apply(action)
    check(model, h)


async def scenario(
    pools: list[PoolSpec], choose: Callable[[Model], Action | None]
) -> None:
    model = Model(pools)
    finished = False
    # With an autojumping clock a deadlock jumps here instead of hanging.
    with trio.fail_after(1_000_000):
        async with (
            bulkhead.open_dispatcher([p.config() for p in pools]) as d,
            trio.open_nursery() as nursery,
        ):
            h = Harness(d, nursery)
            check(model, h)
            while (action := choose(model)) is not None:
                await step(model, h, action, wind_down=False)
            # Wind down: release every hanging job, finalize, run to the end.
            for key in model.hanging():
                await step(model, h, Release(key), wind_down=True)
            await step(model, h, Finalize(model.next_key, None), wind_down=True)
            for _ in range(1000):
                if model.done_at is not None and not model.waiting_finalizers():
                    break
                await step(model, h, Advance(1), wind_down=True)
            assert model.done_at is not None
            assert not nursery.child_tasks, "a task never got its answer"
            finished = True
        # A crash would have cancelled the steps above without a word.
        assert finished, "the dispatcher tore itself down"
        assert live_bulkhead_tasks() == [], "a dispatcher task outlived it"
    if currently_in_test_context():
        for situation in sorted(model.situations):
            event(situation)
        target(float(len(model.situations)), label="situations")
    for job in model.jobs.values():
        assert job.state in (*TERMINAL, "refused"), f"#{job.key} never ended"
        if job.seq is not None:
            assert job.reported_by is not None, f"#{job.key} was never reported"


def single_leaf(error: BaseException) -> BaseException:
    """The one exception inside nested groups, for a readable report."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def run_scenario(
    pools: list[PoolSpec], choose: Callable[[Model], Action | None]
) -> None:
    say(f"run_program({pools!r}, [")
    try:
        trio.run(
            scenario, pools, choose, clock=trio.testing.MockClock(autojump_threshold=0)
        )
    except BaseExceptionGroup as group:
        raise single_leaf(group) from None
    finally:
        say("])")


def run_program(pools: list[PoolSpec], program: list[Action]) -> None:
    """Replay a program, such as the one a failing example prints."""
    actions: Iterator[Action] = iter(program)
    run_scenario(pools, lambda model: next(actions, None))


# ------------------------------------------------------------------ strategies


pool_specs = st.lists(
    st.builds(
        PoolSpec,
        priority=st.sampled_from([1, 2, 3, -1]),
        workers=st.integers(1, 2),
        queue=st.integers(0, 2),
        record=st.booleans(),
        copy_context=st.booleans(),
        max_wait=st.sampled_from([None, None, 1, 3]),
    ),
    min_size=1,
    max_size=2,
    unique_by=lambda spec: spec.priority,
)


def works(*, blocking: bool) -> st.SearchStrategy[Work]:
    return st.builds(
        Work,
        duration=st.sampled_from([None, None, 1, 2, 3]),
        fails=st.integers(0, 3),
        timeout=st.one_of(st.none(), st.integers(1, 3)),
        attempts=st.integers(1, 3),
        retry_timeouts=st.booleans(),
        cancels_dispatcher=st.booleans() if blocking else st.just(False),
        cancelled_at_once=st.just(False) if blocking else st.booleans(),
    )


# None takes the pool's default; whole seconds may run out as a job ends.
max_waits = st.sampled_from([None, None, None, None, 0, 0.5, 1, 2, math.inf])


# How often each kind of action is drawn when it is possible at all: weights
# chosen so that pools often saturate (blocked dispatchers, full queues) before
# a finalize, whose grace period then expires with work left.
WEIGHTS = {
    "dispatch": 6,
    "burst": 2,
    "dispatch_nowait": 3,
    "advance": 4,
    "release": 3,
    "barrier": 3,
    "cancel_queued": 3,
    "cancel_running": 2,
    "cancel_ended": 1,
    "wait": 1,
    "cancel_dispatch": 2,
    "cancel_barrier": 1,
    "finalize": 2,
    "cancel_finalize": 1,
    "resize": 3,
    "pause": 2,
    "resume": 3,
}


def resizes(size: int) -> list[int]:
    """Sizes to resize a pool of ``size`` workers to: 1 to 3, other than its own."""
    return [workers for workers in (1, 2, 3) if workers != size]


def action_strategies(model: Model) -> dict[str, st.SearchStrategy[Action]]:
    key = st.just(model.next_key)
    pool = st.sampled_from(sorted(model.pools))
    graces: list[float] = [0.5, 1.5, 2.5, 0]
    if not model.closed and any(p.paused and p.queue for p in model.pools.values()):
        # finalize(0) would resume the pool, starting queued jobs, and expire
        # at the same instant: how far they get is up to trio's scheduling.
        graces.remove(0)
    options: dict[str, st.SearchStrategy[Action]] = {
        "dispatch": st.builds(Dispatch, key, pool, works(blocking=True), max_waits),
        "dispatch_nowait": st.builds(DispatchNowait, key, pool, works(blocking=False)),
        "advance": st.builds(Advance, st.integers(1, 3)),
        "barrier": st.builds(Barrier, key, st.one_of(st.none(), pool)),
        "finalize": st.builds(
            Finalize, key, st.one_of(st.sampled_from(graces), st.none())
        ),
        "resize": pool.flatmap(
            lambda p: st.builds(
                Resize, st.just(p), st.sampled_from(resizes(model.pools[p].size))
            )
        ),
        "pause": st.builds(Pause, st.one_of(pool, st.none())),
    }
    if model.closed or any(p.paused for p in model.pools.values()):
        options["resume"] = st.builds(Resume, st.one_of(pool, st.none()))
    if model.closed:  # dispatching once more is enough to see it refused
        del options["dispatch_nowait"]
    choices: dict[str, tuple[Callable[[int], Action], list[int]]] = {
        "release": (Release, model.hanging()),
        "cancel_queued": (CancelJob, model.keys("queued")),
        "cancel_running": (CancelJob, model.keys("running")),
        "cancel_ended": (CancelJob, model.keys(*TERMINAL)),
        "cancel_dispatch": (CancelDispatch, model.keys("waiting")),
        "cancel_barrier": (CancelBarrier, model.waiting_barriers()),
        "cancel_finalize": (CancelFinalize, model.waiting_finalizers()),
    }
    for kind, (action, keys) in choices.items():
        if keys:
            options[kind] = st.builds(action, st.sampled_from(keys))
    if accepted := model.keys("queued", "running", *TERMINAL):
        options["wait"] = st.builds(Wait, key, st.sampled_from(accepted))
    return options


def bursts(model: Model) -> st.SearchStrategy[list[Action]]:
    """Several tasks dispatching the same work into one pool at once."""

    def burst(
        pool: int, work: Work, count: int, max_wait: float | None
    ) -> list[Action]:
        keys = range(model.next_key, model.next_key + count)
        return [Dispatch(key, pool, work, max_wait) for key in keys]

    return st.builds(
        burst,
        st.sampled_from(sorted(model.pools)),
        works(blocking=True),
        st.integers(2, 5),
        max_waits,
    )


def draw_actions(data: st.DataObject, model: Model, step: int) -> list[Action]:
    options: dict[str, st.SearchStrategy[list[Action]]] = {
        kind: strategy.map(lambda action: [action])
        for kind, strategy in action_strategies(model).items()
    }
    if not model.closed:
        options["burst"] = bursts(model)
    if step < 4:  # let the pools fill up first
        options.pop("finalize")
    weights = dict(WEIGHTS)
    if not model.closed and any(pool.queue for pool in model.pools.values()):
        weights["finalize"] += 4  # a grace period may expire on queued jobs
    if model.closed and model.done_at is None:
        weights["finalize"] += 4  # a later, shorter grace period
    if model.closed:  # once is enough to see them refused
        weights.update(resize=1, pause=1, resume=1)
    elif any(len(p.running) > 1 or p.waiting for p in model.pools.values()):
        weights["resize"] += 3  # shrink while busy, grow with waiters
    kinds = [
        kind
        for kind, weight in weights.items()
        if kind in options
        for _ in range(weight)
    ]
    kind = data.draw(st.sampled_from(kinds))
    return data.draw(options[kind])


# ----------------------------------------------------------------------- tests


# No "explain" phase: tracing a whole trio run per example makes it take minutes,
# and the printed program already says what happened.
@settings(phases=[p for p in Phase if p is not Phase.explain])
@given(st.data())
def test_dispatcher_agrees_with_the_model(data: st.DataObject) -> None:
    pools = data.draw(pool_specs, label="pools")
    # Varies trio's scheduling order (trio registers its random with Hypothesis).
    data.draw(st.random_module())
    steps = data.draw(st.integers(0, 40), label="steps")
    counter = itertools.count()
    pending: list[Action] = []

    def choose(model: Model) -> Action | None:
        if not pending:
            step = next(counter)
            if step >= steps:
                return None
            pending.extend(draw_actions(data, model, step))
        return pending.pop(0)

    run_scenario(pools, choose)


# Programs worth running every time, whatever Hypothesis draws; each is also a
# template for turning a failing example into a regression test.


def test_program_cancelling_a_queued_job_admits_the_head_blocked_dispatcher() -> None:
    run_program(
        [PoolSpec(priority=1, workers=1, queue=1)],
        [
            Dispatch(key=1, pool=1, work=Work()),  # running
            Dispatch(key=2, pool=1, work=Work()),  # queued
            Dispatch(key=3, pool=1, work=Work()),  # blocked
            Dispatch(key=4, pool=1, work=Work()),  # blocked behind it
            CancelJob(key=2),
            Release(key=1),
            Advance(seconds=1),
        ],
    )


def test_program_a_later_shorter_grace_period_expires_on_running_and_queued() -> None:
    run_program(
        [PoolSpec(priority=1, workers=1, queue=1), PoolSpec(priority=2, workers=2)],
        [
            Dispatch(key=1, pool=1, work=Work()),
            Dispatch(key=2, pool=1, work=Work(duration=1)),
            Dispatch(key=3, pool=1, work=Work(duration=1)),  # blocked: refused
            Dispatch(key=4, pool=2, work=Work(duration=3, fails=1, attempts=2)),
            Finalize(key=5, grace=2.5),
            Wait(key=6, job=4),
            Advance(seconds=1),
            Finalize(key=7, grace=0.5),  # deadline 1.5 instead of 2.5
            CancelFinalize(key=5),
            Advance(seconds=1),
        ],
    )


def test_program_dispatchers_cancelled_at_the_hand_off_get_their_jobs() -> None:
    run_program(
        [PoolSpec(priority=-1, workers=1), PoolSpec(priority=-2, workers=1)],
        [
            Dispatch(key=1, pool=-1, work=Work()),
            Dispatch(key=2, pool=-1, work=Work(duration=1, cancels_dispatcher=True)),
            Dispatch(key=3, pool=-1, work=Work(duration=1, cancels_dispatcher=True)),
            CancelDispatch(key=3),
            # Handed to an idle worker, cancelled before that worker ran it.
            DispatchNowait(key=4, pool=-2, work=Work(cancelled_at_once=True)),
            # Handed to an idle worker, whose job cancels the dispatcher while
            # it yields: accepted all the same.
            Dispatch(key=5, pool=-2, work=Work(duration=1, cancels_dispatcher=True)),
            Release(key=1),
            Advance(seconds=2),
        ],
    )


def test_program_overlapping_barriers_each_report_their_own_failures() -> None:
    run_program(
        [PoolSpec(priority=1, workers=2), PoolSpec(priority=2, workers=1, record=True)],
        [
            Dispatch(key=1, pool=1, work=Work(duration=1, fails=1)),
            Dispatch(key=2, pool=2, work=Work(duration=2, fails=1)),
            Barrier(key=3, pool=1),
            Dispatch(key=4, pool=1, work=Work(duration=3, timeout=2, attempts=2)),
            Barrier(key=5, pool=None),
            Barrier(key=6, pool=2),
            Barrier(key=7, pool=None),
            CancelBarrier(key=7),
            Advance(seconds=3),
            Barrier(key=8, pool=None),
            Advance(seconds=3),
        ],
    )


def test_program_a_shrunk_pool_starts_nothing_until_below_its_size() -> None:
    # Issue 11: shrinking never interrupts a running job; busy workers above the
    # new size retire as their job ends, and no job starts meanwhile.
    run_program(
        [PoolSpec(priority=1, workers=3, queue=1)],
        [
            Dispatch(key=1, pool=1, work=Work()),
            Dispatch(key=2, pool=1, work=Work(duration=2)),
            Dispatch(key=3, pool=1, work=Work(duration=3, fails=1, attempts=2)),
            Dispatch(key=4, pool=1, work=Work(duration=1)),  # queued
            Dispatch(key=5, pool=1, work=Work(duration=1)),  # blocked
            Resize(pool=1, workers=1),  # 3 busy, 3 workers alive
            Advance(seconds=2),  # #2 ends: its worker retires, nothing starts
            Resize(pool=1, workers=2),  # keeps a busy worker instead of spawning
            Advance(seconds=1),  # #3 retries: a retry is no start
            Release(key=1),  # busy 1 < 2: #4 starts, #5 queued
            Resize(pool=1, workers=1),  # #5 waits for #4 and #3 to end
            Advance(seconds=5),
        ],
    )


def test_program_a_grown_pool_serves_queue_then_blocked_dispatchers() -> None:
    # Issue 11: new workers start at once and take waiting jobs first-in
    # first-out; a dispatch_nowait never barges ahead of the ones left blocked.
    run_program(
        [PoolSpec(priority=2, workers=1, queue=1), PoolSpec(priority=3, workers=1)],
        [
            Dispatch(key=1, pool=2, work=Work()),
            Dispatch(key=2, pool=2, work=Work()),  # queued
            Dispatch(key=3, pool=2, work=Work(duration=1)),  # blocked
            Dispatch(key=4, pool=2, work=Work(duration=2)),
            Dispatch(key=5, pool=2, work=Work(duration=1)),
            Resize(pool=2, workers=3),  # #2 and #3 start, #4 queued, #5 blocked
            DispatchNowait(key=6, pool=2, work=Work()),  # refused
            Dispatch(key=7, pool=3, work=Work()),
            Dispatch(key=8, pool=3, work=Work(duration=1, cancels_dispatcher=True)),
            Resize(pool=3, workers=2),  # a new worker takes #8: accepted all the same
            Resize(pool=2, workers=3),  # no change
            Advance(seconds=1),
            Release(key=2),
            Advance(seconds=2),
        ],
    )


def test_program_a_paused_pool_queues_blocks_and_resumes_in_order() -> None:
    # Issue 11: a paused pool accepts into its queue and starts nothing; running
    # jobs go on; resume starts the waiting jobs at once, queue first.
    run_program(
        [PoolSpec(priority=1, workers=2, queue=1), PoolSpec(priority=2, workers=1)],
        [
            Dispatch(key=1, pool=1, work=Work(duration=2)),
            Pause(pool=None),
            DispatchNowait(key=2, pool=1, work=Work(duration=1)),  # queued
            DispatchNowait(key=3, pool=1, work=Work()),  # refused: queue full
            DispatchNowait(key=4, pool=2, work=Work()),  # refused: idle but paused
            Dispatch(key=5, pool=1, work=Work(duration=1)),  # blocked
            Dispatch(key=6, pool=2, work=Work(duration=3)),  # blocked
            Barrier(key=7, pool=1),
            Advance(seconds=2),  # #1 ends; its worker starts nothing
            CancelJob(key=2),  # withdrawn from the queue: #5 admitted
            Resume(pool=1),  # #5 starts
            Pause(pool=1),
            Pause(pool=1),  # idempotent
            Dispatch(key=8, pool=1, work=Work(duration=1)),  # queued
            Resize(pool=2, workers=2),  # grows, still paused
            Advance(seconds=1),
            Resume(pool=None),
            Advance(seconds=2),
        ],
    )


def test_program_finalize_resumes_paused_pools_and_refuses_controls() -> None:
    # Issue 11: finalize resumes a paused pool so what it accepted drains (or
    # is cancelled when the grace period ends); from then on resize, pause and
    # resume raise DispatcherClosed, however often they are called.
    run_program(
        [PoolSpec(priority=1, workers=1, queue=2), PoolSpec(priority=2, workers=1)],
        [
            Pause(pool=None),
            Dispatch(key=1, pool=1, work=Work(duration=1)),
            Dispatch(key=2, pool=1, work=Work()),
            Dispatch(key=3, pool=1, work=Work()),  # blocked: refused at finalize
            Dispatch(key=4, pool=2, work=Work(), max_wait=2),  # closed, not full
            Finalize(key=5, grace=2.5),  # #1 starts now, #2 after it
            Resize(pool=1, workers=2),
            Pause(pool=2),
            Resume(pool=None),
            Resize(pool=1, workers=2),
            Advance(seconds=3),  # #2 is cancelled at 2.5
        ],
    )


def test_program_max_wait_runs_out_with_pool_full_next_in_line_served() -> None:
    # Issue 11: a dispatch that found no room raises PoolFull after max_wait
    # (not accepted, counted in rejected); max_wait=0 refuses at once; the
    # pool's max_wait is the default, math.inf overrides it. A max_wait that
    # runs out at the instant a job ends loses: trio expires deadlines before
    # tasks run, and the freed worker goes to the next dispatcher in line.
    run_program(
        [PoolSpec(priority=1, workers=1), PoolSpec(priority=2, workers=1, max_wait=1)],
        [
            Dispatch(key=1, pool=1, work=Work(duration=2)),
            Dispatch(key=2, pool=1, work=Work(), max_wait=2),  # runs out at 2
            Dispatch(key=3, pool=1, work=Work(duration=1), max_wait=0.5),
            Dispatch(key=4, pool=1, work=Work(duration=1)),  # served at 2
            Dispatch(key=5, pool=1, work=Work(), max_wait=0),  # refused at once
            Dispatch(key=6, pool=2, work=Work()),
            Dispatch(key=7, pool=2, work=Work()),  # the pool's max_wait: 1
            Dispatch(key=8, pool=2, work=Work(), max_wait=math.inf),
            Dispatch(key=9, pool=2, work=Work(duration=1), max_wait=3),
            Advance(seconds=2),
            CancelDispatch(key=8),  # #9 is next in line
            Release(key=6),  # #9 admitted before its max_wait ran out
            Advance(seconds=2),
        ],
    )
