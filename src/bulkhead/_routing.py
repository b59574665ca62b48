"""Which pool a dispatch goes to, and what it asks of that pool.

:class:`_Routing` holds a dispatcher's pools by priority and its default
priority. For every dispatch it finds the pool and resolves what the
dispatch asked for against the pool's defaults, validating it before
anything is accepted (:meth:`_Routing.target`); a dispatch that found no
room waits through :meth:`_Routing.wait_to_place`, bounded by ``max_wait``.
It also reads the dispatcher's ``pools`` argument (:func:`pool_configs`) and
``dispatch_many``'s argument tuples (:func:`argument_tuples`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from ._errors import UnknownPriority
from ._job import Job
from ._policy import PoolConfig, Retry, check_priority, check_seconds, pool_name
from ._pool import _Pool


def argument_tuples(args: object) -> list[tuple[Any, ...]]:
    if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
        raise TypeError(
            "dispatch_many() takes an iterable of argument tuples, one per job; "
            f"got {args!r}"
        )
    rounds = list(args)
    for index, item in enumerate(rounds):
        if not isinstance(item, tuple):
            raise TypeError(
                "dispatch_many() takes an iterable of argument tuples, one per "
                f"job; item {index} is {item!r}: wrap a single argument as "
                f"({item!r},)"
            )
    return rounds


def pool_configs(pools: object) -> list[PoolConfig]:
    if isinstance(pools, Mapping):
        configs = []
        for priority, workers in pools.items():
            if isinstance(workers, PoolConfig):
                raise TypeError(
                    "pools must map priority -> workers, or be an iterable of "
                    f"PoolConfig; got a PoolConfig as the value for {priority!r}: "
                    "pass [PoolConfig(...), ...] instead"
                )
            configs.append(PoolConfig(priority, workers))
    elif isinstance(pools, Iterable) and not isinstance(pools, (str, bytes)):
        configs = list(pools)
        for config in configs:
            if not isinstance(config, PoolConfig):
                raise TypeError(
                    "pools must be a mapping {priority: workers} or an iterable of "
                    f"bulkhead.PoolConfig, got an item {config!r}"
                )
    else:
        raise TypeError(
            "pools must be a mapping {priority: workers} or an iterable of "
            f"bulkhead.PoolConfig, got {pools!r}"
        )
    if not configs:
        raise ValueError("pools is empty: configure at least one pool")
    seen: set[int] = set()
    names: set[str] = set()
    for config in configs:
        if config.priority in seen:
            raise ValueError(
                f"priority {config.priority!r} is configured twice: "
                "each priority names exactly one pool"
            )
        seen.add(config.priority)
        name = pool_name(config.priority, config.name)
        if name in names:
            raise ValueError(
                f"two pools are named {name!r}: give each pool its own name"
            )
        names.add(name)
    return configs


@attrs.define(eq=False)
class _Routing:
    """A dispatcher's pools by priority, and the validation of each dispatch."""

    pools: dict[int, _Pool]
    default_priority: int | None

    @classmethod
    def of(cls, pools: dict[int, _Pool], default_priority: int | None) -> _Routing:
        """Routing to ``pools``; a lone pool is the default one.

        Raises:
          TypeError, UnknownPriority: if ``default_priority`` is no priority
            or names no pool.
        """
        routing = cls(pools, None)
        if default_priority is not None:
            routing.pool(check_priority(default_priority, "default_priority"))
        elif len(pools) == 1:  # the one pool needs no naming
            default_priority = next(iter(pools))
        routing.default_priority = default_priority
        return routing

    def pool(self, priority: int) -> _Pool:
        try:
            return self.pools[priority]
        except KeyError:
            configured = ", ".join(repr(p) for p in self.pools)
            raise UnknownPriority(
                f"no pool has priority {priority!r}; "
                f"configured priorities: {configured}"
            ) from None

    def target(
        self,
        fn: Callable[..., Any],
        priority: int | None,
        name: str | None,
        timeout: float | None,
        retry: Retry | None,
        max_wait: float | None,
    ) -> tuple[
        _Pool, Callable[..., Any], str, float | None, Retry | None, float | None
    ]:
        """Validate what a dispatch asks for; returns the pool and the job's
        function (as the kind wraps it), name, timeout, retry and max_wait.
        Nothing is accepted yet."""
        if priority is None:
            if self.default_priority is None:
                raise TypeError(
                    "no priority given and this dispatcher has no default_priority: "
                    "pass priority=... or open the dispatcher with default_priority=..."
                )
            priority = self.default_priority
        elif priority.__class__ is not int:
            check_priority(priority)
        pool = self.pools.get(priority) or self.pool(priority)
        config = pool.config
        checked = pool.checked_fn
        if checked is None or checked() is not fn:
            pool.check_function(fn)
        wrap = pool.checked_wrap
        if wrap is not None:  # a sync function for an async pool, say
            fn = wrap(fn)
        if name is None:
            name = pool.checked_name
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        if timeout is None:
            timeout = config.timeout
        elif check_seconds(timeout, "timeout") == math.inf:
            timeout = None
        if retry is None:
            retry = config.retry
        elif not isinstance(retry, Retry):
            raise TypeError(f"retry must be a bulkhead.Retry or None, got {retry!r}")
        if max_wait is None:
            max_wait = config.max_wait
        elif check_seconds(max_wait, "max_wait") == math.inf:
            max_wait = None
        return pool, fn, name, timeout, retry, max_wait

    @staticmethod
    async def wait_to_place(pool: _Pool, job: Job[Any], max_wait: float | None) -> None:
        """Wait for room for ``job`` after ``try_accept`` refused it; raises
        :exc:`PoolFull` once ``max_wait`` has run out (not accepted)."""
        if max_wait is None:
            await pool.wait_to_accept(job)
            return
        if max_wait > 0:
            with trio.move_on_after(max_wait) as waited:
                await pool.wait_to_accept(job)
            if not waited.cancelled_caught:  # accepted as the time ran out
                return
        pool.reject(pool.full_error(max_wait))

    def covered(self, priority: int | None) -> list[_Pool]:
        if priority is None:
            return list(self.pools.values())
        return [self.pool(check_priority(priority))]
