"""The service benchmark's pieces that need no wrk: its bare servers.

``benchmarks/service.py`` reports every server as a ratio of a bare
Starlette endpoint and compares ``bulkhead serve`` with a bare FastAPI one;
those ratios mean something only if the bare servers answer a submission
as ``bulkhead serve`` does (202 and an id), and the FastAPI one validates it
with the service's request model. The full script needs wrk and minutes:
``make bench`` runs it.
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
