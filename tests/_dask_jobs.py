"""Jobs for Dask pools: module-level, so a worker process can import them."""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def crash_the_first_time(marker: str) -> str:
    """Kill this worker process on the first call; succeed once ``marker``
    shows an earlier call did."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed once")
        os._exit(1)
    return "survived"


def fail(message: str) -> None:
    raise ValueError(message)
