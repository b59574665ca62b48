"""Type checkers see what a job returns and what its function takes.

mypy runs over this file in ``make test`` (``mypy --strict src tests``):
``assert_type`` fails the type check if the inferred type differs, and
each ``type: ignore`` must be needed (``warn_unused_ignores``), so a call
with the wrong arguments has to be rejected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import assert_type

import bulkhead
from bulkhead import PoolConfig


async def fetch(url: str) -> bytes:
    return url.encode()


def area(width: int, height: int) -> float:
    return width * height / 2


async def test_a_job_is_typed_by_what_its_function_returns() -> None:
    pools = [PoolConfig(1, 1), PoolConfig(2, 1, kind="thread")]
    async with bulkhead.open_dispatcher(pools) as d:
        job = await d.dispatch(fetch, "a", priority=1)
        assert_type(job, bulkhead.Job[bytes])
        assert assert_type(await job.wait(), bytes) == b"a"
        threaded = await d.dispatch(area, 3, 4, priority=2)
        assert_type(threaded, bulkhead.Job[float])
        assert assert_type(await threaded.wait(), float) == 6.0
        nowait = d.dispatch_nowait(fetch, "b", priority=1)
        assert_type(nowait, bulkhead.Job[bytes])
        assert await nowait.wait() == b"b"
        if TYPE_CHECKING:  # checked, never run
            await d.dispatch(fetch, 1, priority=1)  # type: ignore[arg-type]
            await d.dispatch(area, 3, priority=2)  # type: ignore[arg-type]
            d.dispatch_nowait(fetch, b"x", priority=1)  # type: ignore[arg-type]
