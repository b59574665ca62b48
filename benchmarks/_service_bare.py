"""The service benchmark's two floors: ``POST /jobs`` with nothing behind it.

``python benchmarks/_service_bare.py starlette``: a bare Starlette endpoint
that reads the JSON body and answers 202 ``{"id": N, "duplicate": false}``,
the ceiling of hypercorn's trio worker on this machine.

``python benchmarks/_service_bare.py fastapi``: a bare FastAPI endpoint whose
body is ``bulkhead serve``'s own request model (``JobSubmission``), validated,
answered the same way: what FastAPI costs before any work is done.

Both run on hypercorn's trio worker, configured as ``bulkhead serve``
configures it (127.0.0.1, a free port, no access log), and print one JSON
line ``{"event": "listening", "urls": [...]}`` as ``bulkhead serve`` logs it.
"""

from __future__ import annotations

import functools
import itertools
import json
import sys
from typing import Any

import trio
from fastapi import FastAPI
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# The very request model of ``bulkhead serve`` (a module-level name, so that
# FastAPI resolves the annotation below under ``from __future__ import
# annotations``).
from bulkhead.service._http._models import JobSubmission


def starlette_app() -> Any:
    """Starlette: parse the JSON body, answer 202 with a fresh id."""
    ids = itertools.count(1)

    async def submit(request: Request) -> JSONResponse:
        json.loads(await request.body())
        return JSONResponse({"id": next(ids), "duplicate": False}, status_code=202)

    return Starlette(routes=[Route("/jobs", submit, methods=["POST"])])


def fastapi_app() -> Any:
    """FastAPI: validate the body with the service's ``JobSubmission``."""
    app = FastAPI()
    ids = itertools.count(1)

    @app.post("/jobs", status_code=202)
    async def submit(submission: JobSubmission) -> dict[str, Any]:
        return {"id": next(ids), "duplicate": False}

    return app


APPS = {"starlette": starlette_app, "fastapi": fastapi_app}


async def main(kind: str) -> None:
    app = APPS[kind]()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(serve, app, config))
        print(json.dumps({"event": "listening", "urls": binds}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in APPS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(APPS)}}}")
    trio.run(main, sys.argv[1])
