"""Module-level functions for process pools (they must be importable by workers)."""

from __future__ import annotations

import os
import time


def pid_of_worker() -> int:
    return os.getpid()


def square(x: int) -> int:
    return x * x


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def raise_value_error(message: str) -> None:
    raise ValueError(message)
