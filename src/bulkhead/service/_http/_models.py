"""The bodies the HTTP API reads and writes, as pydantic models: they
validate requests and generate the OpenAPI schema from the same source."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import pydantic
from fastapi import Path

from .._intake import Submission


def _priority(value: object) -> object:
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():  # JSON Schema's integer
        return int(value)
    raise ValueError("give low, normal, high, urgent or a pool number")


def _number(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("give a number of seconds")
    return value


def _text(value: object) -> object:
    if value is not None and not isinstance(value, str):
        raise ValueError("give an RFC 3339 time, e.g. 2030-01-01T09:00:00Z")
    return value


def _aware(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is None:
        raise ValueError("give an offset, e.g. 2030-01-01T09:00:00Z or +02:00")
    return value


JobId = Annotated[
    int, Path(ge=1, le=2**63 - 1, description="The id ``POST /jobs`` answered.")
]
"""A job id: positive 64-bit integers."""

State = Literal["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]


class JobSubmission(pydantic.BaseModel):
    """The body of ``POST /jobs``, and one item of ``POST /jobs/batch``."""

    model_config = pydantic.ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        allow_inf_nan=False,
        # The service refuses both at once (a null is as good as absent);
        # the schema says so.
        json_schema_extra={
            "not": {
                "required": ["delay", "run_at"],
                "properties": {
                    "delay": {"not": {"type": "null"}},
                    "run_at": {"not": {"type": "null"}},
                },
            }
        },
    )

    type: str = pydantic.Field(min_length=1, max_length=200)
    """A registered job type (see ``GET /job-types``)."""
    priority: Annotated[int | str | None, pydantic.BeforeValidator(_priority)] = None
    """``low``, ``normal``, ``high``, ``urgent`` or a pool number; default:
    the job type's pool."""
    args: dict[str, Any] = pydantic.Field(default_factory=dict)
    """The job function's arguments by name."""
    idempotency_key: str | None = pydantic.Field(
        # No NUL: PostgreSQL's text cannot hold one.
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]*$",
    )
    """A second submission with the same key returns the first job's id."""
    delay: Annotated[float | None, pydantic.BeforeValidator(_number)] = pydantic.Field(
        default=None, ge=0, le=10 * 365 * 86400
    )
    """Seconds from now before the job is due (it is ``scheduled`` till
    then)."""
    run_at: Annotated[
        datetime.datetime | None,
        pydantic.BeforeValidator(_text),
        pydantic.AfterValidator(lambda v: v and _aware(v)),
    ] = None
    """When the job is due, RFC 3339 with an offset; a time past means
    now."""

    def submission(self) -> Submission:
        """The service's view of this body."""
        return Submission(
            self.type,
            self.args,
            self.priority,
            self.idempotency_key,
            self.delay,
            self.run_at,
        )


class BatchSubmission(pydantic.BaseModel):
    """The body of ``POST /jobs/batch``: all jobs are accepted, or none."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    jobs: list[dict[str, Any]] = pydantic.Field(min_length=1)
    """Up to ``BULKHEAD_MAX_BATCH`` bodies of ``POST /jobs``."""


class JobAccepted(pydantic.BaseModel):
    """The answer to ``POST /jobs``."""

    id: int
    duplicate: bool


class BatchAccepted(pydantic.BaseModel):
    """The answer to ``POST /jobs/batch``: the ids, in the order of the
    jobs (the first job's id for a repeated idempotency key)."""

    ids: list[int]


class JobView(pydantic.BaseModel):
    """One job, as ``GET /jobs/{id}`` shows it (times RFC 3339, UTC)."""

    id: int
    type: str
    priority: int
    state: State
    """``scheduled`` (not due yet), ``queued``, ``running`` (claimed by an
    instance: ``started_at`` is set once a worker took it), ``succeeded``,
    ``failed`` or ``cancelled``."""
    attempts: int
    """Attempts of its last run (retries included)."""
    resumed: int
    """Claims of this job that ended without an end written (a crash, a
    lost lease, a shutdown that stopped it) before the current one; a job
    claimed but not started when its process died counts too."""
    accepted_at: datetime.datetime
    run_at: datetime.datetime
    """When it is (or was) due."""
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    result: Any
    error: str | None

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True)


class JobPage(pydantic.BaseModel):
    """A page of ``GET /jobs``."""

    jobs: list[JobView]
    next_after: int | None
    """Pass as ``after`` for the next page; ``null`` when this page is not
    full (a full page may be followed by an empty one)."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True)


class FieldProblem(pydantic.BaseModel):
    """One field that does not fit."""

    field: str
    """Its dotted path, e.g. ``args.x``."""
    message: str
    index: int | None = None
    """The item of a batch it belongs to."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True)


class Problem(pydantic.BaseModel):
    """Every error answer: ``fields`` is set for 422."""

    error: str
    fields: list[FieldProblem] | None = None
