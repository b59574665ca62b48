"""One bulkhead: the hand-off to its workers, its queue, and the worker loop.

Design
------
This is the only module that touches trio's low-level scheduling
(``wait_task_rescheduled`` / ``reschedule``), as ``ParkingLot`` is for trio.
A memory channel of size ``queue`` would give rendezvous, FIFO order and
cancellation atomicity, but it cannot withdraw a queued job that
:meth:`Job.cancel` cancels, and every job would cost two channel operations.
Instead the pool hands a job straight to a parked worker:

* idle workers park on ``_idle`` (a stack: the most recently idle worker is the
  warmest); a dispatch pops one and reschedules it *with the job*;
* accepted jobs that found no idle worker wait in ``_queue`` (bounded by
  ``PoolConfig.queue``);
* dispatchers that found neither park in ``_dispatchers``, an insertion-ordered
  dict keyed by task, carrying their job in the registration itself.

Every transition happens in one synchronous block: whoever frees a worker or a
queue slot completes the head waiter's operation *for* it (accepts its job,
marks it running, counts it) before rescheduling it. A woken dispatcher's job
is accepted; an aborted one's never was. Fairness follows: a freed worker or
slot goes to the head waiter, and ``dispatch_nowait`` refuses while anyone is
parked, so it never barges.

What the pool holds, as trio's ``Runner`` holds small parts: its
:class:`~._capacity._Capacity` (how many jobs may run: pause, adaptive
limit, resizing), its :class:`~._batch._Epochs` (barrier epochs and the
failure policy) and its :class:`~._attempts._Attempts` (timeouts and
retries); how a job's attempts run is its ``kind``'s business. Its worker
tasks are spawned, counted and torn down by the dispatcher's
:class:`~._lifetime._Lifetime`. The pool owns the hand-off state and the job
counters; each part owns its own.

The hot path keeps a few measured inlinings, each marked "inlined, as X()".
"""

from __future__ import annotations

import enum
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

import attrs
import outcome
import trio
from outcome import Error, Value
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._attempts import Outcome, _Attempts, own_failure
from ._batch import _Epochs
from ._capacity import _Capacity
from ._errors import DispatcherClosed, PoolFull
from ._hooks import Hooks
from ._job import Job, JobState
from ._kinds import PoolKind, check_callable, kind_for
from ._policy import OnError, PoolConfig, pool_name
from ._stats import PoolStatistics

# The JobState members every job passes through, as globals: on Python 3.11
# looking a member up on the Enum class costs some 900 instructions (through
# EnumType's __getattr__ hook), a global about 20.
_RUNNING = JobState.RUNNING
_SUCCEEDED = JobState.SUCCEEDED
_FAILED = JobState.FAILED
_CANCELLED = JobState.CANCELLED


class _Leave(enum.Enum):
    """What an idle worker is woken with when it is to exit instead of work."""

    STOP = "stop"
    """The pool stops (finalize)."""
    RETIRE = "retire"
    """The pool shrank (resize)."""


