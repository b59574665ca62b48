"""Event hooks: callbacks on what happens to each job, for metrics and tracing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

import attrs

from ._job import Job


def _check_callback(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be a callable or None, got {value!r}")


@final
@attrs.frozen
class Hooks:
    """Callbacks on each job's life, passed as ``open_dispatcher(hooks=...)``.

    For every accepted job, in this order: ``on_accepted`` once, then
    ``on_started`` once if a worker took it, ``on_retried`` for each retry,
    and ``on_finished`` once when it ended (a queued job cancelled before it
    started skips ``on_started``). ``on_rejected`` is called for each
    dispatch a full pool refused (``dispatch_nowait`` or ``max_wait``), which
    created no job. Unset hooks cost nothing.

    Hooks run synchronously inside the dispatcher's bookkeeping, so keep them
    short and never block; they must not raise: an exception from a hook
    crashes the dispatcher, as one from an error handler does.

    Example::

        def log_end(job, duration):
            log.info("job %s %s after %s s", job.id, job.state.name, duration)

        async with open_dispatcher(pools, hooks=Hooks(on_finished=log_end)) as d:
            ...

    :mod:`bulkhead.metrics` builds Prometheus metrics on top of them.
    """

    on_accepted: Callable[[Job[Any]], object] | None = attrs.field(
        default=None, validator=_check_callback
    )
    """``on_accepted(job)``: the pool accepted ``job`` (queued or running)."""
    on_started: Callable[[Job[Any]], object] | None = attrs.field(
        default=None, validator=_check_callback
    )
    """``on_started(job)``: a worker took ``job``; its first attempt began."""
    on_retried: Callable[[Job[Any], Exception, float], object] | None = attrs.field(
        default=None, validator=_check_callback
    )
    """``on_retried(job, error, delay)``: an attempt failed with ``error`` and
    the next one begins after ``delay`` seconds."""
    on_finished: Callable[[Job[Any], float | None], object] | None = attrs.field(
        default=None, validator=_check_callback
    )
    """``on_finished(job, duration)``: ``job`` ended (its ``state`` and
    ``outcome`` say how) ``duration`` seconds after it started, or ``None``
    if it never started."""
    on_rejected: Callable[[int, Exception], object] | None = attrs.field(
        default=None, validator=_check_callback
    )
    """``on_rejected(priority, error)``: pool ``priority`` refused a dispatch
    with ``error`` (:exc:`trio.WouldBlock` or :exc:`PoolFull`)."""

    @classmethod
    def combine(cls, *hooks: Hooks) -> Hooks:
        """One :class:`Hooks` that calls each of ``hooks`` in turn, per event.

        Example: metrics and tracing together::

            hooks = Hooks.combine(metrics.hooks, spans.hooks)
        """
        for each in hooks:
            if not isinstance(each, Hooks):
                raise TypeError(f"Hooks.combine() takes Hooks, got {each!r}")
        events = {}
        for field in attrs.fields(cls):
            callbacks = [c for h in hooks if (c := getattr(h, field.name)) is not None]
            if len(callbacks) == 1:
                events[field.name] = callbacks[0]
            elif callbacks:
                events[field.name] = _calling_each(callbacks)
        return cls(**events)


def _calling_each(callbacks: list[Callable[..., object]]) -> Callable[..., None]:
    def call_each(*args: Any) -> None:
        for callback in callbacks:
            callback(*args)

    return call_each
