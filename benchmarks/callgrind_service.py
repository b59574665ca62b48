"""Instructions per job through ``bulkhead serve``'s core, counted by callgrind.

Usage (from the repository root; needs ``valgrind``)::

    .venv/bin/python benchmarks/callgrind_service.py

Wall-clock figures of the service move by 15 % with this VM's mood;
instruction counts much less. This runs trivial ``add`` jobs of
``examples/service_jobs.py`` through a :class:`bulkhead.service.Service` in
process, with a SQLite journal in a temp dir, ``service.py``'s pools and the
JSON log of ``bulkhead serve`` (to ``/dev/null``): submitted in batches of
1,000 with ``Service.submit``, as ``service.py --only e2e`` submits them
through HTTP, then waited for until every one succeeded. It runs under
``valgrind --tool=callgrind`` for ``N = 1000`` and ``N = 3000`` (both at
once) and prints ``(Ir(3000) - Ir(1000)) / 2000``: the difference cancels
start-up, imports and teardown, leaving the cost of one job. HTTP is not
counted. How the journal's writer batches depends on timing, which valgrind
changes, so counts move by about 3 % from run to run.
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
ROOT = HERE.parent
POOLS = "low=2,normal=4,high=8,urgent=2"  # service.py's
BATCH = 1000
SMALL, LARGE = 1000, 3000


def _workload(n: int) -> None:
    import trio

    sys.path[:0] = [str(ROOT), str(ROOT / "src")]
    from examples.service_jobs import registry

    from bulkhead.service import Service, ServiceConfig, Submission
    from bulkhead.service._logging import configure_logging

    handler = configure_logging("INFO")
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115  # the process's

    async def main() -> None:
        with tempfile.TemporaryDirectory() as folder:
            config = ServiceConfig.load(
                {"pools": POOLS, "journal": f"{folder}/journal.sqlite3"}, {}
            )
            service = Service(config, registry)
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                for first in range(0, n, BATCH):
                    jobs = [
                        Submission("add", {"x": i, "y": 1})
                        for i in range(first, min(n, first + BATCH))
                    ]
                    await service.submit(jobs, batch=True)
                # Seldom: a look costs a journal read, and valgrind slows
                # the jobs, not the clock.
                while True:
                    stats = await service.statistics()
                    if stats["total"]["succeeded"] >= n:
                        break
                    await trio.sleep(0.5)
                service.stop()
        handler.flush()

    trio.run(main)


def _instructions(out: Path) -> int:
    match = re.search(r"^totals: (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no totals in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload is not None:
        _workload(args.workload)
        return
    with tempfile.TemporaryDirectory() as folder:
        outs = {n: Path(folder) / f"callgrind.{n}.out" for n in (SMALL, LARGE)}
        runs = [
            subprocess.Popen(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    "--workload",
                    str(n),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            for n, out in outs.items()
        ]
        for run in runs:
            if run.wait():
                raise RuntimeError(f"{run.args} exited with {run.returncode}")
        per_job = (_instructions(outs[LARGE]) - _instructions(outs[SMALL])) / (
            LARGE - SMALL
        )
    print(f"service, SQLite journal, in process: {per_job:,.0f} instructions per job")


if __name__ == "__main__":
    main()
