"""Throughput: trivial jobs through one pool, as fast as they can be dispatched.

Every job is ``trivial`` (no checkpoint, no work), so only the dispatch path
costs: bulkhead's four ways to dispatch (rendezvous or ``dispatch_nowait``
with a blocking fallback, with and without ``copy_context``), two hook
configurations, against a hand-rolled trio channel pool, a nursery per job,
anyio, aiometer, asyncio and aiojobs. Contenders run interleaved, best of k.
The timed span is from the first dispatch until the covering ``barrier()``
returns; worker start-up and finalize stay outside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import _alternatives as alt
from _harness import (
    BULKHEAD_VARIANTS,
    Contender,
    bind,
    goal,
    have,
    interleave,
    ratios,
    timed_results,
)
from _report import ratio_table, title


@dataclass(frozen=True)
class Settings:
    """What the scenario runs with."""

    repeat: int  # best-of-k for throughput and rounds
    jobs: int  # throughput
    workers: int


FULL = Settings(
    repeat=5,
    jobs=100_000,
    workers=16,
)

QUICK = Settings(
    repeat=2,
    jobs=5_000,
    workers=16,
)

SMOKE = replace(
    QUICK,
    repeat=1,
    jobs=200,
)
"""``--smoke``: toy sizes, once; the figures mean nothing, the run only
shows that the scenario still works."""


# alternatives: key -> (label, throughput function, module it needs or None)
ALTERNATIVES: dict[str, tuple[str, Callable[[int, int], float], str | None]] = {
    "trio_channel_pool": (
        "trio channel pool (hand-rolled)",
        alt.channel_pool_throughput,
        None,
    ),
    "trio_channel_pool_nowait": (
        "trio channel pool, send_nowait+fallback",
        alt.channel_pool_nowait_throughput,
        None,
    ),
    "trio_spawn_semaphore": (
        "trio nursery spawn + Semaphore",
        alt.trio_spawn_semaphore_throughput,
        None,
    ),
    "anyio_taskgroup_limiter": (
        "anyio TaskGroup + CapacityLimiter (trio)",
        alt.anyio_taskgroup_limiter_throughput,
        "anyio",
    ),
    "aiometer": ("aiometer run_on_each (trio)", alt.aiometer_throughput, "aiometer"),
    "asyncio_taskgroup_semaphore": (
        "asyncio TaskGroup + Semaphore",
        alt.asyncio_taskgroup_semaphore_throughput,
        None,
    ),
    "asyncio_queue_pool": (
        "asyncio Queue pool (maxsize=workers)",
        alt.asyncio_queue_pool_throughput,
        None,
    ),
    "aiojobs": ("aiojobs Scheduler", alt.aiojobs_throughput, "aiojobs"),
}


def run(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    contenders: list[Contender] = []
    skipped: list[str] = []
    if bh is not None:
        for key, (label, copy, nowait) in BULKHEAD_VARIANTS.items():
            contenders.append(
                Contender(
                    key,
                    label,
                    bind(
                        bh.throughput,
                        s.jobs,
                        s.workers,
                        copy_context=copy,
                        nowait=nowait,
                    ),
                    bulkhead=True,
                )
            )
        for hooks, label in (
            ("unset", "bulkhead dispatch, hooks=Hooks() (nothing set)"),
            ("on_finished", "bulkhead dispatch, one no-op hook"),
        ):
            contenders.append(
                Contender(
                    f"bulkhead_hooks_{hooks}",
                    label,
                    bind(bh.throughput_hooks, s.jobs, s.workers, hooks=hooks),
                    bulkhead=True,
                )
            )
    for key, (label, fn, module) in ALTERNATIVES.items():
        needs_taskgroup = key.startswith("asyncio") and not hasattr(
            asyncio, "TaskGroup"
        )
        if (module is not None and not have(module)) or needs_taskgroup:
            skipped.append(label)
            continue
        contenders.append(Contender(key, label, bind(fn, s.jobs, s.workers)))
    raw = interleave(contenders, s.repeat, progress="throughput")
    results = timed_results(contenders, raw, s.jobs)
    return {
        "jobs": s.jobs,
        "workers": s.workers,
        "repeat": s.repeat,
        "results": results,
        "ratios": ratios(results, "min"),
        "ratios_median": ratios(results, "median"),
        "skipped": skipped,
    }


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6: a default pool at least as fast as a hand-rolled trio channel
    pool, ``copy_context=False`` 1.25x, ``dispatch_nowait`` 2x and as fast as
    asyncio's TaskGroup; issue 11: hooks left unset cost nothing."""
    tp = r.get("ratios", {})
    out = []

    def tp_ratio(alternative: str, variant: str) -> float | None:
        return tp.get(alternative, {}).get(variant)  # type: ignore[no-any-return]

    for variant, need in (
        ("bulkhead", 1.0),
        ("bulkhead", 1.25),
        ("bulkhead_nocopy", 1.25),
    ):
        x = tp_ratio("trio_channel_pool", variant)
        out.append(
            goal(
                f"{variant} dispatch >= {need}x trio channel pool",
                x,
                need,
                None if x is None else x >= need,
            )
        )
    for variant in ("bulkhead_nowait", "bulkhead_nocopy_nowait"):
        x = tp_ratio("trio_channel_pool", variant)
        out.append(
            goal(
                f"{variant} >= 2x trio channel pool",
                x,
                2.0,
                None if x is None else x >= 2.0,
            )
        )
        if not hasattr(asyncio, "TaskGroup"):
            continue  # Python 3.10: no contender to compare with (see skipped)
        x = tp_ratio("asyncio_taskgroup_semaphore", variant)
        out.append(
            goal(
                f"{variant} >= 1x asyncio TaskGroup+Semaphore",
                x,
                1.0,
                None if x is None else x >= 1.0,
            )
        )
    x = tp.get("bulkhead_hooks_unset", {}).get("bulkhead")
    out.append(
        goal(
            "hooks=Hooks() (nothing set) vs no hooks, the same code: <= 1.10x (noise)",
            x,
            1.10,
            None if x is None else x <= 1.10,
        )
    )
    return out


def report(s: dict[str, Any], markdown: bool) -> str:
    heading = (
        f"throughput: {s['jobs']:,} trivial jobs, {s['workers']} workers, "
        f"best of {s['repeat']}"
    )
    text = title(heading, markdown) + "\n" + ratio_table(s, markdown)
    if s.get("skipped"):
        text += "\nnot installed, skipped: " + ", ".join(s["skipped"])
    return text
