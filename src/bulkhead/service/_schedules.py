"""Periodic jobs: schedules declared in the registry, enqueued by the service.

A :class:`Schedule` is a value: a job type, its arguments (JSON text, checked
against the type's schema when registered), a cron expression read in a
named time zone, and two policies. Its time logic is pure: :meth:`Schedule.plan`
takes the last fire time already dealt with and the wall-clock time now and
says which fire times to enqueue, how many were missed and when the next one
is, so the tests drive it on any clock without a journal.

The :class:`Scheduler` is the live part, one task per schedule inside the
service's nursery. Design notes:

* **Exactly once, however many instances.** Each fire time becomes one
  :class:`~bulkhead.service._journal.NewJob` whose ``idempotency_key`` is
  ``schedule:<name>:<fire time in UTC, ISO 8601>`` and whose ``run_at`` is
  the fire time. The journal keeps one row per key, so when two instances
  (or a restarted one) enqueue the same fire time, the second is answered
  ``duplicate`` with the first row's id, which it then tracks as the last
  run. No lock and no leader: the unique key is the arbiter.
* **The journal remembers, not this process.** On start each schedule asks
  the journal which of the keys its fire times of the last :data:`LOOKBACK`
  seconds would have exist (:meth:`~bulkhead.service._journal.Journal.last_of`,
  newest first, :data:`KEYS_PER_LOOKUP` keys a probe of the unique index)
  and plans from the latest one found, so missed runs are found after any
  downtime. Probing exact keys needs no ordering of keys, so it works the
  same on every store and collation. A row the journal has pruned
  (``BULKHEAD_KEEP_RESULTS_FOR`` after it finished) is forgotten, and so is
  a run under an earlier cron expression: keep results longer than a
  schedule's period plus the downtime you want caught up.
* **Wake at the next fire time.** A task sleeps on trio's clock until its
  next fire time, waking at most :data:`MAX_SLEEP` seconds apart to read the
  wall clock again (a stepped clock or a suspended machine moves wall time
  without moving trio's). The wall clock is :attr:`Scheduler.clock`, which
  tests replace with one derived from :func:`trio.current_time`, so the
  whole scheduler runs on trio's virtual clock.
* **Late is missed.** A fire time found more than :data:`ON_TIME` seconds
  after it passed (downtime, a stalled loop, a stepped clock) was missed:
  the catch-up policy says whether it still runs; the others are counted in
  ``bulkhead_schedule_missed_total{schedule, reason="downtime"}``. A fire
  time not enqueued because the last run is unfinished (``overlap="skip"``)
  counts with ``reason="overlap"``.

Why cronsim (``cronsim`` on PyPI, by the author of Healthchecks): it is small
(one module, no dependencies, typed), released regularly, and built to match
Debian's cron, DST quirks included, on :mod:`zoneinfo` time zones; croniter,
the other common choice, is far larger and did DST arithmetic on timestamps
for years, and its maintenance changed hands after it was declared
unmaintained. cronsim iterates forward only, which is all a scheduler needs.

DST (cronsim follows Debian's cron): a fire time inside the hour skipped in
spring runs once, right after the gap (``30 2 * * *`` in Europe/Berlin runs at
03:00 CEST on the spring-forward day); a fire time inside the hour repeated in
autumn runs once, at its first occurrence (02:30 CEST, not again at 02:30
CET). Expressions that fire every hour (``*`` in the hour field) follow the
wall clock through both.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import time
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, final

import attrs
import cronsim
import trio
from prometheus_client import CollectorRegistry, Counter

from ._journal import TERMINAL, JobRecord, Journal, JournalUnavailable, NewJob

log = logging.getLogger("bulkhead.service.schedules")

SCHEDULE_KEYS = "schedule:"
"""The prefix of the idempotency keys of periodic jobs' runs: clients
may not use it."""

Overlap = Literal["skip", "allow"]
CatchUp = Literal["skip", "latest", "all"]
OVERLAP: tuple[Overlap, ...] = ("skip", "allow")
CATCH_UP: tuple[CatchUp, ...] = ("skip", "latest", "all")
ON_TIME = 60.0
"""Seconds after its fire time that a run still counts as on time."""
LOOKBACK = 31 * 86_400.0
"""Seconds of missed fire times a start looks back over, at most (the
longest ``catch_up_window`` too): a minutely schedule down for a month is
44,640 fire times to count."""
KEYS_PER_LOOKUP = 500
"""Keys one :meth:`Journal.last_of` call probes, at most."""
MAX_SLEEP = 60.0
"""Longest sleep between two looks at the wall clock."""
RETRY = 1.0
"""Seconds before a schedule tries again when the journal cannot write."""
_EPSILON = 1e-3


def _utc_text(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # cron times are whole minutes


def _check_name(instance: Schedule, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"a schedule name must be an identifier, got {value!r}")


def _check_cron(instance: Schedule, attribute: Any, value: str) -> None:
    try:
        cronsim.CronSim(value, datetime.datetime.now(datetime.timezone.utc))
    except cronsim.CronSimError as exc:
        raise ValueError(
            f"schedule {instance.name!r}: bad cron expression {value!r}: {exc}; "
            "give five fields, e.g. '*/5 * * * *'"
        ) from None


def _check_zone(instance: Schedule, attribute: Any, value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"schedule {instance.name!r}: unknown time zone {value!r}; give an "
            "IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _check_policy(
    choices: Sequence[str],
) -> Callable[[Schedule, Any, str], None]:
    def check(instance: Schedule, attribute: Any, value: str) -> None:
        if value not in choices:
            raise ValueError(
                f"schedule {instance.name!r}: {attribute.name} must be one of "
                f"{', '.join(map(repr, choices))}, got {value!r}"
            )

    return check


def _check_window(instance: Schedule, attribute: Any, value: float | None) -> None:
    if value is None:
        if instance.catch_up == "all":
            raise ValueError(
                f"schedule {instance.name!r}: catch_up='all' needs a "
                "catch_up_window (seconds of missed runs to run)"
            )
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"schedule {instance.name!r}: catch_up_window must be seconds, "
            f"got {value!r}"
        )
    if instance.catch_up == "skip":
        raise ValueError(
            f"schedule {instance.name!r}: catch_up='skip' runs no missed run; "
            "drop catch_up_window or choose catch_up='latest' or 'all'"
        )
    if not 0 < value <= LOOKBACK:
        raise ValueError(
            f"schedule {instance.name!r}: catch_up_window must be from 0 to "
            f"{LOOKBACK:.0f} seconds (31 days), got {value!r}"
        )


@final
@attrs.frozen
class Plan:
    """What a schedule does at one look at the clock (:meth:`Schedule.plan`)."""

    runs: tuple[float, ...]
    """Fire times to enqueue now (Unix seconds), oldest first."""
    missed: int
    """Fire times passed that will not run."""
    next: float
    """The first fire time after now."""


@final
@attrs.frozen
class Schedule:
    """A periodic job; built by :meth:`JobRegistry.schedule`, which checks
    the job type and arguments. Field validators check the rest."""

    name: str = attrs.field(validator=_check_name)
    """Its name, unique in its registry; part of each run's idempotency key."""
    job_type: str
    """The job type it enqueues."""
    priority: int
    """The pool its runs go to (the job type's)."""
    cron: str = attrs.field(validator=_check_cron)
    """Five-field cron expression, read in :attr:`timezone`."""
    args: str = "{}"
    """The runs' arguments, as JSON text."""
    timezone: str = attrs.field(default="UTC", validator=_check_zone)
    """IANA time zone the cron expression is read in."""
    overlap: Overlap = attrs.field(default="skip", validator=_check_policy(OVERLAP))
    """``skip``: no new run while the last one is unfinished; ``allow``."""
    catch_up: CatchUp = attrs.field(default="skip", validator=_check_policy(CATCH_UP))
    """Missed runs: ``skip`` them, run the ``latest`` once, or ``all``."""
    catch_up_window: float | None = attrs.field(default=None, validator=_check_window)
    """Seconds: only missed runs this recent are run (required for ``all``;
    for ``latest``, ``None`` means however old)."""

    @property
    def key_prefix(self) -> str:
        """What every run's idempotency key starts with."""
        return f"{SCHEDULE_KEYS}{self.name}:"

    def key(self, fire_time: float) -> str:
        """The idempotency key of the run at ``fire_time``."""
        return self.key_prefix + _utc_text(fire_time)

    def fire_times(self, after: float) -> Iterator[float]:
        """Fire times strictly after ``after``, as Unix seconds, for ever."""
        zone = zoneinfo.ZoneInfo(self.timezone)
        start = datetime.datetime.fromtimestamp(after, zone)
        for moment in cronsim.CronSim(self.cron, start):
            yield moment.timestamp()

    def recent(self, now: float) -> list[float]:
        """Fire times of the last :data:`LOOKBACK` seconds, oldest first, and
        those :data:`ON_TIME` seconds ahead (another instance's clock may be
        a little ahead of ours): where a last run may be."""
        fires: list[float] = []
        for fire in self.fire_times(now - LOOKBACK):
            if fire > now + ON_TIME:
                return fires
            fires.append(fire)
        raise AssertionError("cron fire times never end")  # pragma: no cover

    def next_after(self, moment: float) -> float:
        """The first fire time after ``moment``."""
        return next(self.fire_times(moment))

    def plan(self, last: float | None, now: float) -> Plan:
        """Which fire times in (``last``, ``now``] to enqueue now.

        ``last`` is the latest fire time already dealt with (``None``: none
        ever, so nothing is due). Fire times at most :data:`ON_TIME` seconds
        old run; older ones were missed, and :attr:`catch_up` picks which of
        them run: none, the latest (if within :attr:`catch_up_window`), or
        every one within the window. Looks back :data:`LOOKBACK` at most.
        """
        if last is None or last >= now:
            return Plan((), 0, self.next_after(now if last is None else last))
        window = LOOKBACK if self.catch_up_window is None else self.catch_up_window
        late: collections.deque[float] = collections.deque(
            maxlen=1 if self.catch_up == "latest" else None
        )
        on_time: list[float] = []
        due = 0
        for fire in self.fire_times(max(last, now - LOOKBACK)):
            if fire > now:
                break
            due += 1
            if now - fire <= ON_TIME:
                on_time.append(fire)
            elif self.catch_up != "skip" and now - fire <= window:
                late.append(fire)
        if self.catch_up == "latest" and on_time:
            late.clear()
        runs = (*late, *on_time)
        return Plan(runs, due - len(runs), fire)


