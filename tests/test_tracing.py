"""OpenTelemetry spans per job, and hooks combined (issue 11)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

import bulkhead
import bulkhead.metrics
import bulkhead.tracing
from bulkhead import Hooks, PoolConfig, Retry

from ._jobs import hang_until


@pytest.fixture
def traced() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


async def test_each_started_job_has_a_span_under_the_span_it_was_dispatched_in(
    traced: tuple[Any, InMemorySpanExporter],
) -> None:
    tracer, exporter = traced
    spans = bulkhead.tracing.JobSpans(tracer)
    attempts = 0

    async def traced_work() -> None:
        with tracer.start_as_current_span("inside the job"):
            await trio.lowlevel.checkpoint()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError(f"attempt {attempts}")

    pools = [PoolConfig(1, 1, queue=1, retry=Retry(2, backoff=0, jitter=False))]
    async with bulkhead.open_dispatcher(
        pools, hooks=spans.hooks, on_error="record"
    ) as d:
        with tracer.start_as_current_span("request"):
            ok = await d.dispatch(traced_work)
            await d.barrier()
            failed = await d.dispatch(flaky)
            await d.barrier()
        release = trio.Event()
        await d.dispatch(hang_until, release)
        (await d.dispatch(trio.sleep, 0)).cancel()  # queued, never started
        release.set()
    finished = {span.name: span for span in exporter.get_finished_spans()}
    assert set(finished) == {
        "request",
        "inside the job",
        "bulkhead job test_each_started_job_has_a_span_under_the_span_it_was_"
        "dispatched_in.<locals>.traced_work",
        "bulkhead job test_each_started_job_has_a_span_under_the_span_it_was_"
        "dispatched_in.<locals>.flaky",
        "bulkhead job hang_until",
    }
    request = finished["request"]
    ok_span = finished[f"bulkhead job {ok.name}"]
    failed_span = finished[f"bulkhead job {failed.name}"]
    assert ok_span.parent is not None
    assert ok_span.parent.span_id == request.context.span_id
    inside = finished["inside the job"]
    assert inside.parent is not None
    assert inside.parent.span_id == ok_span.context.span_id
    assert dict(ok_span.attributes or {}) == {
        "bulkhead.job.id": ok.id,
        "bulkhead.job.priority": 1,
        "bulkhead.job.pool": "1",
        "bulkhead.job.attempts": 1,
        "bulkhead.job.state": "succeeded",
    }
    assert failed_span.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed_span.events] == ["retry", "exception"]
    assert (failed_span.attributes or {})["bulkhead.job.attempts"] == 2
    assert finished["bulkhead job hang_until"].parent is None  # dispatched outside


async def test_hooks_combine_metrics_and_spans(
    traced: tuple[Any, InMemorySpanExporter],
) -> None:
    tracer, exporter = traced
    metrics = bulkhead.metrics.PrometheusMetrics(CollectorRegistry())
    spans = bulkhead.tracing.JobSpans(tracer)
    seen: list[int] = []
    hooks = Hooks.combine(
        metrics.hooks, spans.hooks, Hooks(on_finished=lambda job, _: seen.append(1))
    )
    assert hooks.on_accepted is None
    assert hooks.on_started is spans.hooks.on_started
    async with bulkhead.open_dispatcher({1: 1}, hooks=hooks) as d:
        await d.dispatch(trio.sleep, 0)
    assert len(exporter.get_finished_spans()) == 1
    assert seen == [1]
    with pytest.raises(TypeError, match=r"^Hooks\.combine\(\) takes Hooks, got 3$"):
        Hooks.combine(metrics.hooks, 3)  # type: ignore[arg-type]


def test_job_spans_take_only_a_tracer() -> None:
    with pytest.raises(
        TypeError, match=r"^tracer must be an opentelemetry Tracer, got 'x'$"
    ):
        bulkhead.tracing.JobSpans("x")  # type: ignore[arg-type]
