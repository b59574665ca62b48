"""A registry with periodic jobs, for the server test of ``GET /schedules``
(``bulkhead serve tests._schedule_jobs:registry``)."""

from __future__ import annotations

import trio

from bulkhead.service import JobRegistry

registry = JobRegistry()


@registry.job(priority="normal")
async def report(kind: str, rows: int = 10) -> str:
    """Stands for a periodic report."""
    await trio.lowlevel.checkpoint()
    return f"{kind}: {rows} rows"


@registry.job(priority="low")
async def vacuum() -> None:
    """Stands for periodic maintenance with no arguments."""
    await trio.lowlevel.checkpoint()


registry.schedule(
    "daily_report",
    "report",
    "30 2 * * *",
    args={"kind": "daily"},
    timezone="Europe/Berlin",
    catch_up="latest",
)
registry.schedule(
    "vacuum",
    "vacuum",
    "*/5 * * * *",
    overlap="allow",
    catch_up="all",
    catch_up_window=3600,
)
