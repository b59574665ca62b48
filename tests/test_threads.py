"""Sync jobs in threads: bounded, isolated, abandoned not interrupted.

They run in ``kind="thread"`` pools and, for a sync function, in async pools.

Every thread a test starts blocks on a ``threading.Event`` the test holds and
opens; the ``probe`` fixture opens any gate left shut when the test ends, and
each gate also times out on its own, so no thread outlives a failing test for
long. Nothing here sleeps: the trio side spins on checkpoints until a thread
raises a flag (so the autojump clock cannot jump meanwhile), and
``HANG_GUARD`` only turns a regression that would deadlock into a failure.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

import bulkhead
from bulkhead import JobCancelled, JobState, PoolConfig
from bulkhead._policy import Kind

from ._jobs import spin_until

SYNC_KINDS = pytest.mark.parametrize("kind", ["thread", "async"])
"""Where a sync function runs in a worker thread: a thread pool, and an
async pool given a sync function (which runs it as a thread pool would)."""

HANG_GUARD = 10.0
"""Real seconds after which a test that should not block at all fails."""

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


class Probe:
    """Sync jobs for thread pools, each blocked on a gate the test opens.

    ``job(name)`` runs in a worker thread: it logs "<name> started", flags
    that it entered, waits for its gate, logs "<name> returned", flags that and
    returns ``name``. ``running``/``peak`` count threads inside ``job`` now and
    at most, under a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self._returned: dict[str, threading.Event] = {}
        self._entered: dict[str, threading.Event] = {}
        self.running = 0
        self.peak = 0
        self.log: list[str] = []

    def _prepare(self, name: str) -> None:
        with self._lock:
            if name not in self._gates:
                self._gates[name] = threading.Event()
                self._returned[name] = threading.Event()
                self._entered[name] = threading.Event()

    def job(self, name: str) -> str:
        self._prepare(name)
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.log.append(f"{name} started")
        self._entered[name].set()
        opened = self._gates[name].wait(timeout=HANG_GUARD)
        with self._lock:
            self.running -= 1
            self.log.append(f"{name} returned")
        self._returned[name].set()
        if not opened:
            raise RuntimeError(f"the gate of {name} was never opened")
        return name

    async def entered(self, name: str) -> None:
        """Wait until the thread running ``job(name)`` is inside it."""
        self._prepare(name)
        await spin_until(
            self._entered[name].is_set, f"{name} never started", guard=HANG_GUARD
        )

    def release(self, name: str) -> None:
        self._prepare(name)
        self._gates[name].set()

    async def returned(self, name: str) -> None:
        """Wait until the thread running ``job(name)`` has left it."""
        self._prepare(name)
        await spin_until(
            self._returned[name].is_set, f"{name} never returned", guard=HANG_GUARD
        )

    def snapshot(self) -> tuple[int, int, list[str]]:
        with self._lock:
            return self.running, self.peak, list(self.log)

    def release_all(self) -> None:
        with self._lock:
            gates = list(self._gates.values())
        for gate in gates:
            gate.set()


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    probe = Probe()
    try:
        yield probe
    finally:
        probe.release_all()


def thread_ident(value: Any) -> tuple[int, Any]:
    return threading.get_ident(), value


def raise_value_error(message: str) -> None:
    raise ValueError(message)


async def async_noop() -> None:
    pass


def sync_noop() -> None:
    pass


# ----------------------------------------------------------------- basics


@SYNC_KINDS
async def test_sync_functions_run_in_worker_threads(kind: Kind) -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 2, kind=kind)], on_error="record"
    ) as d:
        with trio.fail_after(HANG_GUARD):
            job = await d.dispatch(thread_ident, "value", priority=1)
            ident, value = await job.wait()
            assert ident != threading.get_ident()
            assert value == "value"
            assert job.state is JobState.SUCCEEDED
            failing = await d.dispatch(raise_value_error, "in a thread", priority=1)
            with pytest.raises(ValueError, match=r"^in a thread$"):
                await failing.wait()
            assert failing.state is JobState.FAILED
        stats = d.statistics().pools[1]
        assert (stats.succeeded, stats.failed) == (1, 1)


@SYNC_KINDS
async def test_a_thread_pool_never_runs_more_than_its_workers_at_once(
    kind: Kind,
    probe: Probe,
) -> None:
    names = [f"j{i}" for i in range(6)]
    async with bulkhead.open_dispatcher([PoolConfig(1, 2, kind=kind, queue=4)]) as d:
        jobs = [await d.dispatch(probe.job, name, priority=1) for name in names]
        await probe.entered("j0")
        await probe.entered("j1")
        await wait_all_tasks_blocked()
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.queued) == (2, 4)
        assert probe.snapshot()[:2] == (2, 2)
        # Open the gates one by one: each freed slot starts exactly one more.
        for i, name in enumerate(names):
            probe.release(name)
            if i + 2 < len(names):
                await probe.entered(names[i + 2])
                assert d.statistics().pools[1].busy == 2
        with trio.fail_after(HANG_GUARD):
            await d.barrier()
    running, peak, log = probe.snapshot()
    assert (running, peak) == (0, 2)
    for i in range(2, len(names)):
        # j<i> started only after j<i-2> had returned its thread.
        assert log.index(f"j{i} started") > log.index(f"j{i - 2} returned")
    assert [job.state for job in jobs] == [JobState.SUCCEEDED] * len(names)


