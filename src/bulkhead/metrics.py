"""Prometheus metrics for bulkhead dispatchers (the ``bulkhead[metrics]`` extra).

Everything comes from the public API: the per-pool gauges and counters are
read from :meth:`bulkhead.Dispatcher.statistics` when Prometheus scrapes (nothing is
counted twice, nothing costs per job), and the job-duration histogram is fed
by a :class:`bulkhead.Hooks` ``on_finished`` hook. Example::

    from prometheus_client import generate_latest
    import bulkhead, bulkhead.metrics

    metrics = bulkhead.metrics.PrometheusMetrics()
    async with bulkhead.open_dispatcher(pools, hooks=metrics.hooks) as d:
        metrics.watch(d)
        ...
        text = generate_latest(metrics.registry)

Metrics, each labelled with ``pool`` (the pool's name:
:attr:`~bulkhead.PoolConfig.name`, else its priority's, such as ``"high"`` or ``"10"``):

* ``bulkhead_jobs_<counter>_total`` for every counter of
  :class:`bulkhead.PoolStatistics` (``submitted``, ``started``,
  ``succeeded``, ``failed``, ``cancelled``, ``retried``, ``timed_out``,
  ``rejected``);
* ``bulkhead_pool_<gauge>`` for its gauges (``workers``, ``current_workers``,
  ``limit``, ``paused``, ``busy``, ``idle``, ``abandoned``, ``queued``,
  ``waiting_dispatchers``);
* ``bulkhead_job_duration_seconds``, a histogram of how long jobs ran, from
  the moment a worker took them until they ended, labelled also with
  ``outcome`` (``succeeded``, ``failed``, ``cancelled``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from typing import Any, final

from ._dispatcher import Dispatcher
from ._hooks import Hooks
from ._job import Job

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError:  # pragma: no cover - exercised by test_metrics in a subprocess
    raise ImportError(
        "bulkhead.metrics needs prometheus-client: pip install 'bulkhead[metrics]'"
    ) from None

__all__ = ["PrometheusMetrics"]

COUNTERS = (
    "submitted",
    "started",
    "succeeded",
    "failed",
    "cancelled",
    "retried",
    "timed_out",
    "rejected",
)
GAUGES = (
    "workers",
    "current_workers",
    "limit",
    "paused",
    "busy",
    "idle",
    "abandoned",
    "queued",
    "waiting_dispatchers",
)
DEFAULT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
"""Seconds: from trivial jobs to minute-long ones."""


@final
class PrometheusMetrics(Collector):
    """Export the statistics and job durations of dispatchers to Prometheus.

    Args:
      registry: where to register (default: prometheus-client's global
        ``REGISTRY``; give a fresh ``CollectorRegistry`` in tests or when
        several instances live in one process).
      namespace: the prefix of every metric name.
      buckets: the duration histogram's buckets, in seconds.

    Raises:
      ValueError: if ``namespace`` is empty, or the registry already has
        these metrics (prometheus-client refuses duplicates).
    """

    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        *,
        namespace: str = "bulkhead",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty str, got {namespace!r}")
        self.registry = registry
        """The registry the metrics are in."""
        self._namespace = namespace
        self._dispatchers: weakref.WeakSet[Dispatcher] = weakref.WeakSet()
        self._durations = Histogram(
            f"{namespace}_job_duration_seconds",
            "Seconds from a worker taking a job until it ended.",
            ["pool", "outcome"],
            registry=registry,
            buckets=tuple(buckets),
        )
        self._histograms: dict[tuple[str, str], Histogram] = {}
        self.hooks = Hooks(on_finished=self._finished)
        """Pass as ``open_dispatcher(..., hooks=metrics.hooks)``."""
        registry.register(self)

    def watch(self, dispatcher: Dispatcher) -> None:
        """Export ``dispatcher``'s statistics from now on (held weakly: a
        dispatcher that is gone stops being exported)."""
        if not isinstance(dispatcher, Dispatcher):
            raise TypeError(f"watch() takes a bulkhead.Dispatcher, got {dispatcher!r}")
        self._dispatchers.add(dispatcher)

    def _finished(self, job: Job[Any], duration: float | None) -> None:
        if duration is None:
            return
        # labels() validates and locks on every call; its child for a pool
        # and outcome never changes, and this runs once for every job.
        key = (job.pool_name, job.state.value)
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = self._durations.labels(*key)
        histogram.observe(duration)

    def describe(self) -> list[Any]:
        """No fixed description: the families depend on the pools watched."""
        return []

    def collect(self) -> Iterator[Any]:
        """Called by prometheus-client at each scrape."""
        prefix = self._namespace
        counters = {
            name: CounterMetricFamily(
                f"{prefix}_jobs_{name}",
                f"Jobs {name.replace('_', ' ')} (PoolStatistics.{name}).",
                labels=["pool"],
            )
            for name in COUNTERS
        }
        gauges = {
            name: GaugeMetricFamily(
                f"{prefix}_pool_{name}",
                f"PoolStatistics.{name} at the scrape.",
                labels=["pool"],
            )
            for name in GAUGES
        }
        for dispatcher in list(self._dispatchers):
            for stats in dispatcher.statistics().pools.values():
                label = [stats.name]
                for name, family in counters.items():
                    family.add_metric(label, getattr(stats, name))
                for name, gauge in gauges.items():
                    gauge.add_metric(label, float(getattr(stats, name)))
        yield from counters.values()
        yield from gauges.values()
