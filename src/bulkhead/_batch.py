"""Barrier epochs, the tally of each one, and the failure policy.

Every accepted job belongs to the epoch its pool was in when the job was
accepted. A barrier closes the current epoch of each pool it covers (new
jobs go to the next one) and waits until every job of the closed epochs has
ended, so it never starves under continuous dispatch. Each pool tallies its
jobs per epoch in a :class:`_Batch`; the first covering barrier or finalize
to complete removes those batches and reports them (:func:`report`), so
each job is counted, and its failure raised, once. Epochs are per pool so
that barriers on one pool never split, and pile up, the batches of another.

A pool's :class:`_Epochs` owns its batches and applies its ``on_error``
policy to each failed job: keep it for :exc:`JobsFailed` (``"raise"``, up to
``keep_failures`` per batch, with a note naming the job), record nothing
more (``"record"``), re-raise it to crash the dispatcher (``"cancel"``) or
call the handler. :meth:`Job.mark_handled` takes a kept failure back before
its batch is reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import trio

from ._errors import JobsFailed, add_note
from ._policy import OnError
from ._stats import BatchReport


@attrs.define(eq=False)
class _Batch:
    """The jobs one pool accepted during one barrier epoch, tallied as they end."""

    pending: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    failures: list[tuple[Exception, str]] = attrs.field(factory=list)
    """Only filled under ``on_error="raise"``, up to the dispatcher's
    ``keep_failures``: each failure with the note naming its job, added
    when it is raised; dropped once reported."""
    unkept_failures: int = 0
    """Failures beyond ``keep_failures``: counted, not kept."""
    handled_failures: int = 0
    """Kept failures that :meth:`Job.mark_handled` took back."""
    claimed: bool = False
    """Reported by a barrier or finalize: nothing more to take back."""
    drained_event: trio.Event | None = None
    """Created by the first barrier waiting for the batch (:meth:`drained`)."""

    def drained(self) -> trio.Event:
        """An event set once ``pending`` drops to zero (created on first use)."""
        if self.drained_event is None:
            self.drained_event = trio.Event()
            if not self.pending:
                self.drained_event.set()
        return self.drained_event

    def handled(self, error: BaseException) -> None:
        """Take ``error`` out of the failures to raise (``Job.mark_handled``)."""
        if self.claimed:
            return
        for index, (kept, _) in enumerate(self.failures):
            if kept is error:
                del self.failures[index]
                self.handled_failures += 1
                return

    def job_ended(self) -> None:
        self.pending -= 1
        if not self.pending and self.drained_event is not None:
            self.drained_event.set()


@attrs.define(eq=False)
class _Epochs:
    """One pool's barrier epochs and the batch of each, and its failure policy.

    The pool's hot path reads and opens :attr:`current` inline (inlined, as
    :meth:`open`); everything else goes through these methods.
    """

    on_error: OnError
    keep_failures: int
    """Most failures one batch keeps for JobsFailed; the rest are counted."""
    epoch: int = 0
    """Barrier epoch that newly accepted jobs belong to."""
    current: _Batch | None = None
    """The batch of the current epoch, once it has a job."""
    batches: dict[int, _Batch] = attrs.field(factory=dict)

    def open(self) -> _Batch:
        """The current epoch's batch, created on its first job."""
        batch = self.current
        if batch is None:
            batch = self.current = self.batches[self.epoch] = _Batch()
        return batch

    def close(self) -> int:
        """Start a new barrier epoch; returns the one just closed."""
        self.current = None
        self.epoch += 1
        return self.epoch - 1

    def pending(self, up_to: int) -> list[_Batch]:
        """The batches of epochs ``<= up_to`` that still have running jobs."""
        return [
            batch
            for epoch, batch in self.batches.items()
            if epoch <= up_to and batch.pending
        ]

    def claim(self, up_to: int | None) -> list[_Batch]:
        """Remove and return the batches of epochs ``<= up_to`` (all if None)."""
        if up_to is None:
            self.current = None
        return [
            self.batches.pop(epoch)
            for epoch in list(self.batches)
            if up_to is None or epoch <= up_to
        ]

    def failed(self, job: Any, batch: _Batch, error: Exception) -> None:
        """Apply the policy to ``job``'s failure; "cancel" and a handler may raise."""
        on_error = self.on_error
        if on_error == "raise":
            if len(batch.failures) < self.keep_failures:
                batch.failures.append(
                    (error, f"in bulkhead job #{job.id} ({job.name})")
                )
                job._failure_kept_in = batch
            else:
                batch.unkept_failures += 1
        elif on_error == "cancel":
            raise error
        elif callable(on_error):
            on_error(job, error)


def report(batches: Iterable[_Batch], started: float) -> BatchReport:
    """The :class:`BatchReport` of claimed ``batches``; raises
    :exc:`JobsFailed` with their kept failures, if any."""
    batches = list(batches)
    result = BatchReport(
        jobs=sum(b.succeeded + b.failed + b.cancelled for b in batches),
        succeeded=sum(b.succeeded for b in batches),
        failed=sum(b.failed for b in batches),
        cancelled=sum(b.cancelled for b in batches),
        elapsed=trio.current_time() - started,
    )
    failures = []
    for batch in batches:
        for error, note in batch.failures:
            add_note(error, note)
            failures.append(error)
    for batch in batches:  # reported: the group holds them now, not the batch
        batch.claimed = True
        batch.failures = []
    if failures:
        unkept = sum(b.unkept_failures for b in batches)
        message = f"{len(failures) + unkept} of {result.jobs} jobs failed"
        if unkept:
            message += (
                f"; the first {len(failures)} are in this group, the other "
                f"{unkept} only in their Job handles (keep_failures)"
            )
        handled = sum(b.handled_failures for b in batches)
        if handled:
            message += f" ({handled} more failed and were marked handled)"
        raise JobsFailed(message, failures, result)
    return result
