"""PoolConfig, Retry, Priority, timeouts, retries and error policies."""

from __future__ import annotations

import itertools
import math
from typing import Any

import attrs
import pytest
import trio
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import bulkhead
from bulkhead import (
    Job,
    JobCancelled,
    JobsFailed,
    JobState,
    PoolConfig,
    Priority,
    Retry,
)

from ._jobs import fail, sleep_then


class HandlerError(Exception):
    pass


async def async_handler(job: Job[Any], exc: Exception) -> None:
    pass


class Attempts:
    """An async job that fails with the given errors, then returns "done".

    It records the trio time at which each attempt began.
    """

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.started: list[float] = []

    async def __call__(self) -> str:
        self.started.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        return "done"

    def deltas(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.started)]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"priority": "high"},
            TypeError,
            r"^priority must be an int \(or an IntEnum such as Priority\.HIGH\), "
            r"got 'high'$",
        ),
        (
            {"priority": True},
            TypeError,
            r"^priority must be an int \(or an IntEnum such as Priority\.HIGH\), "
            r"got True$",
        ),
        (
            {"priority": 1.0},
            TypeError,
            r"^priority must be an int \(or an IntEnum such as Priority\.HIGH\), "
            r"got 1\.0$",
        ),
        ({"workers": 0}, ValueError, r"^workers must be >= 1, got 0$"),
        ({"workers": -2}, ValueError, r"^workers must be >= 1, got -2$"),
        ({"workers": True}, TypeError, r"^workers must be an int, got True$"),
        ({"workers": 2.0}, TypeError, r"^workers must be an int, got 2\.0$"),
        ({"workers": "2"}, TypeError, r"^workers must be an int, got '2'$"),
        ({"queue": -1}, ValueError, r"^queue must be >= 0, got -1$"),
        ({"queue": False}, TypeError, r"^queue must be an int, got False$"),
        ({"queue": 1.5}, TypeError, r"^queue must be an int, got 1\.5$"),
        (
            {"queue": math.inf},
            TypeError,
            r"^queue must be an int, got inf$",
        ),
        (
            {"kind": "proc"},
            ValueError,
            r'^kind must be "async", "thread", "process" or "dask", got \'proc\'$',
        ),
        (
            {"kind": 1},
            TypeError,
            r'^kind must be "async", "thread", "process" or "dask", got 1$',
        ),
        (
            {"timeout": -0.5},
            ValueError,
            r"^timeout must be >= 0 seconds \(or None\), got -0\.5$",
        ),
        (
            {"timeout": math.nan},
            ValueError,
            r"^timeout must be >= 0 seconds \(or None\), got nan$",
        ),
        (
            {"timeout": True},
            TypeError,
            r"^timeout must be a number of seconds or None, got True$",
        ),
        (
            {"timeout": "5"},
            TypeError,
            r"^timeout must be a number of seconds or None, got '5'$",
        ),
        (
            {"retry": 3},
            TypeError,
            r"^retry must be a bulkhead\.Retry or None, got 3$",
        ),
        (
            {"on_error": "ignore"},
            ValueError,
            r'^on_error must be "raise", "record", "cancel" or a callable '
            r"handler\(job, exc\), got 'ignore'$",
        ),
        (
            {"on_error": 42},
            TypeError,
            r'^on_error must be "raise", "record", "cancel" or a callable '
            r"handler\(job, exc\), got 42$",
        ),
        (
            {"copy_context": 1},
            TypeError,
            r"^copy_context must be a bool, got 1$",
        ),
    ],
)
def test_pool_config_rejects_each_bad_input(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"priority": 1, "workers": 1, **kwargs}
    with pytest.raises(error, match=message):
        PoolConfig(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"attempts": 0}, ValueError, r"^attempts must be >= 1, got 0$"),
        ({"attempts": True}, TypeError, r"^attempts must be an int, got True$"),
        ({"attempts": 2.0}, TypeError, r"^attempts must be an int, got 2\.0$"),
        (
            {"backoff": -0.1},
            ValueError,
            r"^backoff must be >= 0 seconds, got -0\.1$",
        ),
        (
            {"backoff": "1"},
            TypeError,
            r"^backoff must be a number of seconds, got '1'$",
        ),
        (
            {"max_backoff": -1},
            ValueError,
            r"^max_backoff must be >= 0 seconds, got -1$",
        ),
        (
            {"max_backoff": math.nan},
            ValueError,
            r"^max_backoff must be >= 0 seconds, got nan$",
        ),
        (
            {"backoff": None},
            TypeError,
            r"^backoff must be a number of seconds, got None$",
        ),
        (
            {"max_backoff": None},
            TypeError,
            r"^max_backoff must be a number of seconds, got None$",
        ),
        (
            {"jitter": 1},
            TypeError,
            r"^jitter must be a bool, got 1$",
        ),
        (
            {"on": BaseException},
            TypeError,
            r"^on must be an Exception subclass or a tuple of them \(cancellation "
            r"is never retried\), got <class 'BaseException'>$",
        ),
        (
            {"on": (ValueError, trio.Cancelled)},
            TypeError,
            r"^on must be an Exception subclass or a tuple of them \(cancellation "
            r"is never retried\), got \(<class 'ValueError'>, "
            r"<class 'trio\.Cancelled'>\)$",
        ),
        (
            {"on": [ValueError]},
            TypeError,
            r"^on must be an Exception subclass or a tuple of them \(cancellation "
            r"is never retried\), got \[<class 'ValueError'>\]$",
        ),
        (
            {"on": ValueError("x")},
            TypeError,
            r"^on must be an Exception subclass or a tuple of them \(cancellation "
            r"is never retried\), got ValueError\('x'\)$",
        ),
    ],
)
def test_retry_rejects_each_bad_input(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Retry(**kwargs)


def test_defaults_and_valid_edge_values_are_accepted() -> None:
    config = PoolConfig(Priority.HIGH, 1)
    assert (config.priority, config.workers, config.queue, config.kind) == (
        3,
        1,
        0,
        "async",
    )
    assert (config.timeout, config.retry, config.on_error, config.copy_context) == (
        None,
        None,
        None,
        True,
    )
    retry = Retry()
    assert (retry.attempts, retry.backoff, retry.max_backoff, retry.jitter) == (
        3,
        0.1,
        10,
        True,
    )
    assert retry.on == (Exception,)
    # Edge values that are valid.
    PoolConfig(-7, 1, queue=0, timeout=0)
    PoolConfig(0, 1, timeout=math.inf, kind="thread", on_error=print)
    Retry(attempts=1, backoff=0, max_backoff=0, on=())
    Retry(on=ConnectionError)


def test_pool_config_and_retry_are_frozen_values() -> None:
    config = PoolConfig(1, 2, queue=3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.workers = 5  # type: ignore[misc]
    retry = Retry(attempts=2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        retry.attempts = 5  # type: ignore[misc]
    assert config == PoolConfig(1, 2, queue=3)
    assert retry == Retry(attempts=2)
    assert hash(config) == hash(PoolConfig(1, 2, queue=3))


def test_priority_levels() -> None:
    assert [(p.name, int(p)) for p in Priority] == [
        ("LOW", 1),
        ("NORMAL", 2),
        ("HIGH", 3),
        ("URGENT", 4),
    ]
    assert Priority.LOW < Priority.NORMAL < Priority.HIGH < Priority.URGENT
    by_priority: dict[int, str] = {Priority.HIGH: "x"}
    assert by_priority[3] == "x"  # the same key as the plain int


async def test_priority_enum_and_plain_int_name_the_same_pool() -> None:
    async with bulkhead.open_dispatcher({Priority.URGENT: 1}) as d:
        job = await d.dispatch(sleep_then, 0, priority=4)
        assert job.priority == Priority.URGENT


def test_async_error_handlers_are_rejected() -> None:
    message = (
        r"^on_error handler must be a synchronous function handler\(job, exc\), "
        r"got the async function <function async_handler at 0x[0-9a-f]+>; record "
        r"the failure and dispatch the async follow-up as a job instead$"
    )
    with pytest.raises(TypeError, match=message):
        bulkhead.Dispatcher({1: 1}, on_error=async_handler)
    with pytest.raises(TypeError, match=message):
        PoolConfig(1, 1, on_error=async_handler)


class AsyncCallableHandler:
    async def __call__(self, job: Job[Any], exc: Exception) -> None:
        pass


def test_an_object_with_an_async_call_is_rejected_as_a_handler() -> None:
    with pytest.raises(TypeError, match=r"^on_error handler must be a synchronous"):
        PoolConfig(1, 1, on_error=AsyncCallableHandler())


async def test_open_dispatcher_rejects_an_async_handler_before_starting() -> None:
    with pytest.raises(TypeError, match=r"^on_error handler must be a synchronous"):
        async with bulkhead.open_dispatcher({1: 1}, on_error=async_handler):
            pytest.fail("the body must not run")  # pragma: no cover


# ----------------------------------------------------------------- Retry.delay


def test_retry_delay_without_jitter_is_exactly_the_formula() -> None:
    retry = Retry(backoff=0.5, max_backoff=3, jitter=False)
    assert [retry.delay(k) for k in range(1, 7)] == [0.5, 1, 2, 3, 3, 3]
    default = Retry(jitter=False)
    assert [default.delay(k) for k in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])
    assert default.delay(8) == 10  # 12.8 capped by max_backoff
    assert Retry(backoff=0, jitter=False).delay(5) == 0


def test_retry_delay_with_jitter_is_drawn_from_half_to_full_delay() -> None:
    retry = Retry(backoff=1, max_backoff=8, jitter=True)
    for k, delay in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8)]:
        samples = [retry.delay(k) for _ in range(300)]
        assert all(delay / 2 <= s <= delay for s in samples)
        # Spread over the whole range, not a constant.
        assert min(samples) < 0.6 * delay
        assert max(samples) > 0.9 * delay


