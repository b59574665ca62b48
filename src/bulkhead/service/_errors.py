"""What the service refuses, as domain errors; the HTTP edge maps each to a
status code (``_http/_errors.py``), the core never names one."""

from __future__ import annotations

from collections.abc import Sequence

import attrs


@attrs.frozen
class FieldError:
    """One field of a request that does not fit."""

    field: str
    """Its dotted path, e.g. ``args.x``."""
    message: str
    index: int | None = None
    """The item of a batch it belongs to."""


class ServiceError(Exception):
    """Base of the errors a :class:`~bulkhead.service.Service` raises."""


class SubmissionInvalid(ServiceError):
    """A submission (or an item of a batch) that does not fit: unknown type
    or pool, arguments that do not match the signature, a bad delay."""

    fields: tuple[FieldError, ...]

    def __init__(self, fields: Sequence[FieldError]) -> None:
        self.fields = tuple(fields)
        super().__init__(
            "; ".join(
                (f"jobs[{f.index}].{f.field}" if f.index is not None else f.field)
                + f": {f.message}"
                for f in fields
            )
        )


class BacklogFull(ServiceError):
    """A pool's backlog is at ``BULKHEAD_MAX_BACKLOG``: retry later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ServiceError):
    """The service cannot take work now: draining, or the journal cannot
    write."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class JobNotFound(ServiceError, LookupError):
    """No such job: never accepted, or its result expired."""


class JobFinished(ServiceError):
    """The job has already ended; it cannot be cancelled."""


class OperationNotFound(ServiceError, LookupError):
    """No such operation."""


class OperationFinished(ServiceError):
    """The operation has already ended (done, aborted or failed); it cannot
    be aborted."""
