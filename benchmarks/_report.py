"""Tables from a results dict (the content of ``results/latest.json``).

``run.py`` prints them as text; ``table.py`` prints them as markdown for the docs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from _harness import table

# Column names for the ratio columns; the legend under each table spells them out.
SHORT = {
    "bulkhead": "bh",
    "bulkhead_nocopy": "bh nc",
    "bulkhead_nowait": "bh nw",
    "bulkhead_nocopy_nowait": "bh nc+nw",
}
LEGEND = (
    "ratios = contender time / bulkhead time (>1: bulkhead faster); "
    "bh = dispatch, nc = copy_context=False, nw = dispatch_nowait with "
    "blocking fallback"
)


def render(
    data: dict[str, Any],
    *,
    markdown: bool = False,
    sections: Collection[str] | None = None,
) -> str:
    """The header, then each section of ``data`` (or only ``sections``)."""
    parts = [_header(data, markdown)]
    for name, fn in (
        ("targets", _targets),
        ("throughput", _throughput),
        ("rounds", _rounds),
        ("isolation", _isolation),
        ("memory", _memory),
        ("scaling", _scaling),
        ("dask", _dask),
    ):
        if name in data and (sections is None or name in sections):
            parts.append(fn(data, markdown))
    return "\n\n".join(parts) + "\n"


def _title(text: str, markdown: bool) -> str:
    return f"### {text}\n" if markdown else f"== {text} =="


def _header(data: dict[str, Any], markdown: bool) -> str:
    meta = data["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines = [
        f"{'quick smoke run' if meta['quick'] else 'full run'} on {meta['machine']}",
        f"{versions}",
        f"wall time {meta['wall_seconds']:.1f} s",
    ]
    load = meta.get("loadavg_1min") or {}
    if load.get("before") is not None:
        lines[-1] += (
            f"; 1-min load average {load['before']:.2f} before, "
            f"{load['after']:.2f} after (the run itself adds about 1)"
        )
    lines += [f"note: {n}" for n in meta.get("notes", [])]
    if markdown:
        return "\n".join(f"- {line}" for line in lines)
    return "\n".join(lines)


def _ratio_table(section: dict[str, Any], markdown: bool) -> str:
    results = section["results"]
    variants = [k for k, v in results.items() if v["bulkhead"]]
    headers = ["contender", "min us/job", "median us/job"]
    headers += [SHORT.get(v, v) for v in variants]
    rows = []
    for key, r in results.items():
        ratios = section["ratios"][key]
        rows.append(
            [
                r["label"],
                r["us_per_job"]["min"],
                r["us_per_job"]["median"],
                *(f"{ratios[v]:.2f}x" for v in variants),
            ]
        )
    text = table(headers, rows, markdown=markdown)
    if variants:
        text += f"\n{'' if not markdown else chr(10)}{LEGEND}"
    return text


def _throughput(data: dict[str, Any], markdown: bool) -> str:
    s = data["throughput"]
    title = (
        f"throughput: {s['jobs']:,} trivial jobs, {s['workers']} workers, "
        f"best of {s['repeat']}"
    )
    text = _title(title, markdown) + "\n" + _ratio_table(s, markdown)
    if s.get("skipped"):
        text += "\nnot installed, skipped: " + ", ".join(s["skipped"])
    return text


def _rounds(data: dict[str, Any], markdown: bool) -> str:
    s = data["rounds"]
    title = (
        f"rounds: {s['rounds']} rounds x {s['per_round']} jobs, dispatch then "
        f"barrier, {s['workers']} workers, best of {s['repeat']}"
    )
    return _title(title, markdown) + "\n" + _ratio_table(s, markdown)


def _isolation(data: dict[str, Any], markdown: bool) -> str:
    s = data["isolation"]
    title = (
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
        f"{_title(title, markdown)}\n{table(headers, rows, markdown=markdown)}\n{note}"
    )


def _memory(data: dict[str, Any], markdown: bool) -> str:
    s = data["memory"]
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
    title = "memory: one stream of jobs, no barrier until the end, no handle kept"
    note = (
        "growth = end of the run minus the first sample after warm-up "
        "(gc.collect() before each sample); tracemalloc slows Python about 6x, "
        "so the traced run is shorter and the full count runs untraced, "
        "watching sys.getallocatedblocks()"
    )
    return (
        f"{_title(title, markdown)}\n{table(headers, rows, markdown=markdown)}\n{note}"
    )


def _scaling(data: dict[str, Any], markdown: bool) -> str:
    s = data["scaling"]
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
        title = (
            f"scaling over {axis}: {s['jobs']:,} jobs per point, rendezvous "
            f"dispatch round-robin over the pools, best of {s['repeat']}"
        )
        parts.append(
            f"{_title(title, markdown)}\n{table(headers, rows, markdown=markdown)}"
        )
    return "\n\n".join(parts)


def _targets(data: dict[str, Any], markdown: bool) -> str:
    rows = []
    for t in data["targets"]:
        value, unit = t["value"], t["unit"]
        if value is None:
            shown = "n/a"
        elif unit == "x":
            shown = f"{value:.2f}x"
        elif unit == "bytes":
            shown = f"{value / 1024:,.1f} KiB"
        elif unit == "us":
            shown = f"{value:,.1f} us"
        else:
            shown = f"{value:,}"
        met = {True: "MET", False: "not met", None: "n/a"}[t["met"]]
        rows.append([t["goal"], shown, met])
    return (
        _title("issue 6 targets", markdown)
        + "\n"
        + table(["goal", "measured", "status"], rows, markdown=markdown)
    )


DASK_SHORT = {
    "serial": "serial",
    "bulkhead_process": "process",
    "bulkhead_dask": "dask",
    "bulkhead_dask_slots": "dask {slots} slots",
    "distributed_map_wait": "map+wait",
}
DASK_POOL = "bulkhead_dask"


def _dask(data: dict[str, Any], markdown: bool) -> str:
    s = data["dask"]
    title = (
        f"dask: BSP rounds of a CPU job (a pure-Python loop), barrier after each "
        f"round, {s.get('workers', '?')} worker processes, best of "
        f"{s.get('repeat', '?')}"
    )
    if "unavailable" in s:
        return f"{_title('dask', markdown)}\n{s['unavailable']}"
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
    parts.append(_dask_crossover(s, short, markdown))
    if s.get("skipped"):
        parts.append("not installed, skipped: " + ", ".join(s["skipped"]))
    return _title(title, markdown) + "\n" + nl.join(parts)


def _dask_crossover(s: dict[str, Any], short: dict[str, str], markdown: bool) -> str:
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
