"""Print ``benchmarks/results/latest.json`` as markdown tables (for the docs).

Usage (from the repository root)::

    .venv/bin/python benchmarks/table.py [--input JSON] > some.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _report import render

    print(render(json.loads(args.input.read_text()), markdown=True), end="")


if __name__ == "__main__":
    main()
