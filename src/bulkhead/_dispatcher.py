"""The dispatcher: pools under one nursery, barrier epochs, and finalize.

Barrier epochs: every accepted job belongs to the epoch its pool was in when
the job was accepted. A barrier closes the current epoch of each pool it
covers (new jobs go to the next one) and waits until every job of the closed
epochs has ended, so it never starves under continuous dispatch. Each pool
tallies its jobs per epoch in a ``_Batch``; the first covering barrier or
finalize to complete removes those batches and reports them, so each job is
counted, and its failure raised, once. Epochs are per pool so that barriers on
one pool never split, and pile up, the batches of another.
"""

from __future__ import annotations

import contextvars
import itertools
import math
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final, overload

import attrs
import trio

from ._errors import DispatcherClosed, JobsFailed, UnknownPriority
from ._hooks import Hooks
from ._job import RUNNING_JOB, Job
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
from ._stats import BatchReport, DispatcherStatistics, PoolStatistics, _Batch

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    _Args = TypeVarTuple("_Args")
    """The job function's positional arguments, typed as trio types start_soon."""

_State = Literal["new", "open", "closing", "closed"]

_R = TypeVar("_R")
"""What the job's function returns, so ``Job[_R].wait()`` is typed."""

_P = TypeVar("_P", bound=int)
"""A priority type: ``int`` or an ``IntEnum`` (mapping keys are invariant)."""

_FINALIZED = "finalize() has begun; dispatch before finalizing"

_job_ids = itertools.count(1)
"""Job ids, unique within the process so logs of several dispatchers never clash."""


def _no_op() -> None:
    pass


def _argument_tuples(args: object) -> list[tuple[Any, ...]]:
    if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
        raise TypeError(
            "dispatch_many() takes an iterable of argument tuples, one per job; "
            f"got {args!r}"
        )
    rounds = list(args)
    for index, item in enumerate(rounds):
        if not isinstance(item, tuple):
            raise TypeError(
                "dispatch_many() takes an iterable of argument tuples, one per "
                f"job; item {index} is {item!r}: wrap a single argument as "
                f"({item!r},)"
            )
    return rounds


