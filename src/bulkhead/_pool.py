"""One bulkhead: its workers, the hand-off to them, and the queue.

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

A pool can start fewer jobs than it has idle workers: while it is paused,
or held by an adaptive limit. Only then is ``_cap`` checked (``_gated``), so
the common path pays one flag test; whatever raises the cap (resume, a
higher limit, a resize) calls ``_fill`` to hand waiting jobs to idle
workers. Resizing spawns workers through the dispatcher, retires idle ones
at once (woken with ``_Leave.RETIRE``) and busy ones after their job
(``_excess``). How a job's attempts run is the pool's ``kind``'s business.
"""

from __future__ import annotations

import enum
import inspect
import sys
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

import attrs
import outcome
import trio
from outcome import Error, Value
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._errors import DispatcherClosed, PoolFull
from ._hooks import Hooks
from ._job import Job, JobState, function_name
from ._kinds import PoolKind, kind_for
from ._limit import _Limiter
from ._policy import OnError, PoolConfig, Retry
from ._stats import PoolStatistics, _Batch

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

Outcome: TypeAlias = Value[Any] | Error
"""How an attempt or a job ended (``outcome.Outcome`` is not a union mypy narrows)."""

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


def _own_failure(exc: BaseException, scope: trio.CancelScope) -> Error:
    """The job's own failure inside a ``BaseException`` it raised, else re-raise.

    A job cancelled while it fails (a nursery whose child raises during its
    cleanup) raises a group of ``Cancelled`` and its errors. When ``scope``, the
    worker's, was cancelled (``job.cancel()``, a grace period), that
    ``Cancelled`` is the job's cancellation and the errors are its outcome.
    Anything else is not the job's to keep: a bare ``Cancelled``, a
    cancellation from outside (the dispatcher's teardown), KeyboardInterrupt
    and SystemExit propagate.
    """
    if scope.cancel_called and isinstance(exc, BaseExceptionGroup):
        failures, others = exc.split(Exception)
        only_cancelled = others is not None and others.split(trio.Cancelled)[1] is None
        if failures is not None and only_cancelled:
            return Error(failures)
    raise exc


