"""Tables from a results dict (the content of ``results/latest.json``).

``run.py`` prints them as text; ``table.py`` prints them as markdown for the docs.
"""

from __future__ import annotations

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


def render(data: dict[str, Any], *, markdown: bool = False) -> str:
    parts = [_header(data, markdown)]
    for name, fn in (
        ("targets", _targets),
        ("throughput", _throughput),
        ("rounds", _rounds),
        ("isolation", _isolation),
        ("memory", _memory),
        ("scaling", _scaling),
    ):
        if name in data:
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
