"""The dispatcher's lifetime: its tasks, from spawning to teardown.

After trio-parallel's ``ContextLifetimeManager``: one object counts every
task the dispatcher spawns into its nursery (each pool's workers and the
tasks holding a kind's resources) and every exit, and is the only one that
writes those counts. When the last task has exited, intake being closed,
the dispatcher is torn down and whoever waits in ``finalize()`` wakes.

It also owns what follows from the tasks' lives: readiness (every first
worker has parked), a crash (a worker that raised, a hook that raised:
everything is cancelled), and the grace period of ``finalize()`` (when it
expires, what still runs is cancelled). It knows which task is a worker of
which pool, so a barrier called from inside a job is recognised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Literal

import attrs
import trio

from ._errors import DispatcherClosed
from ._job import RUNNING_JOB
from ._pool import _Pool, work

State = Literal["new", "open", "closing", "closed"]

_FINALIZED = "finalize() has begun; dispatch before finalizing"
_ABORTED = "it was torn down by an exception or a cancellation; open a new dispatcher"


def _no_op() -> None:
    pass


@attrs.define(eq=False)
class _Crew:
    """The worker tasks of one pool, as the lifetime counts them."""

    live: int = 0
    """Worker tasks spawned and not exited yet."""
    spawned: int = 0
    """Worker tasks ever spawned: numbers each worker's name."""
    exited: trio.Event = attrs.field(factory=trio.Event)
    """Set once ``live`` dropped to zero: the pool's kind may close."""


