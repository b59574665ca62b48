"""Isolation: a flooded pool never delays another pool's jobs.

Pool A is flooded with ``flood`` slow jobs while small jobs go through pool
B one every ``interval`` seconds; the figure is each small job's
dispatch-to-start latency, for two pools and for one shared pool (where the
flood does delay them), bulkhead against trio channel pools.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import _alternatives as alt
from _harness import Contender, bind, goal, interleave, summary, table
from _jobs import percentile
from _report import title


@dataclass(frozen=True)
class Settings:
    """What the scenario runs with."""

    flood: int  # isolation: slow jobs flooding pool A
    slow: float  # isolation: seconds per slow job
    probes: int  # isolation: small jobs through pool B
    interval: float  # isolation: seconds between two small jobs
    isolation_repeat: int


FULL = Settings(
    flood=2000,
    slow=0.010,
    probes=200,
    interval=0.0005,
    isolation_repeat=3,
)

QUICK = Settings(
    flood=200,
    slow=0.010,
    probes=50,
    interval=0.0005,
    isolation_repeat=1,
)

SMOKE = replace(
    QUICK,
    flood=20,
    probes=5,
    isolation_repeat=1,
)
"""``--smoke``: toy sizes, once; the figures mean nothing, the run only
shows that the scenario still works."""


def run(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    kw = {"flood": s.flood, "slow": s.slow, "probes": s.probes, "interval": s.interval}
    contenders: list[Contender] = []
    if bh is not None:
        contenders += [
            Contender(
                "bulkhead_two_pools",
                "bulkhead, two pools of 4",
                bind(bh.isolation, shared=False, **kw),
                bulkhead=True,
            ),
            Contender(
                "bulkhead_shared_pool",
                "bulkhead, one shared pool of 8",
                bind(bh.isolation, shared=True, **kw),
                bulkhead=True,
            ),
        ]
    contenders += [
        Contender(
            "trio_channel_two_pools",
            "trio channel pools, two of 4",
            bind(alt.channel_pool_isolation, shared=False, **kw),
        ),
        Contender(
            "trio_channel_shared_pool",
            "trio channel pool, one shared of 8",
            bind(alt.channel_pool_isolation, shared=True, **kw),
        ),
    ]
    raw = interleave(contenders, s.isolation_repeat, progress="isolation")
    results: dict[str, Any] = {}
    for c in contenders:
        runs = raw[c.key]
        p50 = [percentile(r, 50) * 1e6 for r in runs]
        p99 = [percentile(r, 99) * 1e6 for r in runs]
        results[c.key] = {
            "label": c.label,
            "bulkhead": c.bulkhead,
            "p50_us": summary(p50),
            "p99_us": summary(p99),
            "max_us": summary([max(r) * 1e6 for r in runs]),
            "p50_us_runs": p50,
            "p99_us_runs": p99,
        }
    return {**kw, "repeat": s.isolation_repeat, "results": results}


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6: the quiet pool's p99 start latency stays under 1 ms."""
    iso = r.get("results", {}).get("bulkhead_two_pools")
    if not iso:
        return []
    p99 = iso["p99_us"]["median"]
    return [goal("isolation: quiet pool p99 < 1 ms", p99, 1000, p99 < 1000, "us")]


def report(s: dict[str, Any], markdown: bool) -> str:
    heading = (
        f"isolation: pool A flooded with {s['flood']:,} jobs of "
        f"{s['slow'] * 1000:g} ms; dispatch-to-start latency of {s['probes']} "
        f"small jobs through pool B, {s['repeat']} run(s)"
    )
    headers = ["contender", "p50 us", "p99 us", "max us", "p99 us (worst run)"]
    rows = [
        [
            r["label"],
            r["p50_us"]["median"],
            r["p99_us"]["median"],
            r["max_us"]["median"],
            max(r["p99_us_runs"]),
        ]
        for r in s["results"].values()
    ]
    note = "figures are the median over runs"
    return (
        f"{title(heading, markdown)}\n{table(headers, rows, markdown=markdown)}\n{note}"
    )
