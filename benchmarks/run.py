"""bulkhead side by side with the alternatives (issue 6); ``make bench`` runs this.

Usage (from the repository root)::

    .venv/bin/python benchmarks/run.py            # full run, about 3 minutes
    .venv/bin/python benchmarks/run.py --quick    # smoke run, about 20 seconds
    .venv/bin/python benchmarks/run.py --smoke    # each scenario once, toy sizes, ~10 s

One process measures every scenario; inside a scenario the contenders run
interleaved, best of k. The report goes to stdout (progress to stderr) and every
figure to ``benchmarks/results/latest.json`` (a ``--quick`` or ``--smoke`` run
writes to the temporary directory instead, and a full run of some scenarios
only, ``--only dask`` say, to ``benchmarks/results/dask.json``, unless
``--output`` says where).
``plot.py`` draws the JSON, ``table.py`` prints it as markdown.

``--smoke`` runs the ``--quick`` scenarios at toy sizes, once each: its figures
mean nothing, it only shows that every scenario still runs and reports (the
unit suite runs it, in ``tests/test_benchmarks.py``).

Alternatives that are not dependencies of bulkhead (anyio, aiometer, aiojobs)
come with the ``bench`` extra; a missing one is skipped and named in the report.
The ``dask`` scenario needs ``distributed`` (the ``dask`` extra, which ``make
bench`` installs); without it the scenario is skipped, with a line that says so.
The job service is measured apart, by ``benchmarks/service.py``.

Each scenario is a module of its own (``throughput.py``, ``rounds.py``,
``isolation.py``, ``memory.py``, ``scaling.py``, ``dask_pools.py``) with its
settings, its run, its goals and its report; ``_scenarios.py`` lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = HERE / "results" / "latest.json"
SCENARIOS = ("throughput", "rounds", "isolation", "memory", "scaling", "dask")
"""Every scenario, in report order (``_scenarios.SCENARIOS`` holds them)."""


def _import_bulkhead_cases() -> ModuleType | None:
    if importlib.util.find_spec("bulkhead") is None:
        # A fresh clone that has not installed the package: use the source tree.
        sys.path.insert(1, str(ROOT / "src"))
        if importlib.util.find_spec("bulkhead") is None:
            return None
    import _bulkhead_cases

    return _bulkhead_cases


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in (
        "bulkhead",
        "trio",
        "anyio",
        "aiometer",
        "aiojobs",
        "trio-parallel",
        "distributed",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="small smoke run (about 20 s)"
    )
    size.add_argument(
        "--smoke",
        action="store_true",
        help="every scenario once at toy sizes (about 10 s); figures mean nothing",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios (default: all of {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--repeat", type=int, help="best-of-k for throughput and rounds"
    )
    parser.add_argument(
        "--memory-jobs", type=int, help="jobs in the untraced memory run"
    )
    parser.add_argument("--output", type=Path, help="where to write the JSON")
    parser.add_argument(
        "--alternatives-only",
        action="store_true",
        help="measure the alternatives even if bulkhead cannot be imported",
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    import _scenarios
    from _harness import log
    from _report import render

    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")

    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings: dict[str, Any] = {}
    for name in only:
        scenario = _scenarios.SCENARIOS[name]
        chosen = {"smoke": scenario.SMOKE, "quick": scenario.QUICK}.get(
            profile, scenario.FULL
        )
        fields = {f.name for f in dataclasses.fields(chosen)}
        if args.repeat is not None and "repeat" in fields:
            chosen = dataclasses.replace(chosen, repeat=args.repeat)
        if args.memory_jobs is not None and "memory_jobs" in fields:
            chosen = dataclasses.replace(chosen, memory_jobs=args.memory_jobs)
        settings[name] = chosen

    notes: list[str] = []
    cases = _import_bulkhead_cases()
    if cases is None:
        if not args.alternatives_only:
            print(
                "error: cannot import bulkhead; install it (make bench does) or "
                "pass --alternatives-only",
                file=sys.stderr,
            )
            return 2
        notes.append("bulkhead not importable: alternatives only")
    memory = settings.get("memory")
    if memory is not None and memory.memory_traced_jobs < 1_000_000:
        notes.append(
            f"memory: {memory.memory_traced_jobs:,} jobs under tracemalloc and "
            f"{memory.memory_jobs:,} untraced (issue 6 asks 1,000,000; "
            "tracemalloc at 1M alone would take ~60 s of the 3-minute budget)"
        )

    load_before = _loadavg()
    started = time.perf_counter()
    data: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    for name in SCENARIOS:
        if name in only:
            log(f"{name} ...")
            scenario = _scenarios.SCENARIOS[name]
            data[name] = scenario.run(settings[name], cases)
            targets += scenario.goals(data[name])
    data["targets"] = targets
    data["meta"] = {
        "quick": profile != "full",
        "profile": profile,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "commit": _commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "versions": _versions(),
        "settings": {name: dataclasses.asdict(v) for name, v in settings.items()},
        "wall_seconds": time.perf_counter() - started,
        # another busy process skews every figure: the report shows these
        "loadavg_1min": {"before": load_before, "after": _loadavg()},
        "notes": notes,
    }

    print(render(data))

    output = args.output
    if output is None:
        if profile != "full":
            output = Path(tempfile.gettempdir()) / f"bulkhead-bench-{profile}.json"
        elif set(only) == set(SCENARIOS):
            output = DEFAULT_OUTPUT
        else:  # latest.json keeps the last run of every scenario
            names = "+".join(name for name in SCENARIOS if name in only)
            output = DEFAULT_OUTPUT.with_name(f"{names}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, output)
    log(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
