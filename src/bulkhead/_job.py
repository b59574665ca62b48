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

if TYPE_CHECKING:
    from ._batch import _Batch

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


@attrs.define(eq=False)
class _Ended:
    """What waits for one job's end: :meth:`Job.wait` callers, and
    :func:`as_completed`'s watchers, called once as the job ends."""

    _event: trio.Event = attrs.field(factory=trio.Event)
    _watchers: list[Callable[[], object]] | None = None

    def set(self) -> None:
        self._event.set()
        watchers, self._watchers = self._watchers, None
        for watcher in watchers or ():
            watcher()

    async def wait(self) -> None:
        await self._event.wait()

    def watch(self, watcher: Callable[[], object]) -> None:
        if self._watchers is None:
            self._watchers = []
        self._watchers.append(watcher)


class _JobOwner(Protocol):
    name: str

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
    _done: _Ended | None = None
    _cancel_requested: bool = False
    # Set once needed, never in __init__ (a slot assignment per job is about
    # 1 % of a trivial dispatch): _batch on acceptance, _scope when a worker
    # takes the job, the times only if the dispatcher times its jobs.
    _batch: _Batch | None = attrs.field(init=False)
    _scope: trio.CancelScope | None = attrs.field(init=False)
    _accepted_at: float = attrs.field(init=False)
    _started_at: float = attrs.field(init=False)
    _finished_at: float = attrs.field(init=False)
    _failure_kept_in: _Batch = attrs.field(init=False)
    """The batch whose JobsFailed will carry this job's failure, until then."""
    _abandoned_attempt: trio.Event | None = None
    """Set by a kind that abandoned the job's attempt (a thread, a Dask task):
    an event set once that attempt has really returned."""

    @property
    def name(self) -> str:
        """The name given to dispatch, else the function's qualified name."""
        return self._name

    @property
    def pool_name(self) -> str:
        """The name of the pool that runs the job (:attr:`PoolConfig.name`,
        else its priority's), as statistics and metrics label it."""
        return self._owner.name

    @property
    def accepted_at(self) -> float | None:
        """When the pool accepted the job, on trio's clock
        (:func:`trio.current_time`, so a virtual clock works in tests).

        ``None`` if the dispatcher does not time its jobs: pass
        ``timings=True`` to :func:`open_dispatcher` (hooks and an
        :class:`AdaptiveLimit` turn timing on too)."""
        return getattr(self, "_accepted_at", None)

    @property
    def started_at(self) -> float | None:
        """When a worker took the job (its first attempt began), on trio's
        clock; ``None`` until then, for a job that never started, or if jobs
        are not timed."""
        return getattr(self, "_started_at", None)

    @property
    def finished_at(self) -> float | None:
        """When the job ended, on trio's clock; ``None`` until then, or if
        jobs are not timed."""
        return getattr(self, "_finished_at", None)

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
                self._done = _Ended()
            await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert self.outcome is not None
        if isinstance(self.outcome, Error):
            raise self.outcome.error
        return self.outcome.value

    @trio.lowlevel.enable_ki_protection
    def mark_handled(self) -> None:
        """Tell barriers that this job's failure has been dealt with.

        Under ``on_error="raise"`` the first covering :meth:`~Dispatcher.barrier`
        or :meth:`~Dispatcher.finalize` raises each failure of its batch in
        :exc:`JobsFailed`. Once you have read a failure through :meth:`wait`
        and handled it, call this so that it is not raised again: the barrier
        still counts the job in :attr:`BatchReport.failed`, and raises
        nothing if every failure of its batch was handled.

        It does nothing for a job that has not failed, whose failure a
        barrier already reported, or whose pool does not raise failures.
        Not a checkpoint; never raises.

        Example::

            try:
                await job.wait()
            except LookupError:
                job.mark_handled()  # a miss is expected: not a batch failure
        """
        batch = getattr(self, "_failure_kept_in", None)
        if batch is not None:
            del self._failure_kept_in
            assert isinstance(self.outcome, Error)
            batch.handled(self.outcome.error)

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
            scope = getattr(self, "_scope", None)  # None until a worker took it
            if scope is not None:
                scope.cancel()

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
