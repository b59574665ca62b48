"""``/operations``: requeue, cancel or purge every job a filter matches, and
the audit log of who did so, when, why, and to how many jobs.

The filter is the one ``GET /jobs`` takes (a
:class:`~bulkhead.service._journal.JobFilter`), so an operator lists what an
operation will touch before starting it. ``GET`` needs the ``read`` role,
``POST`` and ``DELETE`` the ``operate`` role.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import pydantic
from fastapi import APIRouter, Path, Query, Request

from .._journal import JobFilter
from .._operations import operation_view
from .._registry import resolve_priority
from .._service import Service
from ._auth import caller
from ._jobs import _checked, _seconds
from ._models import Problem, State

OperationId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _pool(value: int | str | None) -> int | None:
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError("a pool number is a 64-bit integer")
    if value is None or isinstance(value, int):
        return value
    return resolve_priority(value)


class OperationFilter(pydantic.BaseModel):
    """Which jobs: the filters of ``GET /jobs``; none matches every job the
    action acts on."""

    model_config = pydantic.ConfigDict(extra="forbid")

    state: State | None = None
    type: str | None = pydantic.Field(default=None, max_length=200)
    priority: Annotated[int | str | None, pydantic.AfterValidator(_pool)] = (
        pydantic.Field(default=None, description="A pool: name or number")
    )
    since: Annotated[str | None, pydantic.AfterValidator(_checked)] = pydantic.Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Accepted at or after (RFC 3339)",
    )
    until: Annotated[str | None, pydantic.AfterValidator(_checked)] = pydantic.Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="Accepted before (RFC 3339)",
    )

    def job_filter(self) -> JobFilter:
        """As the journal reads it."""
        return JobFilter(
            state=self.state,
            type=self.type,
            priority=self.priority,  # type: ignore[arg-type]  # _pool made it int
            since=_seconds(self.since),
            until=_seconds(self.until),
        )


class OperationRequest(pydantic.BaseModel):
    """A ``POST /operations`` body."""

    model_config = pydantic.ConfigDict(extra="forbid")

    action: Literal["requeue", "cancel", "purge"]
    filter: OperationFilter = pydantic.Field(default_factory=OperationFilter)
    reason: str = pydantic.Field(min_length=1, max_length=1000)
    """Why: the audit log keeps it."""


class FilterView(pydantic.BaseModel):
    """An operation's filter as recorded."""

    state: str | None
    type: str | None
    priority: int | None
    since: datetime.datetime | None
    until: datetime.datetime | None


class OperationView(pydantic.BaseModel):
    """An operation: its audit entry and its progress."""

    id: int
    action: str
    filter: FilterView
    reason: str
    who: str = pydantic.Field(description="The name of the token that asked")
    created_at: datetime.datetime
    state: Literal["running", "done", "aborted", "failed"]
    matched: int = pydantic.Field(
        description="Jobs the filter matched among those the action acts on"
    )
    done: int = pydantic.Field(description="Jobs changed so far")
    finished_at: datetime.datetime | None
    error: str | None


class OperationLog(pydantic.BaseModel):
    """A page of the audit log, newest first."""

    operations: list[OperationView]
    next_before: int | None = pydantic.Field(
        description="Pass as ``before`` for the next page; null on the last"
    )


def router(
    service: Service, secured: list[Any], errors: dict[int | str, Any]
) -> APIRouter:
    """The ``/operations`` routes of ``service``; ``secured`` asks for the
    ``operate`` role on ``POST`` and ``DELETE``."""
    api = APIRouter(tags=["operations"], dependencies=secured, responses=errors)
    operations = service.operations
    not_found = {"model": Problem, "description": "No such operation"}
    invalid = {"model": Problem, "description": "A field that does not fit"}
    unavailable = {"model": Problem, "description": "The journal cannot write"}

    @api.post(
        "/operations",
        summary="Requeue, cancel or purge jobs by filter",
        status_code=202,
        response_model=OperationView,
        response_description="Recorded; it runs in the background",
        responses={422: invalid, 503: unavailable},
    )
    async def start(body: OperationRequest, request: Request) -> dict[str, Any]:
        """Act on every job the filter matches, with a reason for the audit
        log; answers at once with the operation's ``id`` and ``matched``.

        ``requeue`` makes ``failed`` and ``cancelled`` jobs ``queued`` again,
        their attempts and runs reset. ``cancel`` cancels ``queued``,
        ``scheduled`` and (on this instance) ``running`` jobs. ``purge``
        deletes finished jobs. Jobs accepted after the operation began are
        not touched. Follow it with ``GET /operations/{id}``; stop it with
        ``DELETE /operations/{id}``.
        """
        record = await operations.start(
            body.action, body.filter.job_filter(), body.reason, caller(request)
        )
        return operation_view(record)

    @api.get(
        "/operations",
        summary="The audit log of operations",
        response_model=OperationLog,
        responses={422: invalid, 503: unavailable},
    )
    async def audit_log(
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Every operation, newest first: who (the token's name), when,
        what, why and how many. Pass a page's ``next_before`` as ``before``
        for the next page."""
        records = await operations.log(before, limit)
        next_before = records[-1].id if len(records) == limit else None
        return {
            "operations": [operation_view(r) for r in records],
            "next_before": next_before,
        }

    @api.get(
        "/operations/{id}",
        summary="Read an operation and its progress",
        response_model=OperationView,
        responses={404: not_found, 422: invalid, 503: unavailable},
    )
    async def get_operation(id: OperationId) -> dict[str, Any]:
        """Its ``state`` (``running``, ``done``, ``aborted``, ``failed``) and
        progress: ``done`` of ``matched`` jobs."""
        return operation_view(await operations.get(id))

    @api.delete(
        "/operations/{id}",
        summary="Abort an operation",
        status_code=202,
        response_model=OperationView,
        responses={
            404: not_found,
            409: {"model": Problem, "description": "It has already ended"},
            422: invalid,
            503: unavailable,
        },
    )
    async def abort(id: OperationId, request: Request) -> dict[str, Any]:
        """Stop a running operation between two chunks; the jobs it changed
        stay changed (``done`` says how many)."""
        return operation_view(await operations.abort(id, caller(request)))

    return api
