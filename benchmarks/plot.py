"""Draw ``benchmarks/results/latest.json`` as ``docs/_static/performance.png``.

Usage (from the repository root, after ``make bench``)::

    .venv/bin/python benchmarks/plot.py [--input JSON] [--output PNG]

Needs matplotlib (in the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BULKHEAD = "#1f77b4"
OTHER = "#a0a0a0"
CHANNEL = "#ff7f0e"


def _bars(ax: Axes, section: dict[str, Any], title: str) -> None:
    """Horizontal bars of the best time per job; a dot marks the median."""
    results = list(section["results"].values())[::-1]
    labels = [r["label"] for r in results]
    best = [r["us_per_job"]["min"] for r in results]
    median = [r["us_per_job"]["median"] for r in results]
    colors = [BULKHEAD if r["bulkhead"] else OTHER for r in results]
    y = range(len(results))
    ax.barh(y, best, color=colors)
    ax.plot(median, y, "k.", markersize=4, label="median")
    for yi, value, mid in zip(y, best, median, strict=True):
        ax.text(max(value, mid), yi, f"  {value:.1f}", va="center", fontsize=7)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.set_xlabel("µs per job (best of k; dot: median)")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(0, max(median + best) * 1.18)


def _isolation(ax: Axes, section: dict[str, Any]) -> None:
    results = list(section["results"].values())
    labels = [r["label"].replace(", ", ",\n", 1) for r in results]
    x = range(len(results))
    p50 = [r["p50_us"]["median"] for r in results]
    p99 = [r["p99_us"]["median"] for r in results]
    ax.bar([i - 0.2 for i in x], p50, width=0.4, label="p50", color=BULKHEAD)
    ax.bar([i + 0.2 for i in x], p99, width=0.4, label="p99", color=CHANNEL)
    ax.axhline(1000, color="red", linewidth=0.8, linestyle="--", label="1 ms")
    ax.set_yscale("log")
    ax.set_xticks(list(x), labels, fontsize=6.5)
    ax.set_ylabel("dispatch-to-start latency, µs (log)")
    ax.set_title(
        f"isolation: quiet pool latency while the other takes "
        f"{section['flood']:,} x {section['slow'] * 1000:g} ms",
        fontsize=9,
    )
    ax.legend(fontsize=7)


def _scaling(ax: Axes, section: dict[str, Any], axis: str) -> None:
    points = section["sweeps"][axis]
    xs = [p[axis] for p in points]
    for who, color, label in (
        ("bulkhead", BULKHEAD, "bulkhead dispatch"),
        ("trio_channel_pool", CHANNEL, "trio channel pool"),
    ):
        if who in points[0]:
            ax.plot(xs, [p[who]["min"] for p in points], "o-", color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_ylim(bottom=0)
    ax.set_xlabel(
        f"pools (of {section['pool_workers']} workers)"
        if axis == "pools"
        else "workers (one pool)"
    )
    ax.set_ylabel("µs per job (best of k)")
    ax.set_title(f"scaling: per-dispatch cost vs {axis}", fontsize=9)
    ax.legend(fontsize=7)


def _memory(ax: Axes, section: dict[str, Any]) -> None:
    """The tracemalloc run as a curve; the long untraced runs as a caption."""
    notes = []
    for r in section["results"].values():
        samples = r["samples"][1:]  # from the end of warm-up on
        if r.get("traced"):
            base = samples[0]["traced_bytes"]
            jobs = [p["jobs"] / 1000 for p in samples]
            kib = [(p["traced_bytes"] - base) / 1024 for p in samples]
            color = BULKHEAD if r["bulkhead"] else CHANNEL
            ax.plot(jobs, kib, "o-", color=color, markersize=3, label=r["label"])
        else:
            notes.append(
                f"{r['label']}: {r['blocks_growth']:+,} blocks over {r['jobs']:,} jobs"
            )
    ax.axhline(1024, color="red", linewidth=0.8, linestyle="--", label="1 MiB")
    ax.set_ylim(-64, 1280)
    ax.set_xlabel("thousand jobs (tracemalloc on from the end of warm-up)")
    ax.set_ylabel("traced memory growth, KiB")
    ax.set_title("memory: a stream of jobs, no handle kept", fontsize=9)
    if notes:
        ax.text(
            0.02,
            0.55,
            "untraced, sys.getallocatedblocks():\n" + "\n".join(notes),
            transform=ax.transAxes,
            fontsize=7,
        )
    ax.legend(fontsize=7, loc="upper right")


def plot(data: dict[str, Any], output: Path) -> None:
    fig, axes = plt.subplots(3, 2, figsize=(14, 14), layout="constrained")
    (a, b), (c, f), (d, e) = axes
    if "throughput" in data:
        s = data["throughput"]
        _bars(a, s, f"throughput: {s['jobs']:,} trivial jobs, {s['workers']} workers")
    if "rounds" in data:
        s = data["rounds"]
        _bars(b, s, f"rounds: {s['rounds']} x {s['per_round']} jobs, barrier each")
    if "isolation" in data:
        _isolation(c, data["isolation"])
    if "scaling" in data:
        _scaling(d, data["scaling"], "pools")
        _scaling(e, data["scaling"], "workers")
    if "memory" in data:
        _memory(f, data["memory"])
    meta = data["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    fig.suptitle(
        f"bulkhead benchmarks ({meta['machine']}; {versions}; {meta['date'][:10]})",
        fontsize=10,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "docs" / "_static" / "performance.png"
    )
    args = parser.parse_args()
    plot(json.loads(args.input.read_text()), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
