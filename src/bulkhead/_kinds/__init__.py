"""Pool kinds: where a job's attempts run, and what that needs.

A kind is the one piece of a pool that knows *how* a job runs: in the worker
task (``"async"``, :mod:`.tasks`), in a thread (``"thread"``,
:mod:`.threads`), in a worker process (``"process"``, :mod:`.processes`) or
on a Dask cluster (``"dask"``, :mod:`.dask`).
The pool keeps the hand-off, the queue, the epochs and the counters and
calls its kind through :class:`PoolKind` alone; neither the pool nor the
dispatcher knows a kind by name. :func:`kind_for` is the one place that maps
a name to a kind.
"""

from __future__ import annotations

from .._policy import PoolConfig
from .dask import DaskKind
from .processes import ProcessKind
from .protocol import PoolKind, check_callable
from .tasks import AsyncKind
from .threads import ThreadKind

__all__ = ["PoolKind", "check_callable", "kind_for"]


def kind_for(config: PoolConfig, running_job: tuple[object, int]) -> PoolKind:
    """The kind of pool ``config`` asks for, its resources not yet open.

    ``running_job`` marks the contexts in which the kind runs jobs outside
    the worker's task (threads), so the dispatcher can tell it is inside one.

    Raises:
      ImportError: naming the extra to install, if the kind needs one.
    """
    if config.kind == "async":
        return AsyncKind(config.workers, running_job)
    if config.kind == "thread":
        return ThreadKind(config.workers, running_job)
    if config.kind == "process":
        return ProcessKind(config.workers)
    return DaskKind(config)
