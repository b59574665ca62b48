"""Configuration values: priorities, pools, retries and error policies.

Everything here is a frozen attrs value validated once, when it is built; the
dispatcher never re-checks it per job.
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
import random
from collections.abc import Callable
from typing import Any, Literal, TypeAlias, TypeGuard, final

import attrs

from ._limit import AdaptiveLimit

ErrorHandler: TypeAlias = Callable[[Any, Exception], object]
"""``handler(job, exc)``: called with the failed :class:`Job` and its exception.

The job is typed ``Any`` so that this module, below ``_job`` in the layers,
does not import it (a handler annotated ``job: Job[Any]`` fits)."""
OnError: TypeAlias = Literal["raise", "record", "cancel"] | ErrorHandler
Kind: TypeAlias = Literal["async", "thread", "process", "dask"]

_POLICIES = ("raise", "record", "cancel")
_KINDS = ("async", "thread", "process", "dask")
_KIND_CHOICES = 'kind must be "async", "thread", "process" or "dask"'


class Priority(enum.IntEnum):
    """Four ready-made priority levels. Any ``int`` works as a priority too."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    URGENT = 4


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_priority(value: object, what: str = "priority") -> int:
    """Return ``value`` if it is a valid priority, else raise ``TypeError``."""
    if not _is_count(value):
        raise TypeError(
            f"{what} must be an int (or an IntEnum such as Priority.HIGH), "
            f"got {value!r}"
        )
    return value


def check_count(value: object, what: str, *, minimum: int) -> int:
    """Validate a whole number (not a bool) of at least ``minimum``."""
    if not _is_count(value):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return value


