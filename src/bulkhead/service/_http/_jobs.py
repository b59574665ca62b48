"""``/jobs`` and ``/job-types``: submit, read, list and cancel jobs.

Bodies are read as bytes and parsed as strict JSON here (no ``NaN`` or
``Infinity``, which Python's own parser would let through), then validated
with the models of ``_models.py``; the published schema of each body is set
with ``openapi_extra`` and narrowed per job type in ``_openapi.py``.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any

import pydantic
import pydantic_core
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from .._errors import FieldError, SubmissionInvalid
from .._intake import Submission
from .._journal import JobFilter
from .._service import Service
from ._errors import field_error
from ._models import (
    BatchAccepted,
    BatchSubmission,
    JobAccepted,
    JobId,
    JobPage,
    JobSubmission,
    JobView,
    Problem,
    State,
)

_NOT_JSON = "send JSON with Content-Type: application/json"
RFC3339 = r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)"
"""A time with its offset, as ``since`` and ``until`` take it."""


def _seconds(moment: str | None) -> float | None:
    if moment is None:
        return None
    if not re.fullmatch(RFC3339, moment):
        raise ValueError(moment)
    text = moment.upper().replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def _checked(moment: str | None) -> str | None:
    try:
        _seconds(moment)
    except ValueError:
        raise ValueError(
            "not a time: give RFC 3339, e.g. 2030-01-01T09:00:00Z"
        ) from None
    return moment


Moment = Annotated[
    str | None,
    Query(json_schema_extra={"format": "date-time"}),
    pydantic.AfterValidator(_checked),
]
"""A time with its offset, as ``since`` and ``until`` take it."""


def _schema_of(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                }
            },
        }
    }


async def _json(request: Request) -> Any:
    body = await request.body()
    try:
        return pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise SubmissionInvalid(
            [FieldError("body", f"not JSON ({exc}); {_NOT_JSON}")]
        ) from None


def _submission(data: Any, index: int | None = None) -> JobSubmission:
    try:
        return JobSubmission.model_validate(data)
    except pydantic.ValidationError as exc:
        prefix = () if index is None else ("jobs", index)
        raise SubmissionInvalid(
            [field_error(e, prefix) for e in exc.errors()]
        ) from None


def router(
    service: Service, secured: list[Any], errors: dict[int | str, Any]
) -> APIRouter:
    """The ``/jobs`` routes of ``service``."""
    api = APIRouter(tags=["jobs"], dependencies=secured, responses=errors)
    invalid = {
        "model": Problem,
        "description": "A field that does not fit (``fields`` names each)",
    }
    busy = {
        "model": Problem,
        "description": "The pool's backlog is full (``Retry-After``)",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
    retry_after = {"Retry-After": {"schema": {"type": "integer"}}}
    unavailable = {
        "model": Problem,
        "description": "Shutting down, or the journal cannot write: nothing "
        "was recorded (``Retry-After``)",
        "headers": retry_after,
    }
    unreadable = {
        "model": Problem,
        "description": "The journal cannot be read now (``Retry-After``)",
        "headers": retry_after,
    }
    not_found = {"model": Problem, "description": "Never accepted, or expired"}

    @api.get("/job-types", summary="Registered job types")
    async def job_types() -> dict[str, Any]:
        """The registered job types, their pools and argument schemas.

        Maps each job type's name to its ``priority`` (the pool it runs in
        unless a submission names another) and ``args``, the JSON schema of
        its arguments, made from the job function's typed signature (or the
        pydantic model that is its only parameter).
        """
        return {
            job_type.name: {"priority": job_type.priority, "args": job_type.schema()}
            for job_type in service.registry
        }

    @api.post(
        "/jobs",
        summary="Submit a job",
        status_code=202,
        response_model=JobAccepted,
        response_description="Committed to the journal: it will run",
        # The Go service's query form is documented in prose only: a schema
        # cannot say "a body or these parameters", so it publishes the body.
        openapi_extra=_schema_of(JobSubmission),
        responses={
            200: {"model": JobAccepted, "description": "Idempotency key seen before"},
            422: invalid,
            429: busy,
            503: unavailable,
        },
    )
    async def submit(request: Request) -> JSONResponse:
        """Submit a job: committed to the journal before the answer.

        The body names the job's ``type`` (see ``GET /job-types``) and its
        ``args`` by name. ``priority`` picks the pool: ``low``, ``normal``,
        ``high``, ``urgent`` or a pool number; the job type's own pool by
        default. ``delay`` (seconds) or ``run_at`` (RFC 3339) makes it
        ``scheduled`` until then. A second submission with the same
        ``idempotency_key`` answers 200 with the first job's id, once that
        job is committed, and records nothing.

        ``POST /jobs?type=T&priority=P`` with no body is the Go service's
        form, for a type whose arguments all have defaults.
        """
        query = request.query_params
        body = await request.body()
        if body and ("type" in query or "priority" in query):
            raise SubmissionInvalid(
                [
                    FieldError(
                        "type" if "type" in query else "priority",
                        "give the job in the body or in the query string "
                        "(type=, priority=), not both",
                    )
                ]
            )
        if "type" in query:
            data: Any = {"type": query["type"]}
            if "priority" in query:
                data["priority"] = query["priority"]
        else:
            data = await _json(request)
        (answer,) = await service.submit([_submission(data).submission()])
        return JSONResponse(
            {"id": answer.id, "duplicate": answer.duplicate},
            status_code=200 if answer.duplicate else 202,
        )

    @api.post(
        "/jobs/batch",
        summary="Submit many jobs, all or nothing",
        status_code=202,
        response_model=BatchAccepted,
        response_description="All committed in one transaction",
        openapi_extra=_schema_of(BatchSubmission),
        responses={422: invalid, 429: busy, 503: unavailable},
    )
    async def submit_batch(request: Request) -> JSONResponse:
        """Submit up to ``BULKHEAD_MAX_BATCH`` jobs in one transaction.

        Each item is a ``POST /jobs`` body. All are accepted, or none: a 422
        names each bad item by its ``index`` and ``field``. The ids come in
        the order of the jobs.
        """
        data = await _json(request)
        try:
            batch = BatchSubmission.model_validate(data)
        except pydantic.ValidationError as exc:
            raise SubmissionInvalid([field_error(e) for e in exc.errors()]) from None
        limit = service.config.max_batch
        if len(batch.jobs) > limit:
            raise SubmissionInvalid(
                [
                    FieldError(
                        "jobs",
                        f"{len(batch.jobs)} jobs, at most {limit} "
                        "(BULKHEAD_MAX_BATCH) in one batch; split it",
                    )
                ]
            )
        items: list[Submission] = []
        errors: list[FieldError] = []
        for index, item in enumerate(batch.jobs):
            try:
                items.append(_submission(item, index).submission())
            except SubmissionInvalid as exc:
                errors += exc.fields
        if errors:
            raise SubmissionInvalid(errors)
        answers = await service.submit(items, batch=True)
        return JSONResponse({"ids": [a.id for a in answers]}, status_code=202)

    @api.get(
        "/jobs/{id}",
        summary="Read a job",
        response_model=JobView,
        responses={404: not_found, 422: invalid, 503: unreadable},
    )
    async def get_job(id: JobId) -> dict[str, Any]:
        """A job's state, attempts, timings, and result or error.

        ``resumed`` counts the runs an interruption (crash, shutdown) ended
        before this one. ``result`` is the job's return value as JSON;
        ``error`` is its exception's type and message, never a traceback. A
        finished job stays readable for a bounded time and count
        (``BULKHEAD_KEEP_RESULTS_FOR``, ``BULKHEAD_KEEP_RESULTS``).
        """
        return await service.job(id)

    @api.delete(
        "/jobs/{id}",
        summary="Cancel a job",
        status_code=202,
        response_model=JobView,
        response_description="Cancellation requested; the job as it is now",
        responses={
            404: not_found,
            409: {"model": Problem, "description": "The job has already finished"},
            422: invalid,
            503: unavailable,
        },
    )
    async def cancel_job(id: JobId) -> dict[str, Any]:
        """Cancel a scheduled, queued or running job (it ends ``cancelled``).

        A job not running yet is cancelled at once; a running one soon after
        (read it with ``GET /jobs/{id}``).
        """
        return await service.cancel(id)

    @api.get(
        "/jobs",
        summary="List jobs",
        response_model=JobPage,
        responses={422: invalid, 503: unreadable},
    )
    async def list_jobs(
        state: Annotated[State | None, Query()] = None,
        type: Annotated[str | None, Query(max_length=200)] = None,
        priority: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,
        since: Moment = None,
        until: Moment = None,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Jobs in id order, filtered, a page at a time.

        ``state``, ``type`` and ``priority`` filter; ``since`` and ``until``
        (RFC 3339) bound when they were accepted. Pages are keyed: pass the
        ``next_after`` of a page as ``after`` to get the next one, which
        stays right however many jobs arrive meanwhile.
        """
        filter = JobFilter(
            state=state,
            type=type,
            priority=priority,
            since=_seconds(since),
            until=_seconds(until),
        )
        jobs = await service.jobs(filter, after, limit)
        next_after = jobs[-1]["id"] if len(jobs) == limit else None
        return {"jobs": jobs, "next_after": next_after}

    return api
