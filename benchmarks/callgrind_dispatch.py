"""Instructions per dispatched job, counted by valgrind's callgrind.

Usage (from the repository root; needs ``valgrind``)::

    .venv/bin/python benchmarks/callgrind_dispatch.py [VARIANT ...]

Wall-clock figures move with the machine's load; instruction counts do not.
For each variant this runs a trivial job ``N`` times through one pool of 16
workers under ``valgrind --tool=callgrind`` (with ``PYTHONHASHSEED=0``), for
``N = 1000`` and ``N = 6000``, and prints ``(Ir(6000) - Ir(1000)) / 5000``:
the difference cancels start-up, imports and teardown, leaving the cost of
one job. The variants:

* ``dispatch``: ``await d.dispatch(trivial, i)`` into a default pool;
* ``nocopy``: the same into a ``copy_context=False`` pool;
* ``nowait``: ``d.dispatch_nowait`` with a blocking ``dispatch`` as fallback;
* ``many``: one ``d.dispatch_many(trivial, [(i,) ...])`` call.

Every variant ends with a ``barrier()`` inside the measured program.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("dispatch", "nocopy", "nowait", "many")
WORKERS = 16
SMALL, LARGE = 1000, 6000


def _workload(variant: str, n: int) -> None:
    import trio

    import bulkhead

    async def trivial(i: int) -> int:
        return i

    copy_context = variant != "nocopy"
    config = bulkhead.PoolConfig(0, WORKERS, copy_context=copy_context)

    async def main() -> None:
        async with bulkhead.open_dispatcher([config]) as d:
            if variant == "many":
                await d.dispatch_many(trivial, [(i,) for i in range(n)])
            elif variant == "nowait":
                for i in range(n):
                    try:
                        d.dispatch_nowait(trivial, i)
                    except trio.WouldBlock:
                        await d.dispatch(trivial, i)
            else:
                for i in range(n):
                    await d.dispatch(trivial, i)
            await d.barrier()

    trio.run(main)


def _instructions(variant: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                variant,
                str(n),
            ],
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        assert match is not None, "no total in callgrind's output"
        return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "N"))
    args = parser.parse_args()
    if args.child:
        _workload(args.child[0], int(args.child[1]))
        return
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    for variant in args.variants or VARIANTS:
        small = _instructions(variant, SMALL)
        large = _instructions(variant, LARGE)
        per_job = (large - small) / (LARGE - SMALL)
        print(f"{variant:10} {per_job / 1000:6.1f}k instructions per job", flush=True)


if __name__ == "__main__":
    main()