@attrs.define(eq=False, repr=False)
class _Pool:
    """One bulkhead of a dispatcher (private; statistics are its public face)."""

    config: PoolConfig
    on_error: OnError
    keep_failures: int
    """Most failures one batch keeps for JobsFailed; the rest are counted."""
    owner: object
    """The dispatcher, to mark the contexts of its thread jobs (RUNNING_JOB)."""
    on_crash: Callable[[], None]
    """Called when a worker dies of an exception: the whole dispatcher aborts."""
    crash_with: Callable[[Exception], None]
    """Crash the dispatcher with an exception raised outside a worker (a hook)."""
    hooks: Hooks | None
    epoch: int = 0
    """Barrier epoch that newly accepted jobs belong to."""
    closed: bool = False
    _closed_reason: str = ""
    _stopping: bool = False
    _expired: bool = False
    _idle: list[Task] = attrs.field(factory=list)
    _queue: deque[Job[Any]] = attrs.field(factory=deque)
    _dispatchers: dict[Task, Job[Any]] = attrs.field(factory=dict)
    _running: set[Job[Any]] = attrs.field(factory=set)
    _batches: dict[int, _Batch] = attrs.field(factory=dict)
    _batch: _Batch | None = None
    """The batch of the current epoch, once it has a job."""
    _abandon_scopes: set[trio.CancelScope] = attrs.field(factory=set)
    worker_tasks: set[Task] = attrs.field(factory=set)
    """The pool's live worker tasks, to recognise a job's own task tree."""
    checked_fn: weakref.ref[Any] | None = None
    """The last function validated for this pool, so loops skip re-checking
    it; weakly held, so a finished job's function (and what a partial or a
    bound method holds) is not kept alive."""
    checked_wrap: Callable[[Any], Any] | None = None
    """What the kind wraps the last checked function in, if anything."""
    checked_name: str = ""
    """The name the last checked function's jobs get when dispatch gives
    none: worked out once per function rather than once per job."""
    live_workers: int = 0
    """Worker tasks spawned and not exited yet."""
    spawned: int = 0
    """Worker tasks ever spawned: numbers each worker's name."""
    workers_exited: trio.Event = attrs.field(init=False, factory=trio.Event)
    size: int = attrs.field(init=False)
    """How many workers the pool should have (``resize`` changes it)."""
    paused: bool = False
    _leaving: int = 0
    """Workers woken to retire that have not exited yet."""
    _excess: int = 0
    """Busy workers that are to retire once their job has ended."""
    _limiter: _Limiter | None = attrs.field(init=False)
    _cap: int = attrs.field(init=False)
    """Most jobs that may be running for another one to start."""
    _gated: bool = attrs.field(init=False)
    """Whether ``_cap`` can bind below the idle workers (paused, adaptive)."""
    _timing: bool = attrs.field(init=False)
    """Whether jobs' start times are taken (hooks or an adaptive limit)."""
    _abandoned: int = 0
    _submitted: int = 0
    _started: int = 0
    _succeeded: int = 0
    _failed: int = 0
    _cancelled: int = 0
    _retried: int = 0
    _timed_out: int = 0
    _rejected: int = 0

    kind: PoolKind = attrs.field(init=False)
    """How this pool's jobs run: the only part of a pool that knows its kind."""
    check_arguments: Callable[[tuple[Any, ...]], None] | None = attrs.field(init=False)
    """The kind's check of each job's arguments at dispatch, if it has one."""

    def __attrs_post_init__(self) -> None:
        config = self.config
        self.kind = kind_for(config, (self.owner, config.priority))
        self.check_arguments = self.kind.check_arguments
        self.size = config.workers
        self._limiter = (
            None if config.limit is None else _Limiter(config.limit, config.workers)
        )
        self._timing = self.hooks is not None or self._limiter is not None
        self._set_cap()

    # ---------------------------------------------------------------- control

    def _set_cap(self) -> None:
        limiter = self._limiter
        self._gated = self.paused or limiter is not None
        if self.paused:
            self._cap = 0
        elif limiter is None:
            self._cap = self.size
        else:
            self._cap = min(self.size, limiter.current)

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
        self.paused = paused
        self._set_cap()
        self._fill()

    @trio.lowlevel.enable_ki_protection
    def resize(self, workers: int) -> int:
        """Make the pool ``workers`` strong; returns how many to spawn.

        Growing first keeps busy workers that were to retire; shrinking
        retires idle workers at once and busy ones after their job.
        """
        self.size = workers
        self.kind.resize(workers)
        if self._limiter is not None:
            self._limiter.resize(workers)
        staying = self.live_workers - self._leaving - self._excess
        spawn = 0
        if workers > staying:
            kept = min(workers - staying, self._excess)
            self._excess -= kept
            spawn = workers - staying - kept
        else:
            retire = staying - workers
            while retire and self._idle:
                self._leaving += 1
                reschedule(self._idle.pop(), Value(_Leave.RETIRE))
                retire -= 1
            self._excess += retire
        self._set_cap()
        self._fill()
        return spawn

    # ----------------------------------------------------------------- intake

    def check_function(self, fn: object) -> None:
        """Reject what this pool could never call, before anything is accepted.

        Dispatch skips it for the function ``checked_fn`` refers to; it sets
        ``checked_fn`` and ``checked_name`` for ``fn``.
        """
        if inspect.iscoroutine(fn):
            fn.close()
            raise TypeError(
                f"dispatch() got a coroutine object {fn!r} instead of a function: "
                "did you mean dispatch(f, x) instead of dispatch(f(x))?"
            )
        if not callable(fn):
            raise TypeError(f"dispatch() needs a function to call, got {fn!r}")
        self.checked_wrap = self.kind.check(fn)
        self.checked_name = function_name(fn)
        try:
            self.checked_fn = weakref.ref(fn)
        except TypeError:  # not weakly referenceable: checked every time
            self.checked_fn = None

    def refuse_if_full(self) -> None:
        """Raise what ``dispatch_nowait`` would raise now, if it would refuse."""
        if self.closed:
            raise self._closed_error()
        if self._dispatchers or not (
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
        why = (
            "it is paused"
            if self.paused
            else f"its {self.size} workers stayed busy and its queue of "
            f"{self.config.queue} full"
        )
        return PoolFull(
            f"pool {self.config.priority!r} took no job in max_wait={max_wait!r} s: "
            f"{why}; shed the job, retry later, or give the pool more workers, "
            "queue or max_wait",
            self.config.priority,
            max_wait,
        )

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
        if self._idle and (not self._gated or len(self._running) < self._cap):
            # As _accept(), inline on the hot path.
            self._submitted += 1
            batch = self._batch
            if batch is None:
                batch = self._batch = self._batches[self.epoch] = _Batch()
            batch.pending += 1
            job._batch = batch
            hooks = self.hooks
            if hooks is not None and hooks.on_accepted is not None:
                self._call_hook(hooks.on_accepted, job)
            if self._timing:
                self._start(job)
            else:  # as _start(), inline on the hot path
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
        batch = self._batch
        if batch is None:
            batch = self._batch = self._batches[self.epoch] = _Batch()
        batch.pending += 1
        job._batch = batch
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
            self.crash_with(exc)

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

    def _closed_error(self) -> DispatcherClosed:
        return DispatcherClosed(
            f"the dispatcher takes no more jobs: {self._closed_reason}"
        )

    @trio.lowlevel.enable_ki_protection
    def close(self, reason: str) -> None:
        """Stop intake: every parked dispatcher gets DispatcherClosed.

        Idempotent; the first reason given is the one every later dispatch
        is told.
        """
        if not self.closed:
            self.closed = True
            self._closed_reason = reason
        waiting, self._dispatchers = self._dispatchers, {}
        for task in waiting:
            reschedule(task, outcome.Error(self._closed_error()))
        if self.paused:  # what was accepted drains
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
        self._expired = True
        while self._queue:
            self._end(self._queue.popleft(), None)
        for job in list(self._running):
            job.cancel()
        for scope in self._abandon_scopes:
            scope.cancel()

    # ---------------------------------------------------------------- workers

    async def work(self, ready: Callable[[], None]) -> None:
        """A worker: take jobs one after another until the pool stops.

        ``job.cancel()`` cancels the scope of the worker running the job. The
        scope is long-lived (a scope per job costs more than a trivial job) and
        replaced only after it was cancelled, since a cancelled scope stays so.
        """
        task = current_task()
        idle = self._idle

        def unpark(_: Any) -> Abort:
            idle.remove(task)
            return Abort.SUCCEEDED

        self.worker_tasks.add(task)
        ready()
        job: Job[Any] | None = None
        retiring = False
        try:
            while True:
                with trio.CancelScope() as scope:
                    cancelled = False
                    while not cancelled:
                        if self._excess:  # the pool shrank while it worked
                            self._excess -= 1
                            self._leaving += 1
                            retiring = True
                            return
                        if (self._queue or self._dispatchers) and (
                            not self._gated or len(self._running) < self._cap
                        ):
                            job = self._take_nowait()
                        if job is None:
                            if self._stopping:
                                return
                            woken = await self._park_idle(task, unpark)
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
                            # The common case, without a coroutine frame per job.
                            try:
                                result = Value(await self.kind.run(job))
                            except Exception as exc:
                                result = Error(exc)
                            except BaseException as exc:
                                result = _own_failure(exc, scope)
                        else:
                            result = await self._attempts(job, scope)
                        # A cancel that came too late to interrupt still used
                        # up the scope.
                        cancelled = job._cancel_requested
                        # Ended before it is forgotten: a KeyboardInterrupt
                        # in between is caught below, where an ended job is
                        # never ended twice.
                        thread = self._end(job, result)
                        job = result = None  # keep no reference to a finished job
                        if thread is not None:
                            await self._hold_for_abandoned(thread)
                if job is not None:  # job.cancel() fired the scope mid-job
                    thread = self._end(job, None)
                    job = None
                    if thread is not None:
                        await self._hold_for_abandoned(thread)
        except BaseException:
            if job is not None and job.outcome is None:
                self._end(job, None)
            self.on_crash()
            raise
        finally:
            self.worker_tasks.discard(task)
            self._exited(retiring)

    @trio.lowlevel.enable_ki_protection
    def _exited(self, retired: bool) -> None:
        self.live_workers -= 1
        if retired:
            self._leaving -= 1
        if not self.live_workers:
            self.workers_exited.set()

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

    async def _hold_for_abandoned(self, thread_done: trio.Event) -> None:
        """Keep this worker's slot until an abandoned thread really returns."""
        if thread_done.is_set() or self._expired:
            return
        self._abandoned += 1
        with trio.CancelScope() as scope:
            self._abandon_scopes.add(scope)
            try:
                await thread_done.wait()
            finally:
                self._abandon_scopes.discard(scope)
                self._abandoned -= 1

    async def _attempts(self, job: Job[Any], scope: trio.CancelScope) -> Outcome:
        """Run the job's attempts, with its timeout and retries.

        Cancellation of the job propagates as ``trio.Cancelled`` to the
        worker's ``scope``.
        """
        retry = job._retry
        timeout = job._timeout
        while True:
            try:
                if timeout is None:
                    return Value(await self.kind.run(job))
                with trio.fail_after(timeout) as deadline:
                    return Value(await self.kind.run(job))
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    return _own_failure(exc, scope)  # cancelled: no retry
                if timeout is not None and deadline.cancel_called:
                    self._timed_out += 1
                if (
                    retry is None
                    or job.attempts >= retry.attempts
                    or not isinstance(exc, retry.on)
                ):
                    return Error(exc)
                failure = exc
            await self._before_retry(job, retry, failure)
            job.attempts += 1

    async def _before_retry(
        self, job: Job[Any], retry: Retry, error: Exception
    ) -> None:
        self._retried += 1
        delay = retry.delay(job.attempts)
        hooks = self.hooks
        if hooks is not None and hooks.on_retried is not None:
            self._call_hook(hooks.on_retried, job, error, delay)
        if job._abandoned_attempt is not None:
            # The timed-out attempt still runs: never two attempts at once.
            await job._abandoned_attempt.wait()
            job._abandoned_attempt = None
        await trio.sleep(delay)

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
            self._observe(job, result)
        if result.__class__ is Value:
            self._succeeded += 1
            batch.succeeded += 1
            job._end(_SUCCEEDED, result)
        elif result is None:
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
            self._on_failure(job, batch, result.error)
            return job._abandoned_attempt
        batch.job_ended()
        if self.hooks is not None:
            self._finished(job)
        return job._abandoned_attempt

    def _observe(self, job: Job[Any], result: Outcome | None) -> None:
        """Feed the adaptive limit; start what a higher limit lets start."""
        limiter = self._limiter
        started_at = job._started_at
        if limiter is None or started_at is None or result is None:
            return
        latency = trio.current_time() - started_at
        congested = isinstance(result, Error) and isinstance(
            result.error, trio.TooSlowError
        )
        before = limiter.current
        limiter.observe(latency, congested, len(self._running))
        if limiter.current != before:
            self._set_cap()
            self._fill()

    def _finished(self, job: Job[Any]) -> None:
        hooks = self.hooks
        if hooks is not None and hooks.on_finished is not None:
            started_at = job._started_at
            duration = None if started_at is None else trio.current_time() - started_at
            self._call_hook(hooks.on_finished, job, duration)

    def _on_failure(self, job: Job[Any], batch: _Batch, error: BaseException) -> None:
        assert isinstance(error, Exception)  # only Exceptions become failures
        if self.on_error == "raise":
            if len(batch.failures) < self.keep_failures:
                batch.failures.append(error)
            else:
                batch.unkept_failures += 1
        elif self.on_error == "cancel":
            raise error
        elif callable(self.on_error):
            self.on_error(job, error)

    def claim(self, up_to: int | None) -> list[_Batch]:
        """Remove and return the batches of epochs ``<= up_to`` (all if None)."""
        if up_to is None:
            self._batch = None
        return [
            self._batches.pop(epoch)
            for epoch in list(self._batches)
            if up_to is None or epoch <= up_to
        ]

    def close_epoch(self) -> int:
        """Start a new barrier epoch; returns the one just closed."""
        self._batch = None
        self.epoch += 1
        return self.epoch - 1

    def pending_batches(self, up_to: int) -> list[_Batch]:
        return [
            batch
            for epoch, batch in self._batches.items()
            if epoch <= up_to and batch.pending
        ]

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            workers=self.size,
            current_workers=self.live_workers,
            limit=self.size if self._limiter is None else self._limiter.current,
            paused=self.paused,
            busy=len(self._running),
            idle=len(self._idle),
            abandoned=self._abandoned,
            queued=len(self._queue),
            waiting_dispatchers=len(self._dispatchers),
            submitted=self._submitted,
            started=self._started,
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
            retried=self._retried,
            timed_out=self._timed_out,
            rejected=self._rejected,
        )

    def __repr__(self) -> str:
        return f"<bulkhead pool {self.describe()}, {self.config.kind}>"

    def describe(self) -> str:
        return (
            f"{self.config.priority}: {len(self._running)}/{self.size} busy, "
            f"{len(self._queue)} queued, {len(self._dispatchers)} waiting"
        )
