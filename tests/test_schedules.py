"""Periodic jobs (``bulkhead.service._schedules``): fire times, policies,
exactly-once enqueueing, ``GET /schedules``.

The time logic (:meth:`Schedule.plan`) is pure and tested on plain numbers.
The scheduler runs on trio's virtual clock: its wall clock is
:func:`virtual_wall`, ``START`` plus the virtual time elapsed, so a test
passes an hour of downtime in no real time. The journal's own work runs in
threads, during which the autojump clock may jump; the tests therefore wait
for what the scheduler has done with :func:`~tests._jobs.spin_until`, which
keeps a task runnable (no jump) until the threads are done.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry

from bulkhead.service import JobRegistry, Service, ServiceConfig
from bulkhead.service._journal import (
    Finish,
    JobFilter,
    JobRecord,
    Journal,
    JournalUnavailable,
    NewJob,
)
from bulkhead.service._postgres import PostgresJournal
from bulkhead.service._schedules import (
    LOOKBACK,
    ON_TIME,
    Plan,
    Schedule,
    Scheduler,
)
from bulkhead.service._sqlite import SQLiteJournal

from ._jobs import spin_until
from ._postgres_server import postgres, postgres_url
from ._service_server import ServerProcess, server_args

UTC = datetime.timezone.utc
START = datetime.datetime(2025, 3, 3, tzinfo=UTC).timestamp()
"""Where the virtual wall clock starts: a Monday at 00:00 UTC, in the past
of any real run, so the runs it enqueues are due for the real feeders."""
MINUTE = 60.0
NORMAL = 2
TOKEN = "schedules-test-token"
__all__ = ["postgres", "postgres_url"]  # fixtures, imported for pytest
_T = TypeVar("_T")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    """Unix seconds of a UTC date and time."""
    return datetime.datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def text(seconds: float) -> str:
    """A Unix time as RFC 3339 UTC, to read failures by."""
    return datetime.datetime.fromtimestamp(seconds, UTC).strftime("%m-%d %H:%M")


def virtual_wall() -> Callable[[], float]:
    """A wall clock at ``START`` now, moving with trio's (virtual) clock."""
    base = trio.current_time()
    return lambda: START + trio.current_time() - base


def make_registry(**schedule: Any) -> JobRegistry:
    """A registry with job type ``tick`` and schedule ``ticker`` (every 5
    minutes unless ``schedule`` says otherwise)."""
    registry = JobRegistry()

    @registry.job(priority="normal")
    async def tick(n: int = 0) -> int:
        await trio.lowlevel.checkpoint()
        return n

    registry.schedule("ticker", "tick", schedule.pop("cron", "*/5 * * * *"), **schedule)
    return registry


@contextlib.asynccontextmanager
async def running(journal: Journal) -> AsyncIterator[Journal]:
    """``journal`` opened, its writer running, closed at the end."""
    await journal.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        try:
            yield journal
        finally:
            journal.close()


def dealt_with(moment: float | None, *schedulers: Scheduler) -> Callable[[], bool]:
    """Whether every schedule of ``schedulers`` has dealt with ``moment``
    (``None``: with its start)."""

    def check() -> bool:
        horizons = [x.horizon for s in schedulers for x in s._states]
        return all(h is not None and (moment is None or h >= moment) for h in horizons)

    return check


@contextlib.asynccontextmanager
async def scheduling(
    *schedulers: Scheduler,
    settle: float = 0,
    first: Callable[[], bool] = lambda: True,
) -> AsyncIterator[None]:
    """``schedulers`` running, each dealt with its start; stopped at the end.
    Once ``first()`` holds, ``settle`` seconds pass (for retries, which
    sleep)."""
    async with trio.open_nursery() as nursery:
        for scheduler in schedulers:
            nursery.start_soon(scheduler.run)
        await spin_until(first, "the start never got that far")
        await trio.sleep(settle)
        await spin_until(dealt_with(None, *schedulers), "a schedule never started")
        yield
        nursery.cancel_scope.cancel()


