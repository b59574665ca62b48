"""The ``"async"`` pool kind: async functions run by the worker task itself."""

from __future__ import annotations

import contextvars
import inspect
import reprlib
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

import attrs

from .._job import Job
from .._policy import is_async_callable


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


@attrs.define(eq=False)
class AsyncKind:
    """Jobs run inside the worker task: cancelling the worker's scope
    interrupts them at their next checkpoint. Nothing to open."""

    check_arguments = None  # the arguments stay in this process

    def check(self, fn: object) -> None:
        if not is_async_callable(fn):
            raise TypeError(
                f"{fn!r} is not an async function, but this is an async pool: "
                "make it `async def`, or dispatch it to a "
                'PoolConfig(kind="thread") pool'
            )

    def open(self) -> None:
        return None

    def resize(self, workers: int) -> None:
        pass  # the pool's workers are the only bound

    def run(self, job: Job[Any]) -> Awaitable[Any]:
        fn, args, context = job._fn, job._args, job._context
        assert fn is not None  # until the job ends
        assert args is not None
        if context is None:
            return fn(*args)  # type: ignore[no-any-return]
        coro = context.run(fn, *args)
        if not inspect.iscoroutine(coro):
            raise TypeError(
                f"{job.name} returned {reprlib.repr(coro)}, not a coroutine: "
                "an async pool runs async functions; use a thread pool for "
                "sync ones"
            )
        return _in_context(context, coro)
