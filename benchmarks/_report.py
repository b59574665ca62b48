"""Tables from a results dict (the content of ``results/latest.json``).

``run.py`` prints them as text; ``table.py`` prints them as markdown for the
docs. Each scenario renders its own section (its ``report()``); this module
holds the header, the table of goals and what several scenarios share.
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
    from _scenarios import SCENARIOS

    parts = [header(data, markdown)]
    if "targets" in data and (sections is None or "targets" in sections):
        parts.append(targets(data, markdown))
    for name, scenario in SCENARIOS.items():
        if name in data and (sections is None or name in sections):
            parts.append(scenario.report(data[name], markdown))
    return "\n\n".join(parts) + "\n"


def title(text: str, markdown: bool) -> str:
    return f"### {text}\n" if markdown else f"== {text} =="


def header(data: dict[str, Any], markdown: bool) -> str:
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


def ratio_table(section: dict[str, Any], markdown: bool) -> str:
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


def targets(data: dict[str, Any], markdown: bool) -> str:
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
        title("issue 6 targets", markdown)
        + "\n"
        + table(["goal", "measured", "status"], rows, markdown=markdown)
    )
