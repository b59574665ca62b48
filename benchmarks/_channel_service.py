"""The service scenario's baseline: the same jobs over HTTP through a trio channel.

What a team writes without ``bulkhead serve``: FastAPI on hypercorn's trio
worker with the same request model, argument validation, body limit and JSON
log line per job, then each job goes into a ``trio.open_memory_channel`` of
its pool (buffer = the pool's queue), read by that pool's worker tasks; a
full channel answers 429 after the same ``max_wait``. No journal, no job
table, no statistics, no retries, no drain at shutdown: the floor that
``bulkhead serve``'s bookkeeping is measured against.

Usage: ``python benchmarks/_channel_service.py MODULE:REGISTRY [--pools ...]``;
it listens on 127.0.0.1 and a free port and logs
``{"event": "listening", "urls": [...]}`` like ``bulkhead serve``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from bulkhead.service import ServiceConfig

# The very request model and body limit of ``bulkhead serve``, so that the
# two apps differ only in what happens after validation.
from bulkhead.service._http import BodyLimit
from bulkhead.service._http._models import JobSubmission
from bulkhead.service._logging import configure_logging
from bulkhead.service.cli import load_registry

log = logging.getLogger("bulkhead.bench.channel_service")

Job = Callable[[], Awaitable[Any]]


async def worker(receive: trio.MemoryReceiveChannel[tuple[int, str, Job]]) -> None:
    async for id, type_name, job in receive:
        started = time.perf_counter()
        try:
            await job()
            outcome = "succeeded"
        except Exception:
            outcome = "failed"
        log.info(
            "job %s %s",
            id,
            outcome,
            extra={
                "event": "job_finished",
                "job": id,
                "type": type_name,
                "duration": round(time.perf_counter() - started, 6),
                "outcome": outcome,
            },
        )


def create_app(
    config: ServiceConfig,
    registry: Any,
    channels: dict[int, trio.MemorySendChannel[tuple[int, str, Job]]],
) -> FastAPI:
    app = FastAPI()
    ids = itertools.count(1)

    @app.post("/jobs", status_code=202)
    async def submit(submission: JobSubmission) -> JSONResponse:
        try:
            job_type = registry[submission.type]
            kwargs = job_type.validate(submission.args)
        except (KeyError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        id = next(ids)
        job = functools.partial(job_type.fn, **kwargs)
        with trio.move_on_after(config.max_wait):
            await channels[job_type.priority].send((id, job_type.name, job))
            return JSONResponse({"id": id, "duplicate": False}, status_code=202)
        return JSONResponse({"error": "queue full"}, status_code=429)

    app.add_middleware(BodyLimit, limit=config.max_body)
    return app


async def main(spec: str, pools: str) -> None:
    config = ServiceConfig.load({"pools": pools, "port": "0"}, {})
    registry = load_registry(spec)
    http = HypercornConfig()
    http.bind = ["127.0.0.1:0"]
    http.accesslog = None
    async with trio.open_nursery() as nursery:
        channels = {}
        for pool in config.pools:
            send, receive = trio.open_memory_channel[tuple[int, str, Job]](pool.queue)
            channels[pool.priority] = send
            for _ in range(pool.workers):
                nursery.start_soon(worker, receive.clone())
        app = create_app(config, registry, channels)
        # FastAPI is an ASGI app; hypercorn's type says otherwise.
        serving = functools.partial(serve, app, http)  # type: ignore[arg-type]
        binds = await nursery.start(serving)
        log.info("listening", extra={"event": "listening", "urls": binds})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("registry", metavar="MODULE:REGISTRY")
    parser.add_argument("--pools", default="low=2,normal=4,high=8,urgent=2")
    args = parser.parse_args()
    configure_logging("INFO")
    sys.path.insert(0, os.getcwd())
    trio.run(main, args.registry, args.pools)
