"""Print ``benchmarks/results/latest.json`` as markdown tables (for the docs).

Usage (from the repository root)::

    .venv/bin/python benchmarks/table.py [--input JSON] [--only dask] > some.md
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
    parser.add_argument(
        "--only", help="comma-separated sections (default: every one in the file)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _report import render

    sections = None if args.only is None else args.only.split(",")
    data = json.loads(args.input.read_text())
    print(render(data, markdown=True, sections=sections), end="")


if __name__ == "__main__":
    main()