def _pool_configs(pools: object) -> list[PoolConfig]:
    if isinstance(pools, Mapping):
        configs = []
        for priority, workers in pools.items():
            if isinstance(workers, PoolConfig):
                raise TypeError(
                    "pools must map priority -> workers, or be an iterable of "
                    f"PoolConfig; got a PoolConfig as the value for {priority!r}: "
                    "pass [PoolConfig(...), ...] instead"
                )
            configs.append(PoolConfig(priority, workers))
    elif isinstance(pools, Iterable) and not isinstance(pools, (str, bytes)):
        configs = list(pools)
        for config in configs:
            if not isinstance(config, PoolConfig):
                raise TypeError(
                    "pools must be a mapping {priority: workers} or an iterable of "
                    f"bulkhead.PoolConfig, got an item {config!r}"
                )
    else:
        raise TypeError(
            "pools must be a mapping {priority: workers} or an iterable of "
            f"bulkhead.PoolConfig, got {pools!r}"
        )
    if not configs:
        raise ValueError("pools is empty: configure at least one pool")
    seen: set[int] = set()
    for config in configs:
        if config.priority in seen:
            raise ValueError(
                f"priority {config.priority!r} is configured twice: "
                "each priority names exactly one pool"
            )
        seen.add(config.priority)
    return configs


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

    Raises:
      TypeError: for a pool configuration or option of the wrong type.
      ValueError: for a bad value (no pools, a priority configured twice...).
      UnknownPriority: if ``default_priority`` names no pool.
      ImportError: for a ``"process"`` pool without ``bulkhead[process]``.
    """

    _pools: dict[int, _Pool]
    _default_priority: int | None
    _state: _State
    _nursery: trio.Nursery | None
    _ready: trio.Event
    _unready: int
    _live_tasks: int
    _spawning: bool
    _torn_down: trio.Event
    _grace_scope: trio.CancelScope | None

    def __init__(
        self,
        pools: Mapping[_P, int] | Iterable[PoolConfig],
        *,
        default_priority: int | None = None,
        on_error: OnError = "raise",
        keep_failures: int = 100,
        hooks: Hooks | None = None,
    ) -> None:
        on_error = check_on_error(on_error)
        check_count(keep_failures, "keep_failures", minimum=1)
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(f"hooks must be a bulkhead.Hooks or None, got {hooks!r}")
        if hooks is not None and not any(attrs.astuple(hooks)):
            hooks = None  # nothing set: nothing to call, nothing to time
        configs = _pool_configs(pools)
        self._pools = {
            config.priority: _Pool(
                config,
                on_error if config.on_error is None else config.on_error,
                keep_failures,
                self,
                self._abort,
                self._crash_with,
                hooks,
            )
            for config in configs
        }
        if default_priority is not None:
            self._pool(check_priority(default_priority, "default_priority"))
        elif len(configs) == 1:  # the one pool needs no naming
            default_priority = configs[0].priority
        self._default_priority = default_priority
        self._state = "new"
        self._nursery = None
        self._ready = trio.Event()
        self._unready = sum(config.workers for config in configs)
        self._live_tasks = 0
        self._spawning = False
        self._torn_down = trio.Event()
        self._grace_scope = None

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
        self._check_new()
        async with trio.open_nursery() as nursery:
            await self._start(nursery)
            task_status.started()

    def _check_new(self) -> None:
        if self._state != "new":
            raise RuntimeError(
                f"this Dispatcher is {self._state}: a Dispatcher runs once; "
                "create a new one"
            )

    async def _start(self, nursery: trio.Nursery) -> None:
        self._check_new()
        self._state = "open"
        self._nursery = nursery
        # Tasks are counted as they are spawned (each one's first step is
        # inside its try/finally), so a startup cancelled half-way still
        # tears down to zero and a later finalize() returns.
        self._spawning = True
        try:
            for pool in self._pools.values():
                resources = pool.kind.open()
                if resources is not None:
                    self._live_tasks += 1
                    await nursery.start(
                        self._hold_resources,
                        pool,
                        resources,
                        name=f"bulkhead pool {pool.config.priority} resources",
                    )
            for pool in self._pools.values():
                self._spawn_workers(pool, pool.config.workers, self._worker_ready)
        finally:
            self._spawning = False
            if not self._live_tasks:
                self._tore_down()
        await self._ready.wait()
        # Woken by the last worker, but cancelled since: the workers are dying,
        # so do not hand out a dispatcher that cannot take a job.
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _hold_resources(
        self,
        pool: _Pool,
        resources: AbstractAsyncContextManager[None],
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Hold what the pool's kind needs (worker processes, a cluster
        client) open until every worker of the pool has exited."""
        try:
            async with resources:
                task_status.started()
                await pool.workers_exited.wait()
        finally:
            self._task_exited()

    def _worker_ready(self) -> None:
        self._unready -= 1
        if not self._unready:
            self._ready.set()

    def _spawn_workers(
        self, pool: _Pool, count: int, ready: Callable[[], None]
    ) -> None:
        assert self._nursery is not None
        for _ in range(count):
            self._live_tasks += 1
            pool.live_workers += 1
            pool.spawned += 1
            self._nursery.start_soon(
                self._worker,
                pool,
                ready,
                name=f"bulkhead worker {pool.config.priority}#{pool.spawned - 1}",
            )

    async def _worker(self, pool: _Pool, ready: Callable[[], None]) -> None:
        try:
            await pool.work(ready)
        finally:
            self._task_exited()

    def _crash_with(self, error: Exception) -> None:
        """Crash the dispatcher with ``error`` as if a task of it had raised it."""

        async def crash() -> None:
            raise error

        assert self._nursery is not None
        self._nursery.start_soon(crash, name="bulkhead crash")

    def _task_exited(self) -> None:
        self._live_tasks -= 1
        if not self._live_tasks and not self._spawning:
            self._tore_down()

    def _tore_down(self) -> None:
        self._state = "closed"
        self._torn_down.set()

    @trio.lowlevel.enable_ki_protection
    def _close_intake(self, reason: str) -> None:
        if self._state == "open":
            self._state = "closing"
        for pool in self._pools.values():
            pool.close(reason)
            pool.stop()

    @trio.lowlevel.enable_ki_protection
    def _abort(self) -> None:
        """Tear everything down now: an exception left the body or a worker."""
        self._close_intake(
            "it was torn down by an exception or a cancellation; open a new dispatcher"
        )
        for pool in self._pools.values():
            pool.expire()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -------------------------------------------------------------- control

    def _check_open(self, what: str) -> None:
        if self._state == "new":
            raise RuntimeError(
                f"this Dispatcher is not running yet: {what}() works on a running "
                "dispatcher"
            )
        if self._state != "open":
            raise DispatcherClosed(
                f"{what}() on a dispatcher that is {self._state}: finalize() has "
                "begun or the dispatcher was torn down"
            )

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
        pool = self._pool(check_priority(priority))
        check_count(workers, "workers", minimum=1)
        self._check_open("resize")
        self._spawn_workers(pool, pool.resize(workers), _no_op)

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
        pools = self._covered_pools(priority)
        self._check_open("pause")
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
        pools = self._covered_pools(priority)
        self._check_open("resume")
        for pool in pools:
            pool.set_paused(False)

    # ------------------------------------------------------------- dispatch

    def _pool(self, priority: int) -> _Pool:
        try:
            return self._pools[priority]
        except KeyError:
            configured = ", ".join(repr(p) for p in self._pools)
            raise UnknownPriority(
                f"no pool has priority {priority!r}; "
                f"configured priorities: {configured}"
            ) from None

    def _target(
        self,
        fn: Callable[..., Any],
        priority: int | None,
        name: str | None,
        timeout: float | None,
        retry: Retry | None,
        max_wait: float | None,
    ) -> tuple[
        _Pool, Callable[..., Any], str, float | None, Retry | None, float | None
    ]:
        """Validate what a dispatch asks for; returns the pool and the job's
        function (as the kind wraps it), name, timeout, retry and max_wait.
        Nothing is accepted yet."""
        if self._state == "new":
            raise RuntimeError(
                "this Dispatcher is not running yet: use `async with "
                "open_dispatcher(...)` or `await nursery.start(dispatcher.run)` first"
            )
        if priority is None:
            if self._default_priority is None:
                raise TypeError(
                    "no priority given and this dispatcher has no default_priority: "
                    "pass priority=... or open the dispatcher with default_priority=..."
                )
            priority = self._default_priority
        elif priority.__class__ is not int:
            check_priority(priority)
        pool = self._pools.get(priority) or self._pool(priority)
        config = pool.config
        checked = pool.checked_fn
        if checked is None or checked() is not fn:
            pool.check_function(fn)
        wrap = pool.checked_wrap
        if wrap is not None:  # a sync function for an async pool, say
            fn = wrap(fn)
        if name is None:
            name = pool.checked_name
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        if timeout is None:
            timeout = config.timeout
        elif check_seconds(timeout, "timeout") == math.inf:
            timeout = None
        if retry is None:
            retry = config.retry
        elif not isinstance(retry, Retry):
            raise TypeError(f"retry must be a bulkhead.Retry or None, got {retry!r}")
        if max_wait is None:
            max_wait = config.max_wait
        elif check_seconds(max_wait, "max_wait") == math.inf:
            max_wait = None
        return pool, fn, name, timeout, retry, max_wait

    @staticmethod
    async def _wait_to_place(
        pool: _Pool, job: Job[Any], max_wait: float | None
    ) -> None:
        """Wait for room for ``job`` after ``try_accept`` refused it; raises
        :exc:`PoolFull` once ``max_wait`` has run out (not accepted)."""
        if max_wait is None:
            await pool.wait_to_accept(job)
            return
        if max_wait > 0:
            with trio.move_on_after(max_wait) as waited:
                await pool.wait_to_accept(job)
            if not waited.cancelled_caught:  # accepted as the time ran out
                return
        pool.reject(pool.full_error(max_wait))

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
        pool, call, name, timeout, retry, max_wait = self._target(
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
            await self._wait_to_place(pool, job, max_wait)
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
        pool, call, name, timeout, retry, _ = self._target(
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
        pool, call, name, timeout, retry, max_wait = self._target(
            fn, priority, name, timeout, retry, max_wait
        )
        rounds = _argument_tuples(args)
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
                await self._wait_to_place(pool, job, max_wait)
            jobs.append(job)
            if accepted is not None:
                accepted.append(job)
        if not yielded:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return jobs

    # -------------------------------------------------------------- barrier

    def _covered_pools(self, priority: int | None) -> list[_Pool]:
        if priority is None:
            return list(self._pools.values())
        return [self._pool(check_priority(priority))]

    def _pool_of_running_job(self) -> int | None:
        """The pool whose job the caller is part of, if any.

        An async job (and any task it spawns) is recognised by its worker among
        the caller's ancestors, which costs nothing per job and cannot be fooled
        by a context inherited from another pool. A thread job calls back in
        through a task of trio's own, so it is recognised by RUNNING_JOB, which
        its thread's context carries.
        """
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            for priority, pool in self._pools.items():
                if task in pool.worker_tasks:
                    return priority
            nursery = task.parent_nursery
            task = None if nursery is None else nursery.parent_task
        running = RUNNING_JOB.get()
        if running is not None and running[0] is self:
            return running[1]
        return None

    def _refuse_self_wait(self, what: str, pools: list[_Pool]) -> None:
        priority = self._pool_of_running_job()
        if priority is not None and any(p.config.priority == priority for p in pools):
            raise RuntimeError(
                f"{what}() called from inside a job of pool {priority!r} of the "
                f"same dispatcher would wait for that job itself; call {what}() "
                "from the task that dispatched the jobs instead"
            )

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
        pools = self._covered_pools(priority)
        self._refuse_self_wait("barrier", pools)
        await trio.lowlevel.checkpoint_if_cancelled()
        started = trio.current_time()
        cutoffs = [(pool, pool.close_epoch()) for pool in pools]
        for pool, cutoff in cutoffs:
            for batch in pool.pending_batches(cutoff):
                await batch.drained().wait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return self._report(cutoffs, started)

    def _report(
        self, cutoffs: Sequence[tuple[_Pool, int | None]], started: float
    ) -> BatchReport:
        batches: list[_Batch] = []
        for pool, cutoff in cutoffs:
            batches.extend(pool.claim(cutoff))
        report = BatchReport(
            jobs=sum(b.succeeded + b.failed + b.cancelled for b in batches),
            succeeded=sum(b.succeeded for b in batches),
            failed=sum(b.failed for b in batches),
            cancelled=sum(b.cancelled for b in batches),
            elapsed=trio.current_time() - started,
        )
        failures = [exc for b in batches for exc in b.failures]
        if failures:
            unkept = sum(b.unkept_failures for b in batches)
            message = f"{len(failures) + unkept} of {report.jobs} jobs failed"
            if unkept:
                message += (
                    f"; the first {len(failures)} are in this group, the other "
                    f"{unkept} only in their Job handles (keep_failures)"
                )
            raise JobsFailed(message, failures, report)
        return report

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
        self._refuse_self_wait("finalize", list(self._pools.values()))
        await trio.lowlevel.checkpoint_if_cancelled()
        started = trio.current_time()
        if self._state == "new":
            self._close_intake(_FINALIZED)
            self._tore_down()
        self._begin_teardown(grace_period)
        await self._torn_down.wait()
        self._report([(pool, None) for pool in self._pools.values()], started)

    @trio.lowlevel.enable_ki_protection
    def _begin_teardown(self, grace_period: float | None) -> None:
        if grace_period == 0 and not self._torn_down.is_set():
            # No grace: what waits is cancelled before closing resumes paused
            # pools, so a paused pool's queue never starts either.
            for pool in self._pools.values():
                pool.expire()
        self._close_intake(_FINALIZED)
        if grace_period is None or self._torn_down.is_set():
            return
        deadline = trio.current_time() + grace_period
        if self._grace_scope is None:
            self._grace_scope = trio.CancelScope(deadline=deadline)
            assert self._nursery is not None
            self._nursery.start_soon(self._expire_at_deadline, self._grace_scope)
        else:
            self._grace_scope.deadline = min(self._grace_scope.deadline, deadline)

    async def _expire_at_deadline(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._torn_down.wait()
        if scope.cancelled_caught:
            for pool in self._pools.values():
                pool.expire()

    # ----------------------------------------------------------- statistics

    def statistics(self) -> DispatcherStatistics:
        """Return a :class:`DispatcherStatistics` snapshot (also after finalize)."""
        pools = {priority: pool.statistics() for priority, pool in self._pools.items()}
        return DispatcherStatistics(
            pools=MappingProxyType(pools),
            total=PoolStatistics._sum(pools.values()),
            closed=self._state in ("closing", "closed"),
        )

    def __repr__(self) -> str:
        pools = "; ".join(pool.describe() for pool in self._pools.values())
        return f"<bulkhead.Dispatcher {self._state} at {id(self):#x}, pools {pools}>"


@asynccontextmanager
async def open_dispatcher(
    pools: Mapping[_P, int] | Iterable[PoolConfig],
    *,
    default_priority: int | None = None,
    on_error: OnError = "raise",
    keep_failures: int = 100,
    hooks: Hooks | None = None,
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
    )
    failure: JobsFailed | None = None
    async with trio.open_nursery() as nursery:
        try:
            await dispatcher._start(nursery)
            yield dispatcher
            try:
                await dispatcher.finalize()
            except JobsFailed as exc:
                failure = exc
        except BaseException:
            dispatcher._abort()
            raise
    if failure is not None:
        raise failure
