"""The HTTP edge: a FastAPI app over a :class:`~bulkhead.service.Service`.

One router per resource (``_jobs.py``, ``_monitoring.py``,
``_operations.py``), tokens and roles in ``_auth.py``, and domain errors
mapped to status codes in ``_errors.py``: the service core never names a
status code.

Why FastAPI rather than bare Starlette: request bodies are pydantic models,
so a malformed request is refused with a message naming the field, and the
OpenAPI schema is generated from the same models. FastAPI runs on anyio,
which runs on trio; every endpoint is ``async``. The schema and its docs
pages need the token like every endpoint but the probes; the docs' scripts
ship with the package (``fastapi-offline``), so they work offline.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import bulkhead

from .._service import Service
from . import _errors, _jobs, _monitoring, _operations, _schedules, _ui
from ._auth import UNAUTHORIZED, require_roles
from ._errors import problem
from ._models import Problem
from ._openapi import narrow_submissions

ASSETS = "/docs/assets"
"""Where the docs pages' scripts are served from (no token: they are the
published Swagger UI and ReDoc bundles)."""


class BodyLimit:
    """ASGI middleware: answer 413 to a body over ``limit`` bytes, whether
    it declares its length or streams it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body, refuse it if too large, replay it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await problem(400, "bad Content-Length")(scope, receive, send)
                    return
                if declared > self.limit:
                    await self._too_large()(scope, receive, send)
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
                await self._too_large()(scope, receive, send)
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

    def _too_large(self) -> ASGIApp:
        # Built when needed: a JSON answer per request is not free.
        return problem(413, f"request body over {self.limit} bytes (BULKHEAD_MAX_BODY)")


def create_app(service: Service) -> FastAPI:
    """The ASGI app (FastAPI) that serves ``service`` over HTTP.

    Serve it from the trio run in which ``service`` runs (``await
    nursery.start(service.run)`` first), with an ASGI server that runs on
    trio: :func:`~bulkhead.service.serve` uses hypercorn's trio worker. Its
    endpoints are those of the HTTP API reference; ``app.openapi()`` is
    their schema, with one ``POST /jobs`` body per job type of
    ``service.registry``.
    """
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        title="bulkhead service",
        summary="A durable job queue over isolated trio worker pools.",
        version=bulkhead.__version__,
        responses={413: {"model": Problem, "description": "Request body too large"}},
    )
    tokens = service.config.credentials()
    secured = require_roles(tokens, writes="submit")
    errors: dict[int | str, Any] = {
        status: {**answer, "model": Problem} for status, answer in UNAUTHORIZED.items()
    }
    _errors.install(app)
    app.include_router(_monitoring.probes(service))
    app.include_router(_monitoring.monitoring(service, secured, errors))
    app.include_router(_jobs.router(service, secured, errors))
    operate = require_roles(tokens, writes="operate")
    app.include_router(_operations.router(service, operate, errors))
    app.include_router(_schedules.router(service, secured, errors))
    _docs(app, service, secured)
    _ui.install(app, service, secured)
    # The Swagger UI and ReDoc bundles fastapi-offline ships, so that the
    # docs pages load with no network.
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    app.add_middleware(BodyLimit, limit=service.config.max_body)
    return app


def _docs(app: FastAPI, service: Service, secured: list[Any]) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            narrow_submissions(generate(), service)
        return app.openapi_schema  # type: ignore[return-value]  # set by generate

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way

    @app.get("/openapi.json", include_in_schema=False, dependencies=secured)
    async def schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=secured)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False, dependencies=secured)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