# -------------------------------------------------------------------- timeouts


async def test_an_overrunning_attempt_fails_with_too_slow_error(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        start = trio.current_time()
        job = await d.dispatch(sleep_then, 10, priority=1, timeout=2)
        with pytest.raises(trio.TooSlowError):
            await job.wait()
        assert trio.current_time() - start == 2
        assert (job.state, job.attempts) == (JobState.FAILED, 1)
        own_error = await d.dispatch(fail, "mine", priority=1, timeout=2)
        with pytest.raises(ValueError, match=r"^mine$"):
            await own_error.wait()
        stats = d.statistics().pools[1]
        assert (stats.failed, stats.timed_out) == (2, 1)


async def test_the_timeout_clock_starts_when_the_attempt_starts(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher([PoolConfig(1, 1, queue=1)]) as d:
        start = trio.current_time()
        await d.dispatch(sleep_then, 5, priority=1)
        queued = await d.dispatch(sleep_then, 1.5, "ok", priority=1, timeout=2)
        assert queued.state is JobState.QUEUED
        # It waited 5 s in the queue, then ran 1.5 s of its 2 s budget.
        assert await queued.wait() == "ok"
        assert trio.current_time() - start == 6.5
        assert d.statistics().pools[1].timed_out == 0


async def test_the_pool_timeout_is_the_default_and_dispatch_overrides_it(
    autojump_clock: Any,
) -> None:
    pools = [PoolConfig(1, 1, timeout=1)]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        default = await d.dispatch(sleep_then, 2, priority=1)
        with pytest.raises(trio.TooSlowError):
            await default.wait()
        longer = await d.dispatch(sleep_then, 2, "longer", priority=1, timeout=5)
        assert await longer.wait() == "longer"
        shorter = await d.dispatch(sleep_then, 0.75, priority=1, timeout=0.5)
        with pytest.raises(trio.TooSlowError):
            await shorter.wait()
        unbounded = await d.dispatch(
            sleep_then, 10_000, "inf", priority=1, timeout=math.inf
        )
        assert await unbounded.wait() == "inf"
        assert d.statistics().pools[1].timed_out == 2


async def test_timed_out_counts_attempts_and_too_slow_is_retried_by_default(
    autojump_clock: Any,
) -> None:
    retry = Retry(attempts=3, backoff=1, jitter=False)
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        start = trio.current_time()
        job = await d.dispatch(trio.sleep_forever, priority=1, timeout=1, retry=retry)
        with pytest.raises(trio.TooSlowError):
            await job.wait()
        # 3 attempts of 1 s, with 1 s and 2 s of backoff between them.
        assert trio.current_time() - start == 6
        assert job.attempts == 3
        stats = d.statistics().pools[1]
        assert (stats.timed_out, stats.retried, stats.failed) == (3, 2, 1)


async def test_too_slow_is_not_retried_when_on_leaves_it_out(
    autojump_clock: Any,
) -> None:
    retry = Retry(attempts=3, backoff=1, jitter=False, on=(ConnectionError,))
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        job = await d.dispatch(trio.sleep_forever, priority=1, timeout=1, retry=retry)
        with pytest.raises(trio.TooSlowError):
            await job.wait()
        assert job.attempts == 1
        assert d.statistics().pools[1].retried == 0


# --------------------------------------------------------------------- retries


async def test_backoff_delays_are_exactly_the_formula_without_jitter(
    autojump_clock: Any,
) -> None:
    job_fn = Attempts(*(ConnectionError(i) for i in range(4)))
    retry = Retry(attempts=5, backoff=0.25, max_backoff=1.0, jitter=False)
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(job_fn, priority=1, retry=retry)
        assert await job.wait() == "done"
        assert job_fn.deltas() == [0.25, 0.5, 1.0, 1.0]
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 5)
        stats = d.statistics().pools[1]
        assert (stats.retried, stats.failed, stats.succeeded) == (4, 0, 1)


async def test_jittered_backoff_delays_stay_within_half_to_full_delay(
    autojump_clock: Any,
) -> None:
    job_fn = Attempts(*(ConnectionError(i) for i in range(5)))
    retry = Retry(attempts=6, backoff=1, max_backoff=4, jitter=True)
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(job_fn, priority=1, retry=retry)
        assert await job.wait() == "done"
    for delta, delay in zip(job_fn.deltas(), [1, 2, 4, 4, 4], strict=True):
        assert delay / 2 <= delta <= delay


async def test_the_last_attempts_error_is_the_jobs_error(autojump_clock: Any) -> None:
    job_fn = Attempts(*(ValueError(f"attempt {i}") for i in (1, 2, 3)))
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        job = await d.dispatch(job_fn, priority=1, retry=Retry(attempts=3))
        with pytest.raises(ValueError, match=r"^attempt 3$"):
            await job.wait()
        stats = d.statistics().pools[1]
        assert (job.attempts, stats.retried, stats.failed) == (3, 2, 1)


@pytest.mark.parametrize(
    ("on", "errors", "attempts"),
    [
        ((ConnectionError,), [ValueError("not retried")], 1),
        ((ConnectionError,), [ConnectionResetError("subclass"), ValueError("x")], 2),
        (OSError, [ConnectionError("a"), TimeoutError("b"), KeyError("c")], 3),
        ((), [ConnectionError("nothing is retried")], 1),
    ],
)
async def test_retry_on_filters_which_errors_are_retried(
    autojump_clock: Any,
    on: type[Exception] | tuple[type[Exception], ...],
    errors: list[Exception],
    attempts: int,
) -> None:
    job_fn = Attempts(*errors)
    retry = Retry(attempts=5, backoff=0.5, on=on)
    async with bulkhead.open_dispatcher({1: 1}, on_error="record") as d:
        job = await d.dispatch(job_fn, priority=1, retry=retry)
        with pytest.raises(type(errors[-1])):
            await job.wait()
        assert job.attempts == attempts
        assert d.statistics().pools[1].retried == attempts - 1


async def test_dispatch_retry_overrides_the_pools(autojump_clock: Any) -> None:
    pools = [PoolConfig(1, 1, retry=Retry(attempts=3, backoff=1))]
    async with bulkhead.open_dispatcher(pools, on_error="record") as d:
        by_pool = await d.dispatch(fail, "pool", priority=1)
        no_retry = await d.dispatch(fail, "once", priority=1, retry=Retry(attempts=1))
        await d.barrier()
        assert (by_pool.attempts, no_retry.attempts) == (3, 1)


async def test_the_worker_stays_busy_while_backing_off(autojump_clock: Any) -> None:
    retry = Retry(attempts=2, backoff=10, jitter=False)
    record: list[tuple[str, float]] = []
    async with bulkhead.open_dispatcher({1: 1}) as d:
        flaky = await d.dispatch(Attempts(ConnectionError()), priority=1, retry=retry)

        async def second() -> None:
            with assert_checkpoints():
                await d.dispatch(sleep_then, 0, priority=1)
            record.append(("second accepted", trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(second)
            await wait_all_tasks_blocked()
            # First attempt failed; the worker is sleeping its backoff.
            assert (flaky.state, flaky.attempts) == (JobState.RUNNING, 1)
            stats = d.statistics().pools[1]
            assert (stats.busy, stats.idle, stats.waiting_dispatchers) == (1, 0, 1)
            assert record == []
        assert record == [("second accepted", 10)]
        assert await flaky.wait() == "done"


async def test_a_cancelled_running_job_is_never_retried(autojump_clock: Any) -> None:
    retry = Retry(attempts=5, backoff=1, jitter=False)
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(trio.sleep_forever, priority=1, retry=retry)
        await wait_all_tasks_blocked()
        assert job.attempts == 1
        job.cancel()
        with pytest.raises(JobCancelled):
            await job.wait()
        assert (job.state, job.attempts) == (JobState.CANCELLED, 1)
        assert trio.current_time() == 0
        assert d.statistics().pools[1].retried == 0


async def test_a_job_cancelled_while_backing_off_is_not_retried(
    autojump_clock: Any,
) -> None:
    job_fn = Attempts(ConnectionError(), ConnectionError())
    retry = Retry(attempts=3, backoff=10, jitter=False)
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(job_fn, priority=1, retry=retry)
        await wait_all_tasks_blocked()
        assert job.attempts == 1
        job.cancel()
        with pytest.raises(JobCancelled):
            await job.wait()
        assert trio.current_time() == 0
        assert (job.state, job.attempts, len(job_fn.started)) == (
            JobState.CANCELLED,
            1,
            1,
        )
        stats = d.statistics().pools[1]
        assert (stats.busy, stats.idle, stats.cancelled) == (0, 1, 1)


async def test_a_grace_period_cancellation_is_never_retried(
    autojump_clock: Any,
) -> None:
    retry = Retry(attempts=5, backoff=1, jitter=False)
    async with bulkhead.open_dispatcher({1: 1}) as d:
        job = await d.dispatch(trio.sleep_forever, priority=1, retry=retry)
        await d.finalize(grace_period=3)
    assert trio.current_time() == 3
    assert (job.state, job.attempts) == (JobState.CANCELLED, 1)
    assert d.statistics().pools[1].retried == 0


# ------------------------------------------------------------ error policies


async def test_a_pool_record_policy_overrides_the_dispatchers_raise() -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1), PoolConfig(2, 1, on_error="record")], on_error="raise"
    ) as d:
        await d.dispatch(fail, "raised", priority=1)
        recorded = await d.dispatch(fail, "recorded", priority=2)
        with pytest.RaisesGroup(
            pytest.RaisesExc(
                ValueError, match=r"^raised\nin bulkhead job #\d+ \(.+\)$"
            ),
            check=lambda group: (
                isinstance(group, JobsFailed) and group.report.failed == 2
            ),
        ):
            await d.barrier()
        assert recorded.state is JobState.FAILED
        await d.dispatch(fail, "recorded again", priority=2)
        report = await d.barrier()
        assert report.failed == 1


