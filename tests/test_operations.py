"""Operations (requeue, cancel, purge by filter), the audit log, token roles
and ``bulkhead jobs``, against real ``bulkhead serve`` processes; the
100,000-job requeue is measured on the journal and runner in process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from bulkhead.service import JobRegistry
from bulkhead.service._config import ConfigError, ServiceConfig, parse_tokens
from bulkhead.service._errors import (
    OperationFinished,
    OperationNotFound,
    SubmissionInvalid,
    Unavailable,
)
from bulkhead.service._http._auth import require_roles
from bulkhead.service._journal import (
    Finish,
    JobFilter,
    Journal,
    JournalUnavailable,
    NewJob,
    OperationRecord,
)
from bulkhead.service._operations import Operations
from bulkhead.service._postgres import PostgresJournal
from bulkhead.service._running import RunningJobs
from bulkhead.service._sqlite import SQLiteJournal
from bulkhead.service.cli import main as cli

from ._postgres_server import postgres_server
from ._service_server import ROOT, ServerProcess, server_args

REGISTRY = "tests._operations_jobs:registry"
POOLS = "low=1:1,normal=4"
TOKEN = "default-token-for-operations"
LOW = 1
NORMAL = 2


def idle(journal: Journal) -> RunningJobs:
    """No job runs here: an operation's own work is all there is."""
    return RunningJobs(journal, JobRegistry(), frozenset(), 1)


