"""bulkhead's side of every scenario, written as its documentation suggests.

The timed span matches ``_alternatives.py``: from the first dispatch until the
covering ``barrier()`` returns. ``open_dispatcher`` (worker start-up) and the
final ``finalize`` stay outside it. After each timed run the dispatcher's
statistics are checked, so a fast but wrong dispatcher cannot post a figure.

The ``dask`` scenario keeps each pool open for the whole scenario (a Dask
cluster takes seconds to start): :class:`PoolSession` runs the dispatcher in a
trio loop of its own thread and times rounds in it on request.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

import trio
import trio.testing

import bulkhead
from _jobs import LatencyProbe, perf_counter, trivial

P = 0  # the priority of the one pool most scenarios use


def _pool(priority: int, workers: int, copy_context: bool) -> bulkhead.PoolConfig:
    if copy_context:  # leave the default to the library
        return bulkhead.PoolConfig(priority, workers)
    return bulkhead.PoolConfig(priority, workers, copy_context=False)


def _check(d: bulkhead.Dispatcher, jobs: int) -> None:
    total = d.statistics().total
    if total.succeeded != jobs or total.failed or total.cancelled:
        raise RuntimeError(f"expected {jobs} jobs to succeed, statistics say {total}")


def throughput(n: int, workers: int, *, copy_context: bool, nowait: bool) -> float:
    """``n`` trivial jobs through one pool, then ``barrier()``.

    ``nowait``: try ``dispatch_nowait`` first and fall back to a blocking
    ``dispatch`` on ``trio.WouldBlock`` (the documented fast path).
    """

    async def main() -> float:
        async with bulkhead.open_dispatcher([_pool(P, workers, copy_context)]) as d:
            t0 = perf_counter()
            if nowait:
                for i in range(n):
                    try:
                        d.dispatch_nowait(trivial, i, priority=P)
                    except trio.WouldBlock:
                        await d.dispatch(trivial, i, priority=P)
            else:
                for i in range(n):
                    await d.dispatch(trivial, i, priority=P)
            await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, n)
        return elapsed

    return trio.run(main)


def rounds(
    rounds: int, per_round: int, workers: int, *, copy_context: bool, nowait: bool
) -> float:
    """The bulk-synchronous loop: dispatch a round, ``barrier()``, repeat."""

    async def main() -> float:
        async with bulkhead.open_dispatcher([_pool(P, workers, copy_context)]) as d:
            t0 = perf_counter()
            for _ in range(rounds):
                if nowait:
                    for i in range(per_round):
                        try:
                            d.dispatch_nowait(trivial, i, priority=P)
                        except trio.WouldBlock:
                            await d.dispatch(trivial, i, priority=P)
                else:
                    for i in range(per_round):
                        await d.dispatch(trivial, i, priority=P)
                await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, rounds * per_round)
        return elapsed

    return trio.run(main)


def rounds_many(rounds: int, per_round: int, workers: int) -> float:
    """The bulk-synchronous loop with one ``dispatch_many`` per round."""

    async def main() -> float:
        async with bulkhead.open_dispatcher([_pool(P, workers, True)]) as d:
            args = [(i,) for i in range(per_round)]
            t0 = perf_counter()
            for _ in range(rounds):
                await d.dispatch_many(trivial, args, priority=P)
                await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, rounds * per_round)
        return elapsed

    return trio.run(main)


def _no_op(*args: object) -> None:
    pass


HOOKS = {
    "none": None,
    "unset": bulkhead.Hooks(),
    "on_finished": bulkhead.Hooks(on_finished=_no_op),
}
"""Hook settings the throughput scenario compares: none, a Hooks with
nothing set, and one no-op hook."""


def throughput_hooks(n: int, workers: int, *, hooks: str) -> float:
    """``n`` trivial jobs through one pool with the hooks ``HOOKS[hooks]``."""

    async def main() -> float:
        async with bulkhead.open_dispatcher(
            [_pool(P, workers, True)], hooks=HOOKS[hooks]
        ) as d:
            t0 = perf_counter()
            for i in range(n):
                await d.dispatch(trivial, i, priority=P)
            await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, n)
        return elapsed

    return trio.run(main)


def isolation(
    *, shared: bool, flood: int, slow: float, probes: int, interval: float
) -> list[float]:
    """Flood one pool of 4 with slow jobs; time small jobs through the other.

    ``shared``: one pool of 8 takes both the flood and the small jobs.
    Returns the dispatch-to-start latency of each small job, in seconds.
    """
    busy, quiet = (1, 1) if shared else (1, 2)
    pools = (
        [bulkhead.PoolConfig(1, 8)]
        if shared
        else [
            bulkhead.PoolConfig(busy, 4),
            bulkhead.PoolConfig(quiet, 4),
        ]
    )

    async def slow_job() -> None:
        await trio.sleep(slow)

    async def main() -> list[float]:
        probe = LatencyProbe(probes, trio.Event())
        async with bulkhead.open_dispatcher(pools) as d:
            async with trio.open_nursery() as nursery:
                flood_one = functools.partial(d.dispatch, slow_job, priority=busy)
                for _ in range(flood):
                    nursery.start_soon(flood_one)
                await trio.testing.wait_all_tasks_blocked()

                async def send_probe() -> None:
                    await d.dispatch(probe.job, perf_counter(), priority=quiet)

                for _ in range(probes):
                    nursery.start_soon(send_probe)
                    await trio.sleep(interval)
                await probe.done.wait()  # type: ignore[attr-defined]
                nursery.cancel_scope.cancel()  # blocked flood dispatchers leave
            await d.finalize(grace_period=0)  # running flood jobs end CANCELLED
        return probe.samples

    return trio.run(main)


def scaling(n: int, pools: int, workers: int) -> float:
    """``pools`` pools of ``workers`` each, ``n`` jobs dispatched round-robin."""

    async def main() -> float:
        configs = [bulkhead.PoolConfig(p, workers) for p in range(pools)]
        async with bulkhead.open_dispatcher(configs) as d:
            t0 = perf_counter()
            for i in range(n):
                await d.dispatch(trivial, i, priority=i % pools)
            await d.barrier()
            elapsed = perf_counter() - t0
            _check(d, n)
        return elapsed

    return trio.run(main)


def stream(
    n: int, workers: int, sample: Callable[[int], None], *, copy_context: bool
) -> None:
    """Dispatch ``n`` jobs with no barrier in between and no handle kept.

    ``sample(i)`` is called every ``n // 20`` jobs and once after the final
    ``barrier()``, for the memory scenario.
    """

    async def main() -> None:
        every = max(1, n // 20)
        async with bulkhead.open_dispatcher([_pool(P, workers, copy_context)]) as d:
            for i in range(n):
                await d.dispatch(trivial, i, priority=P)
                if i % every == 0:
                    sample(i)
            await d.barrier()
            sample(n)
            _check(d, n)

    trio.run(main)


def pool_session(
    workers: int, kind: Literal["process", "dask"], **options: Any
) -> PoolSession:
    """A :class:`PoolSession` of one pool of ``kind``, as its docs suggest."""
    return PoolSession(bulkhead.PoolConfig(P, workers, kind=kind, **options))


class PoolSession:
    """One pool held open across many measurements of the ``dask`` scenario.

    ``with PoolSession(config) as pool:`` starts a thread that runs
    ``trio.run`` with ``open_dispatcher([config])`` open, so the pool's start-up
    (its own ``LocalCluster``, or its worker processes) happens once, outside
    every timed span; ``pool.rounds(...)`` times rounds on that loop (through
    ``trio.from_thread.run``) and returns the seconds they took. Leaving the
    block finalizes the dispatcher, also untimed.
    """

    def __init__(self, config: bulkhead.PoolConfig) -> None:
        self._config = config
        self._opened = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"bulkhead {config.kind} pool session"
        )
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._dispatcher: bulkhead.Dispatcher | None = None
        self._stop: trio.Event | None = None

    def __enter__(self) -> PoolSession:
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stop is not None
        assert self._token is not None
        with contextlib.suppress(trio.RunFinishedError):  # the loop died: _error
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        if self._error is not None and exc is None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # re-raised in the thread that asked
            self._error = exc
        finally:
            self._opened.set()

    async def _serve(self) -> None:
        async with bulkhead.open_dispatcher([self._config]) as d:
            self._dispatcher = d
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._opened.set()
            await self._stop.wait()

    def rounds(
        self, fn: Callable[[int], Any], arg: int, rounds: int, per_round: int
    ) -> float:
        """``rounds`` times: dispatch ``per_round`` jobs ``fn(arg)``, ``barrier()``."""
        assert self._token is not None
        return trio.from_thread.run(  # type: ignore[no-any-return]
            self._rounds, fn, arg, rounds, per_round, trio_token=self._token
        )

    async def _rounds(
        self, fn: Callable[[int], Any], arg: int, rounds: int, per_round: int
    ) -> float:
        d = self._dispatcher
        assert d is not None
        priority = self._config.priority
        before = d.statistics().total
        t0 = perf_counter()
        for _ in range(rounds):
            for _ in range(per_round):
                await d.dispatch(fn, arg, priority=priority)
            await d.barrier()
        elapsed = perf_counter() - t0
        after = d.statistics().total
        jobs = rounds * per_round
        if (
            after.succeeded - before.succeeded != jobs
            or after.failed != before.failed
            or after.cancelled != before.cancelled
        ):
            raise RuntimeError(
                f"expected {jobs} more jobs to succeed, statistics say {after}"
            )
        return elapsed