async def advance(moment: float, *schedulers: Scheduler, settle: float = 1) -> None:
    """Let the wall clock pass ``moment`` by ``settle`` seconds, then wait
    until every schedule of ``schedulers`` has dealt with it.

    Not by spinning with a step: while a thread works, every step would be
    a jump of the autojump clock, and virtual time would race ahead.
    """
    await trio.sleep(moment + settle - schedulers[0].clock())
    await spin_until(
        dealt_with(moment, *schedulers), f"a schedule never dealt with {text(moment)}"
    )


async def still(read: Awaitable[_T]) -> _T:
    """Await ``read`` (journal work, done in threads) with the virtual clock
    held still: while a task stays runnable, autojump cannot jump."""
    done = False

    async def spin() -> None:
        while not done:
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(spin)
        try:
            return await read
        finally:
            done = True


async def jobs(journal: Journal) -> list[JobRecord]:
    """Every job in ``journal``, in id order."""
    return await still(
        journal.list(JobFilter(), after=0, limit=10_000, now=time.time())
    )


async def view(scheduler: Scheduler) -> dict[str, Any]:
    """What ``GET /schedules`` shows of the one schedule of ``scheduler``."""
    (only,) = await still(scheduler.view())
    return only


async def finish_all(journal: Journal) -> None:
    """Claim and finish every due job, as a service would run them."""
    claim = await still(journal.claim(NORMAL, 100))
    for job in claim.jobs:
        journal.finish(
            Finish(job.id, job.lease, "succeeded", 1, None, time.time(), "0", None)
        )


def missed(metrics: CollectorRegistry, reason: str, name: str = "ticker") -> float:
    """``bulkhead_schedule_missed_total{schedule=name, reason=reason}``."""
    value = metrics.get_sample_value(
        "bulkhead_schedule_missed_total", {"schedule": name, "reason": reason}
    )
    return value or 0.0


def enqueued(metrics: CollectorRegistry, name: str = "ticker") -> float:
    """``bulkhead_schedule_runs_total{schedule=name}``."""
    value = metrics.get_sample_value("bulkhead_schedule_runs_total", {"schedule": name})
    return value or 0.0


# --------------------------------------------------------- fire times, DST


def fires(schedule: Schedule, after: float, n: int) -> list[float]:
    it = schedule.fire_times(after)
    return [next(it) for _ in range(n)]


def berlin(cron: str) -> Schedule:
    return Schedule("s", "t", NORMAL, cron, timezone="Europe/Berlin")


def test_a_time_in_the_skipped_spring_hour_runs_once_right_after_the_gap() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
    daily = berlin("30 2 * * *")
    assert fires(daily, utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST: right after the gap, once
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    # Hourly expressions follow the wall clock: one run per real hour.
    hourly = berlin("0 * * * *")
    assert fires(hourly, utc(2026, 3, 28, 23, 30), 3) == [
        utc(2026, 3, 29, 0),  # 01:00 CET
        utc(2026, 3, 29, 1),  # 03:00 CEST (there is no 02:00)
        utc(2026, 3, 29, 2),  # 04:00 CEST
    ]


def test_a_time_in_the_repeated_autumn_hour_runs_once_at_its_first_occurrence() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    daily = berlin("30 2 * * *")
    assert fires(daily, utc(2026, 10, 23, 12), 3) == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first 02:30; not at 01:30 UTC
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]
    # An expression with * in the hour runs in both occurrences of 02:xx.
    half_hourly = berlin("*/30 * * * *")
    assert fires(half_hourly, utc(2026, 10, 24, 23, 45), 5) == [
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 1, 0),  # 02:00 CET
        utc(2026, 10, 25, 1, 30),  # 02:30 CET
        utc(2026, 10, 25, 2, 0),  # 03:00 CET
    ]


def test_run_keys_name_the_schedule_and_the_fire_time_in_utc() -> None:
    daily = berlin("30 2 * * *")
    fire = utc(2026, 3, 29, 1)
    assert daily.key(fire) == "schedule:s:2026-03-29T01:00:00Z"
    assert daily.key(fire).startswith(daily.key_prefix)
    # Fixed width: keys sort as their fire times do.
    keys = [daily.key(f) for f in fires(daily, utc(2026, 1, 1), 400)]
    assert keys == sorted(keys)


# ---------------------------------------------------------- plan (pure)


def every5(catch_up: Any = "skip", window: float | None = None) -> Schedule:
    return Schedule(
        "s", "t", NORMAL, "*/5 * * * *", catch_up=catch_up, catch_up_window=window
    )


