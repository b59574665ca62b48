"""Shared fixtures: every test runs under trio (trio_mode) on virtual time."""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from ._jobs import live_bulkhead_tasks

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    # The same examples on every run of make test, as Hypothesis advises for
    # CI; make test-deep ("deep") draws new ones each time.
    derandomize=True,
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
    """Fail a test that leaves a thread it started, or a worker process, running.

    Thread jobs run in threads named "bulkhead job #..." only while the job
    runs, so one still alive after the test is a job nobody stopped; any other
    non-daemon thread the test started and left running is a leak too (trio's
    own worker threads are daemons, and cached idle ones do not count).
    """
    before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    yield
    deadline = time.monotonic() + LEAK_GRACE

    def running() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t.name.startswith("bulkhead job")
            or (t not in before and not t.daemon and t.is_alive())
        ]

    while (threads := running()) and time.monotonic() < deadline:
        threads[0].join(timeout=0.01)  # a released thread needs a moment to return
    assert not threads, f"threads still running after the test: {threads}"
    # Processes alive before the test (a module's shared Dask cluster) are not
    # its leak; any it started must be gone, given the same grace as threads.
    while (
        children := set(multiprocessing.active_children()) - children_before
    ) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not children, f"worker processes leaked: {children}"


def _fail_on_leaked_tasks(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Coroutine[Any, Any, None]]:
    """Wrap an async test so that, still inside its trio run and once its body
    has returned, it fails if a bulkhead task is alive: one left in the system
    nursery or in a fixture's nursery, which trio would otherwise cancel
    without a word when the run ends."""

    @functools.wraps(test)
    async def guarded(*args: Any, **kwargs: Any) -> None:
        await test(*args, **kwargs)
        if leaked := live_bulkhead_tasks():
            pytest.fail(f"bulkhead tasks still running after the test: {leaked}")

    return guarded


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Guard every async test against leaked bulkhead tasks.

    Not an autouse async fixture: pytest-trio refuses one for sync tests, and
    never runs one for async tests, since it is not among their arguments.
    """
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        hypothesis = getattr(item.obj, "hypothesis", None)
        if hypothesis is not None:
            if inspect.iscoroutinefunction(hypothesis.inner_test):
                hypothesis.inner_test = _fail_on_leaked_tasks(hypothesis.inner_test)
        elif inspect.iscoroutinefunction(item.obj):
            item.obj = _fail_on_leaked_tasks(item.obj)
