"""How the service shows things: pool names, times, and the one view of a
job (its journal record, overlaid with what this instance knows while it
runs it)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from bulkhead import Priority

from ._journal import JobRecord
from ._running import Running


def pool_name(priority: int) -> str:
    """``"high"`` for 3, ``"7"`` for a pool with no name."""
    try:
        return Priority(priority).name.lower()
    except ValueError:
        return str(priority)


def utc(seconds: float | None) -> datetime.datetime | None:
    """Unix seconds as an aware UTC time (the API writes RFC 3339)."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def job_view(record: JobRecord, running: Running | None, now: float) -> dict[str, Any]:
    """A job as ``GET /jobs/{id}`` shows it."""
    state: str = record.state
    started_at, attempts = record.started_at, record.attempts
    if state == "queued" and record.run_at > now:
        state = "scheduled"
    elif running is not None and running.job is not None:
        # Running here: its start and attempts are this instance's to tell.
        started_at, attempts = running.started_at, running.job.attempts
    return {
        "id": record.id,
        "type": record.type,
        "priority": record.priority,
        "state": state,
        "attempts": attempts,
        "resumed": max(record.runs - 1, 0),
        "accepted_at": utc(record.accepted_at),
        "run_at": utc(record.run_at),
        "started_at": utc(started_at),
        "finished_at": utc(record.finished_at),
        "result": None if record.result is None else json.loads(record.result),
        "error": record.error,
    }
