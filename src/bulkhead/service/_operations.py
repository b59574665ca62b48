"""Operations: requeue, cancel or purge every job a filter matches, as one
journaled, resumable piece of work with an audit entry.

An operation takes one road too: :meth:`Operations.start` checks it and
records it in the journal (``running``, with ``matched`` counted and the
highest job id of that moment as its bound) before the 202; the runner
(:meth:`Operations.run`, one task beside the feeders) carries it out a chunk
at a time (:meth:`~bulkhead.service._journal.Journal.advance_operation`:
``operation_chunk`` ids per transaction, keyed by id, the cursor written
with the chunk), so it is set-based, shows its progress (``done`` of
``matched``), stops between two chunks when aborted, and resumes exactly
where it was after a crash: the journal is the queue of operations as well
as of jobs. Operations run one after the other, oldest first; each chunk is
its own transaction, so submissions and job ends keep committing between
chunks.

What each does:

* ``requeue``: ``failed`` and ``cancelled`` jobs become ``queued``, due now.
  Their ``attempts`` and ``runs`` are reset and their end (``result``,
  ``error``, ``started_at``, ``finished_at``) cleared: a requeued job starts
  afresh, with the whole ``BULKHEAD_MAX_ATTEMPTS`` budget (a job failed for
  running too often would otherwise fail again at once). The audit log keeps
  the trace of the requeue.
* ``cancel``: ``queued`` and ``scheduled`` jobs become ``cancelled`` in the
  journal; running jobs of this instance are cancelled as ``DELETE
  /jobs/{id}`` does (they end ``cancelled`` soon after). A job running on
  another instance (PostgreSQL) is left to run.
* ``purge``: finished jobs (``succeeded``, ``failed``, ``cancelled``) are
  deleted.

Jobs accepted after the operation began are never touched, so it ends.
This module raises domain errors; the HTTP edge maps them to status codes.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, final

import trio

from ._errors import (
    FieldError,
    OperationFinished,
    OperationNotFound,
    SubmissionInvalid,
    Unavailable,
)
from ._journal import (
    ACTS_ON,
    Action,
    JobFilter,
    Journal,
    JournalUnavailable,
    NewOperation,
    OperationRecord,
)
from ._running import Running

log = logging.getLogger("bulkhead.service.operations")

RETRY_AFTER = 1.0
"""Seconds the runner waits before trying a chunk again after the journal
could not write it."""


def check(action: Action, filter: JobFilter, reason: str) -> None:
    """Refuse an operation that cannot mean what it says.

    Raises:
      SubmissionInvalid: for a blank reason, or a ``filter.state`` the
        action never changes (``requeue`` of succeeded jobs, say).
    """
    errors = []
    if not reason.strip():
        errors.append(FieldError("reason", "say why: the audit log keeps it"))
    state = "queued" if filter.state == "scheduled" else filter.state
    acts_on = ACTS_ON[action]
    if state is not None and state not in acts_on:
        takes = ", ".join(
            ("queued, scheduled" if s == "queued" else s) for s in acts_on
        )
        errors.append(
            FieldError(
                "filter.state",
                f"{action} acts on {takes} jobs, not {filter.state}; leave "
                "state out for all of them",
            )
        )
    if errors:
        raise SubmissionInvalid(errors)


def matches(filter: JobFilter, running: Running, last_id: int) -> bool:
    """Whether a job running here is one a ``cancel`` operation with
    ``filter`` and bound ``last_id`` covers."""
    claimed = running.claimed
    return (
        claimed.id <= last_id
        and filter.state in (None, "running")
        and filter.type in (None, claimed.type)
        and filter.priority in (None, claimed.priority)
        and (filter.since is None or claimed.accepted_at >= filter.since)
        and (filter.until is None or claimed.accepted_at < filter.until)
    )


@final
class Operations:
    """Records operations and carries them out (see the module docstring).

    Args:
      journal: the job store, which records the operations too.
      live: the service's jobs running here, by id (``cancel`` cancels them).
      chunk: jobs changed per transaction.
    """

    def __init__(
        self, journal: Journal, *, live: Mapping[int, Running], chunk: int
    ) -> None:
        self._journal = journal
        self._live = live
        self._chunk = chunk
        self._work = trio.Event()

    def __repr__(self) -> str:
        return f"<bulkhead.service.Operations chunk={self._chunk}>"

    async def start(
        self, action: Action, filter: JobFilter, reason: str, who: str
    ) -> OperationRecord:
        """Record an operation (``POST /operations``); the runner carries it
        out. Returns its record once committed.

        Raises:
          SubmissionInvalid: see :func:`check`; nothing is recorded.
          Unavailable: if the journal cannot write; nothing is recorded.
        """
        check(action, filter, reason)
        new = NewOperation(action, filter, reason.strip(), who, time.time())
        try:
            record = await self._journal.start_operation(new)
        except JournalUnavailable as exc:
            raise Unavailable(f"{exc}; nothing was recorded") from None
        log.info(
            "operation %s: %s of %d jobs by %s",
            record.id,
            action,
            record.matched,
            who,
            extra={
                "event": "operation_started",
                "operation": record.id,
                "action": action,
                "matched": record.matched,
                "who": who,
                "reason": record.reason,
            },
        )
        self._work.set()
        return record

    async def get(self, id: int) -> OperationRecord:
        """Operation ``id`` (``GET /operations/{id}``).

        Raises:
          OperationNotFound: if there is none.
          Unavailable: if the journal cannot be read.
        """
        try:
            record = await self._journal.get_operation(id)
        except JournalUnavailable as exc:
            raise Unavailable(str(exc)) from None
        if record is None:
            raise OperationNotFound(f"no operation {id}")
        return record

    async def abort(self, id: int, who: str) -> OperationRecord:
        """Stop operation ``id`` between two chunks (``DELETE
        /operations/{id}``); what it did stays done. Returns its record.

        Raises:
          OperationNotFound: if there is none.
          OperationFinished: if it has already ended.
          Unavailable: if the journal cannot write.
        """
        try:
            before = await self._journal.end_operation(id, "aborted", now=time.time())
        except JournalUnavailable as exc:
            raise Unavailable(str(exc)) from None
        if before is None:
            raise OperationNotFound(f"no operation {id}")
        if before.state != "running":
            raise OperationFinished(f"operation {id} has already ended: {before.state}")
        log.info(
            "operation %s aborted by %s after %d of %d jobs",
            id,
            who,
            before.done,
            before.matched,
            extra={"event": "operation_aborted", "operation": id, "who": who},
        )
        return await self.get(id)

    async def log(self, before: int | None, limit: int) -> Sequence[OperationRecord]:
        """The audit log: up to ``limit`` operations below id ``before``,
        newest first.

        Raises:
          Unavailable: if the journal cannot be read.
        """
        try:
            return await self._journal.list_operations(before=before, limit=limit)
        except JournalUnavailable as exc:
            raise Unavailable(str(exc)) from None

    # -------------------------------------------------------------- runner

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Carry out the running operations, oldest first, those an earlier
        process left unfinished included, then wait for new ones; until
        cancelled (an operation cancelled mid-way resumes at the next start,
        from its last committed chunk)."""
        task_status.started()
        while True:
            self._work = trio.Event()  # before reading: a start() wakes it
            try:
                pending = await self._journal.list_operations(
                    limit=100, state="running"
                )
            except JournalUnavailable:
                await trio.sleep(RETRY_AFTER)
                continue
            for record in reversed(pending):
                await self._carry_out(record)
            if not pending:
                await self._work.wait()

    async def _carry_out(self, record: OperationRecord) -> None:
        id = record.id
        cancelled_here = 0
        current: OperationRecord | None = record
        while current is not None and current.state == "running":
            if current.action == "cancel":
                cancelled_here += self._cancel_running(current)
            try:
                current = await self._journal.advance_operation(
                    id, limit=self._chunk, now=time.time(), also_done=cancelled_here
                )
            except JournalUnavailable as exc:
                log.warning(
                    "operation %s: %s; retrying",
                    id,
                    exc,
                    extra={"event": "operation_retried", "operation": id},
                )
                await trio.sleep(RETRY_AFTER)
                continue
            except Exception as exc:  # a bug: fail this one, go on to the next
                log.error(
                    "operation %s failed",
                    id,
                    exc_info=exc,
                    extra={"event": "operation_failed", "operation": id},
                )
                with contextlib.suppress(JournalUnavailable):
                    await self._journal.end_operation(
                        id,
                        "failed",
                        now=time.time(),
                        error=f"{type(exc).__name__}: {exc}",
                    )
                return
            cancelled_here = 0
        if current is not None and current.state == "done":
            log.info(
                "operation %s done: %s of %d jobs",
                id,
                current.action,
                current.done,
                extra={
                    "event": "operation_done",
                    "operation": id,
                    "matched": current.matched,
                    "done": current.done,
                },
            )

    def _cancel_running(self, record: OperationRecord) -> int:
        count = 0
        for running in list(self._live.values()):
            if running.cancel_requested or not matches(
                record.filter, running, record.last_id
            ):
                continue
            running.cancel_requested = True
            if running.job is not None:
                running.job.cancel()
            count += 1
        return count


def operation_view(record: OperationRecord) -> dict[str, Any]:
    """An operation as ``GET /operations/{id}`` shows it."""
    filter = record.filter
    return {
        "id": record.id,
        "action": record.action,
        "filter": {
            "state": filter.state,
            "type": filter.type,
            "priority": filter.priority,
            "since": _utc(filter.since),
            "until": _utc(filter.until),
        },
        "reason": record.reason,
        "who": record.who,
        "created_at": _utc(record.created_at),
        "state": record.state,
        "matched": record.matched,
        "done": record.done,
        "finished_at": _utc(record.finished_at),
        "error": record.error,
    }


def _utc(seconds: float | None) -> datetime.datetime | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
