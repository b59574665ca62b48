"""Profile bulkhead's dispatch path on the throughput scenario.

Usage (from the repository root)::

    .venv/bin/python benchmarks/profile_dispatch.py [--jobs N] [--top K]
        [--variant dispatch|nocopy|nowait|nocopy-nowait] [--pyinstrument]

Prints cProfile's functions sorted by own time (``tottime``). cProfile adds a
fixed cost to every Python call, so it overstates code made of many small
calls; read it for *where* time goes and confirm any change with ``run.py``.
``--pyinstrument`` (if installed) samples instead and shows the call tree.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

VARIANTS = {
    "dispatch": {"copy_context": True, "nowait": False},
    "nocopy": {"copy_context": False, "nowait": False},
    "nowait": {"copy_context": True, "nowait": True},
    "nocopy-nowait": {"copy_context": False, "nowait": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="dispatch")
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import _bulkhead_cases

    options = VARIANTS[args.variant]
    plain = _bulkhead_cases.throughput(args.jobs, args.workers, **options)
    print(f"{args.variant}: {plain / args.jobs * 1e6:.2f} us/job unprofiled")

    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002)
        profiler.start()
        _bulkhead_cases.throughput(args.jobs, args.workers, **options)
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, short_mode=False))
        return

    profile = cProfile.Profile()
    profile.enable()
    _bulkhead_cases.throughput(args.jobs, args.workers, **options)
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
