"""The dispatcher: the public face of a set of pools under one nursery.

As trio's ``Runner`` holds small parts, a :class:`Dispatcher` holds its
pools (:mod:`._pool`: hand-off, queue, workers, each with its capacity,
epochs and attempts) and one :class:`~._lifetime._Lifetime` (spawning,
counting and tearing down every task). What is left here is what a caller
sees: the three dispatch paths, the runtime controls, barriers, finalize and
statistics. Barrier epochs and reports are in :mod:`._batch`.
"""

from __future__ import annotations

import contextvars
import itertools
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, final, overload

import attrs
import trio

from ._batch import report
from ._errors import JobsFailed
from ._hooks import Hooks
from ._job import Job
from ._lifetime import _Lifetime
from ._policy import (
    OnError,
    PoolConfig,
    Retry,
    check_count,
    check_on_error,
    check_priority,
    check_seconds,
)
from ._pool import _Pool
from ._routing import _Routing, argument_tuples, pool_configs
from ._stats import BatchReport, DispatcherStatistics, PoolStatistics

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    _Args = TypeVarTuple("_Args")
    """The job function's positional arguments, typed as trio types start_soon."""

_R = TypeVar("_R")
"""What the job's function returns, so ``Job[_R].wait()`` is typed."""

_P = TypeVar("_P", bound=int)
"""A priority type: ``int`` or an ``IntEnum`` (mapping keys are invariant)."""


_job_ids = itertools.count(1)
"""Job ids, unique within the process so logs of several dispatchers never clash."""


