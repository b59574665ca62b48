"""The service benchmark keeps working: its bare servers, and a quick run of
its instances part.

``benchmarks/service.py`` reports every server as a ratio of a bare
Starlette endpoint and compares ``bulkhead serve`` with a bare FastAPI one;
those ratios mean something only if the bare servers answer a submission
as ``bulkhead serve`` does (202 and an id), and the FastAPI one validates it
with the service's request model. The full script takes minutes: ``make
bench`` runs it. Its ``instances`` part (SQLite against PostgreSQL with one
and two instances) runs here in its ``--quick`` form, about a minute, so that
it cannot rot; nothing asserts a speed (figures on a shared machine are
noise).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkhead.service import Client, JobRejected, Submitted

ROOT = Path(__file__).resolve().parent.parent
BARE = ROOT / "benchmarks" / "_service_bare.py"
SERVICE = ROOT / "benchmarks" / "service.py"


@pytest.fixture(params=["starlette", "fastapi"])
def bare(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    kind: str = request.param
    log = tmp_path / "bare.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(BARE), kind],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            lines = [line for line in log.read_text().splitlines() if "event" in line]
            if lines:
                yield kind, json.loads(lines[0])["urls"][0]
                break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()


def test_the_bare_servers_answer_a_submission_as_the_service_does(
    bare: tuple[str, str],
) -> None:
    kind, url = bare
    with Client(url) as client:
        assert client.submit("add", {"x": 1, "y": 2}) == Submitted(1, False)
        assert client.submit("add", {"x": 1}, priority="high").id == 2
        if kind == "fastapi":  # the service's own request model refuses it
            with pytest.raises(JobRejected) as caught:
                client.submit("x" * 201)  # JobSubmission: at most 200
            assert caught.value.status == 422


def test_the_instances_part_measures_sqlite_and_one_and_two_postgresql_instances(
    tmp_path: Path,
) -> None:
    output = tmp_path / "service.json"
    command = [sys.executable, str(SERVICE), "--quick", "--only", "instances"]
    process = subprocess.Popen(
        [*command, "--output", str(output)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.terminate()  # it stops its servers and PostgreSQL on SIGTERM
        log, _ = process.communicate(timeout=60)
        pytest.fail(f"the quick run took more than 300 s:\n{log}")
    assert process.returncode == 0, log
    data = json.loads(output.read_text())
    part = data["results"]["instances"]
    setups = {"sqlite", "pg1", "pg2"}
    # The durable figures were measured durably.
    assert part["postgresql"]["fsync"] == "on", part["postgresql"]
    assert part["postgresql"]["synchronous_commit"] == "on", part["postgresql"]
    for phase in ("single", "batch"):
        results = part["accepted"][phase]
        assert set(results) == setups
        for key, result in results.items():
            assert result["per_second"] > 0, (phase, key)
            assert result["not_202"] == 0, (phase, key)
            (run,) = result["runs"]
            assert len(run["instances"]) == (2 if key == "pg2" else 1), (phase, key)
    processed = part["processed"]
    assert set(processed) == setups
    for key, result in processed.items():
        assert result["instances"] == (2 if key == "pg2" else 1), key
        assert result["per_second"] > 0, key
        assert result["cpu"]["servers"] > 0, key
        # PostgreSQL's own processes are measured, and its writes counted.
        if key != "sqlite":
            assert result["cpu"]["postgresql"] > 0, key
            assert result["transactions_per_second"] > 0, key
    for ratios in part["ratios"].values():
        assert set(ratios) == {"pg2_vs_pg1", "pg1_vs_sqlite", "pg2_vs_sqlite"}
        assert all(value > 0 for value in ratios.values()), ratios
    goals = [t["target"] for t in data["targets"]]
    assert "instances: two PostgreSQL instances / one, processed jobs/s" in goals
    assert set(data["load"]) == {"start", "end"}  # the machine's, noted
    report = output.with_suffix(".md").read_text()
    assert "## One queue: SQLite, PostgreSQL with one and two instances" in report
