"""kind="dask" pools, against real ``distributed.LocalCluster``s on loopback
(worker processes, not threads).

Most tests share one module-wide cluster through ``dask_address``; the pool's
own ``LocalCluster``, a ``dask_client`` the user owns and a worker killed
mid-job each get one of their own. Waiting here is on the real clock (the
cluster runs in other processes), and only for things that must happen; no
test judges speed.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import distributed
import pytest
import trio
from distributed import Client, LocalCluster

import bulkhead
from bulkhead import JobState, PoolConfig, Retry

from ._dask_jobs import crash_the_first_time, fail, sleep_then, square

CLUSTER_THREADS = ("IO loop", "AsyncProcess", "QueueFeederThread")
"""Threads of a Dask client or cluster: one left after a test is a leak.
(distributed's process-wide executors, Dask-Offload and Dask-Callback-Thread,
are meant to live as long as the process.)"""


def local_cluster(workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # its HTTP server, on loopback only
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(2) as running:
        yield running


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    """A client of the test's own, to look at the cluster."""
    with Client(cluster, set_as_default=False) as looking:
        yield looking


def live_clients() -> list[Client]:
    gc.collect()
    return [
        o for o in gc.get_objects() if isinstance(o, Client) and o.status == "running"
    ]


@pytest.fixture(autouse=True)
def no_client_or_cluster_left() -> Iterator[None]:
    """Extends the suite's leak guard: a test leaves no Dask client, cluster
    or their threads behind (worker processes are checked suite-wide)."""
    threads_before = set(threading.enumerate())
    clients_before = {id(c) for c in live_clients()}
    yield
    deadline = time.monotonic() + 5
    while True:
        threads = [
            t.name
            for t in threading.enumerate()
            if t not in threads_before and t.name.startswith(CLUSTER_THREADS)
        ]
        clients = [c for c in live_clients() if id(c) not in clients_before]
        if (not threads and not clients) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert threads == [], f"Dask threads left running: {threads}"
    assert clients == [], f"Dask clients left open: {clients}"


def tasks_on(client: Client) -> tuple[list[Any], dict[str, list[Any]]]:
    """The keys the scheduler knows and each worker holds."""
    scheduler = client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.tasks)
    )
    workers = client.run(lambda dask_worker: list(dask_worker.state.tasks))
    return scheduler, workers


async def until(predicate: Any, what: str, seconds: float = 30) -> None:
    """Wait on the real clock until ``predicate()`` (run in a thread) holds."""
    with trio.fail_after(seconds):
        # Polls other processes' state: nothing here could set an Event.
        while not await trio.to_thread.run_sync(predicate):  # noqa: ASYNC110
            await trio.sleep(0.05)


# ----------------------------------------------------------------- results


async def test_rounds_run_on_a_dask_pool_with_the_same_results(
    cluster: LocalCluster,
) -> None:
    """The BSP loop of the tutorial, with only ``kind=`` changed."""
    pools = [PoolConfig(1, 2, kind="dask", dask_address=cluster.scheduler_address)]
    async with bulkhead.open_dispatcher(pools) as d:
        for round_ in range(3):
            jobs = [await d.dispatch(square, round_ + i, priority=1) for i in range(6)]
            report = await d.barrier()
            assert (report.jobs, report.succeeded) == (6, 6)
            assert [await j.wait() for j in jobs] == [
                (round_ + i) ** 2 for i in range(6)
            ]
    stats = d.statistics().pools[1]
    assert (stats.submitted, stats.succeeded, stats.busy, stats.idle) == (18, 18, 0, 0)


async def test_fifty_barrier_rounds(cluster: LocalCluster) -> None:
    pools = [PoolConfig(1, 2, kind="dask", dask_address=cluster.scheduler_address)]
    async with bulkhead.open_dispatcher(pools) as d:
        for round_ in range(50):
            for i in range(2):
                await d.dispatch(square, i, priority=1)
            report = await d.barrier()
            assert (report.jobs, report.succeeded) == (2, 2), round_
    assert d.statistics().pools[1].succeeded == 100


