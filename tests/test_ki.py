"""Ctrl-C safety: a real SIGINT at the worst moment leaves no broken state.

trio marks the sections of its primitives that register and then park
(``MemorySendChannel.send``, ``ParkingLot.park``) or that update several fields
(``CapacityLimiter.release``) with ``enable_ki_protection``: a KeyboardInterrupt
arriving there is delivered at the next checkpoint instead, where the abort
function undoes the registration. bulkhead's own such sections must be
protected the same way (issue 12, items 2-4).

Each test runs its own ``trio.run`` (so the KeyboardInterrupt has somewhere to
go) on a virtual clock, and delivers a real ``signal.raise_signal(SIGINT)``
from inside the section, through a hook on the structure the section
registers in. The hook also records ``currently_ki_protected()`` there, as
trio's ``test_ki.py`` does.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import bulkhead
from bulkhead import JobState
from bulkhead._pool import _Pool

from ._jobs import hang_until, noop


def interrupt() -> None:
    """Deliver a real SIGINT to this process, as Ctrl-C would."""
    signal.raise_signal(signal.SIGINT)


def run_until_interrupted(main: Callable[[], Awaitable[None]]) -> None:
    """``trio.run(main)``, which must end with a clean KeyboardInterrupt
    (alone or in nursery groups), never a TrioInternalError."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.RaisesGroup(
        KeyboardInterrupt, allow_unwrapped=True, flatten_subgroups=True
    ):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class InterruptOnRegister(dict[trio.lowlevel.Task, bulkhead.Job[Any]]):
    """A pool's registry of blocked dispatchers that delivers SIGINT right
    after a dispatcher registers, before it parks."""

    def __init__(self) -> None:
        super().__init__()
        self.protected: list[bool] = []

    def __setitem__(self, task: trio.lowlevel.Task, job: bulkhead.Job[Any]) -> None:
        super().__setitem__(task, job)
        self.protected.append(trio.lowlevel.currently_ki_protected())
        interrupt()


def test_ctrl_c_as_a_dispatcher_parks_leaves_its_job_unaccepted() -> None:
    """The interrupted dispatch raises KeyboardInterrupt, its registration is
    gone, and its job never runs, even once a worker is free again."""
    ran: list[str] = []
    registry = InterruptOnRegister()

    async def record() -> None:
        ran.append("job")

    async def main() -> None:
        d = bulkhead.Dispatcher({1: 1})
        async with trio.open_nursery() as nursery:
            await nursery.start(d.run)
            release = trio.Event()
            await d.dispatch(hang_until, release, priority=1)
            d._pools[1]._dispatchers = registry
            with pytest.raises(KeyboardInterrupt):
                await d.dispatch(record, priority=1)
            assert d.statistics().pools[1].waiting_dispatchers == 0
            release.set()
            report = await d.barrier()
            await trio.sleep(1)  # nothing reschedules this task out of a sleep
            await d.finalize()
        assert report.jobs == 1
        assert d.statistics().total.submitted == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert registry.protected == [True]
    assert ran == []


class InterruptOnIdle(list[trio.lowlevel.Task]):
    """A pool's stack of idle workers that delivers SIGINT right after its
    ``n``-th registration, before that worker parks."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.protected: list[bool] = []

    def append(self, task: trio.lowlevel.Task) -> None:
        super().append(task)
        self.n -= 1
        if self.n == 0:
            self.protected.append(trio.lowlevel.currently_ki_protected())
            interrupt()


@pytest.mark.parametrize("n", [1, 2], ids=["at startup", "after a job"])
def test_ctrl_c_as_a_worker_parks_gives_a_clean_keyboard_interrupt(n: int) -> None:
    """Interrupted as it parks, at startup or between jobs, the worker leaves
    no registration behind that a hand-off or teardown could trip on."""
    idle = InterruptOnIdle(n)
    ran: list[str] = []

    async def record() -> None:
        ran.append("job")

    async def main() -> None:
        d = bulkhead.Dispatcher({1: 1})
        d._pools[1]._idle = idle
        async with trio.open_nursery() as nursery:
            await nursery.start(d.run)
            await (await d.dispatch(record, priority=1)).wait()
            await trio.sleep_forever()

    run_until_interrupted(main)
    assert idle.protected == [True]
    assert ran == ([] if n == 1 else ["job"])


@pytest.fixture
def interrupt_at_end(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> list[bool]:
    """Deliver SIGINT in the worker right before (or after) the first job's
    bookkeeping, with nothing between the end of the job and that moment."""
    original = _Pool._end
    before = request.param == "before"
    fired: list[bool] = []

    def end(self: _Pool, job: bulkhead.Job[Any], result: Any) -> Any:
        if not fired and before:
            fired.append(True)
            interrupt()
        ended = original(self, job, result)
        if not fired:
            fired.append(True)
            interrupt()
        return ended

    monkeypatch.setattr(_Pool, "_end", end)
    return fired


@pytest.mark.parametrize("interrupt_at_end", ["before", "after"], indirect=True)
def test_ctrl_c_as_a_job_ends_still_ends_it_exactly_once(
    interrupt_at_end: list[bool],
) -> None:
    """Interrupted before its bookkeeping the job ends cancelled; after it, the
    job keeps its outcome. Either way it ends once, the counts add up, and a
    task waiting on it outside the dispatcher is not left hanging."""
    jobs: list[bulkhead.Job[Any]] = []

    async def main() -> None:
        with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
            async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
                jobs.append(await d.dispatch(noop, priority=1))
                await trio.sleep_forever()
        with trio.move_on_after(3600) as hung:
            with contextlib.suppress(bulkhead.JobCancelled):
                await jobs[0].wait()
        assert not hung.cancelled_caught, "the job never ended"
        stats = d.statistics().pools[1]
        assert stats.submitted == stats.succeeded + stats.cancelled == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert interrupt_at_end == [True]
    assert jobs[0].state in (JobState.SUCCEEDED, JobState.CANCELLED)


def test_bookkeeping_and_the_error_handler_run_ki_protected() -> None:
    """A job's end is recorded in one protected step: a handler called from it
    sees protection, and so does a hand-off."""
    protected: list[bool] = []

    def handler(job: bulkhead.Job[Any], exc: Exception) -> None:
        protected.append(trio.lowlevel.currently_ki_protected())

    async def fail() -> None:
        raise ValueError("boom")

    async def main() -> None:
        async with bulkhead.open_dispatcher({1: 1}, on_error=handler) as d:
            await d.dispatch(fail, priority=1)

    trio.run(main)
    assert protected == [True]
