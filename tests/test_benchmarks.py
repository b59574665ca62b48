"""The benchmark suite keeps working: a smoke run exits cleanly and reports.

It asserts nothing about speed (figures on a shared machine are noise, and the
smoke sizes are toys); it only keeps `make bench` from rotting. ``--smoke``
runs every scenario once, in a few seconds; ``--quick`` and the full run use
the same code with bigger numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).parent.parent / "benchmarks" / "run.py"
SCENARIOS = {
    "throughput",
    "rounds",
    "isolation",
    "memory",
    "scaling",
    "dask",
}
"""The service's benchmark runs apart (``benchmarks/service.py``)."""


def test_smoke_benchmark_run_measures_every_scenario_and_writes_its_figures(
    tmp_path: Path,
) -> None:
    output = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(output.read_text())
    assert set(figures) == SCENARIOS | {"targets", "meta"}
    assert figures["meta"]["profile"] == "smoke"
    # bulkhead itself took part in every scenario, not only the alternatives.
    for name in SCENARIOS - {"scaling"}:
        results = figures[name]["results"].values()
        assert any(r["bulkhead"] for r in results), name
    for axis, points in figures["scaling"]["sweeps"].items():
        assert points, axis
        assert all("bulkhead" in point for point in points), axis
    # Each goal of issue 6 got its figure and a verdict, and the report ends
    # with them under the "issue 6 targets" summary.
    targets = figures["targets"]
    assert targets
    assert [
        t["goal"]
        for t in targets
        if not isinstance(t["value"], (int, float)) or not isinstance(t["met"], bool)
    ] == []
    report = result.stdout.splitlines()
    assert "== issue 6 targets ==" in report
    summary = report[report.index("== issue 6 targets ==") :]
    assert [
        t["goal"]
        for t in targets
        if not any(line.startswith(t["goal"]) for line in summary)
    ] == []
