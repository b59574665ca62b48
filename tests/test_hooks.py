"""Event hooks and the Prometheus exporter built on them (issue 11)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from trio.testing import wait_all_tasks_blocked

import bulkhead
import bulkhead.metrics
from bulkhead import Hooks, JobState, PoolConfig, Retry

from ._jobs import fail, hang_until, noop, sleep_then


class Recorder:
    """Every hook call, in order, as (event, job id or priority)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.durations: dict[int, float | None] = {}
        self.hooks = Hooks(
            on_accepted=lambda job: self.events.append(("accepted", job.id)),
            on_started=lambda job: self.events.append(("started", job.id)),
            on_retried=self.retried,
            on_finished=self.finished,
            on_rejected=lambda priority, error: self.events.append(
                ("rejected", (priority, type(error).__name__))
            ),
        )

    def retried(self, job: bulkhead.Job[Any], error: Exception, delay: float) -> None:
        assert isinstance(error, ValueError)
        self.events.append(("retried", job.id))

    def finished(self, job: bulkhead.Job[Any], duration: float | None) -> None:
        assert job.outcome is not None  # already ended when the hook runs
        self.durations[job.id] = duration
        self.events.append(("finished", job.id))

    def per_job(self) -> dict[Any, list[str]]:
        sequences: dict[Any, list[str]] = defaultdict(list)
        for event, key in self.events:
            sequences[key].append(event)
        return sequences


async def test_each_event_comes_once_per_job_and_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    pools = [
        PoolConfig(1, 1, queue=2, retry=Retry(3, backoff=1, jitter=False)),
        PoolConfig(2, 1, max_wait=1),
    ]
    release = trio.Event()
    async with bulkhead.open_dispatcher(
        pools, hooks=recorder.hooks, on_error="record"
    ) as d:
        ok = await d.dispatch(sleep_then, 2, priority=1)
        flaky = await d.dispatch(fail, "x", priority=1)  # queued; fails three times
        withdrawn = await d.dispatch(
            noop, priority=1
        )  # queued, cancelled before it starts
        with pytest.raises(trio.WouldBlock):
            d.dispatch_nowait(noop, priority=1)
        withdrawn.cancel()
        hung = await d.dispatch(hang_until, release, priority=2)
        with pytest.raises(bulkhead.PoolFull):
            await d.dispatch(noop, priority=2)
        hung.cancel()
        await d.barrier()
    sequences = recorder.per_job()
    assert sequences[ok.id] == ["accepted", "started", "finished"]
    assert sequences[flaky.id] == [
        "accepted",
        "started",
        "retried",
        "retried",
        "finished",
    ]
    assert sequences[withdrawn.id] == ["accepted", "finished"]
    assert sequences[hung.id] == ["accepted", "started", "finished"]
    assert sequences[(1, "WouldBlock")] == ["rejected"]
    assert sequences[(2, "PoolFull")] == ["rejected"]
    assert recorder.durations == {ok.id: 2.0, flaky.id: 3.0, withdrawn.id: None,
                                  hung.id: 1.0}  # fmt: skip
    assert flaky.state is JobState.FAILED


async def test_a_hook_that_raises_crashes_the_dispatcher() -> None:
    def broken(job: bulkhead.Job[Any]) -> None:
        raise RuntimeError("hook broke")

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match=r"^hook broke$")):
        async with bulkhead.open_dispatcher(
            {1: 1}, hooks=Hooks(on_accepted=broken)
        ) as d:
            await d.dispatch(noop)
            await trio.sleep_forever()


def test_hooks_are_validated() -> None:
    with pytest.raises(
        TypeError, match=r"^on_finished must be a callable or None, got 3$"
    ):
        Hooks(on_finished=3)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^hooks must be a bulkhead\.Hooks or None, got \{\}$"
    ):
        bulkhead.Dispatcher({1: 1}, hooks={})  # type: ignore[arg-type]


# --------------------------------------------------------------- Prometheus


def families(registry: CollectorRegistry) -> dict[str, Any]:
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(family: Any, pool: int, suffix: str = "") -> float:
    values = [
        s.value
        for s in family.samples
        if s.labels.get("pool") == str(pool) and s.name.endswith(suffix)
    ]
    assert len(values) == 1, (family.name, values)
    return float(values[0])


async def test_prometheus_metrics_parse_back_to_the_statistics(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = bulkhead.metrics.PrometheusMetrics(registry)
    release = trio.Event()
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 2, queue=1), PoolConfig(2, 1)],
        hooks=metrics.hooks,
        on_error="record",
    ) as d:
        metrics.watch(d)
        for _ in range(3):
            await d.dispatch(sleep_then, 0.3, priority=1)
        await d.dispatch(fail, "x", priority=2)
        await d.dispatch(hang_until, release, priority=2)
        await wait_all_tasks_blocked()
        await trio.sleep(1)
        parsed = families(registry)
        stats = d.statistics().pools
        for pool in (1, 2):
            for counter in bulkhead.metrics.COUNTERS:
                family = parsed[f"bulkhead_jobs_{counter}"]
                assert family.type == "counter"
                assert sample(family, pool, "_total") == getattr(stats[pool], counter)
            for gauge in bulkhead.metrics.GAUGES:
                family = parsed[f"bulkhead_pool_{gauge}"]
                assert family.type == "gauge"
                assert sample(family, pool) == float(getattr(stats[pool], gauge))
        durations = parsed["bulkhead_job_duration_seconds"]
        assert durations.type == "histogram"
        counts = {
            (s.labels["pool"], s.labels["outcome"]): s.value
            for s in durations.samples
            if s.name.endswith("_count")
        }
        assert counts == {("1", "succeeded"): 3, ("2", "failed"): 1}
        release.set()


def test_metrics_options_are_validated() -> None:
    with pytest.raises(
        ValueError, match=r"^namespace must be a non-empty str, got ''$"
    ):
        bulkhead.metrics.PrometheusMetrics(CollectorRegistry(), namespace="")
    metrics = bulkhead.metrics.PrometheusMetrics(CollectorRegistry())
    with pytest.raises(
        TypeError, match=r"^watch\(\) takes a bulkhead\.Dispatcher, got 3$"
    ):
        metrics.watch(3)  # type: ignore[arg-type]


async def test_hooks_with_nothing_set_cost_what_no_hooks_cost() -> None:
    """Nothing to call means nothing to do per job: not even a clock read."""
    async with bulkhead.open_dispatcher({1: 1}, hooks=Hooks()) as d:
        job = await d.dispatch(noop)
        assert job.started_at is None
    async with bulkhead.open_dispatcher({1: 1}, hooks=Hooks(on_accepted=id)) as d:
        job = await d.dispatch(noop)
        assert job.started_at is not None


async def test_named_pools_label_metrics_by_name() -> None:
    registry = CollectorRegistry()
    metrics = bulkhead.metrics.PrometheusMetrics(registry=registry)
    pools = [
        PoolConfig(10, 1, name="email"),
        PoolConfig(bulkhead.Priority.HIGH, 1),
        PoolConfig(7, 1),
    ]
    async with bulkhead.open_dispatcher(pools, hooks=metrics.hooks) as d:
        metrics.watch(d)
        for priority in (10, bulkhead.Priority.HIGH, 7):
            await (await d.dispatch(noop, priority=priority)).wait()
    found = families(registry)
    labels = {s.labels["pool"] for s in found["bulkhead_jobs_succeeded"].samples}
    assert labels == {"email", "high", "7"}
    durations = found["bulkhead_job_duration_seconds"].samples
    assert {s.labels["pool"] for s in durations} == {"email", "high", "7"}
