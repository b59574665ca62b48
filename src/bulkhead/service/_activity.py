"""What the dashboard charts: job ends per pool and minute over the last
hour, and the last failures with their error.

The service feeds :meth:`Activity.ended` once per job end (the one place an
end is written, ``Service._end``), so the counts are kept as jobs change
state and reading them never touches the journal. Memory is fixed: 60
minute slots per pool and :data:`FAILURES` failures, whatever the load.

The counts are this process's since it started: ends written by another
instance sharing a PostgreSQL journal, or before a restart, are not in
them (the journal's per-state counters are, and the dashboard shows those
beside the chart).
"""

from __future__ import annotations

import collections
from typing import final

import attrs

from ._journal import Claimed

MINUTES = 60
"""How far back the chart goes, in minutes."""
FAILURES = 20
"""How many recent failures are kept."""


@final
@attrs.frozen
class Failure:
    """One failed job, as the dashboard lists it."""

    id: int
    type: str
    priority: int
    error: str
    """``Type: message``, as ``GET /jobs/{id}`` shows it."""
    finished_at: float
    """Unix seconds."""


@final
@attrs.frozen
class Minutes:
    """One pool's ends per minute, oldest first; the last is the minute now
    under way."""

    succeeded: tuple[int, ...]
    failed: tuple[int, ...]
    cancelled: tuple[int, ...]


@final
class Activity:
    """Per-pool ring buffers of per-minute end counts, and the last
    failures (see the module docstring)."""

    def __init__(self) -> None:
        # pool -> slot (minute % MINUTES) -> [minute, succeeded, failed, cancelled]
        self._slots: dict[int, list[list[int]]] = {}
        self._failures: collections.deque[Failure] = collections.deque(maxlen=FAILURES)

    def ended(self, job: Claimed, state: str, error: str | None, now: float) -> None:
        """Count the end of ``job`` in ``state`` at ``now`` (Unix seconds)."""
        priority = job.priority
        minute = int(now // 60)
        slots = self._slots.get(priority)
        if slots is None:
            slots = self._slots[priority] = [[-1, 0, 0, 0] for _ in range(MINUTES)]
        slot = slots[minute % MINUTES]
        if slot[0] != minute:
            slot[:] = [minute, 0, 0, 0]
        column = {"succeeded": 1, "failed": 2}.get(state, 3)
        slot[column] += 1
        if state == "failed":
            self._failures.append(Failure(job.id, job.type, priority, error or "", now))

    def minutes(self, priority: int, now: float) -> Minutes:
        """Pool ``priority``'s ends in each of the last :data:`MINUTES`
        minutes up to ``now``, oldest first (zeros for a pool with none)."""
        current = int(now // 60)
        rows = [(0, 0, 0)] * MINUTES
        for minute, succeeded, failed, cancelled in self._slots.get(priority, ()):
            age = current - minute
            if 0 <= age < MINUTES:
                rows[MINUTES - 1 - age] = (succeeded, failed, cancelled)
        succeeded_, failed_, cancelled_ = zip(*rows, strict=True)
        return Minutes(succeeded_, failed_, cancelled_)

    def failures(self) -> list[Failure]:
        """The last :data:`FAILURES` failures, newest first."""
        return list(reversed(self._failures))
