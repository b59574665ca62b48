"""Jobs in the order they end: :func:`as_completed`.

No task per job: each pending job's end calls a watcher (registered on the
job's ``_Ended``, the object :meth:`Job.wait` waits on) that appends the job
to a ready queue and wakes the iterating task. Each step is a checkpoint.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Generic, TypeVar

import trio

from ._job import Job, _Ended

_R = TypeVar("_R")


class _AsCompleted(AsyncIterator[Job[_R]], Generic[_R]):
    def __init__(self, jobs: Iterable[Job[_R]]) -> None:
        if not isinstance(jobs, Iterable):
            raise TypeError(
                f"as_completed() takes an iterable of bulkhead.Job, got {jobs!r}"
            )
        jobs = list(jobs)
        for job in jobs:
            if not isinstance(job, Job):
                raise TypeError(
                    "as_completed() takes an iterable of bulkhead.Job, got an "
                    f"item {job!r}: pass the handles dispatch() returned"
                )
        self._ready: deque[Job[_R]] = deque()
        self._pending = 0
        self._wakeup: trio.Event | None = None
        for job in jobs:
            if job.outcome is not None:
                self._ready.append(job)
                continue
            if job._done is None:
                job._done = _Ended()
            job._done.watch(functools.partial(self._ended, job))
            self._pending += 1

    def _ended(self, job: Job[_R]) -> None:
        self._ready.append(job)
        self._pending -= 1
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> _AsCompleted[_R]:
        return self

    async def __anext__(self) -> Job[_R]:
        if not self._ready and self._pending:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
            self._wakeup = None
        else:
            await trio.lowlevel.checkpoint()
        if not self._ready:
            raise StopAsyncIteration
        return self._ready.popleft()


def as_completed(jobs: Iterable[Job[_R]]) -> AsyncIterator[Job[_R]]:
    """Iterate over ``jobs`` in the order they end: ``async for job in ...``.

    Each job is yielded once it has ended (succeeded, failed or cancelled),
    as soon as it has; jobs that had already ended come first, in the order
    given. Read each one with :meth:`Job.wait` or :attr:`Job.outcome`.
    It works on handles from any dispatcher and needs no task of its own,
    so it is a function rather than a dispatcher method.

    Each step is a checkpoint. Cancelling one loses nothing: the jobs that
    ended meanwhile are yielded by the next step.

    Example::

        jobs = await d.dispatch_many(fetch, [(url,) for url in urls])
        async for job in bulkhead.as_completed(jobs):
            try:
                print(job.name, await job.wait())
            except OSError:
                job.mark_handled()

    Raises:
      TypeError: if ``jobs`` is not an iterable of :class:`Job` (read in full
        before the first step).
    """
    return _AsCompleted(jobs)
