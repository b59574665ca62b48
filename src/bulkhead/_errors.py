"""Exceptions raised by bulkhead."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import trio

from ._stats import BatchReport

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


class DispatcherClosed(trio.ClosedResourceError):
    """Raised by dispatching once :meth:`Dispatcher.finalize` has begun.

    It is a :exc:`trio.ClosedResourceError`, so code that already handles closed
    channels handles a closed dispatcher too. Tasks blocked in
    :meth:`Dispatcher.dispatch` when intake stops get it as well; their jobs
    were not accepted and never run.
    """


class PoolFull(trio.WouldBlock):
    """Raised by :meth:`Dispatcher.dispatch` when ``max_wait`` ran out.

    The pool's workers stayed busy and its queue full for ``max_wait``
    seconds; the job was not accepted and never runs, and the refusal is
    counted in :attr:`PoolStatistics.rejected`. It is a
    :exc:`trio.WouldBlock`: the same "no room now" that
    :meth:`Dispatcher.dispatch_nowait` raises, after a bounded wait, so code
    that sheds load on ``WouldBlock`` sheds it on both.
    """

    priority: int
    """The pool that was full."""
    max_wait: float
    """How long the dispatch waited, in seconds."""

    def __init__(self, message: str, priority: int, max_wait: float) -> None:
        super().__init__(message)
        self.priority = priority
        self.max_wait = max_wait

    def __reduce__(self) -> tuple[Any, ...]:
        return (PoolFull, (self.args[0], self.priority, self.max_wait))


class UnknownPriority(KeyError):
    """Raised when a priority names no configured pool.

    It is a :exc:`KeyError`; its message lists the configured priorities.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would quote the whole message like a key.
        return str(self.args[0]) if self.args else ""


class JobCancelled(Exception):
    """The error of a job that ended cancelled.

    A cancelled job's :attr:`Job.outcome` is ``outcome.Error(JobCancelled(...))``
    and :meth:`Job.wait` raises it. A job ends cancelled when
    :meth:`Job.cancel` is called, when a finalize grace period expires, or when
    the dispatcher is torn down by an exception.
    """


class JobsFailed(ExceptionGroup[Exception]):
    """The failures of one batch, raised by a barrier or finalize.

    An :exc:`ExceptionGroup` of the jobs' own exceptions, raised under
    ``on_error="raise"`` by the first :meth:`Dispatcher.barrier` or
    :meth:`Dispatcher.finalize` to complete that covers the failed jobs; each
    failure is raised once. Catch it with ``except* SomeError`` or as a whole.
    The group holds the failures of ``"raise"`` pools only; ``report`` counts
    the failed jobs of every pool the barrier covered.
    """

    report: BatchReport
    """The :class:`BatchReport` of the batch the failures belong to."""

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], report: BatchReport
    ) -> JobsFailed:
        self = super().__new__(cls, message, exceptions)
        self.report = report
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], report: BatchReport
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> JobsFailed:  # type: ignore[override]
        # Keeps the type and the report through except* and split().
        return JobsFailed(self.message, excs, self.report)

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobsFailed, (self.message, list(self.exceptions), self.report))


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (which the exceptiongroup
    backport's traceback printing reads ``__notes__`` for)."""
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover
        notes = getattr(exc, "__notes__", None)
        if notes is None:
            exc.__notes__ = notes = []  # type: ignore[attr-defined]
        notes.append(note)