@attrs.define(eq=False)
class _Lifetime:
    """Spawns, counts and tears down every task of one dispatcher."""

    pools: Mapping[int, _Pool]
    owner: object
    """The dispatcher, as thread jobs' contexts name it (RUNNING_JOB)."""
    state: State = "new"
    _nursery: trio.Nursery | None = None
    _crews: dict[_Pool, _Crew] = attrs.field(init=False)
    _workers: dict[trio.lowlevel.Task, int] = attrs.field(factory=dict)
    """Every live worker task, and the priority of its pool."""
    _live_tasks: int = 0
    _spawning: bool = False
    _unready: int = attrs.field(init=False)
    _ready: trio.Event = attrs.field(factory=trio.Event)
    torn_down: trio.Event = attrs.field(factory=trio.Event)
    _grace_scope: trio.CancelScope | None = None

    def __attrs_post_init__(self) -> None:
        self._crews = {pool: _Crew() for pool in self.pools.values()}
        self._unready = sum(pool.config.workers for pool in self.pools.values())

    def live_workers(self, pool: _Pool) -> int:
        return self._crews[pool].live

    # ---------------------------------------------------------------- start

    def check_open(self, what: str) -> None:
        """Raise unless the dispatcher runs and takes jobs (for ``what()``)."""
        state = self.state
        if state == "new":
            raise RuntimeError(
                f"this Dispatcher is not running yet: {what}() works on a running "
                "dispatcher"
            )
        if state != "open":
            raise DispatcherClosed(
                f"{what}() on a dispatcher that is {state}: finalize() has "
                "begun or the dispatcher was torn down"
            )

    def check_new(self) -> None:
        if self.state != "new":
            raise RuntimeError(
                f"this Dispatcher is {self.state}: a Dispatcher runs once; "
                "create a new one"
            )

    async def start(self, nursery: trio.Nursery) -> None:
        """Open every kind's resources, spawn every worker, wait until ready."""
        self.check_new()
        self.state = "open"
        self._nursery = nursery
        # Tasks are counted as they are spawned (each one's first step is
        # inside its try/finally), so a startup cancelled half-way still
        # tears down to zero and a later finalize() returns.
        self._spawning = True
        for pool in self.pools.values():
            pool.open()
        try:
            for pool in self.pools.values():
                resources = pool.kind.open()
                if resources is not None:
                    self._live_tasks += 1
                    await nursery.start(
                        self._hold_resources,
                        pool,
                        resources,
                        name=f"bulkhead pool {pool.name} resources",
                    )
            for pool in self.pools.values():
                self.spawn_workers(pool, pool.config.workers, self._worker_ready)
        finally:
            self._spawning = False
            if not self._live_tasks:
                self.tore_down()
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
                await self._crews[pool].exited.wait()
        finally:
            self._task_exited()

    def _worker_ready(self) -> None:
        self._unready -= 1
        if not self._unready:
            self._ready.set()

    def spawn_workers(
        self, pool: _Pool, count: int, ready: Callable[[], None] = _no_op
    ) -> None:
        assert self._nursery is not None
        crew = self._crews[pool]
        for _ in range(count):
            self._live_tasks += 1
            crew.live += 1
            crew.spawned += 1
            self._nursery.start_soon(
                self._worker,
                pool,
                crew,
                ready,
                name=f"bulkhead worker {pool.name}#{crew.spawned - 1}",
            )

    async def _worker(
        self, pool: _Pool, crew: _Crew, ready: Callable[[], None]
    ) -> None:
        task = trio.lowlevel.current_task()
        self._workers[task] = pool.config.priority
        try:
            await work(pool, ready)
        except BaseException:
            self.abort()
            raise
        finally:
            del self._workers[task]
            self._worker_exited(crew)

    @trio.lowlevel.enable_ki_protection
    def _worker_exited(self, crew: _Crew) -> None:
        crew.live -= 1
        if not crew.live:
            crew.exited.set()
        self._task_exited()

    # ------------------------------------------------------------- teardown

    def crash(self, error: BaseException) -> None:
        """Crash the dispatcher with ``error`` as if a task of it had raised it."""

        async def crash() -> None:
            raise error

        assert self._nursery is not None
        self._nursery.start_soon(crash, name="bulkhead crash")

    def _task_exited(self) -> None:
        self._live_tasks -= 1
        if not self._live_tasks and not self._spawning:
            self.tore_down()

    def tore_down(self) -> None:
        self.state = "closed"
        self.torn_down.set()

    @trio.lowlevel.enable_ki_protection
    def close_intake(self, reason: str = _FINALIZED) -> None:
        if self.state == "open":
            self.state = "closing"
        for pool in self.pools.values():
            pool.close(reason)
            pool.stop()

    @trio.lowlevel.enable_ki_protection
    def abort(self) -> None:
        """Tear everything down now: an exception left the body or a worker."""
        self.close_intake(_ABORTED)
        for pool in self.pools.values():
            pool.expire()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    @trio.lowlevel.enable_ki_protection
    def begin_teardown(self, grace_period: float | None) -> None:
        """Close intake and let the pools drain; cancel what is left once
        ``grace_period`` has passed (a shorter one from a later call wins)."""
        if self.state == "new":
            self.close_intake()
            self.tore_down()
        if grace_period == 0 and not self.torn_down.is_set():
            # No grace: what waits is cancelled before closing resumes paused
            # pools, so a paused pool's queue never starts either.
            for pool in self.pools.values():
                pool.expire()
        self.close_intake()
        if grace_period is None or self.torn_down.is_set():
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
            await self.torn_down.wait()
        if scope.cancelled_caught:
            for pool in self.pools.values():
                pool.expire()

    # ------------------------------------------------------------ self-wait

    def pool_of_running_job(self) -> int | None:
        """The pool whose job the caller is part of, if any.

        An async job (and any task it spawns) is recognised by its worker among
        the caller's ancestors, which costs nothing per job and cannot be fooled
        by a context inherited from another pool. A thread job calls back in
        through a task of trio's own, so it is recognised by RUNNING_JOB, which
        its thread's context carries.
        """
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            priority = self._workers.get(task)
            if priority is not None:
                return priority
            nursery = task.parent_nursery
            task = None if nursery is None else nursery.parent_task
        running = RUNNING_JOB.get()
        if running is not None and running[0] is self.owner:
            return running[1]
        return None

    def refuse_self_wait(self, what: str, priorities: list[int]) -> None:
        """Raise if the caller is a job of one of ``priorities``' pools."""
        priority = self.pool_of_running_job()
        if priority is not None and priority in priorities:
            raise RuntimeError(
                f"{what}() called from inside a job of pool {priority!r} of the "
                f"same dispatcher would wait for that job itself; call {what}() "
                "from the task that dispatched the jobs instead"
            )
