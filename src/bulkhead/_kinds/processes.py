"""The ``"process"`` pool kind: sync functions in the pool's own worker
processes, through trio-parallel (the ``bulkhead[process]`` extra).

Each pool opens its own ``trio_parallel`` worker context, never the
library-wide default one that all pools would share. Cancelling an attempt
kills its worker process (``kill_on_cancel``), so a process job is really
stopped and frees its slot at once: nothing is abandoned.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import attrs
import trio

from .._job import Job
from .protocol import (
    import_for_kind,
    refuse_async,
    refuse_unpicklable,
    refuse_unsendable_arguments,
)


@attrs.define(eq=False)
class ProcessKind:
    """Jobs run in the pool's own worker processes, at most ``workers`` at once."""

    workers: int
    limiter: trio.CapacityLimiter = attrs.field(init=False)
    _trio_parallel: Any = attrs.field(init=False)
    _processes: Any = None
    """The pool's ``trio_parallel.WorkerContext`` while it is open."""

    def __attrs_post_init__(self) -> None:
        self._trio_parallel = import_for_kind(
            "process", "trio-parallel", "trio_parallel"
        )
        self.limiter = trio.CapacityLimiter(self.workers)

    def check(self, fn: object) -> None:
        refuse_async(fn, "process")
        refuse_unpicklable(fn, "process", "a worker process")

    def check_arguments(self, args: tuple[Any, ...]) -> None:
        refuse_unsendable_arguments(args, "process", "a worker process")

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        async with self._trio_parallel.open_worker_context() as processes:
            self._processes = processes
            yield

    def resize(self, workers: int) -> None:
        # Processes beyond the new bound sit idle in the context until its
        # idle timeout retires them.
        self.limiter.total_tokens = workers

    def run(self, job: Job[Any]) -> Awaitable[Any]:
        assert job._args is not None  # until the job ends
        return self._processes.run_sync(  # type: ignore[no-any-return]
            job._fn, *job._args, kill_on_cancel=True, limiter=self.limiter
        )
