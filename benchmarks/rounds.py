"""Rounds: the bulk-synchronous loop, dispatch a round then ``barrier()``.

What iterative algorithms do: ``rounds`` rounds of ``per_round`` trivial jobs,
each round dispatched (job by job, or in one ``dispatch_many``) and then
waited for with a barrier, against a trio nursery per round and a channel
pool that counts each round's jobs. What ``dispatch_many`` gains depends on
the share of a round's cost that is per-call overhead: the scheduler round
trip each rendezvous ``dispatch`` makes, which ``dispatch_many`` does once
per round. It is largest for trivial jobs and small rounds, and shrinks as
the jobs do real work or the machine is busy (``docs/performance.rst``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import _alternatives as alt
from _harness import (
    BULKHEAD_VARIANTS,
    Contender,
    bind,
    goal,
    interleave,
    ratios,
    timed_results,
)
from _report import ratio_table, title


@dataclass(frozen=True)
class Settings:
    """What the scenario runs with."""

    repeat: int  # best-of-k for throughput and rounds
    rounds: int
    per_round: int
    workers: int


FULL = Settings(
    repeat=5,
    rounds=200,
    per_round=512,
    workers=16,
)

QUICK = Settings(
    repeat=2,
    rounds=20,
    per_round=256,
    workers=16,
)

SMOKE = replace(
    QUICK,
    repeat=1,
    rounds=3,
    per_round=32,
)
"""``--smoke``: toy sizes, once; the figures mean nothing, the run only
shows that the scenario still works."""


def run(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    contenders: list[Contender] = []
    args = (s.rounds, s.per_round, s.workers)
    if bh is not None:
        for key in ("bulkhead", "bulkhead_nocopy", "bulkhead_nocopy_nowait"):
            label, copy, nowait = BULKHEAD_VARIANTS[key]
            run = bind(bh.rounds, *args, copy_context=copy, nowait=nowait)
            contenders.append(Contender(key, label, run, bulkhead=True))
        contenders.append(
            Contender(
                "bulkhead_many",
                "bulkhead dispatch_many per round",
                bind(bh.rounds_many, *args),
                bulkhead=True,
            )
        )
    contenders += [
        Contender(
            "trio_nursery_per_round",
            "trio nursery per round + Semaphore",
            bind(alt.trio_nursery_rounds, *args),
        ),
        Contender(
            "trio_channel_pool_counter",
            "trio channel pool + per-round counter",
            bind(alt.channel_pool_rounds, *args),
        ),
    ]
    raw = interleave(contenders, s.repeat, progress="rounds")
    results = timed_results(contenders, raw, s.rounds * s.per_round)
    return {
        "rounds": s.rounds,
        "per_round": s.per_round,
        "workers": s.workers,
        "repeat": s.repeat,
        "results": results,
        "ratios": ratios(results, "min"),
        "ratios_median": ratios(results, "median"),
    }


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 6: a round costs no more than a nursery per round; issue 11:
    ``dispatch_many`` 1.5x a nursery per round and 1.25x a channel pool with
    a per-round counter."""
    rd = r.get("ratios", {})
    out = []
    for variant in ("bulkhead", "bulkhead_nocopy"):
        x = rd.get("trio_nursery_per_round", {}).get(variant)
        out.append(
            goal(
                f"rounds: {variant} >= 1x nursery per round",
                x,
                1.0,
                None if x is None else x >= 1.0,
            )
        )
    for alternative, need in (
        ("trio_nursery_per_round", 1.5),
        ("trio_channel_pool_counter", 1.25),
    ):
        x = rd.get(alternative, {}).get("bulkhead_many")
        out.append(
            goal(
                f"rounds: dispatch_many >= {need}x {alternative}",
                x,
                need,
                None if x is None else x >= need,
            )
        )
    return out


def report(s: dict[str, Any], markdown: bool) -> str:
    heading = (
        f"rounds: {s['rounds']} rounds x {s['per_round']} jobs, dispatch then "
        f"barrier, {s['workers']} workers, best of {s['repeat']}"
    )
    return title(heading, markdown) + "\n" + ratio_table(s, markdown)