async def test_a_pool_raise_policy_overrides_the_dispatchers_record() -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, on_error="raise"), PoolConfig(2, 1)], on_error="record"
    ) as d:
        await d.dispatch(fail, "recorded", priority=2)
        assert (await d.barrier()).failed == 1
        await d.dispatch(fail, "raised", priority=1)
        await d.dispatch(fail, "recorded", priority=2)
        with pytest.RaisesGroup(
            pytest.RaisesExc(ValueError, match=r"^raised\nin bulkhead job #\d+ \(.+\)$")
        ):
            await d.barrier()


async def test_a_handler_is_called_once_per_failed_job_with_the_job_and_error(
    autojump_clock: Any,
) -> None:
    calls: list[tuple[Job[Any], Exception]] = []

    def handler(job: Job[Any], exc: Exception) -> None:
        calls.append((job, exc))

    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 2, queue=5, retry=Retry(attempts=3), on_error=handler)],
        on_error="raise",
    ) as d:
        first = await d.dispatch(fail, "a", priority=1)
        await d.dispatch(sleep_then, 1, "fine", priority=1)
        second = await d.dispatch(fail, "b", priority=1)
        cancelled = await d.dispatch(trio.sleep_forever, priority=1)
        cancelled.cancel()
        report = await d.barrier()  # the handler took the failures: no raise
        assert report.failed == 2
    assert [(job, str(exc)) for job, exc in calls] == [(first, "a"), (second, "b")]
    for job, exc in calls:
        assert job.state is JobState.FAILED
        assert job.attempts == 3
        with pytest.raises(ValueError, match=r"^[ab]$") as info:
            await job.wait()
        assert info.value is exc


