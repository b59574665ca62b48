"""The benchmark suite keeps working: a quick run exits cleanly and reports.

It asserts nothing about speed (figures on a shared machine are noise); it only
keeps `make bench` from rotting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).parent.parent / "benchmarks" / "run.py"


def test_quick_benchmark_run_completes_and_writes_its_figures(tmp_path: Path) -> None:
    output = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "issue 6 targets" in result.stdout
    figures = json.loads(output.read_text())
    assert {"throughput", "rounds", "isolation", "memory"} <= set(figures)
