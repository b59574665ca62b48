"""The ``"async"`` pool kind: async functions run by the worker task itself.

A sync function dispatched to an async pool runs in a worker thread instead,
exactly as a thread pool's jobs run (:func:`.threads.run_in_thread`): the
thread holds the job's worker, each pool has its own ``CapacityLimiter`` of
``workers`` tokens (never trio's default, which all pools would share), and
a cancelled or timed-out thread is abandoned, keeping its worker until it
really returns. Dispatch marks such a job by wrapping its function in
:class:`_InThread` (only a sync function pays for it); the worker tells the
two apart with one class test.
"""

from __future__ import annotations

import contextvars
import inspect
import reprlib
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import attrs
import trio

from .._job import Job
from .._policy import is_async_callable
from .threads import run_in_thread


@types.coroutine
def _in_context(
    context: contextvars.Context, coro: Coroutine[Any, Any, Any]
) -> Generator[Any, Any, Any]:
    """Drive ``coro`` one step at a time inside ``context``.

    trio runs a task's coroutine in the task's own context; stepping the job's
    coroutine through ``context.run`` gives it the dispatcher's context without
    the cost of a task per job. Every trap the job yields passes through
    unchanged, so trio sees an ordinary coroutine.
    """
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            if error is None:
                trap = context.run(coro.send, send)
            else:
                trap = context.run(coro.throw, error)
        except StopIteration as stop:
            return stop.value
        try:
            send = yield trap
            error = None
        except BaseException as exc:  # delivered into the job, not swallowed
            send, error = None, exc


@attrs.frozen
class _InThread:
    """A sync function dispatched to an async pool: run it in a thread."""

    fn: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


@attrs.define(eq=False)
class AsyncKind:
    """Jobs run inside the worker task: cancelling the worker's scope
    interrupts them at their next checkpoint. Nothing to open.

    A sync function runs in a thread under :attr:`limiter`, which holds
    ``workers`` tokens.
    """

    workers: int
    running_job: tuple[object, int]
    """Set in a sync job's thread, as a thread pool does."""
    limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.limiter = trio.CapacityLimiter(self.workers)

    check_arguments = None  # the arguments stay in this process

    def check(self, fn: object) -> Callable[[Any], Any] | None:
        if is_async_callable(fn):
            return None
        return _InThread  # a sync function: it runs in a worker thread

    def open(self) -> None:
        return None

    def resize(self, workers: int) -> None:
        self.limiter.total_tokens = workers

    def run(self, job: Job[Any]) -> Awaitable[Any]:
        fn, args, context = job._fn, job._args, job._context
        assert fn is not None  # until the job ends
        assert args is not None
        if fn.__class__ is _InThread:
            return run_in_thread(job, fn.fn, self.limiter, self.running_job)
        if context is None:
            return fn(*args)  # type: ignore[no-any-return]
        coro = context.run(fn, *args)
        if not inspect.iscoroutine(coro):
            raise TypeError(
                f"{job.name} returned {reprlib.repr(coro)}, not a coroutine: "
                "an async pool runs a function that is not `async def` in a "
                "thread, but this one claims to be async; make it `async def`"
            )
        return _in_context(context, coro)
