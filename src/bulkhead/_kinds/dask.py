"""The ``"dask"`` pool kind: sync functions on a Dask cluster
(``distributed``, the ``bulkhead[dask]`` extra).

How trio talks to the cluster
-----------------------------
The synchronous ``distributed.Client`` runs its own event loop in a thread
of its own, so trio's loop never runs Dask code. Each attempt submits its
task (``client.submit`` only queues a message for that loop) and then waits
for it in a trio worker thread, under the pool's own limiter of ``workers``
threads. The alternative, an asynchronous client on an asyncio loop in a
thread of ours with each attempt sent there by ``run_coroutine_threadsafe``
and woken through ``TrioToken.run_sync_soon``, costs the same: submitting
inside the slot as the pool does, on a 2-worker ``LocalCluster`` here, 15.1
ms per job for the threads against 14.4 ms (``make bench``'s ``dask``
scenario measures the pool itself; ``benchmarks/dask_client_options.py``
compares the two ways, though it submits everything at once). With no speed
to gain, the threads stay: no event loop of ours to start, stop and leak.

Stopping an attempt
-------------------
Dask cannot interrupt a task already running on a worker: a cancelled
future's task runs to its end. So a timeout, ``job.cancel()`` or an expired
grace period cancels the future, the job ends at once (``TooSlowError`` /
``CANCELLED``), and the attempt is *abandoned*: its thread asks the cluster to
forget the task and then keeps the pool's slot until no worker runs it any
more, so the pool never has more than ``workers`` tasks on the cluster. A
worker lost or killed under a task fails the attempt (``KilledWorker``, or
the scheduler's error), which the pool's ``Retry`` may retry; nothing waits
on it for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from .._job import Job
from .._policy import PoolConfig
from .protocol import (
    import_for_kind,
    refuse_async,
    refuse_unsendable_arguments,
    run_abandonable,
)

GONE_POLL = 0.05
"""Seconds between two asks whether an abandoned task still runs on a worker."""
CLOSE_TIMEOUT = 10
"""Seconds the pool's own client and cluster get to close at finalize."""


async def _reach(distributed: Any, address: str) -> None:
    comm = await distributed.comm.connect(address)
    await comm.close()


def _still_running(key: str, dask_worker: Any = None) -> bool:
    """On a worker: whether it still holds task ``key`` (running or cancelled)."""
    return key in dask_worker.state.tasks


@attrs.define(eq=False)
class DaskKind:
    """Jobs run as tasks on a Dask cluster, at most ``workers`` at once."""

    config: PoolConfig
    limiter: trio.CapacityLimiter = attrs.field(init=False)
    _distributed: Any = attrs.field(init=False)
    _client: Any = None
    """The client jobs are submitted through, while the pool is open."""

    def __attrs_post_init__(self) -> None:
        self._distributed = import_for_kind(
            "dask",
            "distributed",
            "distributed",
            "distributed.comm",
            "distributed.protocol.pickle",  # what Dask sends functions with
        )
        client = self.config.dask_client
        if client is not None and not isinstance(client, self._distributed.Client):
            raise TypeError(f"dask_client must be a distributed.Client, got {client!r}")
        self.limiter = trio.CapacityLimiter(self.config.workers)

    def check(self, fn: object) -> None:
        refuse_async(fn, "dask")
        try:
            self._distributed.protocol.pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"{fn!r} cannot be sent to the Dask cluster ({exc}): a dask pool "
                "needs a function that pickles (cloudpickle handles lambdas and "
                "local functions, not what they capture that cannot be pickled)"
            ) from None

    def check_arguments(self, args: tuple[Any, ...]) -> None:
        refuse_unsendable_arguments(args, "dask", "the Dask cluster")

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        given = self.config.dask_client
        if given is not None:
            self._client = given
            yield
            return
        client, cluster = await trio.to_thread.run_sync(self._connect)
        self._client = client
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close, client, cluster)

    def _connect(self) -> tuple[Any, Any]:
        """The pool's own client, and the LocalCluster it started (or None)."""
        distributed = self._distributed
        address = self.config.dask_address
        if address is not None:
            try:
                # A Client that fails to connect leaves its loop thread running
                # (distributed 2026.8), so reach the scheduler on a throwaway
                # loop first; the connect timeout is Dask's own setting.
                asyncio.run(_reach(distributed, address))
            except OSError as exc:
                raise OSError(
                    f"cannot reach the Dask scheduler at {address!r} ({exc}): check "
                    "PoolConfig(dask_address=...) and that the scheduler runs"
                ) from None
            return distributed.Client(address, set_as_default=False), None
        cluster = distributed.LocalCluster(
            n_workers=self.config.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # its HTTP server, on loopback only
        )
        try:
            return distributed.Client(cluster, set_as_default=False), cluster
        except BaseException:
            cluster.close()
            raise

    @staticmethod
    def _close(client: Any, cluster: Any) -> None:
        client.close(timeout=CLOSE_TIMEOUT)
        if cluster is not None:
            cluster.close(timeout=CLOSE_TIMEOUT)

    def resize(self, workers: int) -> None:
        # The cluster keeps its size; the pool's bound on tasks is the limiter.
        self.limiter.total_tokens = workers

    async def run(self, job: Job[Any]) -> Any:
        fn, args = job._fn, job._args
        assert args is not None  # until the job ends
        client = self._client
        key = f"bulkhead-{job.id}-{job.attempts}-{uuid.uuid4().hex}"
        future = client.submit(fn, *args, key=key, pure=False)
        wake = threading.Event()  # the task ended, or trio gave up on it
        future.add_done_callback(lambda _: wake.set())

        def wait_for_task() -> Any:
            wake.wait()
            if future.done():
                return future.result()
            # Abandoned: forget the task, then hold the slot until no worker
            # runs it any more.
            future.cancel()
            while any(
                client.run(_still_running, key, on_error="ignore", nanny=False).values()
            ):
                time.sleep(GONE_POLL)
            return None

        return await run_abandonable(
            job,
            wait_for_task,
            self.limiter,
            f"bulkhead job #{job.id} ({job.name}) on dask",
            on_abandon=wake.set,
        )