async def test_a_dask_jobs_error_is_its_failure(cluster: LocalCluster) -> None:
    pools = [PoolConfig(1, 1, kind="dask", dask_address=cluster.scheduler_address)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        job = await d.dispatch(fail, "remote boom", priority=1)
        with pytest.raises(ValueError, match=r"^remote boom$"):
            await job.wait()
    assert d.statistics().pools[1].failed == 1


async def test_a_flooded_dask_pool_never_delays_an_async_pool(
    cluster: LocalCluster,
) -> None:
    """Two slow jobs fill the Dask pool and more wait to be dispatched; the
    async pool's jobs all finish before any Dask job does."""
    pools = [
        PoolConfig(1, 2, kind="dask", dask_address=cluster.scheduler_address),
        PoolConfig(2, 2),
    ]
    async with bulkhead.open_dispatcher(pools) as d, trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(lambda: d.dispatch(sleep_then, 1.0, priority=1))
        await trio.testing.wait_all_tasks_blocked()
        done = [await d.dispatch(trio.sleep, 0, priority=2) for _ in range(50)]
        await d.barrier(priority=2)
        assert all(job.state is JobState.SUCCEEDED for job in done)
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.succeeded) == (2, 0)
        assert stats.waiting_dispatchers == 2


# ---------------------------------------------------------- stopping a job


@pytest.mark.parametrize("how", ["job.cancel()", "timeout", "grace period"])
async def test_a_stopped_dask_job_ends_at_once_and_its_task_leaves_the_cluster(
    how: str, cluster: LocalCluster, client: Client
) -> None:
    """The job ends at once; the scheduler forgets its task; the slot stays
    held while a worker still runs it, then frees; nothing is left."""
    timeout = 0.5 if how == "timeout" else None
    pools = [
        PoolConfig(
            1,
            1,
            kind="dask",
            dask_address=cluster.scheduler_address,
            timeout=timeout,
        )
    ]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        job = await d.dispatch(sleep_then, 2.0, priority=1)
        await until(
            lambda: any(tasks_on(client)[1].values()), "the task runs on a worker"
        )
        started = time.monotonic()
        if how == "job.cancel()":
            job.cancel()
        elif how == "grace period":
            await d.finalize(grace_period=0.1)
        with trio.fail_after(1.0):  # it ends at once, not when the task does
            with pytest.raises(
                bulkhead.JobCancelled if how != "timeout" else trio.TooSlowError
            ):
                await job.wait()
        assert time.monotonic() - started < 1.5
        if how != "grace period":
            assert d.statistics().pools[1].abandoned == 1
            # The next job starts only once the abandoned task has ended.
            assert await (await d.dispatch(square, 3, priority=1)).wait() == 9
            assert d.statistics().pools[1].abandoned == 0
    await until(
        lambda: tasks_on(client) == ([], {w: [] for w in tasks_on(client)[1]}),
        "no task left on the cluster",
    )
    stats = d.statistics().pools[1]
    assert stats.timed_out == (1 if how == "timeout" else 0)
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled


