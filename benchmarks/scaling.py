"""Scaling: the cost per dispatch over the number of pools and of workers.

Rendezvous dispatch round-robin over 1 to 64 pools of 16 workers, and into
one pool of 1 to 1024 workers; the hand-off is O(1), so the sweeps should be
flat, except where few workers make every job wait for the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import _alternatives as alt
from _harness import Contender, bind, goal, interleave, spread, summary, table
from _report import title


@dataclass(frozen=True)
class Settings:
    """What the scenario runs with."""

    scaling_jobs: int
    scaling_pools: tuple[int, ...]
    scaling_pool_workers: int
    scaling_workers: tuple[int, ...]
    scaling_repeat: int


FULL = Settings(
    scaling_jobs=20_000,
    scaling_pools=(1, 2, 4, 8, 16, 32, 64),
    scaling_pool_workers=16,
    scaling_workers=(1, 4, 16, 64, 256, 1024),
    scaling_repeat=3,
)

QUICK = Settings(
    scaling_jobs=2_000,
    scaling_pools=(1, 8, 64),
    scaling_pool_workers=16,
    scaling_workers=(1, 16, 1024),
    scaling_repeat=1,
)

SMOKE = replace(
    QUICK,
    scaling_jobs=100,
    scaling_pools=(1, 8),
    scaling_workers=(1, 64),
    scaling_repeat=1,
)
"""``--smoke``: toy sizes, once; the figures mean nothing, the run only
shows that the scenario still works."""


def run(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    grid = [("pools", p, s.scaling_pool_workers) for p in s.scaling_pools]
    grid += [("workers", 1, w) for w in s.scaling_workers]
    contenders: list[Contender] = []
    for axis, pools, workers in grid:
        tag = f"{axis}:{pools}x{workers}"
        if bh is not None:
            contenders.append(
                Contender(
                    f"bulkhead@{tag}",
                    "bulkhead",
                    bind(bh.scaling, s.scaling_jobs, pools, workers),
                    bulkhead=True,
                )
            )
        contenders.append(
            Contender(
                f"trio_channel_pool@{tag}",
                "trio channel pool",
                bind(alt.channel_pool_scaling, s.scaling_jobs, pools, workers),
            )
        )
    raw = interleave(contenders, s.scaling_repeat, progress="scaling")
    sweeps: dict[str, list[dict[str, Any]]] = {"pools": [], "workers": []}
    for axis, pools, workers in grid:
        tag = f"{axis}:{pools}x{workers}"
        point: dict[str, Any] = {"pools": pools, "workers": workers}
        for who in ("bulkhead", "trio_channel_pool"):
            if f"{who}@{tag}" in raw:
                per_job = [x / s.scaling_jobs * 1e6 for x in raw[f"{who}@{tag}"]]
                point[who] = summary(per_job)
        sweeps[axis].append(point)
    spreads = {
        axis: {
            who: spread([p[who]["min"] for p in points])
            for who in ("bulkhead", "trio_channel_pool")
            if who in points[0]
        }
        for axis, points in sweeps.items()
    }
    return {
        "jobs": s.scaling_jobs,
        "repeat": s.scaling_repeat,
        "pool_workers": s.scaling_pool_workers,
        "sweeps": sweeps,
        "spread": spreads,
    }


FLAT = 1.25  # a sweep is flat if its slowest point is within 25% of its fastest


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6: the cost per dispatch does not depend on pools or workers."""
    sc = r.get("spread", {})
    out = []
    for axis in ("pools", "workers"):
        x = sc.get(axis, {}).get("bulkhead")
        ref = sc.get(axis, {}).get("trio_channel_pool")
        ok = None if x is None else x <= FLAT or (ref is not None and x <= ref * 1.05)
        out.append(
            goal(
                f"scaling over {axis}: slowest/fastest (or <= channel pool's)",
                x,
                FLAT,
                ok,
            )
        )
    return out


def report(s: dict[str, Any], markdown: bool) -> str:
    parts = []
    for axis in ("pools", "workers"):
        points = s["sweeps"][axis]
        who = [w for w in ("bulkhead", "trio_channel_pool") if w in points[0]]
        headers = ["pools", "workers"]
        headers += [f"{w} us/job (min)" for w in who]
        rows = [[p["pools"], p["workers"], *(p[w]["min"] for w in who)] for p in points]
        rows.append(
            ["slowest/fastest", "", *(f"{s['spread'][axis][w]:.2f}" for w in who)]
        )
        heading = (
            f"scaling over {axis}: {s['jobs']:,} jobs per point, rendezvous "
            f"dispatch round-robin over the pools, best of {s['repeat']}"
        )
        parts.append(
            f"{title(heading, markdown)}\n{table(headers, rows, markdown=markdown)}"
        )
    return "\n\n".join(parts)
