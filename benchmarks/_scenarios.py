"""The scenarios of issue 6: who runs, with which parameters, and what is kept.

Each ``run_*`` function measures one scenario and returns a JSON-ready dict;
``_report.py`` turns those dicts into tables, and ``targets()`` checks them
against the goals of issue 6.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib.util
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import _alternatives as alt
from _harness import Contender, interleave, log, summary
from _jobs import percentile, spin, spin_iterations_per_ms


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeat: int  # best-of-k for throughput and rounds
    jobs: int  # throughput
    workers: int
    rounds: int
    per_round: int
    flood: int  # isolation: slow jobs flooding pool A
    slow: float  # isolation: seconds per slow job
    probes: int  # isolation: small jobs through pool B
    interval: float  # isolation: seconds between two small jobs
    isolation_repeat: int
    memory_traced_jobs: int  # jobs run under tracemalloc
    memory_jobs: int  # jobs run untraced, counting allocated blocks
    scaling_jobs: int
    scaling_pools: tuple[int, ...]
    scaling_pool_workers: int
    scaling_workers: tuple[int, ...]
    scaling_repeat: int
    dask_work_ms: tuple[float, ...]  # dask: job sizes, in ms of work in this process
    dask_workers: int  # dask: worker processes of each pool and cluster
    dask_slots: int  # dask: slots of the pool on the map+wait cluster
    dask_per_round: int
    dask_max_rounds: int
    dask_budget_ms: float  # dask: serial work per measurement, sets the rounds
    dask_repeat: int


FULL = Settings(
    quick=False,
    repeat=5,
    jobs=100_000,
    workers=16,
    rounds=200,
    per_round=512,
    flood=2000,
    slow=0.010,
    probes=200,
    interval=0.0005,
    isolation_repeat=3,
    memory_traced_jobs=200_000,
    memory_jobs=1_000_000,
    scaling_jobs=20_000,
    scaling_pools=(1, 2, 4, 8, 16, 32, 64),
    scaling_pool_workers=16,
    scaling_workers=(1, 4, 16, 64, 256, 1024),
    scaling_repeat=3,
    dask_work_ms=(0.1, 10, 25, 50, 100),
    dask_workers=2,
    dask_slots=4,
    dask_per_round=8,
    dask_max_rounds=2,
    dask_budget_ms=200,
    dask_repeat=3,
)

QUICK = Settings(
    quick=True,
    repeat=2,
    jobs=5_000,
    workers=16,
    rounds=20,
    per_round=256,
    flood=200,
    slow=0.010,
    probes=50,
    interval=0.0005,
    isolation_repeat=1,
    memory_traced_jobs=20_000,
    memory_jobs=50_000,
    scaling_jobs=2_000,
    scaling_pools=(1, 8, 64),
    scaling_pool_workers=16,
    scaling_workers=(1, 16, 1024),
    scaling_repeat=1,
    dask_work_ms=(0.1, 10),
    dask_workers=2,
    dask_slots=4,
    dask_per_round=8,
    dask_max_rounds=2,
    dask_budget_ms=100,
    dask_repeat=1,
)


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# bulkhead variants: key -> (label, copy_context, nowait)
BULKHEAD_VARIANTS = {
    "bulkhead": ("bulkhead dispatch", True, False),
    "bulkhead_nocopy": ("bulkhead dispatch, copy_context=False", False, False),
    "bulkhead_nowait": ("bulkhead dispatch_nowait+fallback", True, True),
    "bulkhead_nocopy_nowait": (
        "bulkhead dispatch_nowait+fallback, copy_context=False",
        False,
        True,
    ),
}

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


def _timed_results(
    contenders: list[Contender], raw: dict[str, list[float]], jobs: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in contenders:
        seconds = raw[c.key]
        per_job = [s / jobs * 1e6 for s in seconds]
        out[c.key] = {
            "label": c.label,
            "bulkhead": c.bulkhead,
            "seconds": seconds,
            "us_per_job": summary(per_job),
        }
    return out


def _ratios(results: dict[str, Any], stat: str) -> dict[str, dict[str, float]]:
    """``ratios[x][b]`` = time of x / time of bulkhead variant b (>1: b faster)."""
    variants = [k for k, v in results.items() if v["bulkhead"]]
    return {
        key: {
            b: value["us_per_job"][stat] / results[b]["us_per_job"][stat]
            for b in variants
        }
        for key, value in results.items()
    }


def run_throughput(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    contenders: list[Contender] = []
    skipped: list[str] = []
    if bh is not None:
        for key, (label, copy, nowait) in BULKHEAD_VARIANTS.items():
            contenders.append(
                Contender(
                    key,
                    label,
                    _bind(
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
                    _bind(bh.throughput_hooks, s.jobs, s.workers, hooks=hooks),
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
        contenders.append(Contender(key, label, _bind(fn, s.jobs, s.workers)))
    raw = interleave(contenders, s.repeat, progress="throughput")
    results = _timed_results(contenders, raw, s.jobs)
    return {
        "jobs": s.jobs,
        "workers": s.workers,
        "repeat": s.repeat,
        "results": results,
        "ratios": _ratios(results, "min"),
        "ratios_median": _ratios(results, "median"),
        "skipped": skipped,
    }


def run_rounds(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    contenders: list[Contender] = []
    args = (s.rounds, s.per_round, s.workers)
    if bh is not None:
        for key in ("bulkhead", "bulkhead_nocopy", "bulkhead_nocopy_nowait"):
            label, copy, nowait = BULKHEAD_VARIANTS[key]
            run = _bind(bh.rounds, *args, copy_context=copy, nowait=nowait)
            contenders.append(Contender(key, label, run, bulkhead=True))
        contenders.append(
            Contender(
                "bulkhead_many",
                "bulkhead dispatch_many per round",
                _bind(bh.rounds_many, *args),
                bulkhead=True,
            )
        )
    contenders += [
        Contender(
            "trio_nursery_per_round",
            "trio nursery per round + Semaphore",
            _bind(alt.trio_nursery_rounds, *args),
        ),
        Contender(
            "trio_channel_pool_counter",
            "trio channel pool + per-round counter",
            _bind(alt.channel_pool_rounds, *args),
        ),
    ]
    raw = interleave(contenders, s.repeat, progress="rounds")
    results = _timed_results(contenders, raw, s.rounds * s.per_round)
    return {
        "rounds": s.rounds,
        "per_round": s.per_round,
        "workers": s.workers,
        "repeat": s.repeat,
        "results": results,
        "ratios": _ratios(results, "min"),
        "ratios_median": _ratios(results, "median"),
    }


def run_isolation(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
    kw = {"flood": s.flood, "slow": s.slow, "probes": s.probes, "interval": s.interval}
    contenders: list[Contender] = []
    if bh is not None:
        contenders += [
            Contender(
                "bulkhead_two_pools",
                "bulkhead, two pools of 4",
                _bind(bh.isolation, shared=False, **kw),
                bulkhead=True,
            ),
            Contender(
                "bulkhead_shared_pool",
                "bulkhead, one shared pool of 8",
                _bind(bh.isolation, shared=True, **kw),
                bulkhead=True,
            ),
        ]
    contenders += [
        Contender(
            "trio_channel_two_pools",
            "trio channel pools, two of 4",
            _bind(alt.channel_pool_isolation, shared=False, **kw),
        ),
        Contender(
            "trio_channel_shared_pool",
            "trio channel pool, one shared of 8",
            _bind(alt.channel_pool_isolation, shared=True, **kw),
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


def run_memory(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
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


def run_scaling(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
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
                    _bind(bh.scaling, s.scaling_jobs, pools, workers),
                    bulkhead=True,
                )
            )
        contenders.append(
            Contender(
                f"trio_channel_pool@{tag}",
                "trio channel pool",
                _bind(alt.channel_pool_scaling, s.scaling_jobs, pools, workers),
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
    spread = {
        axis: {
            who: _spread([p[who]["min"] for p in points])
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
        "spread": spread,
    }


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


def run_dask(s: Settings, bh: ModuleType | None) -> dict[str, Any]:
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
                _bind(run, size["iterations"], size["rounds"], size["per_round"]),
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


def _spread(values: list[float]) -> float:
    return max(values) / min(values)


def _bind(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    def run() -> Any:
        return fn(*args, **kwargs)

    return run


# --------------------------------------------------------------------------
# the goals of issue 6
# --------------------------------------------------------------------------

MIB = 1024 * 1024
FLAT = 1.25  # a sweep is flat if its slowest point is within 25% of its fastest


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of issue 6 with the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(
        goal: str,
        value: float | None,
        threshold: float,
        met: bool | None,
        unit: str = "x",
    ) -> None:
        out.append(
            {
                "goal": goal,
                "value": value,
                "threshold": threshold,
                "unit": unit,
                "met": met,
            }
        )

    tp = results.get("throughput", {}).get("ratios", {})

    def tp_ratio(alternative: str, variant: str) -> float | None:
        return tp.get(alternative, {}).get(variant)

    for variant, need in (
        ("bulkhead", 1.0),
        ("bulkhead", 1.25),
        ("bulkhead_nocopy", 1.25),
    ):
        r = tp_ratio("trio_channel_pool", variant)
        add(
            f"{variant} dispatch >= {need}x trio channel pool",
            r,
            need,
            None if r is None else r >= need,
        )
    for variant in ("bulkhead_nowait", "bulkhead_nocopy_nowait"):
        r = tp_ratio("trio_channel_pool", variant)
        add(
            f"{variant} >= 2x trio channel pool",
            r,
            2.0,
            None if r is None else r >= 2.0,
        )
        if not hasattr(asyncio, "TaskGroup"):
            continue  # Python 3.10: no contender to compare with (see skipped)
        r = tp_ratio("asyncio_taskgroup_semaphore", variant)
        add(
            f"{variant} >= 1x asyncio TaskGroup+Semaphore",
            r,
            1.0,
            None if r is None else r >= 1.0,
        )
    rd = results.get("rounds", {}).get("ratios", {})
    for variant in ("bulkhead", "bulkhead_nocopy"):
        r = rd.get("trio_nursery_per_round", {}).get(variant)
        add(
            f"rounds: {variant} >= 1x nursery per round",
            r,
            1.0,
            None if r is None else r >= 1.0,
        )
    # Issue 11: dispatch_many per round, and what unused hooks cost.
    for alternative, need in (
        ("trio_nursery_per_round", 1.5),
        ("trio_channel_pool_counter", 1.25),
    ):
        r = rd.get(alternative, {}).get("bulkhead_many")
        add(
            f"rounds: dispatch_many >= {need}x {alternative}",
            r,
            need,
            None if r is None else r >= need,
        )
    r = tp.get("bulkhead_hooks_unset", {}).get("bulkhead")
    add(
        "hooks=Hooks() (nothing set) vs no hooks, the same code: <= 1.10x (noise)",
        r,
        1.10,
        None if r is None else r <= 1.10,
    )
    iso = results.get("isolation", {}).get("results", {}).get("bulkhead_two_pools")
    if iso:
        p99 = iso["p99_us"]["median"]
        add("isolation: quiet pool p99 < 1 ms", p99, 1000, p99 < 1000, "us")
    mem = results.get("memory", {}).get("results", {})
    if "bulkhead_traced" in mem:
        growth = mem["bulkhead_traced"]["traced_growth_bytes"]
        jobs = mem["bulkhead_traced"]["jobs"]
        add(
            f"memory: traced growth < 1 MiB over {jobs:,} jobs",
            growth,
            MIB,
            growth < MIB,
            "bytes",
        )
    if "bulkhead" in mem:
        blocks = mem["bulkhead"]["blocks_growth"]
        jobs = mem["bulkhead"]["jobs"]
        # one leaked object per 100 jobs would already be 10,000 blocks per 1M
        limit = max(1000, jobs // 1000)
        add(
            f"memory: allocated blocks growth over {jobs:,} jobs",
            blocks,
            limit,
            blocks < limit,
            "blocks",
        )
    sc = results.get("scaling", {}).get("spread", {})
    for axis in ("pools", "workers"):
        r = sc.get(axis, {}).get("bulkhead")
        ref = sc.get(axis, {}).get("trio_channel_pool")
        ok = None if r is None else r <= FLAT or (ref is not None and r <= ref * 1.05)
        add(
            f"scaling over {axis}: slowest/fastest (or <= channel pool's)",
            r,
            FLAT,
            ok,
        )
    return out


def settings_dict(s: Settings) -> dict[str, Any]:
    return asdict(s)
