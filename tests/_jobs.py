"""Small jobs and probes the tests share."""

from __future__ import annotations

import time
from collections.abc import Callable
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


async def spin_until(
    condition: Callable[[], bool],
    failure: str,
    *,
    step: float = 0,
    guard: float = 10.0,
) -> None:
    """Wait until ``condition()`` holds, which a thread will make true.

    Spins on checkpoints instead of blocking: while this task stays runnable
    the autojump clock cannot jump, so no job timeout fires early because a
    thread took a real moment. With a ``step``, that much virtual time passes
    between two looks instead. Fails with ``failure`` after ``guard`` real
    seconds.
    """
    give_up = time.monotonic() + guard
    while not condition():
        assert time.monotonic() < give_up, failure
        if step:
            await trio.sleep(step)
        else:
            await trio.lowlevel.checkpoint()
