"""finalize_on_signals: real signals sent to this process, caught by trio."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

import bulkhead
from bulkhead import JobState

from ._jobs import noop


def state(job: bulkhead.Job[Any]) -> JobState:
    return job.state


async def test_a_signal_finalizes_with_the_grace_period(autojump_clock: Any) -> None:
    record: list[str] = []
    async with bulkhead.open_dispatcher({1: 1}) as d:
        async with trio.open_nursery() as nursery:
            await nursery.start(bulkhead.finalize_on_signals, d, 5)
            job = await d.dispatch(trio.sleep, 100, priority=1)
            start = trio.current_time()
            os.kill(os.getpid(), signal.SIGTERM)
            await wait_all_tasks_blocked()
            assert d.statistics().closed
            with pytest.raises(bulkhead.DispatcherClosed):
                d.dispatch_nowait(noop, priority=1)
            assert state(job) is JobState.RUNNING  # draining, within its grace
        record.append("signal handler returned")
        assert trio.current_time() - start == 5
        assert state(job) is JobState.CANCELLED
    assert record == ["signal handler returned"]


async def test_a_second_signal_cancels_what_is_left_at_once(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher({1: 1}) as d:
        async with trio.open_nursery() as nursery:
            await nursery.start(bulkhead.finalize_on_signals, d)
            job = await d.dispatch(trio.sleep, 100, priority=1)
            start = trio.current_time()
            os.kill(os.getpid(), signal.SIGINT)  # trio's now: no KeyboardInterrupt
            await wait_all_tasks_blocked()
            await trio.sleep(10)
            assert state(job) is JobState.RUNNING  # no grace limit: it drains
            os.kill(os.getpid(), signal.SIGINT)
        assert trio.current_time() - start == 10
        assert state(job) is JobState.CANCELLED


async def test_it_returns_once_the_dispatcher_is_finalized_otherwise() -> None:
    async with (
        bulkhead.open_dispatcher({1: 1}) as d,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(bulkhead.finalize_on_signals, d)
        await d.dispatch(noop, priority=1)
        await d.finalize()
    assert d.statistics().closed


async def test_its_arguments_are_checked() -> None:
    with pytest.raises(
        TypeError,
        match=r"^finalize_on_signals\(\) takes a bulkhead\.Dispatcher, got 3$",
    ):
        await bulkhead.finalize_on_signals(3)  # type: ignore[arg-type]
    d = bulkhead.Dispatcher({1: 1})
    with pytest.raises(
        ValueError, match=r"^grace_period must be >= 0 seconds \(or None\), got -1$"
    ):
        await bulkhead.finalize_on_signals(d, -1)
    with pytest.raises(
        TypeError,
        match=r"^signals must be signal numbers such as signal\.SIGTERM, got \(\)$",
    ):
        await bulkhead.finalize_on_signals(d, signals=())
    with pytest.raises(
        RuntimeError,
        match=r"^finalize_on_signals\(\) needs a running dispatcher: start it first$",
    ):
        await bulkhead.finalize_on_signals(d)
