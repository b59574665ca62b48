"""The protocol every pool kind follows, and the checks kinds share."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import pickle
import reprlib
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import trio

from .._job import Job, function_name
from .._policy import is_async_callable


class PoolKind(Protocol):
    """How one pool runs its jobs. One instance per pool, built with it."""

    def check(self, fn: object) -> Callable[[Any], Any] | None:
        """Reject at dispatch a callable this kind could never run.

        Called before anything is accepted, with a callable that is not a
        coroutine object. Raises ``TypeError`` with a message that says what
        to do. Returns ``None``, or a wrapper that every job of ``fn`` is
        to carry instead of ``fn`` (an async pool marks a sync function so
        that it runs in a thread), so that :meth:`run` needs no check of
        its own per job.
        """

    @property
    def check_arguments(self) -> Callable[[tuple[Any, ...]], None] | None:
        """For a kind that sends each job's arguments to another process: a
        function that rejects, at dispatch, arguments that cannot be sent
        (``TypeError``), so nothing unsendable is accepted. ``None`` for a
        kind whose jobs run in this process: it costs nothing per dispatch.
        """

    def open(self) -> AbstractAsyncContextManager[None] | None:
        """Hold the kind's resources (worker processes, a cluster client).

        Entered in a task of the dispatcher's nursery before any worker
        starts; exited once every worker of the pool has exited, so it
        releases everything the kind started. ``None`` for a kind that holds
        nothing: no task is spent on it.
        """

    def run(self, job: Job[Any]) -> Awaitable[Any]:
        """Start one attempt of ``job``; the worker awaits what it returns.

        Cancelling that await stops the attempt as the kind can: an async
        job is interrupted, a process job's worker is killed. A kind that
        cannot stop a running attempt (threads, Dask) abandons it: it sets
        ``job._abandoned_attempt`` to an event that is set once the attempt
        has really returned, and the pool keeps the worker's slot until then.
        """

    def resize(self, workers: int) -> None:
        """Let the kind run ``workers`` attempts at once from now on."""


def check_callable(
    kind: PoolKind, fn: object
) -> tuple[Callable[[Any], Any] | None, str, weakref.ref[Any] | None]:
    """Reject what a pool of ``kind`` could never call, before anything is
    accepted; returns the kind's wrapper for ``fn`` (or ``None``), the name
    its jobs get by default, and a weak reference to ``fn`` (``None`` if it
    cannot be weakly referenced: it is then checked at every dispatch).

    Raises:
      TypeError: for a coroutine object (with the "did you mean" hint), a
        value that is not callable, or a function the kind cannot run.
    """
    if inspect.iscoroutine(fn):
        fn.close()
        raise TypeError(
            f"dispatch() got a coroutine object {fn!r} instead of a function: "
            "did you mean dispatch(f, x) instead of dispatch(f(x))?"
        )
    if not callable(fn):
        raise TypeError(f"dispatch() needs a function to call, got {fn!r}")
    wrap = kind.check(fn)
    try:
        ref: weakref.ref[Any] | None = weakref.ref(fn)
    except TypeError:  # not weakly referenceable
        ref = None
    return wrap, function_name(fn), ref


def import_for_kind(kind: str, package: str, *modules: str) -> Any:
    """Import ``modules`` (the first is returned), or raise an ImportError
    that names the extra a ``kind`` pool needs."""
    try:
        imported = [importlib.import_module(name) for name in modules]
    except ImportError:
        raise ImportError(
            f"kind=\"{kind}\" pools need {package}: pip install 'bulkhead[{kind}]'"
        ) from None
    return imported[0]


async def run_abandonable(
    job: Job[Any],
    work: Callable[[], Any],
    limiter: trio.CapacityLimiter,
    thread_name: str,
    on_abandon: Callable[[], object] | None = None,
) -> Any:
    """Run ``work()`` in a trio worker thread under ``limiter``; return its value.

    Cancelled, it abandons the thread (``abandon_on_cancel``): it returns at
    once, sets ``job._abandoned_attempt`` to an event set once ``work()`` has
    really returned, and calls ``on_abandon`` (to tell ``work`` to wind up).
    """
    token = trio.lowlevel.current_trio_token()
    returned = trio.Event()

    def in_thread() -> Any:
        try:
            return work()
        finally:
            with contextlib.suppress(trio.RunFinishedError):  # run already over
                token.run_sync_soon(returned.set)

    try:
        return await trio.to_thread.run_sync(
            in_thread,
            limiter=limiter,
            abandon_on_cancel=True,
            # Named while it runs the job: thread dumps show what is stuck.
            thread_name=thread_name,
        )
    finally:
        if not returned.is_set():
            job._abandoned_attempt = returned
            if on_abandon is not None:
                on_abandon()


def refuse_async(fn: object, kind: str) -> None:
    """Reject an async function for a pool that calls sync ones."""
    if is_async_callable(fn):
        raise TypeError(
            f"{fn!r} is an async function, but this is a {kind} pool that calls "
            "sync functions: dispatch it to an async pool"
        )


class _Discard:
    """A file that forgets what is written: a pickling check that keeps
    no copy of large arguments (protocol 5 writes big buffers as they are)."""

    def write(self, data: bytes) -> int:
        return len(data)


@functools.cache
def _picklers() -> tuple[type[pickle.Pickler], ...]:
    # What trio-parallel and Dask send with: cloudpickle where installed
    # (Dask needs it), else the standard library's pickle.
    try:
        cloudpickle = importlib.import_module("cloudpickle")
    except ImportError:  # pragma: no cover  # the test suite installs Dask
        return (pickle.Pickler,)
    return (pickle.Pickler, cloudpickle.CloudPickler)


def refuse_unsendable_arguments(args: tuple[Any, ...], kind: str, where: str) -> None:
    """Reject job arguments that cannot be pickled to be sent to ``where``."""
    for pickler in _picklers():
        try:
            pickler(_Discard(), protocol=5).dump(args)
        except Exception as exc:
            error = exc
        else:
            return
    raise TypeError(
        f"the arguments {reprlib.repr(args)} cannot be sent to {where} ({error}): "
        f"a {kind} pool's jobs need arguments that pickle; nothing was accepted"
    ) from None


def refuse_unpicklable(fn: object, kind: str, where: str) -> None:
    """Reject a function that cannot be pickled to be sent to ``where``."""
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise TypeError(
            f"{fn!r} cannot be sent to {where} ({exc}): a {kind} pool needs a "
            "picklable function, such as one defined at module level (not a "
            "lambda or a local function)"
        ) from None
