"""The HTTP API: a FastAPI app over a :class:`~bulkhead.service.Service`.

Why FastAPI rather than bare Starlette: the request bodies are pydantic
models, so malformed and ill-typed requests are refused before our code runs
with a message naming the field, and the OpenAPI schema (``/openapi.json``,
``/docs``) is generated from the same models, so the API reference cannot
drift from the code. FastAPI is Starlette underneath and runs on anyio, which
runs on trio; every endpoint is ``async`` (nothing goes to anyio's thread
pool). Errors are always ``{"error": "..."}`` (plus ``"fields"`` for 422),
never a stack trace.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any, Literal

import pydantic
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import bulkhead

from ._service import STATES, Rejected, Service, pool_name

log = logging.getLogger("bulkhead.service.http")


def _priority(value: object) -> object:
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():  # JSON Schema's integer
        return int(value)
    raise ValueError("give low, normal, high, urgent or a pool number")


JobId = Annotated[
    int, Path(ge=1, le=2**63 - 1, description="The id ``POST /jobs`` answered.")
]
"""A job id: SQLite's row ids are positive 64-bit integers."""


class JobSubmission(pydantic.BaseModel):
    """The body of ``POST /jobs``."""

    model_config = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)

    type: str = pydantic.Field(min_length=1, max_length=200)
    """A registered job type (see ``GET /job-types``)."""
    priority: Annotated[int | str | None, pydantic.BeforeValidator(_priority)] = None
    """``low``, ``normal``, ``high``, ``urgent`` or a pool number; default:
    the job type's pool."""
    args: dict[str, Any] = pydantic.Field(default_factory=dict)
    """The job function's arguments by name."""
    idempotency_key: str | None = pydantic.Field(
        default=None, min_length=1, max_length=200
    )
    """A second submission with the same key returns the first job's id."""


class JobAccepted(pydantic.BaseModel):
    """The answer to ``POST /jobs``."""

    id: int
    duplicate: bool


class JobView(pydantic.BaseModel):
    """One job, as ``GET /jobs/{id}`` shows it (times are Unix seconds)."""

    id: int
    type: str
    priority: int
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    attempts: int
    resumed: int
    accepted_at: float
    started_at: float | None
    finished_at: float | None
    result: Any
    error: str | None


class JobPage(pydantic.BaseModel):
    """A page of ``GET /jobs``."""

    jobs: list[JobView]
    limit: int
    offset: int


class Problem(pydantic.BaseModel):
    """Every error answer."""

    error: str


