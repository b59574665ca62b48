"""The ``"thread"`` pool kind: sync functions in the pool's own threads.

A thread cannot be interrupted: a cancelled attempt is abandoned
(``abandon_on_cancel=True``). The job ends at once, and the pool keeps the
worker's slot until the thread really returns, so it never runs more than
``workers`` threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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

    def run(self, job: Job[Any]) -> Awaitable[Any]:
        return run_in_thread(job, job._fn, self.limiter, self.running_job)


async def run_in_thread(
    job: Job[Any],
    fn: Callable[..., Any] | None,
    limiter: trio.CapacityLimiter,
    running_job: tuple[object, int],
) -> Any:
    """One attempt of ``job``: ``fn(*job._args)`` in a trio worker thread.

    The thread runs in the job's context (or in a copy of the worker's) with
    ``running_job`` set, so a barrier called back from it is recognised as
    coming from inside the job. It holds a token of ``limiter``, the pool's
    own; cancelled, it is abandoned (:func:`.protocol.run_abandonable`).
    Thread pools and async pools running a sync function both use it.
    """
    args, context = job._args, job._context
    assert fn is not None  # until the job ends
    assert args is not None
    if context is not None:
        context.run(RUNNING_JOB.set, running_job)

    def call() -> Any:
        if context is None:
            # The thread runs in its own copy of the worker's context.
            RUNNING_JOB.set(running_job)
            return fn(*args)
        return context.run(fn, *args)

    return await run_abandonable(
        job, call, limiter, f"bulkhead job #{job.id} ({job.name})"
    )