def test_plan_never_started_runs_nothing_and_waits_for_the_next_fire_time() -> None:
    assert every5().plan(None, START + 10) == Plan((), 0, START + 300)
    # A clock stepped back behind the last fire time: nothing new is due.
    assert every5().plan(START + 600, START + 10) == Plan((), 0, START + 900)


def test_plan_runs_a_fire_time_up_to_on_time_seconds_late() -> None:
    assert every5().plan(START, START + 300) == Plan((START + 300,), 0, START + 600)
    late = START + 300 + ON_TIME
    assert every5().plan(START, late) == Plan((START + 300,), 0, START + 600)
    assert every5().plan(START, late + 1) == Plan((), 1, START + 600)


@pytest.mark.parametrize(
    ("catch_up", "window", "runs", "missed"),
    [
        ("skip", None, (), 12),
        ("latest", None, (START + 3600,), 11),
        ("latest", 100.0, (), 12),  # the latest is 120 s old
        ("all", 1200.0, (START + 2700, START + 3000, START + 3300, START + 3600), 8),
    ],
)
def test_plan_after_downtime_follows_the_catch_up_policy(
    catch_up: Any, window: float | None, runs: tuple[float, ...], missed: int
) -> None:
    # Last run at START; back at START + 1 h 2 min: 300, 600, ..., 3600 missed.
    plan = every5(catch_up, window).plan(START, START + 3720)
    assert plan == Plan(runs, missed, START + 3900)


def test_plan_with_a_fire_time_on_time_runs_no_older_one_under_latest() -> None:
    plan = every5("latest").plan(START, START + 3610)
    assert plan == Plan((START + 3600,), 11, START + 3900)


def test_plan_looks_back_at_most_lookback() -> None:
    daily = Schedule("s", "t", NORMAL, "0 0 * * *")
    plan = daily.plan(START - 400 * 86_400, START + 3600)
    assert plan.missed == LOOKBACK // 86_400
    assert plan.next == START + 86_400


# ------------------------------------------------------------- validation


def test_schedules_are_checked_when_registered() -> None:
    registry = JobRegistry()

    @registry.job(priority="normal")
    async def resize(url: str, width: int = 640) -> None:
        pass

    def bad(**kwargs: Any) -> Callable[[], Any]:
        arguments = {"args": {"url": "u"}, **kwargs}
        return lambda: registry.schedule(
            arguments.pop("name", "s"),
            arguments.pop("type", "resize"),
            arguments.pop("cron", "*/5 * * * *"),
            **arguments,
        )

    cases: list[tuple[type[Exception], str, Callable[[], Any]]] = [
        (
            ValueError,
            "schedule 's': bad cron expression '61 * * * *': Bad minute; give five "
            "fields, e.g. '*/5 * * * *'",
            bad(cron="61 * * * *"),
        ),
        (
            ValueError,
            "schedule 's': bad cron expression '* * *': Wrong number of fields; "
            "give five fields, e.g. '*/5 * * * *'",
            bad(cron="* * *"),
        ),
        (
            ValueError,
            "schedule 's': unknown time zone 'Mars/Olympus'; give an IANA name such "
            "as 'Europe/Berlin' or 'UTC'",
            bad(timezone="Mars/Olympus"),
        ),
        (
            ValueError,
            "schedule 's': unknown time zone '../etc/passwd'; give an IANA name "
            "such as 'Europe/Berlin' or 'UTC'",
            bad(timezone="../etc/passwd"),
        ),
        (
            ValueError,
            "schedule 's': arguments do not fit job type 'resize': args.width: "
            "Input should be a valid integer",
            bad(args={"url": "u", "width": "wide"}),
        ),
        (
            ValueError,
            "schedule 's': arguments do not fit job type 'resize': args.height: "
            "Extra inputs are not permitted",
            bad(args={"url": "u", "height": 3}),
        ),
        (
            ValueError,
            "schedule 's': job type 'resize' has required arguments (url): give "
            "them with args=",
            bad(args=None),
        ),
        (
            ValueError,
            "schedule 's': unknown job type 'shrink'; registered: resize",
            bad(type="shrink"),
        ),
        (
            ValueError,
            "a schedule name must be an identifier, got 'every:5'",
            bad(name="every:5"),
        ),
        (
            ValueError,
            "schedule 's': overlap must be one of 'skip', 'allow', got 'queue'",
            bad(overlap="queue"),
        ),
        (
            ValueError,
            "schedule 's': catch_up must be one of 'skip', 'latest', 'all', got 'some'",
            bad(catch_up="some"),
        ),
        (
            ValueError,
            "schedule 's': catch_up='all' needs a catch_up_window (seconds of "
            "missed runs to run)",
            bad(catch_up="all"),
        ),
        (
            ValueError,
            "schedule 's': catch_up='skip' runs no missed run; drop "
            "catch_up_window or choose catch_up='latest' or 'all'",
            bad(catch_up_window=60),
        ),
        (
            ValueError,
            "schedule 's': catch_up_window must be from 0 to 2678400 seconds "
            "(31 days), got 0",
            bad(catch_up="latest", catch_up_window=0),
        ),
        (
            TypeError,
            "schedule 's': catch_up_window must be seconds, got True",
            bad(catch_up="latest", catch_up_window=True),
        ),
        (
            TypeError,
            "schedule 's': args must be JSON (str, numbers, bools, None, lists "
            "and dicts): Object of type bytes is not JSON serializable",
            bad(args={"url": b"u"}),
        ),
    ]
    for error, message, call in cases:
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value) == message
    assert not registry.schedules  # nothing half-registered

    ok = registry.schedule("s", "resize", "0 3 * * *", args={"url": "u"})
    assert registry.schedules == (ok,)
    assert (ok.job_type, ok.priority, json.loads(ok.args)) == (
        "resize",
        2,
        {"url": "u"},
    )
    with pytest.raises(ValueError, match=r"^schedule 's' is already registered$"):
        registry.schedule("s", "resize", "0 3 * * *", args={"url": "u"})
    # Kept as a submission's arguments are: a whole number as an int.
    wide = registry.schedule(
        "w", "resize", "0 3 * * *", args={"url": "u", "width": 800.0}
    )
    assert wide.args == '{"url": "u", "width": 800}'


