"""A job's attempts: its timeout, its retries, and what counts as its failure.

An attempt the kind could not stop (a thread) is abandoned: the job ends,
and its worker is held until the attempt really returns
(:meth:`_Attempts.hold_for_abandoned`, counted in ``abandoned``), up to
the end of finalize's grace period.

The worker runs a job with neither timeout nor retry inline (inlined, as
:meth:`_Attempts.run`, without a coroutine frame per job); everything else
goes through :meth:`_Attempts.run`. An attempt that overruns its timeout
fails with :exc:`trio.TooSlowError` (counted in ``timed_out``); a failure the
:class:`Retry` covers is retried after its backoff (counted in
``retried``), while the worker stays busy. A retry never overlaps an
attempt the kind abandoned (a thread still running): it waits for it.
Cancellation is never retried.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs
import trio
from outcome import Error, Value

from ._hooks import Hooks
from ._job import Job
from ._kinds import PoolKind
from ._policy import Retry

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

Outcome: TypeAlias = Value[Any] | Error
"""How an attempt or a job ended (``outcome.Outcome`` is not a union mypy narrows)."""


def own_failure(exc: BaseException, scope: trio.CancelScope) -> Error:
    """The job's own failure inside a ``BaseException`` it raised, else re-raise.

    A job cancelled while it fails (a nursery whose child raises during its
    cleanup) raises a group of ``Cancelled`` and its errors. When ``scope``, the
    worker's, was cancelled (``job.cancel()``, a grace period), that
    ``Cancelled`` is the job's cancellation and the errors are its outcome.
    Anything else is not the job's to keep: a bare ``Cancelled``, a
    cancellation from outside (the dispatcher's teardown), KeyboardInterrupt
    and SystemExit propagate.
    """
    if scope.cancel_called and isinstance(exc, BaseExceptionGroup):
        failures, others = exc.split(Exception)
        only_cancelled = others is not None and others.split(trio.Cancelled)[1] is None
        if failures is not None and only_cancelled:
            return Error(failures)
    raise exc


@attrs.define(eq=False)
class _Attempts:
    """Runs one pool's jobs attempt by attempt; owns ``retried`` and ``timed_out``."""

    kind: PoolKind
    hooks: Hooks | None
    call_hook: Callable[..., None]
    """Calls a hook; a hook that raises crashes the dispatcher."""
    retried: int = 0
    timed_out: int = 0
    abandoned: int = 0
    """Workers held by an abandoned attempt that has not returned yet."""
    _expired: bool = False
    _abandon_scopes: set[trio.CancelScope] = attrs.field(factory=set)

    async def run(self, job: Job[Any], scope: trio.CancelScope) -> Outcome:
        """Run the job's attempts, with its timeout and retries.

        Cancellation of the job propagates as ``trio.Cancelled`` to the
        worker's ``scope``.
        """
        retry = job._retry
        timeout = job._timeout
        while True:
            try:
                if timeout is None:
                    return Value(await self.kind.run(job))
                with trio.fail_after(timeout) as deadline:
                    return Value(await self.kind.run(job))
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    return own_failure(exc, scope)  # cancelled: no retry
                if timeout is not None and deadline.cancel_called:
                    self.timed_out += 1
                if (
                    retry is None
                    or job.attempts >= retry.attempts
                    or not isinstance(exc, retry.on)
                ):
                    return Error(exc)
                failure = exc
            await self._before_retry(job, retry, failure)
            job.attempts += 1

    async def _before_retry(
        self, job: Job[Any], retry: Retry, error: Exception
    ) -> None:
        self.retried += 1
        delay = retry.delay(job.attempts)
        hooks = self.hooks
        if hooks is not None and hooks.on_retried is not None:
            self.call_hook(hooks.on_retried, job, error, delay)
        if job._abandoned_attempt is not None:
            # The timed-out attempt still runs: never two attempts at once.
            await job._abandoned_attempt.wait()
            job._abandoned_attempt = None
        await trio.sleep(delay)

    async def hold_for_abandoned(self, thread_done: trio.Event) -> None:
        """Keep the caller's worker until an abandoned attempt really returns,
        so the pool never runs more than ``workers`` attempts at once."""
        if thread_done.is_set() or self._expired:
            return
        self.abandoned += 1
        with trio.CancelScope() as scope:
            self._abandon_scopes.add(scope)
            try:
                await thread_done.wait()
            finally:
                self._abandon_scopes.discard(scope)
                self.abandoned -= 1

    def expire(self) -> None:
        """Grace period over: stop holding workers for abandoned attempts."""
        self._expired = True
        for scope in self._abandon_scopes:
            scope.cancel()