@final
@attrs.define(eq=False)
class _State:
    """What the scheduler knows of one schedule."""

    schedule: Schedule
    horizon: float | None = None
    """The latest time up to which fire times were dealt with (enqueued,
    skipped or missed); ``None`` until its start was."""
    next_run_at: float | None = None
    last_run_at: float | None = None
    """The fire time of the last run enqueued (by any instance)."""
    last_id: int | None = None
    missed: int = 0
    """Runs missed since this process started."""


@final
class Scheduler:
    """Enqueues each schedule's runs into the journal (see the module
    docstring); started by the service in its nursery.

    Args:
      schedules: what to run.
      journal: where runs are enqueued, shared by every instance.
      registry: the Prometheus registry its counters go in.
      clock: the wall clock, in Unix seconds.
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        journal: Journal,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        """The wall clock (Unix seconds); tests put a virtual one here."""
        self._journal = journal
        self._states = [_State(s) for s in schedules]
        self._missed = Counter(
            "bulkhead_schedule_missed",
            "Fire times of a schedule that did not run: reason is downtime "
            "(found late and not caught up) or overlap (the last run was "
            "unfinished)",
            ["schedule", "reason"],
            registry=registry,
        )
        self._enqueued = Counter(
            "bulkhead_schedule_runs",
            "Runs of a schedule this instance enqueued (duplicates not counted)",
            ["schedule"],
            registry=registry,
        )

    def __repr__(self) -> str:
        names = ", ".join(s.schedule.name for s in self._states) or "none"
        return f"<bulkhead.service.Scheduler {names}>"

    async def run(self) -> None:
        """Run every schedule until cancelled (the service's shutdown).

        Cancellation leaves nothing half done: a run is enqueued (committed)
        or not.
        """
        async with trio.open_nursery() as nursery:
            for state in self._states:
                name = f"bulkhead schedule {state.schedule.name}"
                nursery.start_soon(self._run_one, state, name=name)

    async def _run_one(self, state: _State) -> None:
        schedule = state.schedule
        # A month of a minutely schedule is 44,640 fire times: not on the loop.
        recent = await trio.to_thread.run_sync(schedule.recent, self.clock())
        while True:
            try:
                record = await self._last_run(schedule, recent)
                break
            except JournalUnavailable as exc:
                self._journal_failed(schedule, exc)
                await trio.sleep(RETRY)
        horizon = None  # the latest fire time dealt with
        if record is not None:
            horizon = state.last_run_at = record.run_at
            state.last_id = record.id
        now = self.clock()
        # A long downtime is many fire times to count: not on the event loop.
        plan = await trio.to_thread.run_sync(schedule.plan, horizon, now)
        while True:
            state.next_run_at = plan.next
            try:
                await self._apply(state, plan, now)
            except JournalUnavailable as exc:
                self._journal_failed(schedule, exc)
                await trio.sleep(RETRY)  # then the same fire times, maybe late
                now = self.clock()
            else:
                horizon = state.horizon = max(now, horizon or now)
                await self._sleep_until(plan.next)
                now = max(self.clock(), plan.next)
            plan = schedule.plan(horizon, now)

    async def _last_run(
        self, schedule: Schedule, recent: Sequence[float]
    ) -> JobRecord | None:
        """The schedule's last run still in the journal, looked for among
        the keys of its ``recent`` fire times, newest first."""
        for end in range(len(recent), 0, -KEYS_PER_LOOKUP):
            chunk = recent[max(0, end - KEYS_PER_LOOKUP) : end]
            record = await self._journal.last_of([schedule.key(f) for f in chunk])
            if record is not None:
                return record
        return None

    def _journal_failed(self, schedule: Schedule, exc: JournalUnavailable) -> None:
        log.warning(
            "schedule %s: %s; trying again",
            schedule.name,
            exc,
            extra={"event": "schedule_retry", "schedule": schedule.name},
        )

    async def _sleep_until(self, moment: float) -> None:
        # Not an Event: what is awaited is the wall clock, read again at
        # least every MAX_SLEEP seconds (it may be stepped or suspended).
        while (delay := moment - self.clock()) > _EPSILON:  # noqa: ASYNC110
            await trio.sleep(min(delay, MAX_SLEEP))

    async def _apply(self, state: _State, plan: Plan, now: float) -> None:
        """Enqueue ``plan``'s runs (unless the last one is unfinished and
        overlap is ``skip``); count what it leaves out. All or nothing: on
        :exc:`JournalUnavailable` nothing was enqueued or counted."""
        schedule = state.schedule
        runs, unfinished = plan.runs, None
        if runs and schedule.overlap == "skip" and state.last_id is not None:
            last = await self._journal.get(state.last_id)
            if last is not None and last.state not in TERMINAL:
                runs, unfinished = (), last.id
        if runs:
            answers = await self._journal.accept(
                [
                    NewJob(
                        schedule.job_type,
                        schedule.priority,
                        schedule.args,
                        now,
                        fire,
                        schedule.key(fire),
                    )
                    for fire in runs
                ]
            )
            state.last_run_at, state.last_id = runs[-1], answers[-1].id
            fresh = sum(not a.duplicate for a in answers)
            self._enqueued.labels(schedule.name).inc(fresh)
            log.info(
                "schedule %s enqueued job %s",
                schedule.name,
                answers[-1].id,
                extra={
                    "event": "schedule_enqueued",
                    "schedule": schedule.name,
                    "jobs": [a.id for a in answers],
                    "duplicates": len(answers) - fresh,
                },
            )
        self._miss(state, plan.missed, "downtime")
        self._miss(state, len(plan.runs) - len(runs), "overlap", last_job=unfinished)

    def _miss(self, state: _State, n: int, reason: str, **extra: Any) -> None:
        if not n:
            return
        state.missed += n
        self._missed.labels(state.schedule.name, reason).inc(n)
        log.warning(
            "schedule %s missed %d runs (%s)",
            state.schedule.name,
            n,
            reason,
            extra={
                "event": "schedule_missed",
                "schedule": state.schedule.name,
                "missed": n,
                "reason": reason,
                **extra,
            },
        )

    async def view(self) -> list[dict[str, Any]]:
        """Every schedule as ``GET /schedules`` shows it.

        Raises:
          JournalUnavailable: if the last runs' states cannot be read.
        """
        now = self.clock()
        views = []
        for state in self._states:
            schedule = state.schedule
            last_job = None
            if state.last_id is not None:
                record = await self._journal.get(state.last_id)
                job_state: str = "unknown" if record is None else record.state
                if job_state == "queued" and record and record.run_at > now:
                    job_state = "scheduled"
                last_job = {"id": state.last_id, "state": job_state}
            next_run_at = state.next_run_at
            if next_run_at is None:
                next_run_at = schedule.next_after(now)
            views.append(
                {
                    "name": schedule.name,
                    "type": schedule.job_type,
                    "priority": schedule.priority,
                    "args": json.loads(schedule.args),
                    "cron": schedule.cron,
                    "timezone": schedule.timezone,
                    "overlap": schedule.overlap,
                    "catch_up": schedule.catch_up,
                    "catch_up_window": schedule.catch_up_window,
                    "next_run_at": _moment(next_run_at),
                    "last_run_at": _moment(state.last_run_at),
                    "last_job": last_job,
                    "missed": state.missed,
                }
            )
        return views


def _moment(seconds: float | None) -> datetime.datetime | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