@final
@attrs.define(eq=False, repr=False, init=False)
class Dispatcher:
    """Isolated worker pools ("bulkheads"), one per priority, under one nursery.

    Most code uses :func:`open_dispatcher`. Build a ``Dispatcher`` directly when
    a nursery you already own should host it::

        d = bulkhead.Dispatcher({1: 4, 2: 8})
        await nursery.start(d.run)
        ...
        await d.finalize()

    Args:
      pools: a mapping ``{priority: workers}`` or an iterable of
        :class:`PoolConfig`.
      default_priority: the pool :meth:`dispatch` uses when given no priority.
      on_error: the error policy of pools that set none: ``"raise"``,
        ``"record"``, ``"cancel"`` or a callable ``handler(job, exc)``.
      hooks: :class:`Hooks` called on each job's accepted, started, retried
        and finished events, and on each refused dispatch.
      keep_failures: under ``"raise"``, the most exceptions kept per pool and
        batch for :exc:`JobsFailed`; further failures are counted in its
        message and report and stay in their :class:`Job` handles, so a
        long-running dispatcher that never calls :meth:`barrier` stays flat.
      timings: record each job's :attr:`~Job.accepted_at`,
        :attr:`~Job.started_at` and :attr:`~Job.finished_at` on trio's clock.
        Off by default: three clock reads per job cost about 1 % of a trivial
        dispatch. Hooks and an :class:`AdaptiveLimit` time jobs anyway.

    Raises:
      TypeError: for a pool configuration or option of the wrong type.
      ValueError: for a bad value (no pools, a priority configured twice...).
      UnknownPriority: if ``default_priority`` names no pool.
      ImportError: for a ``"process"`` pool without ``bulkhead[process]``.
    """

    _pools: dict[int, _Pool]
    _routing: _Routing
    _lifetime: _Lifetime

    def __init__(
        self,
        pools: Mapping[_P, int] | Iterable[PoolConfig],
        *,
        default_priority: int | None = None,
        on_error: OnError = "raise",
        keep_failures: int = 100,
        hooks: Hooks | None = None,
        timings: bool = False,
    ) -> None:
        on_error = check_on_error(on_error)
        check_count(keep_failures, "keep_failures", minimum=1)
        if not isinstance(timings, bool):
            raise TypeError(f"timings must be a bool, got {timings!r}")
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(f"hooks must be a bulkhead.Hooks or None, got {hooks!r}")
        if hooks is not None and not any(attrs.astuple(hooks)):
            hooks = None  # nothing set: nothing to call, nothing to time
        configs = pool_configs(pools)
        self._pools = {
            config.priority: _Pool(
                config,
                on_error if config.on_error is None else config.on_error,
                keep_failures,
                (self, config.priority),
                self._crash,
                hooks,
                timings,
            )
            for config in configs
        }
        self._routing = _Routing.of(self._pools, default_priority)
        self._lifetime = _Lifetime(self._pools, self)

    # ------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the pools; use as ``await nursery.start(d.run)``.

        ``nursery.start`` returns once every worker of every pool is idle and
        ready. ``run`` itself returns once :meth:`finalize` has finished (or
        raises, as a nursery does, if the dispatcher crashed).

        Raises:
          RuntimeError: if this dispatcher was already started or finalized.
        """
        self._lifetime.check_new()
        async with trio.open_nursery() as nursery:
            await self._lifetime.start(nursery)
            task_status.started()

    def _crash(self, error: BaseException) -> None:
        self._lifetime.crash(error)

    # -------------------------------------------------------------- control

    @trio.lowlevel.enable_ki_protection
    def resize(self, priority: int, workers: int) -> None:
        """Give pool ``priority`` ``workers`` workers, while it runs.

        Growing starts the new workers at once: they take waiting jobs as
        soon as they run, at the caller's next checkpoint (so a
        ``dispatch_nowait`` straight after may still find no idle worker,
        as after ``nursery.start_soon``). Shrinking retires idle workers
        at once and busy ones as soon as their job has ended: no running job
        is interrupted, so :attr:`PoolStatistics.current_workers` may stay
        above :attr:`~PoolStatistics.workers` for a while. Thread, process and
        Dask pools resize their own bound on threads, processes or tasks too.
        Not a checkpoint.

        Raises:
          UnknownPriority: if ``priority`` names no pool.
          TypeError: if ``workers`` is not an int.
          ValueError: if ``workers`` is below 1.
          DispatcherClosed: once :meth:`finalize` has begun.
          RuntimeError: if the dispatcher has not been started.
        """
        pool = self._routing.pool(check_priority(priority))
        check_count(workers, "workers", minimum=1)
        self._lifetime.check_open("resize")
        lifetime = self._lifetime
        lifetime.spawn_workers(pool, pool.resize(workers, lifetime.live_workers(pool)))

    @trio.lowlevel.enable_ki_protection
    def pause(self, priority: int | None = None) -> None:
        """Stop pool ``priority`` (every pool if ``None``) from starting jobs.

        A paused pool still accepts jobs into its queue, and dispatchers
        block once the queue is full; running jobs go on. Barriers wait for
        the paused jobs; :meth:`finalize` resumes the pools so that what
        was accepted drains (or is cancelled when its grace period ends).
        Idempotent; not a checkpoint.

        Raises:
          UnknownPriority: if ``priority`` names no pool.
          DispatcherClosed: once :meth:`finalize` has begun.
          RuntimeError: if the dispatcher has not been started.
        """
        pools = self._routing.covered(priority)
        self._lifetime.check_open("pause")
        for pool in pools:
            pool.set_paused(True)

    @trio.lowlevel.enable_ki_protection
    def resume(self, priority: int | None = None) -> None:
        """Let a paused pool (every pool if ``None``) start jobs again.

        Waiting jobs start at once, in order. Idempotent; not a checkpoint.

        Raises:
          UnknownPriority: if ``priority`` names no pool.
          DispatcherClosed: once :meth:`finalize` has begun (it resumed them).
          RuntimeError: if the dispatcher has not been started.
        """
        pools = self._routing.covered(priority)
        self._lifetime.check_open("resume")
        for pool in pools:
            pool.set_paused(False)

    # ------------------------------------------------------------- dispatch

    @overload
    async def dispatch(
        self,
        fn: Callable[[Unpack[_Args]], Awaitable[_R]],
        /,
        *args: Unpack[_Args],
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retry: Retry | None = None,
        max_wait: float | None = None,
        tag: Any = None,
    ) -> Job[_R]: ...

    @overload
    async def dispatch(
        self,
        fn: Callable[[Unpack[_Args]], _R],
        /,
        *args: Unpack[_Args],
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retry: Retry | None = None,
        max_wait: float | None = None,
        tag: Any = None,
    ) -> Job[_R]: ...

    @trio.lowlevel.enable_ki_protection
    async def dispatch(
        self,
        fn: Callable[[Unpack[_Args]], Any],
        /,
        *args: Unpack[_Args],
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the job's budget, not ours
        retry: Retry | None = None,
        max_wait: float | None = None,
        tag: Any = None,
    ) -> Job[Any]:
        """Hand ``fn(*args)`` to a worker of pool ``priority``; return its :class:`Job`.

        Blocks until a worker of that pool takes the job (a rendezvous) or, for
        a pool with a ``queue``, until the queue accepts it. Blocked callers are
        served first-in first-out. Once it returns, the job runs exactly once
        (with its retries) or ends cancelled by :meth:`Job.cancel` or finalize.
        Pass keyword arguments with :func:`functools.partial`.

        This is a checkpoint. If it raises (cancelled, closed, full, bad input)
        the job was not accepted and never runs.

        .. note:: A job that dispatches into its own pool with no free worker
           and no queue waits for itself: give that pool a ``queue``, or
           dispatch into another pool.

        Args:
          fn: an async function for an ``"async"`` pool (a sync one runs
            there in a worker thread, as in a thread pool), a sync one for a
            ``"thread"``, ``"process"`` or ``"dask"`` pool.
          *args: positional arguments for ``fn``.
          priority: the pool; defaults to the dispatcher's ``default_priority``,
            or to its only pool.
          name: a name for the job (default: the function's qualified name).
          timeout: seconds per attempt (default: the pool's); ``math.inf`` for none.
          retry: a :class:`Retry` policy (default: the pool's).
          max_wait: seconds to wait for room before giving up with
            :exc:`PoolFull` (default: the pool's, else for ever; ``math.inf``
            for ever). ``0`` refuses at once, as :meth:`dispatch_nowait` does.
          tag: any object of yours, kept on the handle as :attr:`Job.tag`, so
            that hooks and your code can find your own record for the job
            without encoding ids in its ``name`` (default ``None``).

        Returns:
          The :class:`Job` handle; after a rendezvous it is already ``RUNNING``.

        Raises:
          PoolFull: if ``max_wait`` ran out (counted as ``rejected``).
          DispatcherClosed: if :meth:`finalize` has begun, or begins while waiting.
          UnknownPriority: if ``priority`` names no pool.
          TypeError: for arguments of the wrong type (nothing is accepted).
          ValueError: for bad argument values (nothing is accepted).
          RuntimeError: if the dispatcher has not been started.
        """
        pool, call, name, timeout, retry, max_wait = self._routing.target(
            fn, priority, name, timeout, retry, max_wait
        )
        if pool.check_arguments is not None:
            pool.check_arguments(args)
        config = pool.config
        # Built here, as in dispatch_nowait() and dispatch_many(), not by a
        # shared helper: a call per job would cost about 1 % of a dispatch.
        job = Job._create(
            next(_job_ids),
            config.priority,
            call,
            args,
            contextvars.copy_context() if config.copy_context else None,
            name,
            timeout,
            retry,
            pool,
            tag,
        )
        await trio.lowlevel.checkpoint_if_cancelled()
        if pool.try_accept(job):
            # Accepted: yield, but a cancellation now must not lose the job.
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            if max_wait == 0:
                await trio.lowlevel.cancel_shielded_checkpoint()
            await self._routing.wait_to_place(pool, job, max_wait)
        return job

    @overload
    def dispatch_nowait(
        self,
        fn: Callable[[Unpack[_Args]], Awaitable[_R]],
        /,
        *args: Unpack[_Args],
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        tag: Any = None,
    ) -> Job[_R]: ...

    @overload
    def dispatch_nowait(
        self,
        fn: Callable[[Unpack[_Args]], _R],
        /,
        *args: Unpack[_Args],
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        tag: Any = None,
    ) -> Job[_R]: ...

    def dispatch_nowait(
        self,
        fn: Callable[[Unpack[_Args]], Any],
        /,
        *args: Unpack[_Args],
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        tag: Any = None,
    ) -> Job[Any]:
        """Like :meth:`dispatch`, but raises :exc:`trio.WouldBlock` instead of blocking.

        Succeeds only if a worker of the pool is idle or its queue has room,
        and never ahead of a task already blocked in :meth:`dispatch`. A
        refusal is counted in :attr:`PoolStatistics.rejected`. Not a checkpoint.

        Raises:
          trio.WouldBlock: if no worker is idle and the queue is full (or
            another task is waiting to dispatch into the pool).
          DispatcherClosed: if :meth:`finalize` has begun.
          UnknownPriority: if ``priority`` names no pool.
          TypeError: for arguments of the wrong type (nothing is accepted).
          ValueError: for bad argument values (nothing is accepted).
          RuntimeError: if the dispatcher has not been started.
        """
        pool, call, name, timeout, retry, _ = self._routing.target(
            fn, priority, name, timeout, retry, None
        )
        if pool.check_arguments is not None:
            pool.check_arguments(args)
        # Refused here, before building a job only to throw it away.
        pool.refuse_if_full()
        config = pool.config
        job = Job._create(  # as in dispatch()
            next(_job_ids),
            config.priority,
            call,
            args,
            contextvars.copy_context() if config.copy_context else None,
            name,
            timeout,
            retry,
            pool,
            tag,
        )
        accepted = pool.try_accept(job)
        assert accepted  # refuse_if_full() found room, and nothing ran since
        return job

    @overload
    async def dispatch_many(
        self,
        fn: Callable[[Unpack[_Args]], Awaitable[_R]],
        args: Iterable[tuple[Unpack[_Args]]],
        /,
        *,
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retry: Retry | None = None,
        max_wait: float | None = None,
        accepted: list[Job[_R]] | None = None,
        tag: Any = None,
    ) -> list[Job[_R]]: ...

    @overload
    async def dispatch_many(
        self,
        fn: Callable[[Unpack[_Args]], _R],
        args: Iterable[tuple[Unpack[_Args]]],
        /,
        *,
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retry: Retry | None = None,
        max_wait: float | None = None,
        accepted: list[Job[_R]] | None = None,
        tag: Any = None,
    ) -> list[Job[_R]]: ...

    @trio.lowlevel.enable_ki_protection
    async def dispatch_many(
        self,
        fn: Callable[[Unpack[_Args]], Any],
        args: Iterable[tuple[Unpack[_Args]]],
        /,
        *,
        priority: int | None = None,
        name: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the jobs' budget
        retry: Retry | None = None,
        max_wait: float | None = None,
        accepted: list[Any] | None = None,
        tag: Any = None,
    ) -> list[Job[Any]]:
        """Dispatch ``fn(*a)`` for each tuple ``a`` in ``args``: a whole round in
        one call. Returns the handles in the order of ``args``.

        The same as a loop of :meth:`dispatch`, job by job and in order (each
        job is accepted or not, as one ``dispatch`` would be), but validated
        once and handed to idle workers without yielding in between, so it
        costs less per job. It returns once the pool has taken the last job.

        This is a checkpoint. If it raises (cancelled, closed, full), the jobs
        accepted before are accepted and run, and the others never run; pass
        a list as ``accepted`` to learn which: every job is appended to it the
        moment it is accepted.

        Example::

            jobs = await d.dispatch_many(relax, [(tile, grid) for tile in tiles])
            await d.barrier()
            results = [await job.wait() for job in jobs]

        Args:
          fn: the function, as for :meth:`dispatch`.
          args: an iterable of argument tuples, one per job; wrap a single
            argument as ``(x,)``. It is read in full before anything is
            accepted.
          priority, name, timeout, retry, max_wait: as for :meth:`dispatch`,
            for every job.
          tag: as for :meth:`dispatch`: one object, on every job's handle.
          accepted: a list to append each accepted job to.

        Raises:
          PoolFull: if a job's ``max_wait`` ran out.
          DispatcherClosed: if :meth:`finalize` has begun, or begins meanwhile.
          UnknownPriority: if ``priority`` names no pool.
          TypeError: for arguments of the wrong type (nothing is accepted).
          ValueError: for bad argument values (nothing is accepted).
          RuntimeError: if the dispatcher has not been started.
        """
        pool, call, name, timeout, retry, max_wait = self._routing.target(
            fn, priority, name, timeout, retry, max_wait
        )
        rounds = argument_tuples(args)
        if accepted is not None and not isinstance(accepted, list):
            raise TypeError(f"accepted must be a list or None, got {accepted!r}")
        if pool.check_arguments is not None:
            for job_args in rounds:  # all of them before any is accepted
                pool.check_arguments(job_args)
        jobs: list[Job[Any]] = []
        await trio.lowlevel.checkpoint_if_cancelled()
        yielded = False
        priority, copy_context = pool.config.priority, pool.config.copy_context
        for job_args in rounds:
            job = Job._create(  # as in dispatch(), the pool's settings read once
                next(_job_ids),
                priority,
                call,
                job_args,
                contextvars.copy_context() if copy_context else None,
                name,
                timeout,
                retry,
                pool,
                tag,
            )
            if not pool.try_accept(job):
                if max_wait == 0 and not yielded:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                yielded = True
                await self._routing.wait_to_place(pool, job, max_wait)
            jobs.append(job)
            if accepted is not None:
                accepted.append(job)
        if not yielded:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return jobs

    # -------------------------------------------------------------- barrier

    @trio.lowlevel.enable_ki_protection
    async def barrier(self, priority: int | None = None) -> BatchReport:
        """Wait until every job accepted before this call has ended.

        Covers all pools, or only pool ``priority``. Jobs accepted while it
        waits belong to the next batch, so a barrier never starves under
        continuous dispatch. Several tasks may wait on barriers at once; the
        first covering barrier (or finalize) to complete reports each job.

        This is a checkpoint. Cancelling it affects no job and claims nothing:
        its jobs are reported by the next covering barrier.

        Returns:
          The :class:`BatchReport` of the jobs it reports.

        Raises:
          JobsFailed: under ``on_error="raise"``, with the failures of the
            batch; pools keep running either way.
          UnknownPriority: if ``priority`` names no pool.
          RuntimeError: if called from inside a job that it would wait for.
        """
        pools = self._routing.covered(priority)
        self._lifetime.refuse_self_wait(
            "barrier", [pool.config.priority for pool in pools]
        )
        await trio.lowlevel.checkpoint_if_cancelled()
        started = trio.current_time()
        cutoffs = [(pool.epochs, pool.epochs.close()) for pool in pools]
        for epochs, cutoff in cutoffs:
            for batch in epochs.pending(cutoff):
                await batch.drained().wait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return report(
            (batch for epochs, cutoff in cutoffs for batch in epochs.claim(cutoff)),
            started,
        )

    # ------------------------------------------------------------- finalize

    @trio.lowlevel.enable_ki_protection
    async def finalize(self, grace_period: float | None = None) -> None:
        """Stop intake, let accepted jobs finish, then stop every worker.

        Dispatching raises :exc:`DispatcherClosed` from the moment this is
        called, in blocked dispatchers too. Running and queued jobs finish;
        with a ``grace_period``, those still running or queued when it
        expires end cancelled. Idempotent: concurrent and later callers all
        return once teardown is complete, and a shorter grace period from a
        later caller wins. Leaving ``async with open_dispatcher(...)``
        normally calls it.

        This is a checkpoint. A cancelled caller leaves; the teardown it
        started goes on.

        Args:
          grace_period: seconds to wait before cancelling what is left;
            ``None`` waits for ever.

        Raises:
          JobsFailed: under ``on_error="raise"``, for failures no barrier has
            reported yet.
          RuntimeError: if called from inside one of the dispatcher's jobs.
        """
        grace_period = check_seconds(grace_period, "grace_period")
        self._lifetime.refuse_self_wait("finalize", list(self._pools))
        await trio.lowlevel.checkpoint_if_cancelled()
        started = trio.current_time()
        self._lifetime.begin_teardown(grace_period)
        await self._lifetime.torn_down.wait()
        report(
            (
                batch
                for pool in self._pools.values()
                for batch in pool.epochs.claim(None)
            ),
            started,
        )

    # ----------------------------------------------------------- statistics

    def statistics(self) -> DispatcherStatistics:
        """Return a :class:`DispatcherStatistics` snapshot (also after finalize)."""
        live = self._lifetime.live_workers
        pools = {
            priority: pool.statistics(live(pool))
            for priority, pool in self._pools.items()
        }
        return DispatcherStatistics(
            pools=MappingProxyType(pools),
            total=PoolStatistics._sum(pools.values()),
            closed=self._lifetime.state in ("closing", "closed"),
        )

    def __repr__(self) -> str:
        pools = "; ".join(pool.describe() for pool in self._pools.values())
        state = self._lifetime.state
        return f"<bulkhead.Dispatcher {state} at {id(self):#x}, pools {pools}>"


@asynccontextmanager
async def open_dispatcher(
    pools: Mapping[_P, int] | Iterable[PoolConfig],
    *,
    default_priority: int | None = None,
    on_error: OnError = "raise",
    keep_failures: int = 100,
    hooks: Hooks | None = None,
    timings: bool = False,
) -> AsyncIterator[Dispatcher]:
    """Open a :class:`Dispatcher` whose pools live in a nursery of their own.

    Entering returns once every worker is idle and ready, so a
    :meth:`~Dispatcher.dispatch_nowait` right after it succeeds. Leaving the
    block normally calls :meth:`~Dispatcher.finalize` (so it waits for the
    accepted jobs, and raises :exc:`JobsFailed` as is for unreported
    failures); leaving with an exception cancels every job and propagates it
    inside an :exc:`ExceptionGroup`, as a nursery does.

    Example::

        async with bulkhead.open_dispatcher({Priority.HIGH: 4, Priority.LOW: 1}) as d:
            for item in items:
                await d.dispatch(process, item, priority=Priority.HIGH)
            report = await d.barrier()

    It takes the arguments of :class:`Dispatcher`.
    """
    dispatcher = Dispatcher(
        pools,
        default_priority=default_priority,
        on_error=on_error,
        keep_failures=keep_failures,
        hooks=hooks,
        timings=timings,
    )
    failure: JobsFailed | None = None
    async with trio.open_nursery() as nursery:
        try:
            await dispatcher._lifetime.start(nursery)
            yield dispatcher
            try:
                await dispatcher.finalize()
            except JobsFailed as exc:
                failure = exc
        except BaseException:
            dispatcher._lifetime.abort()
            raise
    if failure is not None:
        raise failure
