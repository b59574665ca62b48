"""Cancellation injection: cancel each public async call at every checkpoint.

For ``dispatch`` (idle worker, queue slot, blocked on workers, blocked on a full
queue), ``barrier`` (global and per pool), ``finalize`` (with and without a grace
period), ``Job.wait``, and the lifetime of ``open_dispatcher`` / ``Dispatcher.run``,
each test runs the same scenario again and again, cancelling the call at its
1st, 2nd, ... checkpoint, until the call completes before the cancellation
comes. Two ways of counting:

* ``"caller"``: the n-th time the calling task yields (its n-th checkpoint);
* ``"anyone"``: the n-th task step of any task after the call began, which also
  lands between a worker handing a job over and the dispatcher waking up.

Whatever the moment, the contract must hold: a dispatch that raised never runs
its job, one that returned runs it exactly once; no worker slot is lost or
granted twice; a cancelled barrier or finalize claims nothing, so the next one
reports every job and raises each failure once; teardown started by a cancelled
finalize goes on; nothing is left running.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

import attrs
import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import bulkhead
from bulkhead import JobState, PoolConfig

from ._jobs import live_bulkhead_tasks

Mode = Literal["caller", "anyone"]
MODES: list[Mode] = ["caller", "anyone"]
LIMIT = 200
"""No scenario needs this many checkpoints; reaching it means a call hangs."""
SWEEPS = 5


@attrs.define(eq=False)
class Injector(trio.abc.Instrument):
    """Cancels a call at the ``n``-th task step after it began.

    With ``mode="caller"`` only the calling task's own steps count, so the
    cancellation lands at its n-th checkpoint; with ``"anyone"`` every task's
    steps count.
    """

    n: int
    mode: Mode
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    task: trio.lowlevel.Task | None = None
    steps: int = 0
    fired: bool = False
    """Whether the cancellation came before the call completed."""
    done: bool = False

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.done or self.fired or self.task is None:
            return
        if self.mode == "anyone" or task is self.task:
            self.steps += 1
            if self.steps == self.n:
                self.fired = True
                self.scope.cancel()

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Result:
        """Await ``fn()`` in the current task, cancelled at the n-th step."""
        self.task = trio.lowlevel.current_task()
        trio.lowlevel.add_instrument(self)
        result = Result(cancelled=True)
        try:
            with self.scope:
                try:
                    result = Result(value=await fn())
                except Exception as exc:
                    result = Result(error=exc)
        finally:
            self.done = True
            trio.lowlevel.remove_instrument(self)
        return result


@attrs.frozen
class Result:
    """How an injected call ended: cancelled, returned ``value`` or raised."""

    cancelled: bool = False
    value: Any = None
    error: Exception | None = None

    def get(self) -> Any:
        """The value it returned; raises what it raised."""
        assert not self.cancelled
        if self.error is not None:
            raise self.error
        return self.value


async def inject_everywhere(
    scenario: Callable[[Injector], Awaitable[None]], mode: Mode
) -> int:
    """Run ``scenario`` with n = 1, 2, ... until its call completes first.

    Returns how many checkpoints (or steps) the call went through. With
    ``"anyone"``, the steps of other tasks come in an order trio shuffles, so
    the whole sweep runs several times.
    """
    steps = 0
    for _ in range(SWEEPS if mode == "anyone" else 1):
        for n in range(1, LIMIT):
            injector = Injector(n, mode)
            await scenario(injector)
            if not injector.fired:
                steps = max(steps, n - 1)
                break
        else:
            raise AssertionError(f"the call had not completed after {LIMIT} steps")
    return steps


@contextlib.asynccontextmanager
async def open_checked(
    pools: Mapping[int, int] | Iterable[PoolConfig],
) -> AsyncIterator[bulkhead.Dispatcher]:
    """``open_dispatcher`` that fails the test if a teardown cut the body short
    (its assertions would be skipped silently)."""
    finished = False
    async with bulkhead.open_dispatcher(pools) as d:
        yield d
        finished = True
    assert finished, "the dispatcher tore itself down under the test"


def jobs_failed(failed: str, jobs: int) -> pytest.RaisesGroup[ValueError]:
    """Expects the JobsFailed of a batch of ``jobs`` whose one failure is the
    ValueError raised by the test job named ``failed``."""
    return pytest.RaisesGroup(
        pytest.RaisesExc(
            ValueError, match=rf"^{re.escape(failed)}\nin bulkhead job #\d+ \(.+\)$"
        ),
        match=rf"^1 of {jobs} jobs failed$",
        check=lambda group: isinstance(group, bulkhead.JobsFailed),
    )


def assert_consistent(d: bulkhead.Dispatcher) -> None:
    for priority, s in d.statistics().pools.items():
        assert s.submitted == s.queued + s.busy + s.succeeded + s.failed + s.cancelled
        assert s.busy <= s.workers, priority
        assert s.busy + s.idle <= s.workers, priority


@attrs.define(eq=False)
class Jobs:
    """Test jobs that hang until released; records starts and concurrency."""

    releases: dict[str, trio.Event] = attrs.Factory(dict)
    everything: bool = False
    """Set by release_all(): jobs started later do not hang either."""
    started: list[str] = attrs.Factory(list)
    ran: Counter[str] = attrs.Factory(Counter)
    inside: Counter[int] = attrs.Factory(Counter)
    most_inside: Counter[int] = attrs.Factory(Counter)

    def release(self, name: str) -> None:
        self.releases.setdefault(name, trio.Event()).set()

    def release_all(self) -> None:
        self.everything = True
        for event in self.releases.values():
            event.set()

    async def hang(self, name: str, priority: int, fail: bool = False) -> str:
        self.started.append(name)
        self.ran[name] += 1
        self.inside[priority] += 1
        self.most_inside[priority] = max(
            self.most_inside[priority], self.inside[priority]
        )
        release = self.releases.setdefault(name, trio.Event())
        if self.everything:
            release.set()
        try:
            await release.wait()
        finally:
            self.inside[priority] -= 1
        if fail:
            raise ValueError(name)
        return name


async def assert_every_slot_is_free(d: bulkhead.Dispatcher, jobs: Jobs) -> None:
    """At rest, each pool takes exactly ``workers`` jobs at once, no fewer (a
    lost slot) and no more (a slot granted twice)."""
    await d.barrier()
    stats = d.statistics()
    for priority, s in stats.pools.items():
        assert (s.busy, s.idle, s.queued) == (0, s.workers, 0), priority
        handles = [
            d.dispatch_nowait(
                jobs.hang, f"probe {priority}.{i}", priority, priority=priority
            )
            for i in range(s.workers)
        ]
        assert d.statistics().pools[priority].busy == s.workers
        for job in handles:
            job.cancel()
    await d.barrier()
    for priority, workers in ((p, s.workers) for p, s in stats.pools.items()):
        assert jobs.most_inside[priority] <= workers, f"pool {priority} overran"


# ------------------------------------------------------------------- dispatch


@attrs.frozen
class Setup:
    """How full the pool is when the injected dispatch comes."""

    name: str
    queue: int
    busy: int
    """Workers (of 2) already running a hanging job."""
    queued: int
    ahead: int
    """Tasks already blocked in dispatch before the injected one."""

    def __str__(self) -> str:
        return self.name


SETUPS = [
    Setup("idle worker", queue=0, busy=0, queued=0, ahead=0),
    Setup("queue slot", queue=1, busy=2, queued=0, ahead=0),
    Setup("blocked on workers", queue=0, busy=2, queued=0, ahead=1),
    Setup("blocked on full queue", queue=1, busy=2, queued=1, ahead=1),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("setup", SETUPS, ids=str)
async def test_cancelled_dispatch_never_runs_and_returned_dispatch_runs_once(
    setup: Setup, mode: Mode
) -> None:
    async def scenario(injector: Injector) -> None:
        jobs = Jobs()
        async with open_checked([PoolConfig(1, 2, queue=setup.queue)]) as d:
            fillers = [f"filler {i}" for i in range(setup.busy + setup.queued)]
            for name in fillers:
                await d.dispatch(jobs.hang, name, 1, priority=1)
            accepted: dict[str, bulkhead.Job[Any]] = {}

            async def dispatch_in_background(name: str) -> None:
                accepted[name] = await d.dispatch(jobs.hang, name, 1, priority=1)

            async def free_workers_one_by_one() -> None:
                # Once the injected dispatch is parked, hand it a worker or a
                # queue slot (with the one ahead of it served first).
                for name in fillers[: setup.ahead + 1]:
                    await wait_all_tasks_blocked()
                    jobs.release(name)

            async with trio.open_nursery() as nursery:
                for i in range(setup.ahead):
                    nursery.start_soon(dispatch_in_background, f"ahead {i}")
                    await wait_all_tasks_blocked()
                if setup.ahead:
                    nursery.start_soon(free_workers_one_by_one)
                result = await injector.call(
                    functools.partial(d.dispatch, jobs.hang, "injected", 1, priority=1)
                )
                assert_consistent(d)
                if setup.ahead and mode == "caller" and injector.n == 1:
                    # Cancelled while parked: it leaves at once.
                    assert result.cancelled
                if result.cancelled:
                    nursery.start_soon(dispatch_in_background, "behind")
                else:
                    assert result.get().state in (JobState.RUNNING, JobState.QUEUED)
                await wait_all_tasks_blocked()
                jobs.release_all()
            await assert_every_slot_is_free(d, jobs)
            assert_consistent(d)
            expected = [*fillers, *(f"ahead {i}" for i in range(setup.ahead))]
            if result.cancelled:
                # Never accepted, never run; whoever came next took its turn.
                assert jobs.ran["injected"] == 0
                expected.append("behind")
            else:
                assert jobs.ran["injected"] == 1
                assert result.get().state is JobState.SUCCEEDED
                expected.append("injected")
            # Served in order, each exactly once.
            assert [n for n in jobs.started if not n.startswith("probe")] == expected
            stats = d.statistics().pools[1]
            assert stats.submitted == len(expected) + stats.workers

    checkpoints = await inject_everywhere(scenario, mode)
    assert checkpoints >= 1  # dispatch is a checkpoint on every path


# -------------------------------------------------------------------- barrier


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("priority", [None, 1])
async def test_cancelled_barrier_claims_nothing_at_any_checkpoint(
    priority: int | None, mode: Mode
) -> None:
    async def scenario(injector: Injector) -> None:
        jobs = Jobs()
        async with open_checked({1: 2, 2: 1}) as d:
            await d.dispatch(jobs.hang, "ok 1", 1, priority=1)
            await d.dispatch(jobs.hang, "fails 1", 1, True, priority=1)
            await d.dispatch(jobs.hang, "ok 2", 2, priority=2)
            names = ["ok 1", "fails 1", "ok 2"]

            async def release_one_by_one() -> None:
                for name in names:
                    await wait_all_tasks_blocked()
                    jobs.release(name)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_one_by_one)
                result = await injector.call(functools.partial(d.barrier, priority))
            assert_consistent(d)
            covered = 2 if priority == 1 else 3
            if result.cancelled:
                # Claimed nothing: the next barrier reports every job and
                # raises the failure.
                with jobs_failed("fails 1", jobs=3) as caught:
                    await d.barrier()
                assert isinstance(caught.value, bulkhead.JobsFailed)
                assert caught.value.report.jobs == 3
            else:
                with jobs_failed("fails 1", jobs=covered) as caught:
                    result.get()
                assert isinstance(caught.value, bulkhead.JobsFailed)
                assert caught.value.report.jobs == covered
                # Each failure is raised once: the next barrier has none.
                report = await d.barrier()
                assert report.jobs == 3 - covered
                assert report.failed == 0
            await assert_every_slot_is_free(d, jobs)

    checkpoints = await inject_everywhere(scenario, mode)
    assert checkpoints >= 1


@pytest.mark.parametrize("mode", MODES)
async def test_barrier_with_nothing_to_wait_for_reports_even_if_cancelled(
    mode: Mode,
) -> None:
    async def scenario(injector: Injector) -> None:
        jobs = Jobs()
        async with open_checked({1: 1}) as d:
            job = await d.dispatch(jobs.hang, "done", 1, priority=1)
            jobs.release("done")
            await job.wait()
            result = await injector.call(d.barrier)
            if result.cancelled:
                assert (await d.barrier()).jobs == 1
            else:
                assert result.get().jobs == 1
                assert (await d.barrier()).jobs == 0

    assert await inject_everywhere(scenario, mode) == 1


# ------------------------------------------------------------------- finalize


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("grace_period", [None, 5])
async def test_cancelled_finalize_caller_leaves_and_teardown_goes_on(
    grace_period: float | None, mode: Mode, autojump_clock: trio.testing.MockClock
) -> None:
    async def scenario(injector: Injector) -> None:
        jobs = Jobs()
        closed: list[str] = []
        async with open_checked([PoolConfig(1, 1, queue=1)]) as d:
            start = trio.current_time()
            running = await d.dispatch(jobs.hang, "running", 1, True, priority=1)
            queued = await d.dispatch(jobs.hang, "queued", 1, priority=1)

            async def blocked() -> None:
                try:
                    await d.dispatch(jobs.hang, "blocked", 1, priority=1)
                except bulkhead.DispatcherClosed:
                    closed.append("blocked")

            async def release_later() -> None:
                await wait_all_tasks_blocked()
                if grace_period is None:
                    jobs.release("running")
                    await wait_all_tasks_blocked()
                    jobs.release("queued")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocked)
                await wait_all_tasks_blocked()
                nursery.start_soon(release_later)
                result = await injector.call(
                    functools.partial(d.finalize, grace_period)
                )
            # Intake stopped either way; the blocked dispatcher was refused.
            assert closed == ["blocked"]
            assert jobs.ran["blocked"] == 0
            assert d.statistics().closed
            with pytest.raises(
                bulkhead.DispatcherClosed,
                match=r"^the dispatcher takes no more jobs: finalize\(\) has begun; "
                r"dispatch before finalizing$",
            ):
                d.dispatch_nowait(jobs.hang, "late", 1, priority=1)
            assert_consistent(d)
            if result.cancelled:
                # The teardown it started goes on; its failures are raised
                # once, by the next finalize.
                failure: contextlib.AbstractContextManager[Any] = (
                    jobs_failed("running", jobs=2)
                    if grace_period is None
                    else contextlib.nullcontext()
                )
                with failure:
                    await d.finalize()
            else:
                if grace_period is None:
                    with jobs_failed("running", jobs=2):
                        result.get()
                else:
                    assert result.get() is None
                await d.finalize()  # nothing left to report
            if grace_period is None:
                assert (running.state, queued.state) == (
                    JobState.FAILED,
                    JobState.SUCCEEDED,
                )
                assert trio.current_time() == start
            else:
                # The grace period expired on schedule, cancelled or not.
                assert running.state is queued.state is JobState.CANCELLED
                assert trio.current_time() == start + grace_period
            stats = d.statistics().pools[1]
            assert (stats.submitted, stats.busy, stats.idle, stats.queued) == (
                2,
                0,
                0,
                0,
            )
        assert live_bulkhead_tasks() == []

    assert await inject_everywhere(scenario, mode) >= 1


# ------------------------------------------------------------------- Job.wait


@pytest.mark.parametrize("mode", MODES)
async def test_cancelled_job_wait_leaves_the_job_alone(mode: Mode) -> None:
    async def scenario(injector: Injector) -> None:
        jobs = Jobs()
        async with open_checked({1: 1}) as d:
            job = await d.dispatch(jobs.hang, "job", 1, priority=1)

            async def release() -> None:
                await wait_all_tasks_blocked()
                jobs.release("job")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(release)
                result = await injector.call(job.wait)
            if not result.cancelled:
                assert result.get() == "job"
            await wait_all_tasks_blocked()
            assert job.state is JobState.SUCCEEDED
            assert await job.wait() == await job.wait() == "job"
            assert jobs.ran["job"] == 1

    assert await inject_everywhere(scenario, mode) >= 1


# ----------------------------------------------------------- the whole lifetime


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["open_dispatcher", "nursery.start(run)"])
async def test_cancelling_a_dispatcher_anywhere_in_its_lifetime_leaves_nothing(
    how: str, mode: Mode
) -> None:
    """Entry (workers starting), the body and the exit (finalize) of a
    dispatcher's life, cancelled at each checkpoint: no task is left, every
    accepted job ended, and only Cancelled comes out."""

    async def scenario(injector: Injector) -> None:
        jobs = Jobs()
        accepted: dict[str, bulkhead.Job[Any]] = {}

        async def body(d: bulkhead.Dispatcher) -> None:
            if how != "open_dispatcher":
                # trio's nursery.start resumes its caller some steps after the
                # new task called started(): a cancellation landing in between
                # already killed the workers. Only open_dispatcher can (and
                # does) check for that before handing the dispatcher over.
                await trio.lowlevel.checkpoint()
            # Readiness: a dispatch_nowait succeeds right after entering.
            accepted["a"] = d.dispatch_nowait(jobs.hang, "a", 1, priority=1)
            accepted["b"] = await d.dispatch(jobs.hang, "b", 1, priority=1)
            accepted["c"] = await d.dispatch(jobs.hang, "c", 2, priority=2)
            jobs.release_all()

        async def lifetime() -> None:
            if how == "open_dispatcher":
                async with bulkhead.open_dispatcher({1: 2, 2: 1}) as d:
                    await body(d)
            else:
                d = bulkhead.Dispatcher({1: 2, 2: 1})
                async with trio.open_nursery() as nursery:
                    await nursery.start(d.run)
                    await body(d)
                    await d.finalize()

        result = await injector.call(lifetime)
        assert result.cancelled or result.get() is None
        assert live_bulkhead_tasks() == []
        for job in accepted.values():
            assert job.state in (JobState.SUCCEEDED, JobState.CANCELLED)
        # Only accepted jobs ran, each at most once.
        assert set(jobs.ran) <= set(accepted)
        assert all(count == 1 for count in jobs.ran.values())
        if not result.cancelled:
            assert len(accepted) == 3
            assert all(j.state is JobState.SUCCEEDED for j in accepted.values())

    assert await inject_everywhere(scenario, mode) >= 3


# ------------------------------------------------------ regressions they found


class CancelWhenScheduled(trio.abc.Instrument):
    """Cancels ``scope`` the moment ``task`` is rescheduled."""

    def __init__(self, task: trio.lowlevel.Task, scope: trio.CancelScope) -> None:
        self.task = task
        self.scope = scope

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.scope.cancel()


async def test_open_dispatcher_cancelled_as_it_becomes_ready_does_not_enter() -> None:
    """Readiness: entering returns only with every worker idle, so a
    dispatch_nowait right after it succeeds. Cancelled at the last moment of
    startup, entering must raise Cancelled instead of handing over a
    dispatcher whose workers are being torn down.

    Found by the "anyone" injection of the lifetime test above: the body's
    first dispatch_nowait raised WouldBlock or DispatcherClosed (fixed in
    f2761c0)."""
    jobs = Jobs()
    body: list[str] = []
    with trio.CancelScope() as scope:
        # The opener parks until the last worker is ready; cancel as that
        # worker wakes it up.
        instrument = CancelWhenScheduled(trio.lowlevel.current_task(), scope)
        trio.lowlevel.add_instrument(instrument)
        try:
            async with bulkhead.open_dispatcher({1: 2}) as d:
                body.append("entered")
                try:
                    d.dispatch_nowait(jobs.hang, "first", 1, priority=1)
                    body.append("accepted")
                except (trio.WouldBlock, bulkhead.DispatcherClosed) as exc:
                    body.append(f"refused: {exc!r}")
        finally:
            trio.lowlevel.remove_instrument(instrument)
    assert scope.cancelled_caught
    # Between the instrument going in and the body, the opener is scheduled
    # only once: woken by the last worker to get ready. So the cancellation
    # always lands there, and entering raised Cancelled. The bug entered and
    # was refused (["entered", "refused: ..."]); ["entered", "accepted"] would
    # hand out a cancelled dispatcher whose workers are being torn down.
    assert body == []
    assert jobs.ran == {}
    assert live_bulkhead_tasks() == []
