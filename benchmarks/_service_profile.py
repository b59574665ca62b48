"""Where a ``bulkhead serve`` submission spends its time, from py-spy samples.

``benchmarks/service.py --only profile`` runs ``py-spy record`` (``pip
install py-spy``; it is no dependency of bulkhead) on a ``bulkhead serve``
with its SQLite journal while wrk submits jobs, then sorts every sample into
one layer by the innermost frame that belongs to a known one: the share of
the server's CPU each layer takes, the work a submission sets off (the job
running, its hooks and log line) included.
"""

from __future__ import annotations

import collections
import re
import subprocess
from pathlib import Path
from typing import Any

# (layer, pattern on "function (file)"). A sample goes to the layer of its
# innermost frame that matches one; trio's own frames (a lock, a checkpoint,
# a spawn) count for the layer that called them, and only samples with no
# caller of ours (the run loop itself) stay with trio's. Socket syscalls are a
# layer of their own, whoever made them.
LAYERS: tuple[tuple[str, str], ...] = (
    (
        "journal: SQLite writes (worker thread)",
        r"bulkhead/service/_(journal|sqlite|postgres)\.py",
    ),
    ("service feeder: claiming rows for the pools", r"bulkhead/service/_feeder\.py"),
    ("logging: the JSON log line per job", r"logging/|bulkhead/service/_logging"),
    ("JSON encoding and decoding", r"json/"),
    ("pydantic validation", r"pydantic"),
    ("bulkhead service core", r"bulkhead/service/_(service|intake|running|views)\.py"),
    ("bulkhead service HTTP edge", r"bulkhead/service/(_app|_http)"),
    ("bulkhead pools: running the job", r"bulkhead/"),
    ("FastAPI routing and dependencies", r"fastapi/"),
    ("Starlette middleware and responses", r"starlette/"),
    ("hypercorn and h11: HTTP/1.1 protocol", r"hypercorn/|h11/"),
    ("trio: sockets (send/recv syscalls)", r"trio/_socket\.py|_highlevel_socket"),
    ("trio: threads (to_thread hand-off)", r"trio/_threads|_thread_cache|threading"),
    ("trio: the run loop and I/O polling", r"trio/"),
)


def record(pid: int, seconds: int, output: Path) -> Path:
    """``py-spy record`` of ``pid`` for ``seconds``, raw collapsed stacks."""
    subprocess.run(
        [
            *("py-spy", "record", "--pid", str(pid), "--duration", str(seconds)),
            *("--rate", "200", "--nonblocking", "--threads", "--format", "raw"),
            *("--output", str(output)),
        ],
        check=True,
        capture_output=True,
    )
    return output


def _layer(frames: list[str], candidates: tuple[tuple[str, str], ...]) -> str:
    for frame in reversed(frames):
        for name, pattern in candidates:
            if re.search(pattern, frame):
                return name
    return ""


def layers(stacks: Path) -> dict[str, Any]:
    """Share of the samples in ``stacks`` per layer, and the top functions."""
    shares: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += samples
        layer = _layer(frames, LAYERS[:-2]) or _layer(frames, LAYERS[-2:])
        shares[layer or "other"] += samples
    return {
        "samples": total,
        "layers": {k: v / total for k, v in shares.most_common()},
        "top_functions": {k: v / total for k, v in own.most_common(15)},
    }
