"""bulkhead: isolated worker pools ("bulkheads") for trio.

The public API is exactly what this module re-exports; everything else is
private. Layers, bottom up, each importing only from those below it:
``_stats`` → ``_errors`` → ``_limit`` → ``_policy`` → ``_job`` → ``_hooks``,
``_kinds`` (one module per pool kind) → the parts of a pool: ``_batch``
(epochs, failure policy), ``_capacity`` (pause, limit, resize),
``_attempts`` (timeouts, retries) → ``_pool`` (hand-off, queue, worker
loop) → ``_lifetime`` (tasks), ``_routing`` (which pool, what it asks) →
``_dispatcher``.
:mod:`bulkhead.metrics` (Prometheus, the ``metrics`` extra) builds on the
public API only.
"""

from ._completion import as_completed as as_completed
from ._dispatcher import Dispatcher as Dispatcher
from ._dispatcher import open_dispatcher as open_dispatcher
from ._errors import DispatcherClosed as DispatcherClosed
from ._errors import JobCancelled as JobCancelled
from ._errors import JobsFailed as JobsFailed
from ._errors import PoolFull as PoolFull
from ._errors import UnknownPriority as UnknownPriority
from ._hooks import Hooks as Hooks
from ._job import Job as Job
from ._job import JobState as JobState
from ._limit import AdaptiveLimit as AdaptiveLimit
from ._policy import Kind as Kind
from ._policy import OnError as OnError
from ._policy import PoolConfig as PoolConfig
from ._policy import Priority as Priority
from ._policy import Retry as Retry
from ._signals import finalize_on_signals as finalize_on_signals
from ._stats import BatchReport as BatchReport
from ._stats import DispatcherStatistics as DispatcherStatistics
from ._stats import PoolStatistics as PoolStatistics

__all__ = [
    "Dispatcher",
    "open_dispatcher",
    "as_completed",
    "finalize_on_signals",
    "DispatcherClosed",
    "JobCancelled",
    "JobsFailed",
    "PoolFull",
    "UnknownPriority",
    "Job",
    "JobState",
    "Hooks",
    "AdaptiveLimit",
    "PoolConfig",
    "Kind",
    "OnError",
    "Priority",
    "Retry",
    "BatchReport",
    "DispatcherStatistics",
    "PoolStatistics",
]

__version__ = "0.2.0"


def _fixup_module_metadata() -> None:
    # Tracebacks and docs say bulkhead.JobsFailed, not bulkhead._errors.JobsFailed.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("bulkhead."):
            obj.__module__ = __name__


_fixup_module_metadata()
del _fixup_module_metadata