@attrs.define(eq=False, repr=False)
class _Pool:
    """One bulkhead of a dispatcher (private; statistics are its public face)."""

    config: PoolConfig
    on_error: OnError
    keep_failures: int
    running_job: tuple[object, int]
    """(dispatcher, priority): marks the contexts of the pool's thread jobs."""
    crash: Callable[[BaseException], None]
    """Crash the dispatcher with an error raised outside a job (a hook's)."""
    hooks: Hooks | None
    timings: bool = False
    """Whether to time every job (``accepted_at``, ``started_at``,
    ``finished_at``); hooks and an adaptive limit turn it on too."""
    closed: bool = True
    """Whether intake is closed: until the dispatcher starts, and from finalize."""
    _closed_reason: str | None = None
    """Why intake closed; ``None`` while the dispatcher has not started."""
    _stopping: bool = False
    _idle: list[Task] = attrs.field(factory=list)
    _queue: deque[Job[Any]] = attrs.field(factory=deque)
    _dispatchers: dict[Task, Job[Any]] = attrs.field(factory=dict)
    _running: set[Job[Any]] = attrs.field(factory=set)
    checked_fn: weakref.ref[Any] | None = None
    """The last function validated for this pool, so loops skip re-checking
    it; weakly held, so a finished job's function (and what a partial or a
    bound method holds) is not kept alive."""
    checked_wrap: Callable[[Any], Any] | None = None
    """What the kind wraps the last checked function in, if anything."""
    checked_name: str = ""
    """The name the last checked function's jobs get when dispatch gives
    none: worked out once per function rather than once per job."""
    _submitted: int = 0
    _started: int = 0
    _succeeded: int = 0
    _failed: int = 0
    _cancelled: int = 0
    _rejected: int = 0

    name: str = attrs.field(init=False)
    """What the pool is called (``PoolConfig.name``, or its priority's)."""
    kind: PoolKind = attrs.field(init=False)
    """How this pool's jobs run: the only part of a pool that knows its kind."""
    check_arguments: Callable[[tuple[Any, ...]], None] | None = attrs.field(init=False)
    """The kind's check of each job's arguments at dispatch, if it has one."""
    capacity: _Capacity = attrs.field(init=False)
    epochs: _Epochs = attrs.field(init=False)
    _attempts: _Attempts = attrs.field(init=False)
    _cap: int = attrs.field(init=False)
    """Most jobs that may be running for another one to start."""
    _gated: bool = attrs.field(init=False)
    """Whether ``_cap`` can bind below the idle workers: the pool's copy of
    ``capacity.gate()``, so the hot path pays one flag test."""
    _timing: bool = attrs.field(init=False)
    """Whether jobs' start times are taken (hooks or an adaptive limit)."""

    def __attrs_post_init__(self) -> None:
        config = self.config
        self.name = pool_name(config.priority, config.name)
        self.kind = kind_for(config, self.running_job)
        self.check_arguments = self.kind.check_arguments
        self.capacity = _Capacity.of(config)
        self.epochs = _Epochs(self.on_error, self.keep_failures)
        self._attempts = _Attempts(self.kind, self.hooks, self._call_hook)
        self._timing = (
            self.timings or self.hooks is not None or self.capacity.limiter is not None
        )
        self._set_cap()

    # ---------------------------------------------------------------- control

    def _set_cap(self) -> None:
        self._gated, self._cap = self.capacity.gate()

    def _can_start(self) -> bool:
        return not self._gated or len(self._running) < self._cap

    @trio.lowlevel.enable_ki_protection
    def _fill(self) -> None:
        """Room to start jobs appeared: idle workers take what is waiting."""
        while self._idle and (self._queue or self._dispatchers) and self._can_start():
            job = self._take_nowait()
            assert job is not None
            reschedule(self._idle.pop(), Value(job))

    @trio.lowlevel.enable_ki_protection
    def set_paused(self, paused: bool) -> None:
        """Pause (start nothing, keep accepting into the queue) or resume."""
        self.capacity.paused = paused
        self._set_cap()
        self._fill()

    @trio.lowlevel.enable_ki_protection
    def resize(self, workers: int, live: int) -> int:
        """Make the pool ``workers`` strong, with ``live`` workers alive;
        returns how many workers to spawn. Idle workers retire at once."""
        self.kind.resize(workers)
        spawn, retire = self.capacity.resize(workers, live, len(self._idle))
        for _ in range(retire):
            reschedule(self._idle.pop(), Value(_Leave.RETIRE))
        self._set_cap()
        self._fill()
        return spawn

    # ----------------------------------------------------------------- intake

    def check_function(self, fn: object) -> None:
        """Reject what this pool could never call, before anything is accepted.

        Dispatch skips it for the function ``checked_fn`` refers to; it sets
        ``checked_fn``, ``checked_wrap`` and ``checked_name`` for ``fn``.
        """
        self.checked_wrap, self.checked_name, self.checked_fn = check_callable(
            self.kind, fn
        )

    def refuse_if_full(self) -> None:
        """Raise what ``dispatch_nowait`` would raise now, if it would refuse."""
        if self.closed:
            raise self._closed_error()
        if self._dispatchers or not (
            # inlined, as _can_start()
            (self._idle and (not self._gated or len(self._running) < self._cap))
            or len(self._queue) < self.config.queue
        ):
            self.reject(trio.WouldBlock())

    def reject(self, error: trio.WouldBlock) -> NoReturn:
        """Count a refused dispatch, tell the hook, and raise ``error``."""
        self._rejected += 1
        hooks = self.hooks
        if hooks is not None and hooks.on_rejected is not None:
            self._call_hook(hooks.on_rejected, self.config.priority, error)
        raise error

    def full_error(self, max_wait: float) -> PoolFull:
        return self.capacity.full_error(self.config, max_wait)

    @trio.lowlevel.enable_ki_protection
    async def wait_to_accept(self, job: Job[Any]) -> None:
        """Park the caller until a worker or queue slot takes ``job``.

        For a caller whose ``try_accept`` just failed. Atomic under
        cancellation and KeyboardInterrupt: if this raises, the job was not
        accepted (KI-protected, so Ctrl-C cannot land between registering and
        parking).
        """
        task = current_task()
        self._dispatchers[task] = job

        def abort(_: Any) -> Abort:
            del self._dispatchers[task]
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    @trio.lowlevel.enable_ki_protection
    def try_accept(self, job: Job[Any]) -> bool:
        """Accept ``job`` if a worker is idle or the queue has room, else False.

        Refuses while a dispatcher is parked, so it never barges.
        """
        if self.closed:
            raise self._closed_error()
        if self._dispatchers:
            return False
        # inlined, as _can_start()
        if self._idle and (not self._gated or len(self._running) < self._cap):
            # inlined, as _accept()
            self._submitted += 1
            batch = self.epochs.current
            if batch is None:
                batch = self.epochs.open()
            batch.pending += 1
            job._batch = batch
            hooks = self.hooks
            if hooks is not None and hooks.on_accepted is not None:
                self._call_hook(hooks.on_accepted, job)
            if self._timing:
                self._start(job)
                job._accepted_at = job._started_at
            else:  # inlined, as _start()
                job.state = _RUNNING
                job.attempts = 1
                self._started += 1
                self._running.add(job)
            reschedule(self._idle.pop(), Value(job))
            return True
        if len(self._queue) < self.config.queue:
            self._accept(job)
            self._queue.append(job)
            return True
        return False

    def _accept(self, job: Job[Any]) -> None:
        self._submitted += 1
        batch = self.epochs.open()
        batch.pending += 1
        job._batch = batch
        if self._timing:
            job._accepted_at = trio.current_time()
        hooks = self.hooks
        if hooks is not None and hooks.on_accepted is not None:
            self._call_hook(hooks.on_accepted, job)

    def _start(self, job: Job[Any]) -> None:
        """A worker takes ``job``: its first attempt begins."""
        job.state = _RUNNING
        job.attempts = 1
        self._started += 1
        self._running.add(job)
        if self._timing:
            job._started_at = trio.current_time()
            hooks = self.hooks
            if hooks is not None and hooks.on_started is not None:
                self._call_hook(hooks.on_started, job)

    def _call_hook(self, hook: Callable[..., object], *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:
            self.crash(exc)

    @trio.lowlevel.enable_ki_protection
    def _take_nowait(self) -> Job[Any] | None:
        """The next job for a free worker: queue first, then a parked dispatcher."""
        if self._queue:
            job = self._queue.popleft()
            self._admit_head_dispatcher()
        elif self._dispatchers:
            task = next(iter(self._dispatchers))
            job = self._dispatchers.pop(task)
            self._accept(job)
            reschedule(task)
        else:
            return None
        self._start(job)
        return job

    def _admit_head_dispatcher(self) -> None:
        """A queue slot was freed: it goes to the head parked dispatcher."""
        if self._dispatchers:
            task = next(iter(self._dispatchers))
            job = self._dispatchers.pop(task)
            self._accept(job)
            self._queue.append(job)
            reschedule(task)

    @trio.lowlevel.enable_ki_protection
    def _withdraw(self, job: Job[Any]) -> None:
        """Cancel a queued job: it never starts, and its slot is passed on."""
        self._queue.remove(job)
        self._end(job, None)
        self._admit_head_dispatcher()

    # --------------------------------------------------------------- shutdown

    def _closed_error(self) -> Exception:
        if self._closed_reason is None:
            return RuntimeError(
                "this Dispatcher is not running yet: use `async with "
                "open_dispatcher(...)` or `await nursery.start(dispatcher.run)` first"
            )
        return DispatcherClosed(
            f"the dispatcher takes no more jobs: {self._closed_reason}"
        )

    def open(self) -> None:
        """The dispatcher started: intake opens (once; closed stays closed)."""
        if self._closed_reason is None:
            self.closed = False

    @trio.lowlevel.enable_ki_protection
    def close(self, reason: str) -> None:
        """Stop intake: every parked dispatcher gets DispatcherClosed.

        Idempotent; the first reason given is the one every later dispatch
        is told.
        """
        if self._closed_reason is None:
            self.closed = True
            self._closed_reason = reason
        waiting, self._dispatchers = self._dispatchers, {}
        for task in waiting:
            reschedule(task, outcome.Error(self._closed_error()))
        if self.capacity.paused:  # what was accepted drains
            self.set_paused(False)

    @trio.lowlevel.enable_ki_protection
    def stop(self) -> None:
        """Let workers exit once the queue is drained; idle ones exit now."""
        self._stopping = True
        idle, self._idle = self._idle, []
        for task in idle:
            reschedule(task, outcome.Value(_Leave.STOP))

    @trio.lowlevel.enable_ki_protection
    def expire(self) -> None:
        """Grace period over: cancel every queued and running job, stop waiting
        for abandoned threads."""
        self._attempts.expire()
        while self._queue:
            self._end(self._queue.popleft(), None)
        for job in list(self._running):
            job.cancel()

    # ---------------------------------------------------------------- workers

    @trio.lowlevel.enable_ki_protection
    async def _park_idle(
        self, task: Task, unpark: Callable[[Any], Abort]
    ) -> Job[Any] | _Leave:
        """Register as idle and park until handed a job, or told to leave.

        KI-protected: Ctrl-C between registering and parking would leave a
        registered worker that is not parked.
        """
        self._idle.append(task)
        woken: Job[Any] | _Leave = await wait_task_rescheduled(unpark)
        return woken

    # ------------------------------------------------------------- accounting

    @trio.lowlevel.enable_ki_protection
    def _end(self, job: Job[Any], result: Outcome | None) -> trio.Event | None:
        """Record how ``job`` ended; under "cancel" or a handler this may raise.

        Returns the event of the job's abandoned attempt, if it still runs.
        """
        self._running.discard(job)
        batch = job._batch
        assert batch is not None
        if self._timing:
            job._finished_at = trio.current_time()
            self._observe(job, result)
        if result.__class__ is Value:
            self._succeeded += 1
            batch.succeeded += 1
            # inlined, as Job._end()
            job.state = _SUCCEEDED
            job.outcome = result
            job._fn = job._args = job._context = job._scope = job._batch = None
            done = job._done
            if done is not None:
                done.set()
            # inlined, as _Batch.job_ended()
            batch.pending -= 1
            if not batch.pending and batch.drained_event is not None:
                batch.drained_event.set()
            if self.hooks is not None:
                self._finished(job)
            return job._abandoned_attempt
        if result is None:
            self._cancelled += 1
            batch.cancelled += 1
            job._end(_CANCELLED, outcome.Error(job._cancelled_error()))
        else:
            assert isinstance(result, Error)
            self._failed += 1
            batch.failed += 1
            job._end(_FAILED, result)
            batch.job_ended()
            if self.hooks is not None:
                self._finished(job)
            self.epochs.failed(job, batch, result.error)  # type: ignore[arg-type]
            return job._abandoned_attempt
        batch.job_ended()
        if self.hooks is not None:
            self._finished(job)
        return job._abandoned_attempt

    def _observe(self, job: Job[Any], result: Outcome | None) -> None:
        """Feed the adaptive limit; start what a higher limit lets start."""
        started_at = job.started_at
        if self.capacity.limiter is None or started_at is None or result is None:
            return
        error = result.error if isinstance(result, Error) else None
        latency = job._finished_at - started_at
        if self.capacity.observe(latency, error, len(self._running)):
            self._set_cap()
            self._fill()

    def _finished(self, job: Job[Any]) -> None:
        hooks = self.hooks
        if hooks is not None and hooks.on_finished is not None:
            started_at, finished_at = job.started_at, job.finished_at
            duration = (
                None
                if started_at is None or finished_at is None
                else finished_at - started_at
            )
            self._call_hook(hooks.on_finished, job, duration)

    def statistics(self, current_workers: int) -> PoolStatistics:
        capacity = self.capacity
        return PoolStatistics(
            name=self.name,
            workers=capacity.size,
            current_workers=current_workers,
            limit=capacity.size
            if capacity.limiter is None
            else capacity.limiter.current,
            paused=capacity.paused,
            busy=len(self._running),
            idle=len(self._idle),
            abandoned=self._attempts.abandoned,
            queued=len(self._queue),
            waiting_dispatchers=len(self._dispatchers),
            submitted=self._submitted,
            started=self._started,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            retried=self._attempts.retried,
            timed_out=self._attempts.timed_out,
            rejected=self._rejected,
        )

    def __repr__(self) -> str:
        return f"<bulkhead pool {self.describe()}, {self.config.kind}>"

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self._running)}/{self.capacity.size} "
            f"busy, {len(self._queue)} queued, {len(self._dispatchers)} waiting"
        )


