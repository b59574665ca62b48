"""Job types for tests/test_operations.py's servers."""

from __future__ import annotations

import trio

from bulkhead.service import JobRegistry

registry = JobRegistry()


@registry.job(priority="normal")
async def flaky(flag: str) -> str:
    """Fail until the file ``flag`` exists, then succeed: a job worth
    requeueing."""
    if not await trio.Path(flag).exists():
        raise RuntimeError(f"{flag} does not exist yet")
    return "ok"


@registry.job(priority="low")
async def nap(seconds: float) -> float:
    """Sleep ``seconds``: a job that stays running or queued."""
    await trio.sleep(seconds)
    return seconds
