"""Small jobs and probes the tests share."""

from __future__ import annotations

from typing import Any

import trio


async def noop() -> None:
    pass


def sync_noop() -> None:
    pass


async def ret(value: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return value


async def sleep_then(seconds: float, value: Any = None) -> Any:
    await trio.sleep(seconds)
    return value


async def fail(message: str) -> None:
    await trio.lowlevel.checkpoint()
    raise ValueError(message)


async def hang_until(event: trio.Event) -> None:
    await event.wait()


def all_tasks() -> list[trio.lowlevel.Task]:
    """Every task alive in this trio run."""
    tasks: list[trio.lowlevel.Task] = []

    def walk(task: trio.lowlevel.Task) -> None:
        tasks.append(task)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return tasks


def live_bulkhead_tasks() -> list[str]:
    """Names of the dispatcher tasks alive in this trio run."""
    return [task.name for task in all_tasks() if task.name.startswith("bulkhead")]
