"""The protocol every pool kind follows, and the checks kinds share."""

from __future__ import annotations

import pickle
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .._job import Job
from .._policy import is_async_callable


class PoolKind(Protocol):
    """How one pool runs its jobs. One instance per pool, built with it."""

    def check(self, fn: object) -> None:
        """Reject at dispatch a callable this kind could never run.

        Called before anything is accepted, with a callable that is not a
        coroutine object. Raises ``TypeError`` with a message that says what
        to do.
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


def refuse_async(fn: object, kind: str) -> None:
    """Reject an async function for a pool that calls sync ones."""
    if is_async_callable(fn):
        raise TypeError(
            f"{fn!r} is an async function, but this is a {kind} pool that calls "
            "sync functions: dispatch it to an async pool"
        )


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
