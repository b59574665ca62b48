"""Memory: one long stream of jobs, no barrier until the end, no handle kept.

The dispatcher keeps no reference to a finished job, so memory must not grow
with the number of jobs: a run under tracemalloc (slow, so shorter) and a
long untraced one watching ``sys.getallocatedblocks()``, against a channel
pool doing the same.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import _alternatives as alt
from _harness import goal, log, table
from _report import title


@dataclass(frozen=True)
class Settings:
    """What the scenario runs with."""

    workers: int
    memory_traced_jobs: int  # jobs run under tracemalloc
    memory_jobs: int  # jobs run untraced, counting allocated blocks


FULL = Settings(
    workers=16,
    memory_traced_jobs=200_000,
    memory_jobs=1_000_000,
)

QUICK = Settings(
    workers=16,
    memory_traced_jobs=20_000,
    memory_jobs=50_000,
)

SMOKE = replace(
    QUICK,
    memory_traced_jobs=400,
    memory_jobs=400,
)
"""``--smoke``: toy sizes, once; the figures mean nothing, the run only
shows that the scenario still works."""


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _stream_memory(
    stream: Callable[[int, Callable[[int], None]], None], n: int, traced: bool
) -> dict[str, Any]:
    """Run ``stream`` and sample memory; the first sample after warm-up is the base.

    traced: current bytes as seen by tracemalloc (started once the run is warm);
    untraced: ``sys.getallocatedblocks()``, Python objects alive, process RSS.
    """
    samples: list[dict[str, Any]] = []

    def sample(i: int) -> None:
        gc.collect()
        point: dict[str, Any] = {"jobs": i}
        if traced:
            point["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        point["blocks"] = sys.getallocatedblocks()
        point["objects"] = len(gc.get_objects())
        point["rss_bytes"] = _rss_bytes()
        samples.append(point)

    def start_tracing_when_warm(i: int) -> None:
        # The first sample (job 0) is before warm-up: begin tracing only now,
        # so the cost of tracemalloc falls on the measured part alone.
        if traced and not tracemalloc.is_tracing() and i > 0:
            tracemalloc.start()
        sample(i)

    t0 = time.perf_counter()
    try:
        stream(n, start_tracing_when_warm)
        peak = tracemalloc.get_traced_memory()[1] if traced else None
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    base, last = samples[1], samples[-1]
    out: dict[str, Any] = {
        "jobs": n,
        "warmup_jobs": base["jobs"],
        "traced": traced,
        "seconds": elapsed,
        "samples": samples,
        "blocks_growth": last["blocks"] - base["blocks"],
        "objects_growth": last["objects"] - base["objects"],
    }
    if base["rss_bytes"] is not None:
        out["rss_growth_bytes"] = last["rss_bytes"] - base["rss_bytes"]
    if traced:
        out["traced_growth_bytes"] = last["traced_bytes"] - base["traced_bytes"]
        out["traced_max_excursion_bytes"] = (
            max(p["traced_bytes"] for p in samples[1:]) - base["traced_bytes"]
        )
        out["traced_peak_bytes"] = peak - base["traced_bytes"] if peak else None
    return out


def run(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if bh is not None:

        def bulkhead_stream(n: int, sample: Callable[[int], None]) -> None:
            bh.stream(n, s.workers, sample, copy_context=True)

        log(f"  memory: bulkhead, {s.memory_traced_jobs:,} jobs under tracemalloc")
        results["bulkhead_traced"] = {
            "label": "bulkhead dispatch (tracemalloc)",
            "bulkhead": True,
            **_stream_memory(bulkhead_stream, s.memory_traced_jobs, traced=True),
        }
        log(f"  memory: bulkhead, {s.memory_jobs:,} jobs untraced")
        results["bulkhead"] = {
            "label": "bulkhead dispatch (allocated blocks)",
            "bulkhead": True,
            **_stream_memory(bulkhead_stream, s.memory_jobs, traced=False),
        }

    def channel_stream(n: int, sample: Callable[[int], None]) -> None:
        alt.channel_pool_stream(n, s.workers, sample)

    log(f"  memory: channel pool, {s.memory_jobs:,} jobs untraced")
    results["trio_channel_pool"] = {
        "label": "trio channel pool (allocated blocks)",
        "bulkhead": False,
        **_stream_memory(channel_stream, s.memory_jobs, traced=False),
    }
    return {"workers": s.workers, "results": results}


MIB = 1024 * 1024


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6: memory stays flat however many jobs run."""
    mem = r.get("results", {})
    out = []
    if "bulkhead_traced" in mem:
        growth = mem["bulkhead_traced"]["traced_growth_bytes"]
        jobs = mem["bulkhead_traced"]["jobs"]
        out.append(
            goal(
                f"memory: traced growth < 1 MiB over {jobs:,} jobs",
                growth,
                MIB,
                growth < MIB,
                "bytes",
            )
        )
    if "bulkhead" in mem:
        blocks = mem["bulkhead"]["blocks_growth"]
        jobs = mem["bulkhead"]["jobs"]
        # one leaked object per 100 jobs would already be 10,000 blocks per 1M
        limit = max(1000, jobs // 1000)
        out.append(
            goal(
                f"memory: allocated blocks growth over {jobs:,} jobs",
                blocks,
                limit,
                blocks < limit,
                "blocks",
            )
        )
    return out


def report(s: dict[str, Any], markdown: bool) -> str:
    headers = [
        "contender",
        "jobs",
        "warm-up",
        "traced growth KiB",
        "blocks growth",
        "objects growth",
        "RSS growth KiB",
        "seconds",
    ]
    rows = []
    for r in s["results"].values():
        traced = r.get("traced_growth_bytes")
        rss = r.get("rss_growth_bytes")
        rows.append(
            [
                r["label"],
                r["jobs"],
                r["warmup_jobs"],
                None if traced is None else traced / 1024,
                r["blocks_growth"],
                r["objects_growth"],
                None if rss is None else rss / 1024,
                r["seconds"],
            ]
        )
    heading = "memory: one stream of jobs, no barrier until the end, no handle kept"
    note = (
        "growth = end of the run minus the first sample after warm-up "
        "(gc.collect() before each sample); tracemalloc slows Python about 6x, "
        "so the traced run is shorter and the full count runs untraced, "
        "watching sys.getallocatedblocks()"
    )
    return (
        f"{title(heading, markdown)}\n{table(headers, rows, markdown=markdown)}\n{note}"
    )
