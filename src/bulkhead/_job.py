"""The job handle returned by dispatching, and its states."""

from __future__ import annotations

import contextvars
import enum
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

import attrs
import trio
from outcome import Error, Value

from ._errors import JobCancelled
from ._policy import Retry
from ._stats import _Batch

_T = TypeVar("_T")

RUNNING_JOB: contextvars.ContextVar[tuple[object, int] | None] = contextvars.ContextVar(
    "bulkhead_running_job", default=None
)
"""(dispatcher, priority) of the job running in this context, where the
dispatcher cannot tell it by its task (a thread job), to catch self-waits."""
_R = TypeVar("_R")
"""What a job's function returns: ``Job[_R].wait()`` returns it."""


class _NoPublicConstructor(type):
    """Metaclass for classes only bulkhead creates (trio's NoPublicConstructor)."""

    def __call__(cls, *args: object, **kwargs: object) -> Any:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor; "
            "jobs are created by Dispatcher.dispatch() and dispatch_nowait()"
        )

    if TYPE_CHECKING:

        def _create(cls: type[_T], *args: Any, **kwargs: Any) -> _T: ...

    else:
        # type's own __call__, which the one above hides: no frame of ours
        # per job.
        _create = type.__call__


def function_name(fn: object) -> str:
    """What a job running ``fn`` is called when dispatch was given no name."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or repr(fn)


@final
class JobState(enum.Enum):
    """Where a job is in its life. The last three states are terminal."""

    QUEUED = "queued"
    """Accepted, waiting in the pool's queue for a worker."""
    RUNNING = "running"
    """Handed to a worker (possibly between retry attempts)."""
    SUCCEEDED = "succeeded"
    """Returned a value."""
    FAILED = "failed"
    """Raised an exception after its last attempt."""
    CANCELLED = "cancelled"
    """Cancelled before it finished; it never started if it was still queued."""


class _JobOwner(Protocol):
    def _withdraw(self, job: Job[Any]) -> None: ...


@final
@attrs.define(eq=False, repr=False)
class Job(Generic[_R], metaclass=_NoPublicConstructor):
    """A handle on one accepted job, returned by :meth:`Dispatcher.dispatch`.

    The dispatcher keeps no reference to a finished job: drop the handle and
    the job is gone, so memory stays flat however many jobs run.

    Example::

        job = await d.dispatch(fetch, url, priority=Priority.HIGH)
        ...
        body = await job.wait()   # the value, or the job's exception

    It is generic in what the job's function returns, so type checkers know
    what :meth:`wait` gives: dispatching ``async def fetch(url) -> bytes``
    makes a ``Job[bytes]``.
    """

    id: int
    """Unique within the process, increasing in dispatch order."""
    priority: int
    """The priority of the pool that runs the job."""
    _fn: Callable[..., Any] | None
    _args: tuple[Any, ...] | None
    _context: contextvars.Context | None
    _name: str
    _timeout: float | None
    _retry: Retry | None
    _owner: _JobOwner
    tag: Any
    """Whatever the caller passed as ``dispatch(..., tag=...)``, else ``None``.

    bulkhead never reads it: it is there so that hooks (``on_started``,
    ``on_retried``, ``on_finished``) and the code holding the handle can find
    the caller's own record for this job without encoding ids in its
    :attr:`name`. Dropped with the rest of the handle once nobody holds it,
    and kept after the job has ended (unlike the function and arguments)."""
    state: JobState = JobState.QUEUED
    """The current :class:`JobState`."""
    attempts: int = 0
    """How many attempts have begun. It is 0 while ``QUEUED``; the first
    begins when a worker takes the job (so a ``RUNNING`` job has at least 1,
    even if it is cancelled before its function is called), and each retry
    adds one."""
    outcome: Value[_R] | Error | None = None
    """``None`` until the job ends, then an :class:`outcome.Value` or
    :class:`outcome.Error` (``Error(JobCancelled(...))`` if cancelled)."""
    _batch: _Batch | None = None
    _done: trio.Event | None = None
    _scope: trio.CancelScope | None = None
    _cancel_requested: bool = False
    _started_at: float | None = None
    """When a worker took it (trio's clock), if the pool times its jobs."""
    _abandoned_attempt: trio.Event | None = None
    """Set by a kind that abandoned the job's attempt (a thread, a Dask task):
    an event set once that attempt has really returned."""

    @property
    def name(self) -> str:
        """The name given to dispatch, else the function's qualified name."""
        return self._name

    async def wait(self) -> _R:
        """Wait until the job has ended, then return its value or raise its error.

        Can be called any number of times, from any number of tasks; the
        stored outcome is never consumed.

        This is a checkpoint. Cancelling it affects the caller only, never the job.

        Returns:
          The value the job's function returned.

        Raises:
          JobCancelled: if the job ended cancelled.
          Exception: whatever the job's last attempt raised.
        """
        if self.outcome is None:
            if self._done is None:
                self._done = trio.Event()
            await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert self.outcome is not None
        if isinstance(self.outcome, Error):
            raise self.outcome.error
        return self.outcome.value

    @trio.lowlevel.enable_ki_protection
    def cancel(self) -> None:
        """Cancel this job alone; other jobs and the pool are unaffected.

        A queued job is withdrawn and never starts. A running async job gets
        :exc:`trio.Cancelled` at its next checkpoint; its worker is free again
        once the job has really stopped. A running process job is stopped by
        killing its worker process. A running thread job cannot be
        interrupted: it is abandoned, ends ``CANCELLED`` at once, and keeps its
        worker until it returns. Cancelling an ended job does nothing.

        Not a checkpoint; never raises.
        """
        if self.state is JobState.QUEUED:
            self._owner._withdraw(self)
        elif self.state is JobState.RUNNING:
            self._cancel_requested = True
            if self._scope is not None:
                self._scope.cancel()

    def _end(self, state: JobState, result: Value[_R] | Error) -> None:
        self.state = state
        self.outcome = result
        # A handle kept after its job ended pins nothing the job used: not
        # its arguments, nor its function (a partial's arguments, a bound
        # method's instance); its name, taken at dispatch, is all that is
        # left of it.
        self._fn = self._args = self._context = self._scope = self._batch = None
        if self._done is not None:
            self._done.set()

    def _cancelled_error(self) -> JobCancelled:
        return JobCancelled(f"job #{self.id} ({self.name}) was cancelled")

    def __repr__(self) -> str:
        return (
            f"<bulkhead.Job #{self.id} {self.name!r} priority={self.priority} "
            f"{self.state.name} attempts={self.attempts} at {id(self):#x}>"
        )