async def test_a_dispatcher_wide_handler_serves_pools_that_set_none() -> None:
    calls: list[str] = []
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1), PoolConfig(2, 1, on_error="record")],
        on_error=lambda job, exc: calls.append(f"{job.priority}: {exc}"),
    ) as d:
        await d.dispatch(fail, "x", priority=1)
        await d.dispatch(fail, "y", priority=2)
        await d.barrier()
    assert calls == ["1: x"]


async def test_a_raising_handler_crashes_the_dispatcher(autojump_clock: Any) -> None:
    def handler(job: Job[Any], exc: Exception) -> None:
        raise HandlerError(f"cannot handle {exc}")

    with pytest.RaisesGroup(pytest.RaisesExc(HandlerError, match=r"^cannot handle x$")):
        async with bulkhead.open_dispatcher(
            [PoolConfig(1, 1, on_error=handler), PoolConfig(2, 1)]
        ) as d:
            other = await d.dispatch(sleep_then, 10, priority=2)
            await d.dispatch(fail, "x", priority=1)
            await trio.sleep(5)
    assert trio.current_time() == 0
    assert other.state is JobState.CANCELLED
    assert d.statistics().closed


async def test_a_cancel_policy_pool_fails_fast_for_every_pool(
    autojump_clock: Any,
) -> None:
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match=r"^fatal$")):
        async with bulkhead.open_dispatcher(
            [PoolConfig(1, 1, on_error="cancel"), PoolConfig(2, 1, queue=1)],
            on_error="record",
        ) as d:
            running = await d.dispatch(sleep_then, 10, priority=2)
            queued = await d.dispatch(sleep_then, 10, priority=2)
            await d.dispatch(fail, "fatal", priority=1)
            await trio.sleep(5)
    assert trio.current_time() == 0
    assert running.state is queued.state is JobState.CANCELLED


async def test_a_record_pool_is_spared_by_the_dispatchers_cancel_policy(
    autojump_clock: Any,
) -> None:
    async with bulkhead.open_dispatcher(
        [PoolConfig(1, 1, on_error="record"), PoolConfig(2, 1)], on_error="cancel"
    ) as d:
        other = await d.dispatch(sleep_then, 10, "kept", priority=2)
        await d.dispatch(fail, "harmless", priority=1)
        assert await other.wait() == "kept"
        assert d.statistics().pools[1].failed == 1
