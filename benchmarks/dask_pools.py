"""Dask pools: BSP rounds of a CPU job on Dask, in processes and serially.

Rounds of a pure-Python CPU job of several sizes through a ``kind="dask"``
pool (on its own LocalCluster, and with more slots on a shared one), a
``kind="process"`` pool, raw ``distributed`` ``client.map`` + ``wait``, and a
serial loop; the report says from which job size on each one beats serial
and comes within 10 % of raw Dask. Named ``dask_pools`` so that it never
shadows the ``dask`` package.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import _alternatives as alt
from _harness import Contender, bind, have, interleave, log, summary, table
from _jobs import spin, spin_iterations_per_ms
from _report import title


@dataclass(frozen=True)
class Settings:
    """What the scenario runs with."""

    dask_work_ms: tuple[float, ...]  # dask: job sizes, in ms of work in this process
    dask_workers: int  # dask: worker processes of each pool and cluster
    dask_slots: int  # dask: slots of the pool on the map+wait cluster
    dask_per_round: int
    dask_max_rounds: int
    dask_budget_ms: float  # dask: serial work per measurement, sets the rounds
    dask_repeat: int


FULL = Settings(
    dask_work_ms=(0.1, 10, 25, 50, 100),
    dask_workers=2,
    dask_slots=4,
    dask_per_round=8,
    dask_max_rounds=2,
    dask_budget_ms=200,
    dask_repeat=3,
)

QUICK = Settings(
    dask_work_ms=(0.1, 10),
    dask_workers=2,
    dask_slots=4,
    dask_per_round=8,
    dask_max_rounds=2,
    dask_budget_ms=100,
    dask_repeat=1,
)

SMOKE = replace(
    QUICK,
    dask_work_ms=(0.1, 1),
    dask_slots=4,
    dask_per_round=4,
    dask_max_rounds=1,
)
"""``--smoke``: toy sizes, once; the figures mean nothing, the run only
shows that the scenario still works."""


# dask: key -> label, in the order of the tables
DASK_CONTENDERS = {
    "serial": "serial (one process, no pool)",
    "bulkhead_process": "bulkhead process pool",
    "bulkhead_dask": "bulkhead dask pool (own LocalCluster)",
    "bulkhead_dask_slots": "bulkhead dask pool, {slots} slots (dask_client=)",
    "distributed_map_wait": "distributed client.map + wait",
}
DASK_POOL = "bulkhead_dask"  # the ratios and crossovers are about this pool
DASK_RAW = "distributed_map_wait"
CLOSE_TO_RAW = 1.10  # the pool's overhead stops mattering: within 10% of raw
DASK_SKIPPED = (
    "distributed is not installed (pip install 'bulkhead[dask]'): dask scenario skipped"
)


def _dask_rounds(s: Settings, work_ms: float) -> int:
    """Rounds at one job size: about ``dask_budget_ms`` of serial work each."""
    rounds = round(s.dask_budget_ms / (s.dask_per_round * work_ms))
    return max(1, min(s.dask_max_rounds, rounds))


def run(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    """BSP rounds of a CPU job: Dask pool, process pool, raw distributed, serial.

    Every pool and cluster starts once, before anything is timed, and stays up
    for the whole scenario (each contender gets one untimed warm-up round);
    the contenders then run interleaved over every job size, timing only the
    rounds (``PoolSession`` for bulkhead, ``distributed_rounds`` for Dask).
    """
    if not have("distributed"):
        log(f"  {DASK_SKIPPED}")
        return {"unavailable": DASK_SKIPPED, "results": {}}
    per_ms = spin_iterations_per_ms()
    sizes = [
        {
            "work_ms": ms,
            "iterations": max(1, round(ms * per_ms)),
            "rounds": _dask_rounds(s, ms),
            "per_round": s.dask_per_round,
        }
        for ms in s.dask_work_ms
    ]
    for size in sizes:
        size["jobs"] = size["rounds"] * size["per_round"]
    labels = {
        key: label.format(slots=s.dask_slots) for key, label in DASK_CONTENDERS.items()
    }
    skipped: list[str] = []
    with contextlib.ExitStack() as stack:
        log("  dask: starting the pools and clusters (not timed)")
        runners: dict[str, Callable[[int, int, int], float]] = {
            "serial": functools.partial(alt.serial_rounds, spin)
        }
        if bh is None:
            skipped += [labels[k] for k in DASK_CONTENDERS if k.startswith("bulkhead")]
        elif have("trio_parallel"):
            pool = stack.enter_context(bh.pool_session(s.dask_workers, "process"))
            runners["bulkhead_process"] = functools.partial(pool.rounds, spin)
        else:
            skipped.append(labels["bulkhead_process"])
        if bh is not None:
            pool = stack.enter_context(bh.pool_session(s.dask_workers, "dask"))
            runners["bulkhead_dask"] = functools.partial(pool.rounds, spin)
        client = stack.enter_context(alt.distributed_cluster(s.dask_workers))
        if bh is not None:
            # More slots than the cluster has worker threads: the pool keeps
            # tasks queued on the cluster while others make their round trip.
            pool = stack.enter_context(
                bh.pool_session(s.dask_slots, "dask", dask_client=client)
            )
            runners["bulkhead_dask_slots"] = functools.partial(pool.rounds, spin)
        runners["distributed_map_wait"] = functools.partial(
            alt.distributed_rounds, client, spin
        )
        for run in runners.values():  # workers spawn and import the job's module
            run(sizes[0]["iterations"], 1, s.dask_per_round)
        contenders = [
            Contender(
                f"{key}@{i}",
                labels[key],
                bind(run, size["iterations"], size["rounds"], size["per_round"]),
                bulkhead=key.startswith("bulkhead"),
            )
            for i, size in enumerate(sizes)
            for key, run in runners.items()
        ]
        raw = interleave(contenders, s.dask_repeat, progress="dask")
        log("  dask: closing the pools and clusters (not timed)")
    results: dict[str, Any] = {}
    for key in runners:
        seconds = [raw[f"{key}@{i}"] for i in range(len(sizes))]
        results[key] = {
            "label": labels[key],
            "bulkhead": key.startswith("bulkhead"),
            "seconds": seconds,
            "ms_per_job": [
                summary([x / size["jobs"] * 1e3 for x in runs])
                for runs, size in zip(seconds, sizes, strict=True)
            ],
        }
    return {
        "workers": s.dask_workers,
        "slots": s.dask_slots,
        "per_round": s.dask_per_round,
        "repeat": s.dask_repeat,
        "iterations_per_ms": per_ms,
        "sizes": sizes,
        "results": results,
        "ratios": _dask_ratios(results, len(sizes), "min"),
        "ratios_median": _dask_ratios(results, len(sizes), "median"),
        "close_to_raw": CLOSE_TO_RAW,
        "crossover": _dask_crossover(results, sizes),
        "skipped": skipped,
    }


def _dask_ratios(
    results: dict[str, Any], points: int, stat: str
) -> list[dict[str, float]]:
    """Per job size: contender time / dask pool time (>1: the pool is faster)."""
    if DASK_POOL not in results:
        return [{} for _ in range(points)]
    pool = results[DASK_POOL]["ms_per_job"]
    return [
        {key: r["ms_per_job"][i][stat] / pool[i][stat] for key, r in results.items()}
        for i in range(points)
    ]


def _from_size_on(sizes: list[dict[str, Any]], holds: list[bool]) -> float | None:
    """The smallest job size from which on ``holds`` is true at every larger one."""
    found = None
    for size, ok in zip(reversed(sizes), reversed(holds), strict=True):
        if not ok:
            break
        found = size["work_ms"]
    return found


def _dask_crossover(
    results: dict[str, Any], sizes: list[dict[str, Any]]
) -> dict[str, dict[str, float | None]]:
    """Where a contender's overhead stops mattering, on the best-of-k figures.

    ``close_to_raw_ms``: the job size from which on the contender takes at most
    ``CLOSE_TO_RAW`` times the time of raw ``client.map`` + ``wait``;
    ``faster_than_serial_ms``: from which on it beats the serial loop. ``None``:
    not within the sizes measured; then ``close_to_raw_estimate_ms`` extrapolates
    from the largest size, taking the contender's extra time per job as
    constant and raw's time per job as proportional to the work (if raw's time
    there is mostly work: at least 5 times its time at the smallest size).
    """

    def best(key: str) -> list[float]:
        return [p["min"] for p in results[key]["ms_per_job"]]

    out: dict[str, dict[str, float | None]] = {}
    serial = best("serial")
    for key in results:
        if key == "serial":
            continue
        mine = best(key)
        point: dict[str, float | None] = {
            "faster_than_serial_ms": _from_size_on(
                sizes, [m < b for m, b in zip(mine, serial, strict=True)]
            )
        }
        if key != DASK_RAW and DASK_RAW in results:
            raw = best(DASK_RAW)
            point["close_to_raw_ms"] = _from_size_on(
                sizes, [m <= r * CLOSE_TO_RAW for m, r in zip(mine, raw, strict=True)]
            )
            extra = mine[-1] - raw[-1]
            # Only where raw's time is mostly work, not its own overhead.
            mostly_work = raw[-1] >= 5 * raw[0]
            if point["close_to_raw_ms"] is None and extra > 0 and mostly_work:
                needed = extra / (CLOSE_TO_RAW - 1)  # raw ms/job at the crossover
                point["close_to_raw_estimate_ms"] = (
                    sizes[-1]["work_ms"] * needed / raw[-1]
                )
        out[key] = point
    return out


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """No pass/fail goal: the scenario reports where a Dask pool's overhead
    stops mattering (its crossover table)."""
    return []


DASK_SHORT = {
    "serial": "serial",
    "bulkhead_process": "process",
    "bulkhead_dask": "dask",
    "bulkhead_dask_slots": "dask {slots} slots",
    "distributed_map_wait": "map+wait",
}


def report(s: dict[str, Any], markdown: bool) -> str:
    heading = (
        f"dask: BSP rounds of a CPU job (a pure-Python loop), barrier after each "
        f"round, {s.get('workers', '?')} worker processes, best of "
        f"{s.get('repeat', '?')}"
    )
    if "unavailable" in s:
        return f"{title('dask', markdown)}\n{s['unavailable']}"
    results = s["results"]
    short = {k: v.format(slots=s["slots"]) for k, v in DASK_SHORT.items()}
    keys = list(results)
    others = [k for k in keys if k != DASK_POOL] if DASK_POOL in results else []
    nl = "\n\n" if markdown else "\n"
    parts = []
    for stat, what in (("min", "best of k"), ("median", "median")):
        headers = ["work ms", "rounds x jobs"]
        headers += [short.get(k, k) for k in keys]
        if stat == "min":
            headers += [f"{short.get(k, k)} / dask" for k in others]
        rows = []
        for i, size in enumerate(s["sizes"]):
            row: list[object] = [
                f"{size['work_ms']:g}",
                f"{size['rounds']} x {size['per_round']}",
            ]
            row += [results[k]["ms_per_job"][i][stat] for k in keys]
            if stat == "min":
                row += [f"{s['ratios'][i][k]:.2f}x" for k in others]
            rows.append(row)
        parts.append(
            f"ms per job, {what}:{nl}{table(headers, rows, markdown=markdown)}"
        )
    legend = (
        "serial = a plain loop in this process; process = bulkhead "
        'kind="process" pool; dask = bulkhead kind="dask" pool on its own '
        f"LocalCluster; dask {s['slots']} slots = a dask pool of {s['slots']} "
        "slots on the map+wait cluster (dask_client=); map+wait = "
        "distributed client.map + wait per round. Pools and clusters have "
        f"{s['workers']} single-threaded worker processes. work ms = one job's "
        "time when called in this process; ms per job = the rounds' time / "
        "their jobs; ratios = contender time / dask pool time (>1: the dask "
        "pool is faster)"
    )
    parts.append(legend)
    parts.append(_crossover_table(s, short, markdown))
    if s.get("skipped"):
        parts.append("not installed, skipped: " + ", ".join(s["skipped"]))
    return title(heading, markdown) + "\n" + nl.join(parts)


def _crossover_table(s: dict[str, Any], short: dict[str, str], markdown: bool) -> str:
    largest = f"{s['sizes'][-1]['work_ms']:g} ms"

    def at(value: float | None) -> str:
        if value is None:
            return f"not up to {largest}"
        return f"from {value:g} ms jobs on"

    def near_raw(point: dict[str, Any]) -> str:
        if "close_to_raw_ms" not in point:
            return ""
        text = at(point["close_to_raw_ms"])
        estimate = point.get("close_to_raw_estimate_ms")
        if estimate is not None:
            text += f" (~{estimate:.0f} ms, extrapolated)"
        return text

    rows = [
        [short.get(key, key), at(point["faster_than_serial_ms"]), near_raw(point)]
        for key, point in s["crossover"].items()
    ]
    close = f"within {(s['close_to_raw'] - 1) * 100:.0f}% of map+wait"
    headers = ["crossover (best of k)", "faster than serial", close]
    return table(headers, rows, markdown=markdown)