# ---------------------------------------------- the scheduler on a journal


def scheduler_for(
    registry: JobRegistry,
    journal: Journal,
    clock: Callable[[], float],
    metrics: CollectorRegistry | None = None,
) -> Scheduler:
    return Scheduler(
        registry.schedules, journal, metrics or CollectorRegistry(), clock=clock
    )


async def test_each_fire_time_is_enqueued_once_with_its_key_and_run_at(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = make_registry(overlap="allow", args={"n": 7})
    async with running(SQLiteJournal(":memory:")) as journal:
        scheduler = scheduler_for(registry, journal, virtual_wall())
        assert repr(scheduler) == "<bulkhead.service.Scheduler ticker>"
        async with scheduling(scheduler):
            for k in (1, 2, 3):
                await advance(START + 300 * k, scheduler)
        records = await jobs(journal)
    assert [
        (r.type, r.priority, json.loads(r.args), r.state, r.run_at, r.accepted_at)
        for r in records
    ] == [
        ("tick", NORMAL, {"n": 7}, "queued", fire, pytest.approx(fire))  # type: ignore[comparison-overlap]
        for fire in (START + 300, START + 600, START + 900)
    ]
    assert [r.idempotency_key for r in records] == [
        "schedule:ticker:2025-03-03T00:05:00Z",
        "schedule:ticker:2025-03-03T00:10:00Z",
        "schedule:ticker:2025-03-03T00:15:00Z",
    ]


async def test_overlap_skip_passes_a_fire_time_while_the_last_run_is_unfinished(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = make_registry()  # overlap="skip" by default
    async with running(SQLiteJournal(":memory:")) as journal:
        metrics = CollectorRegistry()
        scheduler = scheduler_for(registry, journal, virtual_wall(), metrics)
        async with scheduling(scheduler):
            await advance(START + 300, scheduler)
            (first,) = (await still(journal.claim(NORMAL, 10))).jobs  # running now
            await advance(START + 600, scheduler)
            assert [r.run_at for r in await jobs(journal)] == [START + 300]
            shown = await view(scheduler)
            assert shown["missed"] == 1
            assert shown["last_job"] == {"id": first.id, "state": "running"}
            assert missed(metrics, "overlap") == 1
            journal.finish(
                Finish(
                    first.id, first.lease, "succeeded", 1, None, time.time(), "0", None
                )
            )
            await advance(START + 900, scheduler)
            shown = await view(scheduler)
        assert [r.run_at for r in await jobs(journal)] == [START + 300, START + 900]
    assert shown["last_run_at"] == datetime.datetime.fromtimestamp(START + 900, UTC)
    assert shown["last_job"]["state"] == "queued"
    assert (missed(metrics, "overlap"), missed(metrics, "downtime")) == (1, 0)
    assert enqueued(metrics) == 2


async def test_overlap_allow_enqueues_beside_an_unfinished_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = make_registry(overlap="allow")
    async with running(SQLiteJournal(":memory:")) as journal:
        scheduler = scheduler_for(registry, journal, virtual_wall())
        async with scheduling(scheduler):
            await advance(START + 300, scheduler)
            await still(journal.claim(NORMAL, 10))
            await advance(START + 600, scheduler)
        records = await jobs(journal)
    assert [(r.run_at, r.state) for r in records] == [
        (START + 300, "running"),
        (START + 600, "queued"),
    ]


@pytest.mark.parametrize(
    ("catch_up", "window", "caught_up", "missed_runs"),
    [
        ("skip", None, [], 11),
        ("latest", None, [3600], 10),
        ("all", 1200.0, [2700, 3000, 3300, 3600], 7),
    ],
)
async def test_a_restart_after_downtime_follows_the_catch_up_policy(
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
    catch_up: Any,
    window: float | None,
    caught_up: list[int],
    missed_runs: int,
) -> None:
    registry = make_registry(catch_up=catch_up, catch_up_window=window)
    path = str(tmp_path / "journal.sqlite3")
    clock = virtual_wall()
    async with running(SQLiteJournal(path)) as journal:
        before = scheduler_for(registry, journal, clock)
        async with scheduling(before):
            await advance(START + 300, before)
        await finish_all(journal)
    # Down from 00:05:01 to 01:02: 00:10 ... 01:00 (11 fire times) pass.
    await trio.sleep(START + 3720 - clock())
    async with running(SQLiteJournal(path)) as journal:
        metrics = CollectorRegistry()
        after = scheduler_for(registry, journal, clock, metrics)
        async with scheduling(after):
            shown = await view(after)
            records = await jobs(journal)
            assert [r.run_at - START for r in records] == [300, *caught_up]
            assert [r.accepted_at - START for r in records[1:]] == [
                pytest.approx(3720)
            ] * len(caught_up)
            assert shown["missed"] == missed_runs
            assert missed(metrics, "downtime") == missed_runs
            assert shown["last_job"]["id"] == records[-1].id
            assert shown["next_run_at"] == datetime.datetime.fromtimestamp(
                START + 3900, UTC
            )
            # And on it goes, on time.
            await finish_all(journal)
            await advance(START + 3900, after)
            assert (await jobs(journal))[-1].run_at == START + 3900


async def test_a_restart_finds_its_unfinished_last_run_and_does_not_overlap_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = make_registry(catch_up="latest")
    clock = virtual_wall()
    async with running(SQLiteJournal(":memory:")) as journal:
        before = scheduler_for(registry, journal, clock)
        async with scheduling(before):
            await advance(START + 300, before)
        await trio.sleep(START + 3720 - clock())  # its run never ran
        after = scheduler_for(registry, journal, clock)
        async with scheduling(after):
            shown = await view(after)
        assert [r.run_at for r in await jobs(journal)] == [START + 300]
    assert shown["missed"] == 11  # 10 for downtime, the latest for overlap
    assert shown["last_job"] == {"id": 1, "state": "queued"}


async def test_two_instances_never_enqueue_the_same_fire_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = make_registry(overlap="allow", catch_up="all", catch_up_window=1200)
    clock = virtual_wall()
    async with running(SQLiteJournal(":memory:")) as journal:
        first = scheduler_for(registry, journal, clock)
        async with scheduling(first):
            await advance(START + 300, first)
        await trio.sleep(START + 3720 - clock())
        # Both come back at once: the same catch-up runs, then the same fire
        # times, from two schedulers sharing one journal.
        metrics = [CollectorRegistry(), CollectorRegistry()]
        a = scheduler_for(registry, journal, clock, metrics[0])
        b = scheduler_for(registry, journal, clock, metrics[1])
        async with scheduling(a, b):
            for k in (13, 14, 15):
                await advance(START + 300 * k, a, b)
            views = [await view(a), await view(b)]
        records = await jobs(journal)
    expected = [300, 2700, 3000, 3300, 3600, 3900, 4200, 4500]
    assert [r.run_at - START for r in records] == expected
    assert len({r.idempotency_key for r in records}) == len(records)
    assert (
        sum(map(enqueued, metrics)) == len(expected) - 1
    )  # each one by exactly one of them
    assert (
        views[0]["last_job"]
        == views[1]["last_job"]
        == {
            "id": records[-1].id,
            "state": "queued",
        }
    )


@pytest.mark.parametrize("failing", ["get", "accept", "last_of"])
async def test_a_journal_that_cannot_write_delays_a_run_and_loses_none(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    failures = 3
    journal = SQLiteJournal(":memory:")
    real = getattr(journal, failing)

    async def flaky(*args: Any) -> Any:
        nonlocal failures
        await trio.lowlevel.checkpoint()
        late = failing != "accept" or args[0][0].run_at > START + 300
        if failures and late:
            failures -= 1
            raise JournalUnavailable("journal :memory:: disk I/O error")
        return await real(*args)

    # No thread may run between the failures, or the autojump clock would
    # jump the test past them: with "allow", no get() comes before accept().
    registry = make_registry(overlap="allow" if failing == "accept" else "skip")
    async with running(journal):
        await journal.accept(
            [NewJob("tick", NORMAL, "{}", START, START, "schedule:ticker:0")]
        )
        await finish_all(journal)
        monkeypatch.setattr(journal, failing, flaky)
        scheduler = scheduler_for(registry, journal, virtual_wall())
        # Past the start's thread first: the clock must not jump over retries.
        started = (lambda: failures < 3) if failing == "last_of" else (lambda: True)
        async with scheduling(scheduler, settle=5, first=started):
            await advance(START + 300, scheduler, settle=5)
            await finish_all(journal)
            await advance(START + 600, scheduler, settle=5)
        records = await jobs(journal)
    # Three failures, a second apart: the run is late, but well on time.
    assert [r.run_at - START for r in records] == [0, 300, 600]
    assert failures == 0


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Journal]:
    """Makes journals on one store: each call a new handle (an instance)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return lambda: PostgresJournal(url)
    if request.param == "memory":
        return lambda: SQLiteJournal(":memory:")
    return lambda: SQLiteJournal(str(tmp_path / "journal.sqlite3"))


async def test_last_of_is_the_latest_due_of_the_jobs_with_those_keys(
    store: Callable[[], Journal],
) -> None:
    async with running(store()) as journal:
        assert await journal.last_of([]) is None
        assert await journal.last_of(["schedule:a:1"]) is None
        answers = await journal.accept(
            [
                NewJob("t", 1, "{}", 0, run_at, key)
                for run_at, key in [
                    (20, "schedule:a:2"),
                    (10, "schedule:a:1"),
                    (30, "schedule:b:3"),
                    (40, None),
                ]
            ]
        )
        last = await journal.last_of(["schedule:a:1", "schedule:a:2", "x"])
        assert last is not None
        assert (last.id, last.run_at) == (answers[0].id, 20)
        only = await journal.last_of(["schedule:a:1"])
        assert only is not None
        assert only.id == answers[1].id


async def test_two_instances_on_postgresql_enqueue_each_missed_run_once(
    postgres_url: str,
) -> None:
    # Both come back at once after downtime and catch up the same fire
    # times: two journals on one database are two instances.
    registry = make_registry(overlap="allow", catch_up="all", catch_up_window=3600)
    (schedule,) = registry.schedules
    metrics = [CollectorRegistry(), CollectorRegistry()]
    async with running(PostgresJournal(postgres_url)) as a_journal:
        await a_journal.accept(
            [
                NewJob(
                    "tick", NORMAL, "{}", START, START + 300, schedule.key(START + 300)
                )
            ]
        )
        async with running(PostgresJournal(postgres_url)) as b_journal:
            a = scheduler_for(registry, a_journal, lambda: START + 3720, metrics[0])
            b = scheduler_for(registry, b_journal, lambda: START + 3720, metrics[1])
            async with scheduling(a, b):
                pass
        records = await a_journal.list(JobFilter(), after=0, limit=100, now=time.time())
    assert [r.run_at - START for r in records] == [300 * k for k in range(1, 13)]
    assert [r.idempotency_key for r in records] == [
        schedule.key(START + 300 * k) for k in range(1, 13)
    ]
    assert sum(map(enqueued, metrics)) == 11


# ------------------------------------------------------- in the service


async def test_the_service_runs_its_schedules_through_its_pools(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = JobRegistry()
    gate = trio.Event()
    calls: list[int] = []

    @registry.job(priority="normal")
    async def tick(n: int) -> int:
        calls.append(n)
        await gate.wait()
        return n

    registry.schedule("ticker", "tick", "* * * * *", args={"n": 5})
    config = ServiceConfig.load({"pools": "normal=2", "journal": ":memory:"}, {})
    service = Service(config, registry)
    clock = service.scheduler.clock = virtual_wall()
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        await spin_until(dealt_with(None, service.scheduler), "no start")
        await trio.sleep(START + 61 - clock())
        await spin_until(lambda: calls == [5], "the first run never started")
        await trio.sleep(START + 121 - clock())  # the first run still runs
        await spin_until(
            lambda: service.scheduler._states[0].missed == 1, "no overlap skip"
        )
        (shown,) = await service.schedules()
        assert (shown["last_job"]["state"], shown["missed"]) == ("running", 1)
        gate.set()
        await spin_until(lambda: not service.running.live, "the first run never ended")
        await trio.sleep(START + 181 - clock())
        await spin_until(lambda: calls == [5, 5], "the third fire time never ran")
        metrics = service.metrics.registry
        assert missed(metrics, "overlap") == 1
        assert enqueued(metrics) == 2
        first = await service.job(1)
        assert (first["state"], first["result"]) == ("succeeded", 5)
        service.stop()


# ----------------------------------------------------- a real server


@pytest.fixture
def schedules_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "server.log",
        ":memory:",
        *server_args("low=1,normal=1"),
        env={"BULKHEAD_TOKEN": TOKEN},
        registry="tests._schedule_jobs:registry",
    )
    try:
        yield server
    finally:
        assert server.stop() == 0


def test_get_schedules_lists_each_schedule_with_its_next_run(
    schedules_server: ServerProcess,
) -> None:
    from ._schedule_jobs import registry

    daily, vacuum = registry.schedules
    before = time.time()
    with httpx.Client(base_url=schedules_server.url, timeout=10) as c:
        assert c.get("/schedules").status_code == 401
        auth = {"authorization": f"Bearer {TOKEN}"}
        response = c.get("/schedules", headers=auth)
        metrics = c.get("/metrics", headers=auth).text
        paths = c.get("/openapi.json", headers=auth).json()["paths"]
    after = time.time()
    assert response.status_code == 200
    listed = response.json()["schedules"]

    def next_runs(schedule: Schedule) -> set[str]:
        return {
            datetime.datetime.fromtimestamp(schedule.next_after(t), UTC)
            .isoformat()
            .replace("+00:00", "Z")
            for t in (before, after)
        }

    assert listed[0].pop("next_run_at") in next_runs(daily)
    assert listed[1].pop("next_run_at") in next_runs(vacuum)
    assert listed == [
        {
            "name": "daily_report",
            "type": "report",
            "priority": 2,
            "args": {"kind": "daily"},
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "overlap": "skip",
            "catch_up": "latest",
            "catch_up_window": None,
            "last_run_at": None,
            "last_job": None,
            "missed": 0,
        },
        {
            "name": "vacuum",
            "type": "vacuum",
            "priority": 1,
            "args": {},
            "cron": "*/5 * * * *",
            "timezone": "UTC",
            "overlap": "allow",
            "catch_up": "all",
            "catch_up_window": 3600.0,
            "last_run_at": None,
            "last_job": None,
            "missed": 0,
        },
    ]
    assert "# TYPE bulkhead_schedule_missed_total counter" in metrics
    assert "/schedules" in paths