@SYNC_KINDS
async def test_a_saturated_thread_pool_never_blocks_another_thread_pool(
    kind: Kind,
    probe: Probe,
) -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, kind=kind), PoolConfig(2, 1, kind=kind)]
    ) as d:
        stuck = await d.dispatch(probe.job, "stuck", priority=1)
        await probe.entered("stuck")
        with trio.fail_after(HANG_GUARD):
            for i in range(5):
                job = await d.dispatch(thread_ident, i, priority=2)
                assert (await job.wait())[1] == i
        # Pool 2 was served while pool 1's only thread was still blocked.
        assert stuck.state is JobState.RUNNING
        assert probe.snapshot()[0] == 1
        probe.release("stuck")


@SYNC_KINDS
async def test_thread_pools_never_use_the_default_thread_limiter(kind: Kind) -> None:
    default = trio.to_thread.current_default_thread_limiter()
    default.total_tokens = 1
    async with (
        default,
        bulkhead.open_dispatcher([PoolConfig(1, 2, kind=kind)]) as d,
    ):
        # Every default token is taken: a pool borrowing from it would hang.
        with trio.fail_after(HANG_GUARD):
            jobs = [await d.dispatch(thread_ident, i, priority=1) for i in range(2)]
            assert [(await job.wait())[1] for job in jobs] == [0, 1]
        assert default.borrowed_tokens == 1


@SYNC_KINDS
async def test_context_variables_follow_the_job_into_the_thread(kind: Kind) -> None:
    def read_and_write() -> str:
        seen = request_id.get("unset")
        request_id.set("changed in the thread")
        return seen

    async with bulkhead.open_dispatcher(
        [
            PoolConfig(1, 1, kind=kind),
            PoolConfig(2, 1, kind=kind, copy_context=False),
        ]
    ) as d:
        request_id.set("req-7")
        with trio.fail_after(HANG_GUARD):
            copied = await d.dispatch(read_and_write, priority=1)
            assert await copied.wait() == "req-7"
            assert request_id.get() == "req-7"
            # copy_context=False: the worker's own context, opened before the set.
            own = await d.dispatch(read_and_write, priority=2)
            assert await own.wait() == "unset"


@pytest.mark.parametrize(
    ("fn", "kind", "message"),
    [
        (
            async_noop,
            "thread",
            r"^<function async_noop at 0x[0-9a-f]+> is an async function, but this "
            r"is a thread pool that calls sync functions: dispatch it to an async "
            r"pool$",
        ),
    ],
)
async def test_a_function_of_the_wrong_kind_is_rejected_before_anything_is_accepted(
    fn: Any, kind: Any, message: str
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind=kind)]) as d:
        with pytest.raises(TypeError, match=message):
            await d.dispatch(fn, priority=1)
        with pytest.raises(TypeError, match=message):
            d.dispatch_nowait(fn, priority=1)
        stats = d.statistics().pools[1]
        assert (stats.submitted, stats.rejected, stats.idle) == (0, 0, 1)


# ----------------------------------------------------------------- abandonment


@pytest.mark.parametrize("queue", [0, 1])
@SYNC_KINDS
async def test_a_timed_out_thread_job_ends_at_once_but_keeps_its_slot_until_it_returns(
    kind: Kind, autojump_clock: Any, probe: Probe, queue: int
) -> None:
    pools = [PoolConfig(1, 1, kind=kind, queue=queue)]
    accepted: list[bulkhead.Job[Any]] = []
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        start = trio.current_time()
        stuck = await d.dispatch(probe.job, "stuck", priority=1, timeout=5)
        with pytest.raises(trio.TooSlowError):
            await stuck.wait()
        assert trio.current_time() - start == 5
        await probe.entered("stuck")  # the thread itself is still inside
        assert stuck.state is JobState.FAILED
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.idle, stats.abandoned) == (0, 0, 1)
        assert (stats.timed_out, stats.failed) == (1, 1)

        async def dispatch_next() -> None:
            accepted.append(await d.dispatch(probe.job, "next", priority=1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatch_next)
            await wait_all_tasks_blocked()
            stats = d.statistics().pools[1]
            assert (stats.queued, stats.waiting_dispatchers) == (queue, 1 - queue)
            assert (stats.busy, stats.abandoned) == (0, 1)
            assert probe.snapshot()[2] == ["stuck started"]
            probe.release("stuck")
        await probe.entered("next")
        assert accepted[0].state is JobState.RUNNING
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.abandoned) == (1, 0)
        probe.release("next")
    assert probe.snapshot()[1:] == (
        1,
        ["stuck started", "stuck returned", "next started", "next returned"],
    )