def check_seconds(value: object, what: str, *, optional: bool = True) -> float | None:
    """Validate a non-negative number of seconds (or None, if ``optional``)."""
    if value is None and optional:
        return None
    or_none = " or None" if optional else ""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{what} must be a number of seconds{or_none}, got {value!r}")
    if math.isnan(value) or value < 0:
        bound = " (or None)" if optional else ""
        raise ValueError(f"{what} must be >= 0 seconds{bound}, got {value!r}")
    return float(value)


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` makes a coroutine (async def, partial, async __call__)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with async __call__
    )


def check_on_error(value: object, what: str = "on_error") -> OnError:
    """Validate an error policy: one of the three names or a sync callable."""
    expected = f'{what} must be "raise", "record", "cancel" or a callable '
    if isinstance(value, str):
        if value not in _POLICIES:
            raise ValueError(f"{expected}handler(job, exc), got {value!r}")
        return value  # type: ignore[return-value]
    if not callable(value):
        raise TypeError(f"{expected}handler(job, exc), got {value!r}")
    if is_async_callable(value):
        raise TypeError(
            f"{what} handler must be a synchronous function handler(job, exc), "
            f"got the async function {value!r}; record the failure and "
            "dispatch the async follow-up as a job instead"
        )
    return value


def _validate_count(minimum: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_count(value, attribute.name, minimum=minimum)

    return check


def _validate_bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be a bool, got {value!r}")


def _validate_delay(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_seconds(value, attribute.name, optional=False)


def _validate_seconds(
    instance: Any, attribute: attrs.Attribute[Any], value: Any
) -> None:
    check_seconds(value, attribute.name)


def _validate_priority(
    instance: Any, attribute: attrs.Attribute[Any], value: Any
) -> None:
    check_priority(value, attribute.name)


def _validate_on(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            raise TypeError(
                "on must be an Exception subclass or a tuple of them "
                f"(cancellation is never retried), got {value!r}"
            )


@final
@attrs.frozen
class Retry:
    """How a failed job is retried: ``attempts`` in all, with exponential backoff.

    The delay before retry ``k`` (``k = 1`` after the first attempt failed) is
    ``min(backoff * 2**(k-1), max_backoff)`` seconds; with ``jitter`` it is
    drawn uniformly from ``[delay/2, delay]``. The worker stays busy while it
    backs off, so the bulkhead bounds retries too. :exc:`trio.Cancelled` is
    never retried; :exc:`trio.TooSlowError` from a job timeout is, under the
    default ``on``.

    Example::

        Retry(attempts=5, backoff=0.2, on=(ConnectionError, trio.TooSlowError))
    """

    attempts: int = attrs.field(default=3, validator=_validate_count(1))
    """Total attempts, the first one included (1 means no retry)."""
    backoff: float = attrs.field(default=0.1, validator=_validate_delay)
    """Delay in seconds before the first retry; doubles for each further one."""
    max_backoff: float = attrs.field(default=10.0, validator=_validate_delay)
    """Upper bound of the delay in seconds."""
    jitter: bool = attrs.field(default=True, validator=_validate_bool)
    """Draw each delay uniformly from ``[delay/2, delay]`` to spread retries."""
    on: type[Exception] | tuple[type[Exception], ...] = attrs.field(
        default=(Exception,), validator=_validate_on
    )
    """Exception classes that are retried; others fail the job at once."""

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        delay = min(self.backoff * 2 ** (retry - 1), self.max_backoff)
        return random.uniform(delay / 2, delay) if self.jitter else delay


def _validate_kind(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{_KIND_CHOICES}, got {value!r}")
    if value not in _KINDS:
        raise ValueError(f"{_KIND_CHOICES}, got {value!r}")


def _validate_retry(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, Retry):
        raise TypeError(f"retry must be a bulkhead.Retry or None, got {value!r}")


def _validate_dask_address(
    instance: Any, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"dask_address must be a str or None, got {value!r}")
    if "://" not in value:
        raise ValueError(
            "dask_address must be a scheduler address such as "
            f"'tcp://10.0.0.5:8786', got {value!r}"
        )


def _validate_limit(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, AdaptiveLimit):
        raise TypeError(
            f"limit must be a bulkhead.AdaptiveLimit or None, got {value!r}"
        )


def _validate_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"name must be a str or None, got {value!r}")
    if not value.strip():
        raise ValueError(f"name must be a non-empty str, got {value!r}")


def pool_name(priority: int, name: str | None) -> str:
    """What a pool is called: its ``name``, else its priority's enum member
    name in lower case (``Priority.HIGH`` -> ``"high"``), else the number."""
    if name is not None:
        return name
    if isinstance(priority, enum.Enum):
        return str(priority.name).lower()
    return str(priority)


def _validate_on_error(
    instance: Any, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if value is not None:
        check_on_error(value)


@final
@attrs.frozen
class PoolConfig:
    """The configuration of one pool (one bulkhead).

    Options left at ``None`` take the dispatcher's defaults.

    Example::

        pools = [
            PoolConfig(Priority.HIGH, 8),
            PoolConfig(Priority.LOW, 2, queue=100, timeout=5.0, on_error="record"),
            PoolConfig(0, 4, kind="thread"),
        ]
    """

    priority: int = attrs.field(validator=_validate_priority)
    """The ``int`` that names the pool in :meth:`Dispatcher.dispatch`."""
    workers: int = attrs.field(validator=_validate_count(1))
    """How many jobs the pool runs at once."""
    queue: int = attrs.field(default=0, kw_only=True, validator=_validate_count(0))
    """Accepted jobs that may wait for a worker; 0 makes dispatch a rendezvous."""
    kind: Kind = attrs.field(default="async", kw_only=True, validator=_validate_kind)
    """``"async"`` (async functions in worker tasks; a sync function runs in a
    worker thread holding its worker, as in a thread pool), ``"thread"`` (sync functions
    in the pool's own threads), ``"process"`` (sync functions in the pool's
    own worker processes, needs ``bulkhead[process]``) or ``"dask"`` (sync
    functions on a Dask cluster, needs ``bulkhead[dask]``)."""
    timeout: float | None = attrs.field(
        default=None, kw_only=True, validator=_validate_seconds
    )
    """Default per-attempt timeout in seconds of the pool's jobs."""
    retry: Retry | None = attrs.field(
        default=None, kw_only=True, validator=_validate_retry
    )
    """Default :class:`Retry` policy of the pool's jobs."""
    on_error: OnError | None = attrs.field(
        default=None, kw_only=True, validator=_validate_on_error
    )
    """The pool's error policy; ``None`` takes the dispatcher's ``on_error``."""
    max_wait: float | None = attrs.field(
        default=None, kw_only=True, validator=_validate_seconds
    )
    """Default of :meth:`Dispatcher.dispatch`'s ``max_wait``: seconds a dispatch
    waits for room before it fails with :exc:`PoolFull` (``None``: for ever)."""
    limit: AdaptiveLimit | None = attrs.field(
        default=None, kw_only=True, validator=_validate_limit
    )
    """An :class:`AdaptiveLimit` on how many of the workers may run at once,
    following the jobs' latency; ``None`` runs all workers."""
    dask_address: str | None = attrs.field(
        default=None, kw_only=True, validator=_validate_dask_address
    )
    """``kind="dask"`` only: the address of the Dask scheduler to run jobs on
    (``"tcp://host:8786"``). With neither this nor ``dask_client``, the pool
    starts a ``distributed.LocalCluster`` on loopback, one single-threaded
    worker process per pool worker, and closes it at finalize."""
    dask_client: Any = attrs.field(default=None, kw_only=True)
    """``kind="dask"`` only: a ``distributed.Client`` you own, to run jobs
    through (the pool never closes it)."""
    copy_context: bool = attrs.field(
        default=True, kw_only=True, validator=_validate_bool
    )
    name: str | None = attrs.field(default=None, kw_only=True, validator=_validate_name)
    """What the pool is called in ``repr``, statistics, metrics labels, span
    attributes and worker task names. ``None``: the name of the priority's
    enum member in lower case (``Priority.HIGH`` is ``"high"``), else the
    priority's number (``"10"``)."""
    """Run each job in a copy of the dispatching task's context (as
    ``nursery.start_soon`` does). ``False`` runs jobs in the workers' own
    context, a little faster, and context variables do not follow the job."""

    def __attrs_post_init__(self) -> None:
        dask_options = [
            name
            for name in ("dask_address", "dask_client")
            if getattr(self, name) is not None
        ]
        if dask_options and self.kind != "dask":
            raise ValueError(
                f'{dask_options[0]} is for kind="dask" pools; this pool is '
                f"kind={self.kind!r}"
            )
        if len(dask_options) == 2:
            raise ValueError("give a dask pool dask_address or dask_client, not both")
