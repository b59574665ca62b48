"""The ``service`` scenario: ``POST /jobs`` against real server processes.

Each contender is a server process on 127.0.0.1 and a free port, started
once before anything is timed and stopped after the scenario: ``bulkhead
serve`` with its SQLite journal on disk, the same with ``--journal
:memory:``, and the plain-channel app of ``_channel_service.py``. All serve
``examples/service_jobs.py`` and log one JSON line per job to a file. The
load comes from this process: ``clients`` concurrent httpx clients (trio,
keep-alive) each POST ``{"type": "add", ...}`` in a loop; a run times the
first request to the last answer, and every request's latency.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REGISTRY = "examples.service_jobs:registry"
POOLS = "low=2,normal=4,high=8,urgent=2"
START_TIMEOUT = 30.0


class Server:
    """A server process whose JSON log goes to ``log``; ``url`` once listening."""

    def __init__(self, command: Sequence[str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=out, env=_environment()
            )
        self.url = self._wait_listening()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "listening":
                        return str(event["urls"][0])
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.log.name} did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 30 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")}
    # The servers import examples/ and, if bulkhead is not installed, src/.
    paths = [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


COMMANDS = {
    "bulkhead_journal": lambda d: [
        *("-m", "bulkhead", "serve", REGISTRY, "--port", "0", "--pools", POOLS),
        *("--journal", str(d / "journal.sqlite3"), "--keep-results", "10000"),
    ],
    "bulkhead_memory": lambda d: [
        *("-m", "bulkhead", "serve", REGISTRY, "--port", "0", "--pools", POOLS),
        *("--journal", ":memory:"),
    ],
    "trio_channel": lambda d: [
        str(HERE / "_channel_service.py"),
        *(REGISTRY, "--pools", POOLS),
    ],
}


@contextlib.contextmanager
def servers(keys: Sequence[str]) -> Iterator[dict[str, Server]]:
    """Start one server per contender (not timed); stop them all at exit."""
    with tempfile.TemporaryDirectory(prefix="bulkhead-bench-") as tmp:
        started: dict[str, Server] = {}
        try:
            for key in keys:
                folder = Path(tmp) / key
                folder.mkdir()
                command = [sys.executable, *COMMANDS[key](folder)]
                started[key] = Server(command, folder / "server.log")
            yield started
        finally:
            for server in started.values():
                server.stop()


def submit_load(url: str, submissions: int, clients: int) -> dict[str, Any]:
    """``clients`` clients POST ``submissions`` jobs in all; return the wall
    time, each request's latency in seconds, and the answers by status."""
    return trio.run(_submit_load, url, submissions, clients)


async def _submit_load(url: str, submissions: int, clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = iter(range(submissions))

    async def client(c: httpx.AsyncClient) -> None:
        for i in remaining:
            body = {"type": "add", "args": {"x": i, "y": 1}}
            t0 = time.perf_counter()
            response = await c.post("/jobs", json=body)
            latencies.append(time.perf_counter() - t0)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client, c)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "latencies": latencies, "statuses": statuses}