@SYNC_KINDS
async def test_a_cancelled_thread_job_ends_at_once_but_keeps_its_slot_until_it_returns(
    kind: Kind,
    probe: Probe,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind=kind)]) as d:
        stuck = await d.dispatch(probe.job, "stuck", priority=1)
        await probe.entered("stuck")
        stuck.cancel()
        with trio.fail_after(HANG_GUARD), pytest.raises(JobCancelled):
            await stuck.wait()
        assert stuck.state is JobState.CANCELLED
        assert probe.snapshot()[0] == 1  # the thread has not returned
        await wait_all_tasks_blocked()
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.idle, stats.abandoned, stats.cancelled) == (
            0,
            0,
            1,
            1,
        )
        with pytest.raises(trio.WouldBlock):
            d.dispatch_nowait(probe.job, "barger", priority=1)
        probe.release("stuck")
        with trio.fail_after(HANG_GUARD):
            after = await d.dispatch(probe.job, "after", priority=1)
        await probe.entered("after")
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.abandoned, stats.rejected) == (1, 0, 1)
        probe.release("after")
        assert await after.wait() == "after"
    assert probe.snapshot()[2] == [
        "stuck started",
        "stuck returned",
        "after started",
        "after returned",
    ]


@SYNC_KINDS
async def test_a_retry_never_overlaps_the_timed_out_attempts_thread(
    kind: Kind, autojump_clock: Any, probe: Probe
) -> None:
    attempt = 0
    lock = threading.Lock()

    def attempt_job() -> str:
        nonlocal attempt
        with lock:
            attempt += 1
            name = f"attempt {attempt}"
        return probe.job(name)

    retry = bulkhead.Retry(attempts=2, backoff=0, jitter=False)
    pools = [PoolConfig(1, 1, kind=kind)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        job = await d.dispatch(attempt_job, priority=1, timeout=1, retry=retry)
        await probe.entered("attempt 1")
        await trio.sleep(5)  # virtual: the first attempt times out at 1 s...
        await wait_all_tasks_blocked()
        stats = d.statistics().pools[1]
        assert (stats.timed_out, stats.retried, stats.busy) == (1, 1, 1)
        # ...but the retry waits for its thread: never two attempts at once.
        assert (job.state, job.attempts) == (JobState.RUNNING, 1)
        assert probe.snapshot()[2] == ["attempt 1 started"]
        probe.release("attempt 1")
        await probe.entered("attempt 2")
        with pytest.raises(trio.TooSlowError):
            await job.wait()
        assert job.attempts == 2
        assert d.statistics().pools[1].timed_out == 2
        probe.release("attempt 2")
        await probe.returned("attempt 2")
    assert probe.snapshot()[1:] == (
        1,
        [
            "attempt 1 started",
            "attempt 1 returned",
            "attempt 2 started",
            "attempt 2 returned",
        ],
    )


@SYNC_KINDS
async def test_finalize_with_a_grace_period_returns_despite_a_stuck_thread(
    kind: Kind, autojump_clock: Any, probe: Probe
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind=kind)]) as d:
        stuck = await d.dispatch(probe.job, "stuck", priority=1)
        await probe.entered("stuck")
        start = trio.current_time()
        await d.finalize(grace_period=3)
        assert trio.current_time() - start == 3
        assert stuck.state is JobState.CANCELLED
        stats = d.statistics()
        assert stats.closed
        assert (stats.pools[1].cancelled, stats.pools[1].busy) == (1, 0)
    assert probe.snapshot()[0] == 1
    probe.release("stuck")
    await probe.returned("stuck")


@SYNC_KINDS
async def test_finalize_waits_for_an_abandoned_thread_up_to_its_grace_deadline(
    kind: Kind, autojump_clock: Any, probe: Probe
) -> None:
    pools = [PoolConfig(1, 1, kind=kind)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        stuck = await d.dispatch(probe.job, "stuck", priority=1, timeout=1)
        with pytest.raises(trio.TooSlowError):
            await stuck.wait()
        assert d.statistics().pools[1].abandoned == 1
        start = trio.current_time()
        await d.finalize(grace_period=3)
        assert trio.current_time() - start == 3
    probe.release("stuck")
    await probe.returned("stuck")


@SYNC_KINDS
async def test_finalize_without_a_grace_period_waits_for_an_abandoned_thread(
    kind: Kind,
    probe: Probe,
) -> None:
    record: list[str] = []
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, kind=kind)]) as d:
        stuck = await d.dispatch(probe.job, "stuck", priority=1)
        await probe.entered("stuck")
        stuck.cancel()

        async def finalize() -> None:
            await d.finalize()
            record.append("finalized")

        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(finalize)
                await wait_all_tasks_blocked()
                assert record == []
                assert d.statistics().pools[1].abandoned == 1
                probe.release("stuck")
        assert record == ["finalized"]
        assert probe.snapshot()[2] == ["stuck started", "stuck returned"]
        assert d.statistics().pools[1].abandoned == 0
