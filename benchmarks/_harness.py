"""Measuring side by side, and printing what was measured.

Contenders of one scenario run interleaved: repetition r runs every contender
once, in an order rotated by r, so slow drifts of the machine (thermal, other
processes) spread over all of them instead of landing on one. Each scenario
keeps every sample; tables show the minimum (best of k) and the median.
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Contender:
    key: str
    """Short, stable id used in the JSON file and by ``plot.py``."""
    label: str
    """What the table prints."""
    run: Callable[[], Any]
    """One measurement: starts its own event loop, returns seconds or samples."""
    bulkhead: bool = False


def interleave(
    contenders: Sequence[Contender], repeat: int, *, progress: str = ""
) -> dict[str, list[Any]]:
    """Run each contender ``repeat`` times, interleaved; return all results."""
    results: dict[str, list[Any]] = {c.key: [] for c in contenders}
    n = len(contenders)
    for r in range(repeat):
        order = [contenders[(r + j) % n] for j in range(n)]
        for c in order:
            gc.collect()
            results[c.key].append(c.run())
        if progress:
            log(f"  {progress}: repetition {r + 1}/{repeat} done")
    return results


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {"min": min(samples), "median": statistics.median(samples)}


_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, markdown: bool = False
) -> str:
    """An aligned table, plain text or GitHub markdown; first column left-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    sep = " | " if markdown else "  "

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True))
        text = sep.join([first, *rest])
        return f"| {text} |" if markdown else text.rstrip()

    if markdown:
        marks = [":" + "-" * (widths[0] - 1)] + [
            "-" * (w - 1) + ":" for w in widths[1:]
        ]
        rule = "| " + " | ".join(marks) + " |"
    else:
        rule = sep.join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def have(module: str) -> bool:
    """Whether ``module`` can be imported (an optional contender's library)."""
    return importlib.util.find_spec(module) is not None


def bind(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    def run() -> Any:
        return fn(*args, **kwargs)

    return run


def spread(values: list[float]) -> float:
    return max(values) / min(values)


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


def timed_results(
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


def ratios(results: dict[str, Any], stat: str) -> dict[str, dict[str, float]]:
    """``ratios[x][b]`` = time of x / time of bulkhead variant b (>1: b faster)."""
    variants = [k for k, v in results.items() if v["bulkhead"]]
    return {
        key: {
            b: value["us_per_job"][stat] / results[b]["us_per_job"][stat]
            for b in variants
        }
        for key, value in results.items()
    }


def goal(
    text: str, value: float | None, threshold: float, met: bool | None, unit: str = "x"
) -> dict[str, Any]:
    """One goal of a scenario: its measured value and whether it is met."""
    return {
        "goal": text,
        "value": value,
        "threshold": threshold,
        "unit": unit,
        "met": met,
    }
