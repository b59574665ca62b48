"""Adaptive concurrency: a pool's limit that follows its jobs' latency.

After Netflix's concurrency-limits (``AIMDLimit``, ``Gradient2Limit``): the
pool runs at most ``limit`` jobs at once, below its workers. Each finished
job is a latency sample. While latency stays near its long-run average and
the pool is using its limit, the limit grows additively (by about one per
``limit`` jobs); when a sample is ``tolerance`` times the average, or an
attempt timed out, it shrinks multiplicatively (``backoff``). The average
is an exponential moving average with weight ``smoothing``, so a latency
that keeps growing keeps outrunning it and keeps the limit falling, while a
latency that settles at a new level becomes the new normal.
"""

from __future__ import annotations

import math
from typing import Any, final

import attrs


def _check_fraction(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be a number, got {value!r}")
    if not 0 < value < 1:
        raise ValueError(f"{attribute.name} must be > 0 and < 1, got {value!r}")


def _check_tolerance(
    instance: Any, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"tolerance must be a number, got {value!r}")
    if not value > 1 or math.isinf(value):
        raise ValueError(f"tolerance must be a finite number > 1, got {value!r}")


def _check_bound(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None and attribute.name != "min":
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


@final
@attrs.frozen
class AdaptiveLimit:
    """Let a pool's concurrency follow its jobs' latency (opt-in, per pool).

    Pass it as ``PoolConfig(..., limit=AdaptiveLimit(...))``. The pool then
    never runs more than its current limit, which starts at ``initial``,
    stays within ``[min, max]`` (``max`` defaults to the pool's workers) and
    moves as described in the module documentation. The current value is
    :attr:`PoolStatistics.limit`.

    Example::

        PoolConfig(Priority.NORMAL, 32, limit=AdaptiveLimit(min=2, initial=4))
    """

    min: int = attrs.field(default=1, validator=_check_bound)
    """The limit never falls below this."""
    max: int | None = attrs.field(default=None, validator=_check_bound)
    """The limit never rises above this (``None``: the pool's workers)."""
    initial: int | None = attrs.field(default=None, validator=_check_bound)
    """Where the limit starts (``None``: ``min``)."""
    tolerance: float = attrs.field(default=1.5, validator=_check_tolerance)
    """A sample this many times the average latency counts as congestion."""
    backoff: float = attrs.field(default=0.9, validator=_check_fraction)
    """On congestion the limit is multiplied by this."""
    smoothing: float = attrs.field(default=0.1, validator=_check_fraction)
    """Weight of a new sample in the average latency."""

    def __attrs_post_init__(self) -> None:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        if self.initial is not None and not (
            self.min <= self.initial <= (self.max or self.initial)
        ):
            raise ValueError(
                f"initial ({self.initial}) must be within min and max "
                f"({self.min}, {self.max})"
            )


@attrs.define(eq=False)
class _Limiter:
    """The live state of one pool's :class:`AdaptiveLimit`."""

    config: AdaptiveLimit
    workers: int
    """The pool's workers when the limiter was made."""
    ceiling: int = attrs.field(init=False)
    """The upper bound now: ``config.max``, at most the pool's workers."""
    value: float = attrs.field(init=False)
    average: float | None = None
    """Average latency in seconds, once there is a sample."""

    def __attrs_post_init__(self) -> None:
        self.value = float(self.config.initial or self.config.min)
        self.resize(self.workers)

    @property
    def current(self) -> int:
        return int(self.value)

    def resize(self, workers: int) -> None:
        self.ceiling = min(self.config.max or workers, workers)
        self._clamp()

    def observe(self, latency: float, congested: bool, running: int) -> None:
        """One finished job: ``latency`` seconds; ``congested`` if it timed out."""
        average = self.average
        if congested or (
            average is not None and latency > average * self.config.tolerance
        ):
            self.value *= self.config.backoff
        elif running * 2 >= self.current:  # grow only a limit in use
            self.value += 1 / self.value
        smoothing = self.config.smoothing
        self.average = (
            latency if average is None else average + smoothing * (latency - average)
        )
        self._clamp()

    def _clamp(self) -> None:
        self.value = max(float(self.config.min), min(self.value, float(self.ceiling)))
