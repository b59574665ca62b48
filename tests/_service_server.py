"""A real ``bulkhead serve`` process for tests/test_service.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "examples.service_jobs:registry"
START_TIMEOUT = 20.0


class ServerProcess:
    """``python -m bulkhead serve`` on 127.0.0.1 and a free port; its JSON
    log goes to a file (a pipe nobody reads would block it)."""

    def __init__(
        self,
        log: Path,
        journal: str,
        *args: str,
        env: dict[str, str] | None = None,
        registry: str | None = None,
    ) -> None:
        self.log = log
        self.journal = journal
        # REGISTRY read now, not as a default: tests may patch it.
        command = serve_command(
            registry or REGISTRY, "--port", "0", "--journal", journal, *args
        )
        environment = server_env(env)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=out, env=environment
            )
        self.url = self._wait_listening()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == "listening" and self._is_mine(event):
                    return str(event["urls"][0])
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def _is_mine(self, event: dict[str, Any]) -> bool:
        return bool(event.get("pid") == self.process.pid)

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines of every process that logged to this file."""
        return self.events_of(self.log)

    @staticmethod
    def events_of(log: Path) -> list[dict[str, Any]]:
        """The JSON log lines in ``log``."""
        events = []
        for line in log.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"raw": line})
        return events

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server."""
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the server to exit; return its status."""
        return self.process.wait(timeout)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit status."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.wait()
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def serve_command(registry: str, *args: str) -> list[str]:
    """``python -m bulkhead serve registry *args``."""
    return [sys.executable, "-m", "bulkhead", "serve", registry, *args]


def server_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without ``BULKHEAD_*``, plus ``env``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")}
    environment.update(env or {})
    return environment


def server_args(pools: str, *extra: str) -> Sequence[str]:
    """Command-line options for a test server."""
    return ("--pools", pools, "--log-level", "INFO", *extra)


@contextlib.contextmanager
def serving(base: Path, *args: str) -> Iterator[ServerProcess]:
    """A server whose log and journal are in ``base``; SIGTERM at exit
    (SIGKILL if it does not stop)."""
    process = ServerProcess(base / "server.log", str(base / "journal.sqlite3"), *args)
    try:
        yield process
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.stop()
        process.kill()
