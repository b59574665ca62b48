"""Shared fixtures: every test runs under trio (trio_mode) on virtual time."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


LEAK_GRACE = 5.0
"""Real seconds a just-released job thread gets to return before it is a leak."""


@pytest.fixture(autouse=True)
def no_leaked_job_threads_or_processes() -> Iterator[None]:
    """Fail a test that leaves a bulkhead job thread or a worker process running.

    Thread jobs run in threads named "bulkhead job #..." only while the job
    runs, so one still alive after the test is a job nobody stopped. trio's
    own task tree cannot outlive the test's trio.run, so threads and processes
    are what can leak.
    """
    yield
    deadline = time.monotonic() + LEAK_GRACE
    while (running := _job_threads()) and time.monotonic() < deadline:
        running[0].join(timeout=0.01)  # a released thread needs a moment to return
    assert not running, f"job threads still running after the test: {running}"
    assert multiprocessing.active_children() == [], "worker processes leaked"


def _job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("bulkhead job")]
