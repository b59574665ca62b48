"""An example job service: ``bulkhead serve examples.service_jobs:registry``.

Try it (``make serve`` runs the first line)::

    python -m bulkhead serve examples.service_jobs:registry --journal :memory:
    curl -s -X POST localhost:8080/jobs -H 'content-type: application/json' \\
         -d '{"type": "add", "args": {"x": 2, "y": 3}}'          # {"id": 1, ...}
    curl -s localhost:8080/jobs/1                                # "result": 5
"""

from __future__ import annotations

import hashlib

import pydantic
import trio

from bulkhead.service import JobRegistry

registry = JobRegistry()


@registry.job(priority="high")
async def add(x: int, y: int = 0) -> int:
    """Add two integers: the quickest job there is."""
    await trio.lowlevel.checkpoint()
    return x + y


@registry.job(priority="low")
async def sleep(seconds: float, tag: str = "") -> dict[str, float | str]:
    """Sleep, standing for slow I/O such as a report or an upload."""
    if not 0 <= seconds <= 3600:
        raise ValueError(f"seconds must be from 0 to 3600, got {seconds}")
    await trio.sleep(seconds)
    return {"slept": seconds, "tag": tag}


@registry.job(priority="normal")
async def fail(message: str) -> None:
    """Fail with ``message``: shows how an error is reported."""
    await trio.lowlevel.checkpoint()
    raise RuntimeError(message)


@registry.job(priority="low")
def digest(text: str, rounds: int = 1) -> str:
    """SHA-256 of ``text``, ``rounds`` times over: a sync function, so it runs
    in a worker thread and the event loop keeps serving requests."""
    if not 1 <= rounds <= 10_000_000:
        raise ValueError(f"rounds must be from 1 to 10,000,000, got {rounds}")
    data = text.encode()
    for _ in range(rounds):
        data = hashlib.sha256(data).digest()
    return data.hex()


class Thumbnail(pydantic.BaseModel):
    """The arguments of :func:`thumbnail`: a pydantic model is the schema."""

    url: pydantic.HttpUrl
    width: int = pydantic.Field(default=640, gt=0, le=4096)


@registry.job(priority="normal")
async def thumbnail(request: Thumbnail) -> dict[str, str | int]:
    """Plan a thumbnail. Its only parameter is a model, so a request's
    ``args`` are that model's fields: ``{"url": "https://...", "width": 320}``."""
    await trio.lowlevel.checkpoint()
    return {
        "url": str(request.url),
        "width": request.width,
        "height": request.width * 3 // 4,
    }