def _problem(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: answer 413 to a body over ``limit`` bytes, whether
    it declares its length or streams it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the (small) body, refuse it if too large, replay it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _problem(413, f"request body over {self.limit} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _problem(400, "bad Content-Length")(scope, receive, send)
                    return
                if declared > self.limit:
                    await too_large(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks)}
            return await receive()

        await self.app(scope, replay, send)


def create_app(service: Service) -> FastAPI:
    """The ASGI app (FastAPI) that serves ``service`` over HTTP.

    Serve it from the trio run in which ``service`` runs (``await
    nursery.start(service.run)`` first), with an ASGI server that runs on
    trio: :func:`serve` uses hypercorn's trio worker. Its endpoints are those
    of the HTTP API reference; ``app.openapi()`` is their schema, with one
    ``POST /jobs`` body per job type of ``service.registry``.
    """
    app = FastAPI(
        title="bulkhead service",
        summary="Submit jobs to isolated trio worker pools, one per priority.",
        version=bulkhead.__version__,
        responses={
            413: {"model": Problem, "description": "Request body too large"},
        },
    )
    token = None if service.config.token is None else service.config.token.encode()

    async def authorized(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(
                401, "missing bearer token: send 'Authorization: Bearer <token>'"
            )
        if not hmac.compare_digest(given.strip().encode(), token):
            raise HTTPException(401, "wrong bearer token")

    secured = [Depends(authorized)]
    bad_id = {"model": Problem, "description": "``id`` is not 1 to 2**63 - 1"}
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "schema": {"type": "integer"},
        }
    }
    unauthorized: dict[int | str, dict[str, Any]] = {
        401: {
            "model": Problem,
            "description": "Missing or wrong bearer token (if the service has one)",
            "headers": {
                "WWW-Authenticate": {
                    "description": "``Bearer``",
                    "schema": {"type": "string"},
                }
            },
        }
    }

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        headers = (
            {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        )
        return _problem(exc.status, str(exc), **headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return _problem(exc.status_code, str(exc.detail), **headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        for error in errors:
            if error.get("type") == "json_invalid":
                return _problem(400, f"malformed JSON: {error.get('msg', '')}")
        fields = [
            {
                "field": ".".join(str(part) for part in error["loc"][1:])
                or str(error["loc"][0]),
                "message": error["msg"],
            }
            for error in errors
        ]
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse({"error": message, "fields": fields}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc, extra={"path": request.url.path})
        return _problem(500, "internal error (logged on the server)")

    @app.get(
        "/health",
        tags=["probes"],
        summary="Liveness probe",
        response_description="The process serves HTTP",
    )
    async def health() -> dict[str, str]:
        """Liveness: 200 ``{"status": "ok"}`` while the process serves HTTP.

        Needs no token.
        """
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["probes"],
        summary="Readiness probe",
        response_description="The pools run and take jobs",
        responses={
            503: {"model": Problem, "description": "Starting, or draining to stop"}
        },
    )
    async def ready() -> JSONResponse:
        """Readiness: 200 ``{"status": "ready"}`` once the pools are up, 503
        while starting or draining (``error`` says which).

        Needs no token.
        """
        if service.ready:
            return JSONResponse({"status": "ready"})
        return _problem(503, "draining" if service.draining else "starting")

    @app.get(
        "/stats",
        tags=["monitoring"],
        summary="Service and pool statistics",
        dependencies=secured,
        response_description="The statistics",
        responses=unauthorized,
    )
    async def stats() -> dict[str, Any]:
        """Per-pool statistics (:class:`bulkhead.PoolStatistics`) and uptime.

        A JSON object: ``uptime`` (seconds), ``draining``, ``accepted`` (jobs
        since start), ``refused`` (429 answers since start), ``resumed``
        (unfinished jobs the start found in the journal and ran again),
        ``interrupted`` (jobs this shutdown stopped; they run again on the
        next start), ``in_memory`` (accepted jobs whose end is not journaled
        yet),
        ``journal`` (its path), and ``pools`` (by pool name) and ``total``:
        objects with the fields of :class:`bulkhead.PoolStatistics`.
        """
        return service.statistics()

    @app.get(
        "/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics",
        dependencies=secured,
        response_class=PlainTextResponse,
        response_description="Prometheus text exposition format",
        responses=unauthorized,
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: per-pool counters, gauges, job durations."""
        return PlainTextResponse(
            generate_latest(service.metrics.registry),
            media_type=CONTENT_TYPE_LATEST,
        )

    @app.get(
        "/workers",
        tags=["monitoring"],
        summary="Workers of each pool",
        dependencies=secured,
        response_description="The pools and their workers",
        responses=unauthorized,
    )
    async def workers() -> dict[str, Any]:
        """Each pool's workers and the jobs running on them.

        ``pools`` maps each pool's name to its ``priority``, ``workers``,
        ``busy``, ``idle``, ``queued``, ``paused``, and ``running``: the jobs
        running now (``id``, ``type``, ``started_at``), oldest id first.
        """
        return service.workers()

    @app.get(
        "/job-types",
        tags=["jobs"],
        summary="Registered job types",
        dependencies=secured,
        response_description="The job types by name",
        responses=unauthorized,
    )
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

    @app.post(
        "/jobs",
        tags=["jobs"],
        summary="Submit a job",
        status_code=202,
        dependencies=secured,
        response_model=JobAccepted,
        response_description="Recorded in the journal and accepted by its pool",
        responses={
            200: {"model": JobAccepted, "description": "Idempotency key seen before"},
            400: {"model": Problem, "description": "Malformed JSON"},
            **unauthorized,
            422: {
                "model": Problem,
                "description": "Unknown type or priority, or a field or argument "
                "that does not fit (the message names it)",
            },
            429: {
                "model": Problem,
                "description": "The pool and its queue stayed full for ``max_wait``",
                "headers": retry_after,
            },
            503: {
                "model": Problem,
                "description": "Shutting down, or the journal failed",
                "headers": retry_after,
            },
        },
    )
    async def submit(submission: JobSubmission) -> JSONResponse:
        """Submit a job: recorded in the journal, then accepted by its pool.

        The body names the job's ``type`` (see ``GET /job-types``) and its
        ``args`` by name. ``priority`` picks the pool: ``low``, ``normal``,
        ``high``, ``urgent`` or a pool number; the job type's own pool by
        default. A second submission with the same ``idempotency_key``
        answers 200 with the first job's id and runs nothing.

        202 with its id; 200 with the earlier id for a repeated idempotency
        key; 429 (``Retry-After``) when the pool and its queue stay full.
        """
        id, created = await service.submit(
            submission.type,
            submission.priority,
            submission.args,
            submission.idempotency_key,
        )
        return JSONResponse(
            {"id": id, "duplicate": not created}, status_code=202 if created else 200
        )

    @app.get(
        "/jobs/{id}",
        tags=["jobs"],
        summary="Read a job",
        dependencies=secured,
        response_model=JobView,
        response_description="The job",
        responses={
            **unauthorized,
            404: {"model": Problem, "description": "Never accepted, or expired"},
            422: bad_id,
        },
    )
    async def get_job(id: JobId) -> dict[str, Any]:
        """A job's state, attempts, timings, and result or error.

        Times are Unix seconds. ``resumed`` counts the restarts that found
        the job unfinished and ran it again. ``result`` is the job's return
        value as JSON; ``error`` is its exception's type and message, never
        a traceback. A finished job stays readable for a bounded time and
        count (``BULKHEAD_KEEP_RESULTS_FOR``, ``BULKHEAD_KEEP_RESULTS``).
        """
        return await service.job(id)

    @app.delete(
        "/jobs/{id}",
        tags=["jobs"],
        summary="Cancel a job",
        status_code=202,
        dependencies=secured,
        response_model=JobView,
        response_description="Cancellation requested; the job as it is now",
        responses={
            **unauthorized,
            404: {"model": Problem, "description": "Never accepted, or expired"},
            409: {"model": Problem, "description": "The job has already finished"},
            422: bad_id,
            503: {
                "model": Problem,
                "description": "Stopped by the shutdown: it runs again at the next "
                "start",
                "headers": retry_after,
            },
        },
    )
    async def cancel_job(id: JobId) -> dict[str, Any]:
        """Cancel a queued or running job (it ends ``cancelled``).

        The answer shows the job as it is once cancellation is requested;
        it ends ``cancelled`` soon after (read it with ``GET /jobs/{id}``).
        """
        return await service.cancel(id)

    @app.get(
        "/jobs",
        tags=["jobs"],
        summary="List jobs",
        dependencies=secured,
        response_model=JobPage,
        response_description="A page of jobs",
        responses={
            **unauthorized,
            422: {"model": Problem, "description": "A query parameter out of range"},
        },
    )
    async def list_jobs(
        state: Annotated[
            Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
            Query(),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    ) -> dict[str, Any]:
        """Jobs in id order, optionally of one state, a page at a time.

        Oldest first: ``offset`` skips that many, ``limit`` caps the page.
        Each job is shown as ``GET /jobs/{id}`` shows it.
        """
        assert state is None or state in STATES
        jobs = await service.jobs(state, limit, offset)
        return {"jobs": jobs, "limit": limit, "offset": offset}

    app.add_middleware(BodyLimit, limit=service.config.max_body)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _narrow_submissions(generate(), service)
        return app.openapi_schema  # type: ignore[return-value]  # set by generate

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
    return app


def _narrow_submissions(schema: dict[str, Any], service: Service) -> None:
    """Make ``POST /jobs``'s body in ``schema`` say exactly what ``service``
    accepts: one variant per registered job type, with that type's arguments
    schema, and a priority that names a configured pool.

    Validation stays with :class:`JobSubmission` and the registry (their
    messages name the field); this only makes the published schema, hence the
    docs and generated clients, as precise as the validation.
    """
    components = schema["components"]["schemas"]
    base = components["JobSubmission"]
    pools = sorted(service.priorities)
    names = [pool_name(p) for p in pools if pool_name(p) != str(p)]
    choices: list[dict[str, Any]] = [{"type": "string", "enum": names}] if names else []
    priority = {
        "anyOf": [*choices, {"type": "integer", "enum": pools}, {"type": "null"}],
        "default": None,
        "description": base["properties"]["priority"].get("description", ""),
    }
    job_types = list(service.registry)
    # Under a prefix of their own, so that a job's model called, say,
    # Problem cannot replace the service's own schema of that name.
    refs, defs = models_json_schema(
        [(t.arguments, "validation") for t in job_types],
        ref_template="#/components/schemas/args.{model}",
    )
    components.update({f"args.{k}": v for k, v in defs.get("$defs", {}).items()})
    mapping = {}
    for job_type in job_types:
        arguments = job_type.arguments.model_json_schema()
        properties = {
            **base["properties"],
            "type": {"type": "string", "const": job_type.name},
            "args": {
                **refs[(job_type.arguments, "validation")],
                "description": base["properties"]["args"].get("description", ""),
            },
            "priority": priority,
        }
        required = ["type", "args"] if arguments.get("required") else ["type"]
        name = f"JobSubmission_{job_type.name}"
        components[name] = {
            **base,
            "title": f"Submit {job_type.name}",
            "properties": properties,
            "required": required,
        }
        mapping[job_type.name] = f"#/components/schemas/{name}"
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]
    body["application/json"]["schema"] = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