async def test_a_worker_killed_mid_job_fails_the_attempt_and_retry_recovers(
    tmp_path: Path,
) -> None:
    """The job kills its worker process on its first attempt: that attempt
    fails (KilledWorker, the scheduler allowing no re-run) and the pool's
    Retry runs it again on the restarted worker. Nothing hangs."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        local_cluster(1) as own,
    ):
        pools = [
            PoolConfig(
                1,
                1,
                kind="dask",
                dask_address=own.scheduler_address,
                retry=Retry(2, backoff=0.5, jitter=False),
            )
        ]
        with trio.fail_after(60):
            async with bulkhead.open_dispatcher(pools) as d:
                job = await d.dispatch(
                    crash_the_first_time, str(tmp_path / "marker"), priority=1
                )
                assert await job.wait() == "survived"
    assert job.attempts == 2
    stats = d.statistics().pools[1]
    assert (stats.retried, stats.succeeded, stats.failed) == (1, 1, 0)


# ------------------------------------------------- where the cluster comes from


async def test_a_pool_with_no_address_runs_its_own_local_cluster_and_closes_it() -> (
    None
):
    before = len(live_clients())
    async with bulkhead.open_dispatcher([PoolConfig(1, 2, kind="dask")]) as d:
        assert await (await d.dispatch(square, 7, priority=1)).wait() == 49
        assert len(live_clients()) == before + 1
    assert len(live_clients()) == before
    # Its worker processes are gone: the suite's guard checks them.


async def test_a_client_passed_in_is_used_and_left_open(cluster: LocalCluster) -> None:
    with Client(cluster, set_as_default=False) as own:
        pools = [PoolConfig(1, 1, kind="dask", dask_client=own)]
        async with bulkhead.open_dispatcher(pools) as d:
            assert await (await d.dispatch(square, 5, priority=1)).wait() == 25
        assert own.status == "running"
        assert own.submit(square, 2).result() == 4


# --------------------------------------------------------------- bad input


async def test_what_a_dask_pool_cannot_run_is_refused_before_it_is_accepted(
    cluster: LocalCluster,
) -> None:
    lock = threading.Lock()

    def holds_a_lock() -> object:
        return lock

    async def an_async_function() -> None:
        pass

    pools = [PoolConfig(1, 1, kind="dask", dask_address=cluster.scheduler_address)]
    async with bulkhead.open_dispatcher(pools) as d:
        with pytest.raises(
            TypeError,
            match=r"^.*holds_a_lock.* cannot be sent to the Dask cluster \(.*\): a "
            r"dask pool needs a function that pickles \(cloudpickle handles "
            r"lambdas and local functions, not what they capture that cannot be "
            r"pickled\)$",
        ):
            await d.dispatch(holds_a_lock, priority=1)
        with pytest.raises(
            TypeError,
            match=r"^.*an_async_function.* is an async function, but this is a "
            r"dask pool that calls sync functions: dispatch it to an async pool$",
        ):
            await d.dispatch(an_async_function, priority=1)
        with pytest.raises(
            TypeError,
            match=r"^the arguments \(<unlocked _th.*>,\) cannot "
            r"be sent to the Dask cluster \(cannot pickle '_thread\.lock' object\): "
            r"a dask pool's jobs need arguments that pickle; nothing was accepted$",
        ):
            await d.dispatch(sleep_then, lock, priority=1)  # type: ignore[arg-type]
        # A lambda pickles with cloudpickle, so Dask takes it.
        assert await (await d.dispatch(lambda: 3, priority=1)).wait() == 3
    assert d.statistics().pools[1].submitted == 1


async def test_an_unreachable_scheduler_fails_open_dispatcher_clearly() -> None:
    pools = [PoolConfig(1, 1, kind="dask", dask_address="tcp://127.0.0.1:9")]
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.RaisesGroup(
            pytest.RaisesExc(
                OSError,
                match=r"^cannot reach the Dask scheduler at 'tcp://127\.0\.0\.1:9' "
                r"\(.*\): check PoolConfig\(dask_address=\.\.\.\) and that the "
                r"scheduler runs$",
            )
        ),
    ):
        async with bulkhead.open_dispatcher(pools):
            pass  # pragma: no cover - never entered


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"dask_address": "tcp://h:1"}, ValueError, r"^dask_address is for "
         r"kind=\"dask\" pools; this pool is kind='async'$"),
        ({"kind": "dask", "dask_address": 8786}, TypeError,
         r"^dask_address must be a str or None, got 8786$"),
        ({"kind": "dask", "dask_address": "localhost:8786"}, ValueError,
         r"^dask_address must be a scheduler address such as 'tcp://10\.0\.0\.5:"
         r"8786', got 'localhost:8786'$"),
        ({"kind": "dask", "dask_address": "tcp://h:1", "dask_client": object()},
         ValueError, r"^give a dask pool dask_address or dask_client, not both$"),
    ],
)  # fmt: skip
def test_dask_options_are_validated(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PoolConfig(1, 1, **options)


def test_a_dask_client_option_must_be_a_client() -> None:
    with pytest.raises(
        TypeError, match=r"^dask_client must be a distributed\.Client, got 'x'$"
    ):
        bulkhead.Dispatcher([PoolConfig(1, 1, kind="dask", dask_client="x")])


def test_a_dask_pool_without_the_extra_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(
        ImportError,
        match=r"^kind=\"dask\" pools need distributed: pip install "
        r"'bulkhead\[dask\]'$",
    ):
        bulkhead.Dispatcher([PoolConfig(1, 1, kind="dask")])
    assert distributed  # imported for real above this test's patch
