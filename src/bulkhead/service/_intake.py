"""Submissions: validated, checked against the backlog limit, and written
to the journal in one transaction, all or nothing (the 202 is sent once the
commit is done)."""

from __future__ import annotations

import collections
import datetime
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, final

import attrs

from ._config import ServiceConfig
from ._errors import BacklogFull, FieldError, SubmissionInvalid, Unavailable
from ._journal import Accepted, Journal, JournalUnavailable, NewJob
from ._registry import (
    ArgumentsInvalid,
    JobRegistry,
    canonical_json,
    resolve_priority,
)
from ._running import DrainRate
from ._schedules import SCHEDULE_KEYS
from ._views import pool_name


@final
@attrs.frozen
class Submission:
    """One job a client asks for, before validation."""

    type: str
    args: Mapping[str, Any] = attrs.field(factory=dict)
    priority: str | int | None = None
    idempotency_key: str | None = None
    delay: float | None = None
    """Seconds from now, >= 0."""
    run_at: datetime.datetime | None = None
    """A time with its offset."""


@final
@attrs.define(eq=False)
class Intake:
    """Turns submissions into journal rows (see the module docstring)."""

    config: ServiceConfig
    registry: JobRegistry
    priorities: frozenset[int]
    journal: Journal
    drain_rate: DrainRate
    """The pools' recent ends, for ``Retry-After``."""
    accepted: int = 0
    """Jobs accepted since start."""
    refused: int = 0
    """Submissions refused for a full backlog since start."""

    async def submit(
        self, submissions: Sequence[Submission], *, batch: bool = False
    ) -> list[Accepted]:
        """Validate and record ``submissions``, all or nothing, in one
        transaction; return their ids in order once committed. With
        ``batch``, errors name the index of their item.

        Raises:
          SubmissionInvalid: naming each item and field that does not fit;
            nothing is recorded.
          BacklogFull: if a pool's backlog would pass ``max_backlog``.
          Unavailable: if the journal cannot write.
        """
        now = time.time()
        jobs = self._validate(submissions, now, batch)
        await self._check_backlog(jobs, now)
        try:
            answers = await self.journal.accept(jobs)
        except JournalUnavailable as exc:
            raise Unavailable(f"{exc}; nothing was recorded") from None
        self.accepted += sum(not a.duplicate for a in answers)
        return answers

    def _validate(
        self, submissions: Sequence[Submission], now: float, batch: bool
    ) -> list[NewJob]:
        jobs, errors = [], []
        for index, submission in enumerate(submissions):
            try:
                jobs.append(self._new_job(submission, now))
            except SubmissionInvalid as exc:
                errors += [
                    attrs.evolve(f, index=index if batch else None) for f in exc.fields
                ]
        if errors:
            raise SubmissionInvalid(errors)
        return jobs

    def _new_job(self, submission: Submission, now: float) -> NewJob:
        try:
            job_type = self.registry[submission.type]
        except KeyError as exc:
            raise SubmissionInvalid([FieldError("type", exc.args[0])]) from None
        errors = []
        priority = job_type.priority
        if submission.priority is not None:
            try:
                priority = self._priority(submission.priority)
            except ValueError as exc:
                errors.append(FieldError("priority", str(exc)))
        args = ""
        try:
            args = canonical_json(submission.args)
            job_type.validate_json(args)
        except ArgumentsInvalid as exc:
            errors += [FieldError(field, message) for field, message in exc.errors]
        run_at = now
        if submission.delay is not None and submission.run_at is not None:
            errors.append(FieldError("delay", "give delay or run_at, not both"))
        elif submission.delay is not None:
            run_at = now + submission.delay
        elif submission.run_at is not None:
            run_at = max(now, submission.run_at.timestamp())
        key = submission.idempotency_key
        if key is not None and key.startswith(SCHEDULE_KEYS):
            # A client's key there could take a periodic job's fire time.
            errors.append(
                FieldError(
                    "idempotency_key",
                    f"keys starting with {SCHEDULE_KEYS!r} are the schedules'; "
                    "choose another",
                )
            )
        if errors:
            raise SubmissionInvalid(errors)
        return NewJob(
            job_type.name,
            priority,
            args,
            now,
            run_at,
            submission.idempotency_key,
        )

    def _priority(self, priority: str | int) -> int:
        number = resolve_priority(priority)
        if number not in self.priorities:
            names = ", ".join(map(pool_name, sorted(self.priorities)))
            raise ValueError(f"no pool {priority!r} is configured; pools: {names}")
        return number

    async def _check_backlog(self, jobs: Sequence[NewJob], now: float) -> None:
        adding = collections.Counter(job.priority for job in jobs)
        counts = await self.journal.counts()
        for priority, n in adding.items():
            backlog = counts.get(priority, {}).get("queued", 0)
            if backlog + n <= self.config.max_backlog:
                continue
            self.refused += len(jobs)
            rate = self.drain_rate.per_second(priority, now)
            excess = backlog + n - self.config.max_backlog
            wait = 60 if rate == 0 else math.ceil(excess / rate)
            raise BacklogFull(
                f"pool {pool_name(priority)!r} has {backlog} jobs waiting, its "
                f"limit is {self.config.max_backlog} (BULKHEAD_MAX_BACKLOG); "
                "retry later",
                retry_after=min(max(wait, 1), 3600),
            )
