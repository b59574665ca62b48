"""Job types for tests/test_service_faults.py: jobs that misbehave on purpose.

``python -m bulkhead serve tests._service_jobs_faults:registry``.
"""

from __future__ import annotations

import os
import signal

import trio

from bulkhead.service import JobRegistry

registry = JobRegistry()


@registry.job(priority="high")
async def add(x: int, y: int = 0) -> int:
    """Add two integers: the quickest job there is."""
    await trio.lowlevel.checkpoint()
    return x + y


@registry.job(priority="low")
async def sleep(seconds: float, tag: str = "") -> dict[str, float | str]:
    """Sleep ``seconds``; the result carries ``tag`` (to make rows big)."""
    await trio.sleep(seconds)
    return {"slept": seconds, "tag": tag}


@registry.job(priority="normal")
async def stubborn(marker: str) -> str:
    """Ignore cancellation for ever on its first run (it leaves ``marker``);
    finish at once on any later run."""
    path = trio.Path(marker)
    if await path.exists():
        return "ran again"
    await path.write_text(str(os.getpid()))
    with trio.CancelScope(shield=True):
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


@registry.job(priority="normal")
async def poison() -> None:
    """Kill the process that runs it, every time."""
    await trio.lowlevel.checkpoint()
    os.kill(os.getpid(), signal.SIGKILL)