def start(base: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """A server of tests/_operations_jobs.py's job types on
    ``base/journal.sqlite3``, with :data:`TOKEN`."""
    return ServerProcess(
        base / "server.log",
        str(base / "journal.sqlite3"),
        *server_args(POOLS, "--grace-period", "1", *args),
        env={"BULKHEAD_TOKEN": TOKEN, **(env or {})},
        registry=REGISTRY,
    )


def client(server: ServerProcess, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        timeout=10,
        headers={"authorization": f"Bearer {token}"},
    )


def until(c: httpx.Client, path: str, done: Any, timeout: float = 30) -> dict[str, Any]:
    """Poll ``GET path`` until ``done(body)``."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = c.get(path).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"{path}: {body}"
        time.sleep(0.02)


def operate(c: httpx.Client, action: str, reason: str, **filter: Any) -> dict[str, Any]:
    answer = c.post(
        "/operations", json={"action": action, "filter": filter, "reason": reason}
    )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def finished(c: httpx.Client, id: int) -> dict[str, Any]:
    return until(c, f"/operations/{id}", lambda o: o["state"] != "running")


def seed_failed(path: str, n: int, type: str, args: str, priority: int) -> list[int]:
    """Record ``n`` failed jobs in the journal at ``path``, through the
    journal itself; return their ids."""

    async def main() -> list[int]:
        journal = SQLiteJournal(path, keep_results=10**9, keep_results_for=10**9)
        await journal.open()
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            now = time.time()
            await journal.accept([NewJob(type, priority, args, now, now)] * n)
            claimed = (await journal.claim(priority, n)).jobs
            for c in claimed:
                journal.finish(
                    Finish(c.id, c.lease, "failed", 1, now, now, None, "Boom: seeded")
                )
            journal.close()
        return [c.id for c in claimed]

    return trio.run(main)


# ------------------------------------------------------------- operations


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the operation tests that do not restart it."""
    base = tmp_path_factory.mktemp("operations")
    process = start(base)
    try:
        yield process
    finally:
        process.stop()
        process.kill()


def test_requeued_failed_jobs_run_again_and_succeed(
    server: ServerProcess, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    with client(server) as c:
        ids = [
            c.post("/jobs", json={"type": "flaky", "args": {"flag": str(flag)}}).json()[
                "id"
            ]
            for _ in range(5)
        ]
        for id in ids:
            until(c, f"/jobs/{id}", lambda j: j["state"] == "failed")
        flag.touch()
        started = operate(c, "requeue", "flag fixed", state="failed", type="flaky")
        assert (started["state"], started["who"], started["reason"]) == (
            "running",
            "default",
            "flag fixed",
        )
        op = finished(c, started["id"])
        assert (op["state"], op["matched"], op["done"]) == ("done", 5, 5)
        assert op["filter"] == {
            "state": "failed",
            "type": "flaky",
            "priority": None,
            "since": None,
            "until": None,
        }
        for id in ids:
            job = until(c, f"/jobs/{id}", lambda j: j["state"] == "succeeded")
            assert (job["attempts"], job["resumed"], job["error"]) == (1, 0, None)
        log = c.get("/operations").json()
        entry = next(o for o in log["operations"] if o["id"] == op["id"])
        assert entry == op
        assert entry["created_at"] <= entry["finished_at"]


def test_cancel_by_filter_cancels_running_queued_and_scheduled_jobs(
    server: ServerProcess,
) -> None:
    with client(server) as c:
        nap = {"type": "nap", "args": {"seconds": 600}}
        ids = [c.post("/jobs", json=nap).json()["id"] for _ in range(4)]
        later = c.post("/jobs", json={**nap, "delay": 600}).json()["id"]
        until(c, f"/jobs/{ids[0]}", lambda j: j["state"] == "running")
        op = finished(c, operate(c, "cancel", "clearing naps", type="nap")["id"])
        assert (op["state"], op["matched"], op["done"]) == ("done", 5, 5)
        for id in [*ids, later]:
            until(c, f"/jobs/{id}", lambda j: j["state"] == "cancelled")


def test_purge_deletes_finished_jobs_matching_the_filter(
    server: ServerProcess,
) -> None:
    with client(server) as c:
        nap = {"type": "nap", "args": {"seconds": 0}, "priority": "normal"}
        ids = [c.post("/jobs", json=nap).json()["id"] for _ in range(3)]
        for id in ids:
            until(c, f"/jobs/{id}", lambda j: j["state"] == "succeeded")
        op = finished(
            c, operate(c, "purge", "tidy", state="succeeded", priority=NORMAL)["id"]
        )
        assert op["state"] == "done"
        # Jobs of other tests may end meanwhile: matched is counted at the
        # start, done as the chunks go.
        assert op["done"] >= 3
        assert op["matched"] >= 3
        for id in ids:
            assert c.get(f"/jobs/{id}").status_code == 404


def test_operations_refuse_what_cannot_mean_anything(server: ServerProcess) -> None:
    with client(server) as c:
        bad = c.post(
            "/operations",
            json={"action": "requeue", "filter": {"state": "succeeded"}, "reason": " "},
        )
        assert bad.status_code == 422
        assert [f["field"] for f in bad.json()["fields"]] == [
            "requeue.filter.state",
            "requeue.reason",
        ]
        assert c.post("/operations", json={"action": "requeue"}).status_code == 422
        assert (
            c.post(
                "/operations",
                json={"action": "x", "reason": "r", "filter": {"priority": "bogus"}},
            ).status_code
            == 422
        )
        assert c.get("/operations/999999").status_code == 404
        assert c.delete("/operations/999999").status_code == 404
        done = finished(c, operate(c, "purge", "nothing", type="none")["id"])
        assert done["matched"] == 0
        again = c.delete(f"/operations/{done['id']}")
        assert again.status_code == 409
        assert again.json() == {
            "error": f"operation {done['id']} has already ended: done"
        }
        page = c.get("/operations", params={"limit": 1}).json()
        assert [o["id"] for o in page["operations"]] == [done["id"]]
        older = c.get("/operations", params={"before": page["next_before"]}).json()
        assert all(o["id"] < done["id"] for o in older["operations"])


def test_abort_mid_operation_keeps_what_was_done(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.sqlite3")
    seed_failed(journal, 20_000, "nap", '{"seconds": 600}', LOW)
    server = start(tmp_path, "--operation-chunk", "10", "--keep-results", "100000")
    try:
        with client(server) as c:
            op = operate(c, "requeue", "abort me", type="nap")
            assert op["matched"] == 20_000
            aborted = c.delete(f"/operations/{op['id']}")
            assert aborted.status_code == 202, aborted.text
            assert aborted.json()["state"] == "aborted"
            op = finished(c, op["id"])
            assert op["state"] == "aborted"
            assert 0 <= op["done"] < 20_000
            time.sleep(0.2)  # a chunk in flight could still be counted: none is
            assert c.get(f"/operations/{op['id']}").json()["done"] == op["done"]
            stats = c.get("/stats").json()["journal"]["pools"]["low"]
            assert stats["failed"] == 20_000 - op["done"]
    finally:
        server.stop()
        server.kill()


def test_an_operation_resumes_after_sigkill_and_counts_each_job_once(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "journal.sqlite3")
    seed_failed(journal, 20_000, "nap", '{"seconds": 600}', LOW)
    args = ("--operation-chunk", "10", "--keep-results", "100000")
    server = start(tmp_path, *args)
    try:
        with client(server) as c:
            op = operate(c, "requeue", "resume me", type="nap")
            at_kill = until(c, f"/operations/{op['id']}", lambda o: o["done"] > 0)
            server.kill()
        assert at_kill["state"] == "running", "it finished before the kill"
        server = start(tmp_path, *args)
        with client(server) as c:
            op = finished(c, op["id"])
            assert (op["state"], op["matched"], op["done"]) == ("done", 20_000, 20_000)
            pools = c.get("/stats").json()["journal"]["pools"]["low"]
            assert "failed" not in pools
            assert pools.get("queued", 0) + pools.get("running", 0) == 20_000
    finally:
        server.stop()
        server.kill()


# ------------------------------------------------------------------ roles


def test_roles_read_submit_operate_and_the_audit_names_the_token(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "# name:role:token\nreader:read:reader-token-0123456789\n\n"
        "submitter:submit:submitter-token-0123456789\n"
    )
    server = start(
        tmp_path,
        "--journal",
        ":memory:",
        env={
            "BULKHEAD_TOKENS_FILE": str(tokens),
            "BULKHEAD_TOKENS": "alice:operate:alice-token-0123456789",
        },
    )
    body = {"type": "nap", "args": {"seconds": 0}}
    filter = {"action": "purge", "reason": "roles", "filter": {"type": "nap"}}
    try:
        with client(server, "reader-token-0123456789") as c:
            assert c.get("/jobs").status_code == 200
            assert c.get("/operations").status_code == 200
            assert c.get("/stats").status_code == 200
            refused = c.post("/jobs", json=body)
            assert refused.status_code == 403
            assert refused.json() == {
                "error": "token 'reader' has role read; POST /jobs needs role submit"
            }
        with client(server, "submitter-token-0123456789") as c:
            id = c.post("/jobs", json={**body, "delay": 600}).json()["id"]
            assert c.delete(f"/jobs/{id}").status_code == 202
            refused = c.post("/operations", json=filter)
            assert refused.status_code == 403
            assert "POST /operations needs role operate" in refused.text
        with client(server, "alice-token-0123456789") as c:
            assert c.post("/operations", json=filter).json()["who"] == "alice"
        with client(server) as c:
            assert c.post("/operations", json=filter).json()["who"] == "default"
            log = c.get("/operations").json()["operations"]
            assert [o["who"] for o in log] == ["default", "alice"]
        with client(server, "not-a-token-of-this-service") as c:
            assert c.get("/jobs").status_code == 401
        with httpx.Client(base_url=server.url, timeout=10) as anonymous:
            assert anonymous.get("/operations").status_code == 401
            anonymous.cookies.set("bulkhead_token", "reader-token-0123456789")
            assert anonymous.get("/operations").status_code == 200
    finally:
        assert server.stop() == 0


def test_token_options_are_checked_and_never_logged(tmp_path: Path) -> None:
    specs = parse_tokens("ci:submit:ci-token-0123456789, ops:operate:o:p-0123456789ab")
    assert [(s.name, s.role, s.token) for s in specs] == [
        ("ci", "submit", "ci-token-0123456789"),
        ("ops", "operate", "o:p-0123456789ab"),
    ]
    assert "0123456789" not in repr(specs)
    for text, message in [
        ("ci:boss:ci-token-0123456789", "role 'boss' is not one of read, submit"),
        ("ci:read", "entry 1 (ci) is not NAME:ROLE:TOKEN"),
        ("ci:read:short", "at least 16 characters"),
        ("a:read:a-token-0123456789,a:read:b-token-0123456789", "given twice"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_tokens(text)
    with pytest.raises(ConfigError, match="cannot read"):
        ServiceConfig.load({}, {"BULKHEAD_TOKENS_FILE": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="token name 'default' is given twice"):
        ServiceConfig.load(
            {"token": "t" * 16}, {"BULKHEAD_TOKENS": "default:read:" + "u" * 16}
        )
    with pytest.raises(ConfigError, match="one token is given twice"):
        ServiceConfig.load(
            {"token": "t" * 16}, {"BULKHEAD_TOKENS": "x:read:" + "t" * 16}
        )
    config = ServiceConfig.load(
        {"host": "0.0.0.0"}, {"BULKHEAD_TOKENS": "x:read:" + "t" * 16}
    )
    assert [t.name for t in config.credentials()] == ["x"]
    assert config.loggable()["tokens"] == ["x:read:***"]
    with pytest.raises(ValueError, match="role 'root' is not one of"):
        require_roles(config.credentials(), writes="root")


# -------------------------------------------------------------------- CLI


def bulkhead(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "BULKHEAD_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "bulkhead", "jobs", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_jobs_command_lists_requeues_cancels_and_purges(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = tmp_path / "flag"
    with client(server) as c:
        job = {"type": "flaky", "args": {"flag": str(flag)}}
        ids = [c.post("/jobs", json=job).json()["id"] for _ in range(3)]
        for id in ids:
            until(c, f"/jobs/{id}", lambda j: j["state"] == "failed")
    url = ("--url", server.url)
    listed = bulkhead("list", *url, "--state", "failed", "--type", "flaky", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {j["id"] for j in json.loads(listed.stdout)} >= set(ids)
    flag.touch()
    requeued = bulkhead(
        "requeue", *url, "--state", "failed", "--type", "flaky", "--reason", "cli"
    )
    assert requeued.returncode == 0, requeued.stderr
    assert "operation" in requeued.stderr
    header, row = requeued.stdout.splitlines()
    assert header.split() == [
        "ID",
        "ACTION",
        "STATE",
        "MATCHED",
        "DONE",
        "WHO",
        "REASON",
    ]
    assert row.split()[1:] == ["requeue", "done", "3", "3", "default", "cli"]
    # In process, for the table and the exit codes.
    assert cli(["jobs", "list", *url, "--token", TOKEN, "--priority", "normal"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ID", "TYPE", "PRIORITY"]
    assert (
        cli(
            [
                "jobs",
                "purge",
                *url,
                "--token",
                TOKEN,
                "--reason",
                "x",
                "--state",
                "succeeded",
                "--type",
                "flaky",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["done"] >= 3
    assert (
        cli(
            [
                "jobs",
                "cancel",
                *url,
                "--token",
                TOKEN,
                "--reason",
                "x",
                "--type",
                "none",
                "--no-wait",
            ]
        )
        == 0
    )
    assert (
        cli(
            [
                "jobs",
                "requeue",
                *url,
                "--token",
                TOKEN,
                "--reason",
                "x",
                "--state",
                "queued",
            ]
        )
        == 2
    )
    assert "422: requeue.filter.state" in capsys.readouterr().err
    assert cli(["jobs", "list", *url, "--token", TOKEN, "--priority", "bogus"]) == 2
    assert cli(["jobs", "list", *url, "--token", "wrong-token-0123456789"]) == 3
    assert "401: wrong bearer token" in capsys.readouterr().err
    assert cli(["jobs", "list", "--url", "http://127.0.0.1:9", "--token", "x"]) == 3
    assert "cannot reach" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli(["jobs", "purge", *url])  # no --reason
    assert usage.value.code == 2


# ------------------------------------------------- the runner, in process


async def test_a_failing_chunk_fails_its_operation_and_the_runner_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    journal = SQLiteJournal(":memory:")
    await journal.open()
    operations = Operations(journal, running=idle(journal), chunk=5000)
    real = journal.advance_operation
    calls = 0

    async def flaky_advance(id: int, **kwargs: Any) -> OperationRecord | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise JournalUnavailable("journal :memory:: disk I/O error")
        if id == 1:
            raise RuntimeError("a bug")
        return await real(id, **kwargs)

    monkeypatch.setattr(journal, "advance_operation", flaky_advance)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await nursery.start(operations.run)
        first = await operations.start("purge", JobFilter(), "one", "t")
        second = await operations.start("purge", JobFilter(), "two", "t")
        # The journal has no event to wait on: poll it.
        while (await operations.get(second.id)).state == "running":  # noqa: ASYNC110
            await trio.sleep(0.01)
        failed = await operations.get(first.id)
        assert (failed.state, failed.error) == ("failed", "RuntimeError: a bug")
        assert (await operations.get(second.id)).state == "done"
        with pytest.raises(OperationFinished):
            await operations.abort(first.id, "t")
        with pytest.raises(OperationNotFound):
            await operations.abort(99, "t")
        with pytest.raises(SubmissionInvalid, match="reason: say why"):
            await operations.start("purge", JobFilter(), " ", "t")
        with pytest.raises(
            SubmissionInvalid,
            match=r"^filter\.state: purge acts on succeeded, failed, cancelled jobs, "
            r"not scheduled; leave state out for all of them$",
        ):
            await operations.start("purge", JobFilter("scheduled"), "r", "t")
        with pytest.raises(SubmissionInvalid, match="cancel acts on queued, sched"):
            await operations.start("cancel", JobFilter("failed"), "r", "t")
        assert "chunk=5000" in repr(operations)
        nursery.cancel_scope.cancel()
    journal.close()
    with pytest.raises(Unavailable):
        await operations.start("purge", JobFilter(), "late", "t")


def test_requeue_of_100000_failed_jobs_takes_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The figure the docs quote: a 100,000-job requeue on a durable SQLite
    journal (WAL, synchronous=FULL), 5,000 jobs per transaction."""
    path = str(tmp_path / "journal.sqlite3")
    seed_failed(path, 100_000, "nap", "{}", NORMAL)

    async def requeue() -> tuple[float, OperationRecord]:
        journal = SQLiteJournal(path, keep_results=10**9, keep_results_for=10**9)
        await journal.open()
        operations = Operations(
            journal,
            running=idle(journal),
            chunk=5000,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await nursery.start(operations.run)
            began = time.perf_counter()
            record = await operations.start("requeue", JobFilter("failed"), "b", "t")
            while record.state == "running":
                await trio.sleep(0.001)
                record = await operations.get(record.id)
            took = time.perf_counter() - began
            assert (await journal.counts())[NORMAL] == {"queued": 100_000}
            nursery.cancel_scope.cancel()
        journal.close()
        return took, record

    took, record = trio.run(requeue)
    assert (record.matched, record.done) == (100_000, 100_000)
    with capsys.disabled():
        print(
            f"\nrequeue of 100,000 failed jobs (SQLite, chunks of 5,000): {took:.2f} s"
        )
    assert took < 30


def test_requeue_of_100000_failed_jobs_on_postgresql_takes_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same figure on a durable PostgreSQL server (fsync and
    synchronous_commit on, as it ships); the failed rows are written
    directly, as an earlier outage would have left them."""
    with postgres_server(fsync=True) as server:
        url = server.database()

        def seed() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO bulkhead_jobs (type, priority, state, args,"
                    " attempts, runs, accepted_at, run_at, started_at,"
                    " finished_at, error)"
                    " SELECT 'nap', %s, 'failed', '{}', 1, 1, t, t, t, t, 'Boom'"
                    " FROM generate_series(1, 100000), extract(epoch FROM now()) t",
                    (NORMAL,),
                )
                conn.execute(
                    "INSERT INTO bulkhead_counts VALUES (%s, 'failed', 100000)",
                    (NORMAL,),
                )

        async def requeue() -> tuple[float, OperationRecord]:
            journal = PostgresJournal(url)
            await journal.open()
            operations = Operations(journal, running=idle(journal), chunk=5000)
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run)
                await trio.to_thread.run_sync(seed)  # the tables exist now
                async with trio.open_nursery() as runner:
                    await runner.start(operations.run)
                    began = time.perf_counter()
                    failed = JobFilter("failed")
                    record = await operations.start("requeue", failed, "b", "t")
                    while record.state == "running":
                        await trio.sleep(0.001)
                        record = await operations.get(record.id)
                    took = time.perf_counter() - began
                    runner.cancel_scope.cancel()
                counts = await journal.counts()
                journal.close()  # run() closes its connections and returns
            assert counts[NORMAL] == {"queued": 100_000}
            return took, record

        took, record = trio.run(requeue)
    assert (record.matched, record.done) == (100_000, 100_000)
    with capsys.disabled():
        print(
            f"\nrequeue of 100,000 failed jobs (PostgreSQL, chunks of 5,000): "
            f"{took:.2f} s"
        )
    assert took < 60
