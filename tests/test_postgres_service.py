"""Two real ``bulkhead serve`` processes on one PostgreSQL queue, killed,
stopped, restarted and cut off from the database under load.

Jobs are the example registry's ``sleep`` (pool ``low``); the journal URL
carries short leases (``lease=1&heartbeat=0.25``) so a rescue takes about a
second. The database is read directly to check what every 202 became.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ._postgres_server import PostgresServer, postgres, postgres_server
from ._service_server import ServerProcess, server_args

__all__ = ["postgres"]  # a fixture, imported for pytest

LEASE = 2.0
HEARTBEAT = 0.25
SLACK = 3.0
"""Real seconds a shared 2-core machine may add to a promised delay."""
GUARD = 30.0
POOLS = "low=8:16,normal=1,high=1"


def journal_url(database: str) -> str:
    return f"{database}?lease={LEASE}&heartbeat={HEARTBEAT}&poll=0.2"


class Cluster:
    """Service instances on one journal, each logging to its own file."""

    def __init__(self, base: Path, database: str) -> None:
        self.base = base
        self.database = database
        self.instances: dict[str, ServerProcess] = {}
        self.accepted: set[int] = set()
        self.refused = 0

    def start(self, name: str) -> ServerProcess:
        self.instances[name] = ServerProcess(
            self.base / f"{name}.log",
            journal_url(self.database),
            *server_args(POOLS, "--grace-period", "5"),
        )
        return self.instances[name]

    def submit(self, name: str, n: int, seconds: float = 0.05) -> None:
        """POST a batch of ``n`` sleeps to instance ``name``; remember the
        ids of a 202, count anything else as refused."""
        body = {
            "jobs": [
                {"type": "sleep", "args": {"seconds": seconds, "tag": name}}
                for _ in range(n)
            ]
        }
        try:
            response = httpx.post(
                f"{self.instances[name].url}/jobs/batch", json=body, timeout=10
            )
        except httpx.TransportError:
            self.refused += 1
            return
        if response.status_code == 202:
            self.accepted.update(response.json()["ids"])
        else:
            assert response.status_code == 503, response.text
            self.refused += 1

    def rows(self) -> dict[int, tuple[str, int]]:
        """Every job's (state, runs) in the database."""
        with psycopg.connect(self.database) as conn:
            return {
                id: (state, runs)
                for id, state, runs in conn.execute(
                    "SELECT id, state, runs FROM bulkhead_jobs"
                )
            }

    def wait_all_succeeded(self) -> dict[int, tuple[str, int]]:
        """Wait until every accepted job succeeded; return the rows."""
        deadline = time.monotonic() + GUARD
        while True:
            with contextlib.suppress(psycopg.OperationalError):
                rows = self.rows()
                if all(rows.get(id, ("",))[0] == "succeeded" for id in self.accepted):
                    return rows
            assert time.monotonic() < deadline, "not every 202 ended succeeded"
            time.sleep(0.1)

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        found = []
        for line in (self.base / f"{name}.log").read_text().splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and data.get("event") == event:
                    found.append(data)
        return found

    def finished(self) -> dict[int, list[str]]:
        """Which instances logged each job's end (``job_finished``), read
        once every instance stopped: an INFO line waits in memory for up to
        ``FLUSH_INTERVAL`` after its job's end is committed, so a running
        instance's log may not show yet the ends the database already has."""
        self.stop()
        ends: dict[int, list[str]] = {}
        for name in self.instances:
            for e in self.events(name, "job_finished"):
                ends.setdefault(e["job"], []).append(name)
        return ends

    def stop(self) -> None:
        for process in self.instances.values():
            if process.process.poll() is None:
                process.signal(signal.SIGCONT)
            with contextlib.suppress(Exception):
                process.stop()
            process.kill()


@pytest.fixture
def cluster(postgres: PostgresServer, tmp_path: Path) -> Iterator[Cluster]:
    # Rescue waits one lease after PostgreSQL started.
    time.sleep(max(0.0, postgres.started + LEASE - time.monotonic()))
    running = Cluster(tmp_path, postgres.database())
    try:
        yield running
    finally:
        running.stop()


def running_on(cluster: Cluster, name: str) -> set[int]:
    """Jobs the database shows running under instance ``name``'s claim."""
    pid = cluster.instances[name].process.pid
    with psycopg.connect(cluster.database) as conn:
        return {
            id
            for (id,) in conn.execute(
                "SELECT id FROM bulkhead_jobs WHERE state = 'running'"
                " AND instance LIKE %s",
                (f"%:{pid}:%",),
            )
        }


def wait_for(condition: Any, failure: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.02)


