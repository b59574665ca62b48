"""OpenTelemetry spans for bulkhead jobs (the ``bulkhead[tracing]`` extra).

One span per job that a worker took, from the hand-off to its end, named
``bulkhead job <name>``, with the job's id, priority, pool name, attempts and final
state as attributes, an event per retry, and an error status (with the
exception recorded) for a failed job. A job that runs in a copy of the
dispatching context (``PoolConfig(copy_context=True)``, the default) gets
its span as a child of the span current where it was dispatched, and that
span is current inside the job, so what the job traces nests under it.
Example::

    import bulkhead, bulkhead.tracing

    spans = bulkhead.tracing.JobSpans()
    async with bulkhead.open_dispatcher(pools, hooks=spans.hooks) as d:
        ...

Combine it with :mod:`bulkhead.metrics` through :meth:`bulkhead.Hooks.combine`.
"""

from __future__ import annotations

from typing import Any, final

from ._hooks import Hooks
from ._job import Job, JobState

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
except ImportError:  # pragma: no cover - the extra is in every test environment
    raise ImportError(
        "bulkhead.tracing needs opentelemetry-api: pip install 'bulkhead[tracing]'"
    ) from None

__all__ = ["JobSpans"]


@final
class JobSpans:
    """Hooks that open an OpenTelemetry span per job.

    Args:
      tracer: the tracer to start spans with (default:
        ``opentelemetry.trace.get_tracer("bulkhead")``).
    """

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        if tracer is not None and not isinstance(tracer, trace.Tracer):
            raise TypeError(f"tracer must be an opentelemetry Tracer, got {tracer!r}")
        self._tracer = tracer if tracer is not None else trace.get_tracer("bulkhead")
        self._spans: dict[int, trace.Span] = {}
        """Spans of the jobs running now: bounded by the pools' workers."""
        self.hooks = Hooks(
            on_started=self._started,
            on_retried=self._retried,
            on_finished=self._finished,
        )
        """Pass as ``open_dispatcher(..., hooks=spans.hooks)``."""

    def _started(self, job: Job[Any]) -> None:
        attributes: dict[str, int | str] = {
            "bulkhead.job.id": job.id,
            "bulkhead.job.priority": job.priority,
            "bulkhead.job.pool": job.pool_name,
        }
        name = f"bulkhead job {job.name}"
        context = job._context
        if context is None:
            span = self._tracer.start_span(name, attributes=attributes)
        else:
            span = context.run(self._tracer.start_span, name, attributes=attributes)
            # Current inside the job: what it traces nests under its span.
            context.run(otel_context.attach, trace.set_span_in_context(span))
        self._spans[job.id] = span

    def _retried(self, job: Job[Any], error: Exception, delay: float) -> None:
        span = self._spans.get(job.id)
        if span is not None:
            span.add_event(
                "retry",
                {
                    "bulkhead.job.attempt": job.attempts,
                    "bulkhead.retry.delay": delay,
                    "exception.type": type(error).__qualname__,
                },
            )

    def _finished(self, job: Job[Any], duration: float | None) -> None:
        span = self._spans.pop(job.id, None)
        if span is None:  # never started: no span
            return
        span.set_attribute("bulkhead.job.attempts", job.attempts)
        span.set_attribute("bulkhead.job.state", job.state.value)
        if job.state is JobState.FAILED:
            assert job.outcome is not None
            error = getattr(job.outcome, "error", None)
            if isinstance(error, BaseException):
                span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, "job failed"))
        span.end()