async def work(pool: _Pool, ready: Callable[[], None]) -> None:
    """A worker of ``pool``: take jobs one after another until the pool stops.

    The worker loop, as trio's run loop is a function of its ``Runner``: it
    reads the pool's state and changes it only through the pool's methods.

    ``job.cancel()`` cancels the scope of the worker running the job. The
    scope is long-lived (a scope per job costs more than a trivial job) and
    replaced only after it was cancelled, since a cancelled scope stays so.
    The dispatcher's lifetime counts the worker and crashes the dispatcher
    if this raises.
    """
    task = current_task()
    idle = pool._idle

    def unpark(_: Any) -> Abort:
        idle.remove(task)
        return Abort.SUCCEEDED

    ready()
    job: Job[Any] | None = None
    retiring = False
    try:
        while True:
            with trio.CancelScope() as scope:
                cancelled = False
                while not cancelled:
                    # A gate closes while busy workers are to retire.
                    if pool._gated and pool.capacity.retire_busy():
                        retiring = True
                        pool._set_cap()
                        return
                    # inlined, as _can_start()
                    if (pool._queue or pool._dispatchers) and (
                        not pool._gated or len(pool._running) < pool._cap
                    ):
                        job = pool._take_nowait()
                    if job is None:
                        if pool._stopping:
                            return
                        woken = await pool._park_idle(task, unpark)
                        if isinstance(woken, _Leave):
                            retiring = woken is _Leave.RETIRE
                            return
                        job = woken
                        del woken  # keep no reference to a finished job
                    job._scope = scope
                    result: Outcome | None
                    if job._cancel_requested:  # between hand-off and start
                        result = None
                    elif job._retry is None and job._timeout is None:
                        # inlined, as _Attempts.run(), without a coroutine
                        # frame per job
                        try:
                            result = Value(await pool.kind.run(job))
                        except Exception as exc:
                            result = Error(exc)
                        except BaseException as exc:
                            result = own_failure(exc, scope)
                    else:
                        result = await pool._attempts.run(job, scope)
                    # A cancel that came too late to interrupt still used
                    # up the scope.
                    cancelled = job._cancel_requested
                    # Ended before it is forgotten: a KeyboardInterrupt
                    # in between is caught below, where an ended job is
                    # never ended twice.
                    thread = pool._end(job, result)
                    job = result = None  # keep no reference to a finished job
                    if thread is not None:
                        await pool._attempts.hold_for_abandoned(thread)
            if job is not None:  # job.cancel() fired the scope mid-job
                thread = pool._end(job, None)
                job = None
                if thread is not None:
                    await pool._attempts.hold_for_abandoned(thread)
    except BaseException:
        if job is not None and job.outcome is None:
            pool._end(job, None)
        raise
    finally:
        if retiring:
            pool.capacity.retired()
