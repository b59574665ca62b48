"""Which job failed, and failures you handle yourself.

A round of lookups runs in one pool. Some keys are missing, which the program
expects: it reads each job as it ends with ``bulkhead.as_completed``, handles
the ``KeyError`` and marks that failure handled, so the barrier does not raise
it again. One key is corrupt, which nobody handles: the barrier raises it in
a :exc:`bulkhead.JobsFailed`, where a note on the exception names its job.

Run it::

    python examples/failures.py
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

import bulkhead

STORE = {"a": 1, "b": 2, "c": 3, "bad": "corrupt"}


async def lookup(key: str) -> int:
    await trio.sleep(0.01 * len(key))  # simulated I/O: longer keys take longer
    value = STORE[key]  # KeyError for a missing key
    if not isinstance(value, int):
        raise ValueError(f"value of {key!r} is corrupt")
    return value


async def round_of_lookups(keys: list[str]) -> int:
    found: dict[str, int] = {}
    async with bulkhead.open_dispatcher({0: 4}) as d:
        jobs = [
            await d.dispatch(lookup, key, name=f"lookup {key}", tag=key) for key in keys
        ]
        async for job in bulkhead.as_completed(jobs):
            try:
                found[job.tag] = await job.wait()
            except KeyError:
                job.mark_handled()  # a missing key is an answer, not a failure
                print(f"{job.name}: no such key (handled)")
            except ValueError:
                pass  # not ours to handle: the barrier raises it
        try:
            await d.barrier()
        except bulkhead.JobsFailed as failed:
            print(f"barrier: {failed.report.failed} failed, raised: {failed}")
            for exc in failed.exceptions:
                print(f"  {exc!r}, {'; '.join(getattr(exc, '__notes__', []))}")
    print(f"found {len(found)} of {len(keys)} keys")
    return len(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", default=["a", "b", "zz", "bad", "c"])
    args = parser.parse_args(argv)
    trio.run(round_of_lookups, args.keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
