"""Domain errors to HTTP answers: the one place that names status codes.

Every error answer is ``{"error": "..."}``, plus ``"fields"`` for 422, never
a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .._errors import (
    BacklogFull,
    FieldError,
    JobFinished,
    JobNotFound,
    OperationFinished,
    OperationNotFound,
    ServiceError,
    SubmissionInvalid,
    Unavailable,
)

log = logging.getLogger("bulkhead.service.http")


def problem(
    status: int,
    message: str,
    fields: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON answer for an error."""
    body: dict[str, Any] = {"error": message}
    if fields is not None:
        body["fields"] = [
            {"field": f.field, "message": f.message}
            | ({} if f.index is None else {"index": f.index})
            for f in fields
        ]
    return JSONResponse(body, status_code=status, headers=headers)


def _status(exc: ServiceError) -> tuple[int, dict[str, str]]:
    if isinstance(exc, BacklogFull | Unavailable):
        return (429 if isinstance(exc, BacklogFull) else 503), {
            "Retry-After": str(exc.retry_after)
        }
    if isinstance(exc, JobNotFound | OperationNotFound):
        return 404, {}
    if isinstance(exc, JobFinished | OperationFinished):
        return 409, {}
    raise AssertionError(f"no status for {exc!r}")  # pragma: no cover


def install(app: FastAPI) -> None:
    """Map every error ``app`` can meet to its answer."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, SubmissionInvalid):
            return problem(422, str(exc), exc.fields)
        status, headers = _status(exc)
        return problem(status, str(exc), headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return problem(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return request_invalid(exc.errors())

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc, extra={"path": request.url.path})
        return problem(500, "internal error (logged on the server)")


def request_invalid(
    errors: Sequence[Any], *, prefix: tuple[Any, ...] = ()
) -> JSONResponse:
    """422 for pydantic ``errors``, each named by its dotted field path."""
    fields = [field_error(error, prefix) for error in errors]
    return problem(422, str(SubmissionInvalid(fields)), fields)


def field_error(error: Any, prefix: tuple[Any, ...] = ()) -> FieldError:
    """A pydantic error as a :class:`FieldError`; a ``prefix`` of
    ``("jobs", i)`` makes it item ``i``'s."""
    location = [*prefix, *error["loc"]]
    if location and location[0] in ("body", "query", "path"):
        location = location[1:] or location
    index = None
    if len(location) >= 2 and location[0] == "jobs" and isinstance(location[1], int):
        index, location = location[1], location[2:]
    message = error["msg"].removeprefix("Value error, ")
    return FieldError(".".join(map(str, location)) or "body", message, index)