def test_sigkill_one_of_two_instances_mid_load(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    for _ in range(4):
        cluster.submit("a", 100)
        cluster.submit("b", 100)
    wait_for(lambda: len(running_on(cluster, "a")) >= 4, "a never ran jobs")
    held = running_on(cluster, "a")
    cluster.instances["a"].kill()
    killed = time.monotonic()
    cluster.submit("b", 100)  # the survivor still takes work

    def rescued() -> bool:
        return not running_on(cluster, "a") & held

    wait_for(rescued, "the killed instance's jobs were never rescued")
    assert time.monotonic() - killed <= LEASE + HEARTBEAT + SLACK
    rows = cluster.wait_all_succeeded()
    assert len(cluster.accepted) == 900
    assert cluster.refused == 0
    # Each ran to its end on b; a run counts where one started (on a too,
    # for the ones a was running rather than holding ahead of a worker).
    finished = cluster.finished()
    assert all("b" in finished[id] for id in held)
    assert {rows[id][1] for id in held} <= {1, 2}


def test_sigstop_past_the_lease_then_sigcont(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    for _ in range(3):
        cluster.submit("a", 100, seconds=0.2)
    wait_for(lambda: len(running_on(cluster, "a")) >= 4, "a never ran jobs")
    cluster.instances["a"].signal(signal.SIGSTOP)
    held = running_on(cluster, "a")

    def taken_over() -> bool:
        return not running_on(cluster, "a") & held

    wait_for(taken_over, "the stopped instance's jobs never ran elsewhere")
    time.sleep(LEASE)
    cluster.instances["a"].signal(signal.SIGCONT)
    rows = cluster.wait_all_succeeded()
    wait_for(
        lambda: bool(cluster.events("a", "stale_write_dropped")),
        "the stopped instance's late results were never refused",
    )
    dropped = cluster.events("a", "stale_write_dropped")
    assert {e["job"] for e in dropped} <= held
    # Its late results (of the runs SIGSTOP froze) and its late starts (of
    # the jobs it held ahead of a worker, which then never ran on a).
    refused = {e["job"] for e in dropped if e["write"] == "end"}
    assert refused
    finished = cluster.finished()
    for id in refused:  # its late result was dropped: b's is the one kept
        assert "b" in finished[id]
        assert rows[id] == ("succeeded", 2)
    for id in {e["job"] for e in dropped if e["write"] == "start"}:
        assert finished[id] == ["b"]
        assert rows[id] == ("succeeded", 1)


def test_postgres_restart_mid_load(tmp_path: Path) -> None:
    with postgres_server(fsync=False) as server:
        cluster = Cluster(tmp_path, server.database())
        try:
            cluster.start("a")
            cluster.start("b")
            for _ in range(3):
                cluster.submit("a", 50)
                cluster.submit("b", 50)
            server.stop()
            for name in ("a", "b"):  # 503 while it is down, no 202
                before = len(cluster.accepted)
                cluster.submit(name, 10)
                assert len(cluster.accepted) == before
                ready = httpx.get(f"{cluster.instances[name].url}/ready", timeout=10)
                assert ready.status_code == 503
            server.start()
            wait_for(
                lambda: all(
                    httpx.get(f"{p.url}/ready", timeout=10).status_code == 200
                    for p in cluster.instances.values()
                ),
                "an instance never became ready again",
            )
            cluster.submit("a", 50)
            cluster.submit("b", 50)
            cluster.wait_all_succeeded()
            assert len(cluster.accepted) == 400
            assert cluster.refused == 2
        finally:
            cluster.stop()


def test_rolling_restart_under_load(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    for step, (old, new) in enumerate((("a", "c"), ("b", "d"))):
        live = "b" if old == "a" else "c"
        cluster.submit(old, 60)
        cluster.submit(live, 60)
        assert cluster.instances[old].stop() == 0  # SIGTERM: drain, give back
        cluster.submit(live, 60)
        cluster.start(new)
        cluster.submit(new, 60)
        assert step in (0, 1)
    cluster.wait_all_succeeded()
    assert len(cluster.accepted) == 480
    assert cluster.refused == 0
    finished = cluster.finished()
    # Nothing ran twice: each job ended once, on one instance.
    assert {id: len(names) for id, names in finished.items() if len(names) > 1} == {}
    assert set(finished) == cluster.accepted


def test_a_job_is_cancelled_by_the_instance_running_it(cluster: Cluster) -> None:
    cluster.start("a")
    cluster.start("b")
    cluster.submit("a", 1, seconds=60)
    (id,) = cluster.accepted

    def owner() -> str | None:
        return next((n for n in ("a", "b") if id in running_on(cluster, n)), None)

    wait_for(lambda: owner() is not None, "nobody ran the job")
    here = owner()
    assert here is not None
    elsewhere = cluster.instances["b" if here == "a" else "a"]
    refused = httpx.delete(f"{elsewhere.url}/jobs/{id}", timeout=10)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {
        "error": f"job {id} is running on another instance; retry to cancel it"
    }
    url = f"{cluster.instances[here].url}/jobs/{id}"
    assert httpx.delete(url, timeout=10).status_code == 202
    wait_for(
        lambda: cluster.rows()[id] == ("cancelled", 1), "the job was never cancelled"
    )
