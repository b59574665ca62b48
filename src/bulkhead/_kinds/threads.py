"""The ``"thread"`` pool kind: sync functions in the pool's own threads.

A thread cannot be interrupted: a cancelled attempt is abandoned
(``abandon_on_cancel=True``). The job ends at once, and the pool keeps the
worker's slot until the thread really returns, so it never runs more than
``workers`` threads.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from .._job import RUNNING_JOB, Job
from .protocol import refuse_async, run_abandonable


@attrs.define(eq=False)
class ThreadKind:
    """Jobs run through ``trio.to_thread.run_sync`` under the pool's own
    limiter (trio's default limiter is shared program-wide)."""

    workers: int
    running_job: tuple[object, int]
    """Set in the job's thread, so a barrier() called back from it is
    recognised as coming from inside the job."""
    limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.limiter = trio.CapacityLimiter(self.workers)

    check_arguments = None  # the arguments stay in this process

    def check(self, fn: object) -> None:
        refuse_async(fn, "thread")

    def open(self) -> None:
        return None

    def resize(self, workers: int) -> None:
        self.limiter.total_tokens = workers

    async def run(self, job: Job[Any]) -> Any:
        fn, args, context = job._fn, job._args, job._context
        assert fn is not None  # until the job ends
        assert args is not None
        running_job = self.running_job
        if context is not None:
            context.run(RUNNING_JOB.set, running_job)

        def call() -> Any:
            if context is None:
                # The thread runs in its own copy of the worker's context.
                RUNNING_JOB.set(running_job)
                return fn(*args)
            return context.run(fn, *args)

        return await run_abandonable(
            job, call, self.limiter, f"bulkhead job #{job.id} ({job.name})"
        )
