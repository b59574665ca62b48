"""bulkhead serve: a real server process on 127.0.0.1, driven over HTTP.

Every test talks to ``python -m bulkhead serve examples.service_jobs:registry``
through httpx. ``HYPOTHESIS_PROFILE=deep`` (``make test-deep``) runs the load
test at 10,000 submissions from 50 clients instead of 1,000 from 20.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
import trio
from examples.service_jobs import registry as example_registry
from hypothesis import given
from hypothesis import strategies as st

from bulkhead.service import (
    ConfigError,
    JobRegistry,
    Service,
    ServiceConfig,
    Submission,
    create_app,
)
from bulkhead.service._journal import Claim, JobRecord
from bulkhead.service._sqlite import SQLiteJournal

from ._jobs import spin_until
from ._service_server import ROOT, ServerProcess, server_args, serving

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
POOLS = "low=2:10,normal=4,high=8,urgent=1:1"
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the endpoint tests (journal on disk)."""
    args = server_args(POOLS, "--grace-period", "1", "--max-body", "2048")
    with serving(tmp_path_factory.mktemp("service"), *args) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    """A sync client of the shared server."""
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def wait_for(client: httpx.Client, id: int, *states: str) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until the job is in one of ``states``."""
    deadline = time.monotonic() + 10
    while True:
        view: dict[str, Any] = client.get(f"/jobs/{id}").json()
        if view["state"] in states or time.monotonic() > deadline:
            return view
        time.sleep(0.01)


def moment(text: str) -> datetime.datetime:
    """An RFC 3339 time as the API writes it (``Z`` for UTC)."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def accepted(client: httpx.Client) -> int:
    """Jobs the server accepted since it started."""
    return int(client.get("/stats").json()["accepted"])


# ------------------------------------------------------------ happy paths


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_submit_then_read_the_result(client: httpx.Client) -> None:
    response = client.post("/jobs", json={"type": "add", "args": {"x": 2, "y": 3}})
    assert response.status_code == 202
    id = response.json()["id"]
    assert response.json() == {"id": id, "duplicate": False}
    view = wait_for(client, id, "succeeded")
    assert view["state"] == "succeeded"
    assert view["result"] == 5
    assert view["attempts"] == 1
    assert view["priority"] == 3  # add's pool: high
    assert view["error"] is None
    times = [moment(view[k]) for k in ("accepted_at", "started_at", "finished_at")]
    assert times == sorted(times)
    assert view["run_at"] == view["accepted_at"]


async def test_arguments_are_kept_as_the_job_gets_them(tmp_path: Path) -> None:
    # A whole number written 3.0 is an int: kept as one, and checked as kept.
    config = ServiceConfig.load(
        {
            "pools": "low=1,normal=1,high=1",
            "journal": str(tmp_path / "journal.sqlite3"),
        },
        {},
    )
    service = Service(config, example_registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        (accepted,) = await service.submit([Submission("add", {"x": 2.0, "y": 3})])
        give_up = time.monotonic() + 10
        while (view := await service.job(accepted.id))["state"] != "succeeded":
            assert time.monotonic() < give_up, view
        assert view["result"] == 5
        service.stop()
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite3")) as db:
        (args,) = db.execute("SELECT args FROM jobs").fetchone()
    assert args == '{"x": 2, "y": 3}'


def test_priority_by_name_and_number(client: httpx.Client) -> None:
    for priority, number in (("urgent", 4), ("LOW", 1), (2, 2), (3.0, 3)):
        response = client.post(
            "/jobs", json={"type": "add", "priority": priority, "args": {"x": 1}}
        )
        assert response.status_code == 202, response.text
        view = wait_for(client, response.json()["id"], "succeeded")
        assert (view["priority"], view["result"]) == (number, 1)


def test_failed_job_reports_its_error_without_a_traceback(
    client: httpx.Client,
) -> None:
    response = client.post("/jobs", json={"type": "fail", "args": {"message": "boom"}})
    view = wait_for(client, response.json()["id"], "failed")
    assert view["state"] == "failed"
    assert view["error"] == "RuntimeError: boom"
    assert "Traceback" not in response.text + str(view)


def test_cancel_a_running_job(client: httpx.Client) -> None:
    id = client.post("/jobs", json={"type": "sleep", "args": {"seconds": 60}}).json()[
        "id"
    ]
    assert wait_for(client, id, "running")["state"] == "running"
    workers = client.get("/workers").json()["pools"]["low"]
    assert id in [job["id"] for job in workers["running"]]
    response = client.delete(f"/jobs/{id}")
    assert response.status_code == 202
    view = wait_for(client, id, "cancelled")
    assert (view["state"], view["error"]) == ("cancelled", "cancelled")
    again = client.delete(f"/jobs/{id}")
    assert again.status_code == 409
    assert again.json() == {"error": f"job {id} has already finished: cancelled"}
    missing = client.delete("/jobs/999999")
    assert missing.status_code == 404


def answer_claims_late(journal: SQLiteJournal) -> trio.Event:
    """Make ``journal``'s claims answer their feeder only once a cancel of
    the claimed job was read: the moment the job is ``running`` in the
    journal and in nobody's memory yet. Return the event set when a claim
    of jobs is committed."""
    claim, cancel = journal.claim, journal.cancel
    claimed, cancel_read = trio.Event(), trio.Event()

    async def late_claim(priority: int, limit: int) -> Claim:
        answer = await claim(priority, limit)
        if answer.jobs:
            claimed.set()
            await cancel_read.wait()
        return answer

    async def read_cancel(id: int) -> JobRecord | None:
        before = await cancel(id)
        cancel_read.set()
        return before

    journal.claim = late_claim  # type: ignore[method-assign]
    journal.cancel = read_cancel  # type: ignore[method-assign]
    return claimed


async def test_a_job_cancelled_while_its_claim_is_on_its_way_is_cancelled_here(
    tmp_path: Path,
) -> None:
    # Answered 503 "running on another instance" with one instance (found
    # by a flaky run of test_a_full_backlog_answers_429_with_retry_after).
    registry = JobRegistry()
    ran = []

    @registry.job(priority="low")
    async def note() -> None:
        ran.append(True)

    config = ServiceConfig.load({"pools": "low=1"}, {})
    journal = SQLiteJournal(str(tmp_path / "journal.sqlite3"))
    claimed = answer_claims_late(journal)
    service = Service(config, registry, journal)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        (accepted,) = await service.submit([Submission("note", {})])

        async def state() -> str:
            view = await service.job(accepted.id)
            return str(view["state"])

        with trio.fail_after(10):
            await claimed.wait()
            assert await state() == "running"
            assert (await service.cancel(accepted.id))["id"] == accepted.id
            for _ in range(1000):  # polling the writer thread's commits
                if await state() != "running":
                    break
                await trio.sleep(0.01)
        view = await service.job(accepted.id)
        service.stop()
    assert (view["state"], view["error"]) == ("cancelled", "cancelled")
    assert ran == []


def test_list_jobs_paged_and_by_state(client: httpx.Client) -> None:
    ids = [
        client.post("/jobs", json={"type": "add", "args": {"x": i}}).json()["id"]
        for i in range(5)
    ]
    for id in ids:
        wait_for(client, id, "succeeded")

    def succeeded_page() -> dict[str, Any]:
        page: dict[str, Any] = client.get(
            "/jobs", params={"state": "succeeded", "limit": 1000}
        ).json()
        return page

    # The journal commits the ends in its next batch: poll, do not guess.
    deadline = time.monotonic() + 10
    page = succeeded_page()
    while not set(ids) <= {job["id"] for job in page["jobs"]}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
        page = succeeded_page()
    listed = [job["id"] for job in page["jobs"]]
    assert set(ids) <= set(listed)
    assert listed == sorted(listed)
    assert all(job["state"] == "succeeded" for job in page["jobs"])
    first = client.get("/jobs", params={"limit": 2}).json()
    second = client.get("/jobs", params={"limit": 2, "after": first["next_after"]})
    assert len(first["jobs"]) == len(second.json()["jobs"]) == 2
    assert first["jobs"][-1]["id"] == first["next_after"]
    assert first["next_after"] < second.json()["jobs"][0]["id"]
    bad = client.get("/jobs", params={"state": "lost"})
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("state: Input should be")


def test_idempotency_key_returns_the_first_job(client: httpx.Client) -> None:
    body = {"type": "add", "args": {"x": 7}, "idempotency_key": "order-42"}
    first = client.post("/jobs", json=body)
    before = accepted(client)
    second = client.post("/jobs", json=body)
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json() == {"id": first.json()["id"], "duplicate": True}
    assert accepted(client) == before


def test_a_sync_job_runs_in_a_thread_and_is_cancelled_like_any_job(
    client: httpx.Client,
) -> None:
    response = client.post("/jobs", json={"type": "digest", "args": {"text": "b"}})
    view = wait_for(client, response.json()["id"], "succeeded")
    assert view["result"] == hashlib.sha256(b"b").hexdigest()
    body = {"type": "digest", "args": {"text": "b", "rounds": 2_000_000}}
    id = client.post("/jobs", json=body).json()["id"]
    assert wait_for(client, id, "running")["state"] == "running"
    assert client.get("/health").status_code == 200  # the loop is not blocked
    assert client.delete(f"/jobs/{id}").status_code == 202
    assert wait_for(client, id, "cancelled")["state"] == "cancelled"


def test_a_pydantic_model_parameter_is_the_arguments_schema(
    client: httpx.Client,
) -> None:
    args = {"url": "https://example.com/a.png", "width": 320}
    response = client.post("/jobs", json={"type": "thumbnail", "args": args})
    view = wait_for(client, response.json()["id"], "succeeded")
    assert view["result"] == {**args, "height": 240}
    bad = client.post(
        "/jobs", json={"type": "thumbnail", "args": {"url": "nowhere", "width": 0}}
    )
    assert bad.status_code == 422
    assert bad.json()["error"].startswith("args.url: Input should be a valid URL")
    assert "args.width: Input should be greater than 0" in bad.json()["error"]
    schema = client.get("/job-types").json()["thumbnail"]["args"]
    assert (schema["title"], schema["required"]) == ("Thumbnail", ["url"])


def test_stats_metrics_and_job_types(client: httpx.Client) -> None:
    client.post("/jobs", json={"type": "add", "args": {"x": 1}})
    stats = client.get("/stats").json()
    assert stats["uptime"] > 0
    assert set(stats["pools"]) == {"low", "normal", "high", "urgent"}
    high = stats["pools"]["high"]
    assert high["workers"] == 8
    assert (
        high["submitted"]
        == (high["queued"] + high["busy"] + high["succeeded"] + high["failed"])
        + high["cancelled"]
    )
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'bulkhead_jobs_submitted_total{pool="high"}' in metrics.text
    assert "bulkhead_job_duration_seconds_bucket" in metrics.text
    types = client.get("/job-types").json()
    assert set(types) == {"add", "sleep", "fail", "digest", "thumbnail"}
    assert types["add"]["args"]["required"] == ["x"]
    # The published body schema is as narrow as the validation: one variant
    # per job type, with that type's arguments, and only configured pools.
    openapi = client.get("/openapi.json").json()
    body = openapi["paths"]["/jobs"]["post"]["requestBody"]["content"]
    mapping = body["application/json"]["schema"]["discriminator"]["mapping"]
    assert set(mapping) == set(types)
    schemas = openapi["components"]["schemas"]
    add = schemas["JobSubmission_add"]
    assert add["required"] == ["type", "args"]
    assert schemas[add["properties"]["args"]["$ref"].rpartition("/")[2]][
        "required"
    ] == ["x"]
    assert add["properties"]["priority"]["anyOf"][:2] == [
        {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
        {"type": "integer", "enum": [1, 2, 3, 4]},
    ]


def test_a_full_backlog_answers_429_with_retry_after(tmp_path: Path) -> None:
    # urgent=1:1 holds one job running and one claimed; the backlog limit of
    # 2 then takes two more, and the next submission finds no room.
    args = server_args("low=1,normal=1,high=1,urgent=1:1", "--max-backlog", "2")
    body = {"type": "sleep", "priority": "urgent", "args": {"seconds": 60}}
    with (
        serving(tmp_path, *args) as server,
        httpx.Client(base_url=server.url, timeout=10) as c,
    ):
        held = [c.post("/jobs", json=body).json()["id"] for _ in range(2)]
        deadline = time.monotonic() + 10
        while c.get("/stats").json()["in_memory"] < 2 < deadline - time.monotonic():
            time.sleep(0.01)
        held += [c.post("/jobs", json=body).json()["id"] for _ in range(2)]
        response = c.post("/jobs", json=body)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "60"  # nothing drained yet
        assert response.json() == {
            "error": "pool 'urgent' has 2 jobs waiting, its limit is 2 "
            "(BULKHEAD_MAX_BACKLOG); retry later"
        }
        stats = c.get("/stats").json()
        assert (stats["accepted"], stats["refused"]) == (4, 1)
        assert stats["journal"]["pools"]["urgent"] == {"queued": 2, "running": 2}
        for id in held:
            assert c.delete(f"/jobs/{id}").status_code == 202
            assert wait_for(c, id, "cancelled")["state"] == "cancelled"


# -------------------------------------------------------------- bad input

BAD_BODIES: list[tuple[str, Any, int, str]] = [
    (
        "unknown type",
        {"type": "nope"},
        422,
        "type: unknown job type 'nope'; registered: add, digest, fail, sleep, "
        "thumbnail",
    ),
    (
        "unknown priority",
        {"type": "add", "priority": "asap", "args": {"x": 1}},
        422,
        "priority: unknown priority 'asap': use one of low, normal, high, urgent "
        "or a pool number",
    ),
    (
        "unconfigured pool",
        {"type": "add", "priority": 9, "args": {"x": 1}},
        422,
        "priority: no pool 9 is configured; pools: low, normal, high, urgent",
    ),
    (
        "wrong argument type",
        {"type": "add", "args": {"x": "two"}},
        422,
        "args.x: Input should be a valid integer",
    ),
    ("missing argument", {"type": "add", "args": {}}, 422, "args.x: Field required"),
    (
        "extra argument",
        {"type": "add", "args": {"x": 1, "z": 2}},
        422,
        "args.z: Extra inputs are not permitted",
    ),
    ("args not an object", {"type": "add", "args": [1]}, 422, "args: Input should"),
    ("body not an object", [1, 2], 422, "body: Input should be a valid dictionary"),
    ("missing type", {"args": {}}, 422, "type: Field required"),
    (
        "unknown field",
        {"type": "add", "args": {"x": 1}, "when": "now"},
        422,
        "when: Extra inputs are not permitted",
    ),
    (
        "NUL in the idempotency key",
        {"type": "add", "args": {"x": 1}, "idempotency_key": "a\x00b"},
        422,
        "idempotency_key: String should match pattern",
    ),
    (
        "a schedule's key",
        {"type": "add", "args": {"x": 1}, "idempotency_key": "schedule:x:1"},
        422,
        "idempotency_key: keys starting with 'schedule:' are the schedules'",
    ),
    (
        "boolean priority",
        {"type": "add", "priority": True},
        422,
        "priority: give low, normal, high, urgent or a pool number",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [pytest.param(b, s, m, id=name) for name, b, s, m in BAD_BODIES],
)
def test_bad_submission_is_refused_and_nothing_accepted(
    client: httpx.Client, body: Any, status: int, message: str
) -> None:
    before = accepted(client)
    response = client.post("/jobs", json=body)
    assert response.status_code == status
    assert response.json()["error"].startswith(message), response.json()
    assert accepted(client) == before


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "add",',
        b"type=add&x=1",
        b'{"type": "sleep", "args": {"seconds": NaN}}',
    ],
)
def test_a_body_that_is_not_strict_json_is_422_saying_to_send_json(
    client: httpx.Client, body: bytes
) -> None:
    before = accepted(client)
    response = client.post("/jobs", content=body)
    assert response.status_code == 422
    (field,) = response.json()["fields"]
    assert field["field"] == "body"
    assert field["message"].startswith("not JSON (")
    assert field["message"].endswith("; send JSON with Content-Type: application/json")
    assert accepted(client) == before


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "1" + "0" * 400])
def test_floats_are_finite_as_strict_json_says(
    client: httpx.Client, number: str
) -> None:
    body = '{"type": "sleep", "args": {"seconds": NUMBER}}'.replace("NUMBER", number)
    response = client.post("/jobs", content=body.encode())
    assert response.status_code == 422, response.text
    assert response.json()["fields"][0]["field"] in ("body", "args.seconds")


def test_oversized_body_is_413(client: httpx.Client) -> None:
    before = accepted(client)
    body = {"type": "sleep", "args": {"seconds": 0, "tag": "x" * 5000}}
    response = client.post("/jobs", json=body)
    assert response.status_code == 413
    assert response.json() == {
        "error": "request body over 2048 bytes (BULKHEAD_MAX_BODY)"
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: streamed
        yield b'{"type": "sleep", "args": {"seconds": 0, "tag": "'
        yield b"x" * 5000
        yield b'"}}'

    streamed = client.post(
        "/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert accepted(client) == before


def test_unknown_job_is_404_and_bad_id_422(client: httpx.Client) -> None:
    response = client.get("/jobs/987654")
    assert response.status_code == 404
    assert response.json() == {
        "error": "no job 987654 (never accepted, or its result expired)"
    }
    assert client.get("/jobs/abc").status_code == 422
    # Beyond SQLite's 64-bit integers: refused, not a 500 from the journal.
    for path in (f"/jobs/{2**63}", "/jobs/0", f"/jobs?after={2**63}"):
        response = client.get(path)
        assert response.status_code == 422, path
        assert response.json()["fields"][0]["field"] in ("id", "after")
    assert client.delete(f"/jobs/{2**64}").status_code == 422


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A function, not a lambda: Hypothesis reads a lambda's source to check
    # that it recurses, and misreads this one's.
    return st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=10), inner, max_size=4
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    _containers,
    max_leaves=12,
)
SUBMISSIONS = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["add", "fail", "nope", ""]) | st.text(max_size=8),
            "priority": st.sampled_from(["low", "high", "nope", 0, 3, -1, 10**30])
            | JSON,
            "args": st.fixed_dictionaries(
                {}, optional={"x": JSON, "y": JSON, "message": JSON}
            )
            | JSON,
            "idempotency_key": st.text(max_size=5) | JSON,
        },
    )
    | JSON
)


@given(body=SUBMISSIONS)
def test_fuzzed_submissions_never_5xx(server: ServerProcess, body: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        response = c.post("/jobs", json=body)
    assert response.status_code in (200, 202, 422), response.text
    assert "Traceback" not in response.text


@given(raw=st.binary(max_size=300))
def test_fuzzed_raw_bodies_never_5xx(server: ServerProcess, raw: bytes) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        response = c.post(
            "/jobs", content=raw, headers={"content-type": "application/json"}
        )
    assert response.status_code in (200, 202, 422), response.text


# ------------------------------------------------------------------ token


def test_token_is_required_and_checked(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server.log",
        ":memory:",
        *server_args(POOLS),
        env={"BULKHEAD_TOKEN": TOKEN},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            body = {"type": "add", "args": {"x": 1}}
            missing = c.post("/jobs", json=body)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert missing.json() == {
                "error": "missing bearer token: send 'Authorization: Bearer <token>'"
            }
            wrong = c.post("/jobs", json=body, headers={"authorization": "Bearer x"})
            assert wrong.json() == {"error": "wrong bearer token"}
            assert c.get("/stats").status_code == 401
            assert c.get("/health").status_code == 200  # probes stay open
            auth = {"authorization": f"Bearer {TOKEN}"}
            assert c.get("/stats", headers=auth).json()["accepted"] == 0
            assert c.post("/jobs", json=body, headers=auth).status_code == 202
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------- configuration


def test_config_reports_every_bad_value() -> None:
    env = {
        "BULKHEAD_PORT": "80000",
        "BULKHEAD_POOLS": "high=8,turbo=2",
        "BULKHEAD_GRACE_PERIOD": "soon",
        "BULKHEAD_LOG_LEVEL": "loud",
    }
    with pytest.raises(ConfigError) as caught:
        ServiceConfig.load({"retry_attempts": "0"}, env)
    assert str(caught.value).splitlines() == [
        "bad configuration:",
        "  BULKHEAD_PORT='80000': expected an integer from 0 to 65535",
        "  BULKHEAD_POOLS='high=8,turbo=2': in 'turbo=2': unknown priority 'turbo': "
        "use one of low, normal, high, urgent or a pool number",
        "  --retry-attempts='0': expected an integer from 1 to 100",
        "  BULKHEAD_GRACE_PERIOD='soon': expected a number of seconds, e.g. 30 or 0.5",
        "  BULKHEAD_LOG_LEVEL='loud': expected DEBUG, INFO, WARNING or ERROR",
    ]


async def test_a_sync_jobs_retry_waits_for_its_timed_out_thread(
    autojump_clock: trio.abc.Clock,
) -> None:
    registry = JobRegistry()
    entered = [threading.Event(), threading.Event()]
    release = [threading.Event(), threading.Event()]
    events: list[str] = []

    @registry.job(priority="normal")
    def blocking(n: int) -> int:
        attempt = events.count("called")
        events.append("called")
        entered[attempt].set()
        release[attempt].wait(timeout=10)
        events.append("returned")
        return n

    config = ServiceConfig.load(
        {"pools": "normal=2", "journal": ":memory:", "job_timeout": "1"},
        {"BULKHEAD_RETRY_ATTEMPTS": "2"},
    )
    service = Service(config, registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        (accepted,) = await service.submit([Submission("blocking", {"n": 7})])
        id = accepted.id
        await spin_until(entered[0].is_set, "the first attempt never started")
        await trio.sleep(5)  # virtual: the first attempt timed out at 1 s
        # Its thread still runs, so the retry waits: never two at once.
        await trio.testing.wait_all_tasks_blocked()
        assert events == ["called"]
        normal = (await service.statistics())["pools"]["normal"]
        assert (normal["timed_out"], normal["retried"], normal["busy"]) == (1, 1, 1)
        release[0].set()
        # Virtual time passes as the first thread returns, the retry's backoff
        # ends and the second attempt's thread starts (and times out at 1 s).
        await spin_until(entered[1].is_set, "no second attempt", step=0.5)
        await trio.sleep(5)
        view = await service.job(id)
        assert (view["state"], view["attempts"]) == ("failed", 2)
        assert events == ["called", "returned", "called"]
        # The job has ended, but its pool keeps the slot until the thread returns.
        assert (await service.statistics())["pools"]["normal"]["abandoned"] == 1
        release[1].set()
        await spin_until(
            lambda: events.count("returned") == 2, "the second thread never returned"
        )
        service.stop()
    assert (await service.statistics())["total"]["abandoned"] == 0


def test_the_schema_offers_only_the_configured_pools() -> None:
    registry = JobRegistry()

    @registry.job(priority=7)
    async def seven(x: int) -> int:
        return x

    @registry.job(priority=9)
    async def complain(problem: Problem) -> None:
        pass

    config = ServiceConfig.load({"pools": "7=1,9=2", "journal": ":memory:"}, {})
    schema = create_app(Service(config, registry)).openapi()
    components = schema["components"]["schemas"]
    submit = components["JobSubmission_seven"]
    assert submit["properties"]["priority"]["anyOf"] == [
        {"type": "integer", "enum": [7, 9]},  # no pool has a name
        {"type": "null"},
    ]
    # A job's model named like one of the service's own schemas replaces nothing.
    assert components["Problem"]["required"] == ["error"]
    assert components["args.Problem"]["required"] == ["complaint"]


def test_config_flags_win_over_env_and_pools_parse() -> None:
    config = ServiceConfig.load(
        {"port": "9000", "pools": "low=1,7=3:5"}, {"BULKHEAD_PORT": "8000"}
    )
    assert config.port == 9000
    assert [(p.priority, p.workers, p.queue) for p in config.pools] == [
        (1, 1, 4),  # prefetch: 4 per worker
        (7, 3, 5),
    ]


def test_non_loopback_host_without_token_refuses_to_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bulkhead", "serve", "examples.service_jobs:registry"],
        cwd=ROOT,
        env={**os.environ, "BULKHEAD_HOST": "0.0.0.0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bulkhead serve: bad configuration:",
        "  host '0.0.0.0' is not loopback: set BULKHEAD_TOKEN (or --token) so that "
        "only clients holding it can submit jobs",
    ]
    with pytest.raises(ConfigError, match="not loopback"):
        ServiceConfig.load({"host": "10.0.0.1"}, {})
    assert ServiceConfig.load({"host": "10.0.0.1", "token": TOKEN}, {}).token == TOKEN


# --------------------------------------------------------------- registry


class Problem(pydantic.BaseModel):
    """A job's model that shares its name with the service's error schema."""

    complaint: str


class Doubler:
    """A job type that is an object with an async ``__call__``."""

    async def __call__(self, x: int) -> int:
        return 2 * x


class Point(pydantic.BaseModel):
    """A module-level model: annotations are strings here, resolved by name."""

    x: int
    y: int = 0


def test_registry_validates_arguments_and_signatures() -> None:
    registry = JobRegistry()

    @registry.job(priority="urgent")
    async def scale(values: list[float], factor: float = 2.0) -> list[float]:
        return [v * factor for v in values]

    job_type = registry["scale"]
    assert job_type.priority == 4
    assert job_type.validate({"values": [1, 2]}) == {
        "values": [1.0, 2.0],
        "factor": 2.0,
    }
    with pytest.raises(ValueError, match=r"^args\.values\.1: Input should be"):
        job_type.validate({"values": [1, "x"]})
    with pytest.raises(KeyError, match="unknown job type 'other'; registered: scale"):
        registry["other"]

    def sync(x: int) -> int:
        return x

    async def plot(point: Point) -> int:
        return point.x

    def numbers(n: int) -> Iterator[int]:
        yield n

    async def untyped(x):  # type: ignore[no-untyped-def]
        return x

    async def star(*xs: int) -> None:
        pass

    assert not registry.add(sync).is_async
    assert registry["sync"].validate({"x": 3}) == {"x": 3}
    # Strict JSON: what the schema calls an integer is one.
    assert registry["sync"].validate({"x": 3.0}) == {"x": 3}  # JSON Schema's view
    for wrong in ("3", False, 3.5):
        with pytest.raises(ValueError, match=r"^args\.x: Input should be a valid int"):
            registry["sync"].validate({"x": wrong})
    # As the journal keeps them: checked as they are; a whole number written
    # 3.0 (as 0.2's journal kept it) is still an int, a wrong type is not.
    assert registry["sync"].validate_json('{"x": 3}') == {"x": 3}
    assert registry["sync"].validate_json('{"x": 3.0}') == {"x": 3}
    for text in ('{"x": "3"}', '{"x": 3.5}', "[3]", "{"):
        with pytest.raises(ValueError, match=r"^args"):
            registry["sync"].validate_json(text)
    assert registry.add(plot).validate({"x": 1}) == {"point": Point(x=1, y=0)}
    assert registry["plot"].validate_json('{"x": 1}') == {"point": Point(x=1, y=0)}
    with pytest.raises(ValueError, match=r"^args\.y: Input should be a valid int"):
        registry["plot"].validate({"x": 1, "y": "a"})
    with pytest.raises(TypeError, match=r"^a job type must be a function or an async"):
        registry.add(numbers)
    with pytest.raises(TypeError, match=r"^a job type must be a function or an async"):
        registry.add(Point)
    with pytest.raises(ValueError, match=r"identifier \(pass name=\), got None$"):
        registry.add(functools.partial(scale, factor=3.0))
    # A partial and an object with an async __call__ are typed by what they wrap.
    tripled = registry.add(functools.partial(scale, factor=3.0), name="tripled")
    assert tripled.is_async
    assert tripled.validate({"values": [1]}) == {"values": [1.0]}
    # What a partial fixes is not the client's to change.
    assert "factor" not in tripled.schema()["properties"]
    with pytest.raises(ValueError, match=r"^args\.factor: Extra inputs"):
        tripled.validate({"values": [1], "factor": 9})
    assert registry.add(Doubler(), name="double").is_async
    assert registry["double"].validate({"x": 2}) == {"x": 2}
    assert registry.add(functools.partial(Doubler()), name="double2").is_async
    cached = registry.add(functools.lru_cache(sync), name="cached")
    assert (cached.is_async, cached.validate({"x": 1})) == (False, {"x": 1})

    @functools.wraps(scale)
    def wraps_async(*args: Any, **kwargs: Any) -> Any:
        return scale(*args, **kwargs)

    async def by_position(point: Point, /) -> None:
        pass

    with pytest.raises(TypeError, match=r"is a sync function wrapping an async one"):
        registry.add(wraps_async)
    with pytest.raises(TypeError, match=r"argument 'point' is positional-only"):
        registry.add(by_position)
    # Nested past any sensible depth: refused, not a RecursionError.
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match=r"^args: nested too deeply$"):
        registry["sync"].validate({"x": deep})
    with pytest.raises(TypeError, match=r"argument 'x' has no type annotation"):
        registry.add(untyped)
    with pytest.raises(TypeError, match=r"\*xs cannot come from JSON"):
        registry.add(star)
    with pytest.raises(ValueError, match=r"^job type 'scale' is already registered$"):
        registry.add(scale)
    with pytest.raises(ValueError, match=r"^unknown priority 'top'"):
        registry.add(scale, name="other", priority="top")


# ------------------------------------------------------- load and signals


async def _submit_all(
    url: str, clients: int, per_client: int, body: Any
) -> tuple[list[int], int]:
    """``clients`` concurrent clients each submit ``per_client`` jobs,
    retrying 429s; return the 202'd ids and how many 429s they saw."""
    ids: list[int] = []
    refused = 0

    async def one_client(n: int) -> None:
        nonlocal refused
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            for i in range(per_client):
                while True:
                    response = await c.post("/jobs", json=body(n, i))
                    if response.status_code != 429:
                        break
                    refused += 1
                    await trio.sleep(0.01)
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(one_client, n)
    return ids, refused


async def wait_drained(c: httpx.AsyncClient) -> None:
    """Poll ``/stats`` until no job is queued or in flight (20 s at most)."""
    for _ in range(400):
        stats = (await c.get("/stats")).json()
        waiting = sum(
            pool.get("queued", 0) + pool.get("running", 0)
            for pool in stats["journal"]["pools"].values()
        )
        if not stats["in_memory"] and not waiting:
            return
        await trio.sleep(0.05)
    raise AssertionError("jobs still in flight after 20 s")


@pytest.fixture
def load_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server for the load test, journal on disk."""
    server = ServerProcess(
        tmp_path / "server.log",
        str(tmp_path / "journal.sqlite3"),
        *server_args("low=2,normal=4,high=8:50,urgent=2", "--keep-results", "100000"),
    )
    try:
        yield server
    finally:
        server.kill()


async def test_load_every_job_runs_once(load_server: ServerProcess) -> None:
    clients, per_client = (50, 200) if DEEP else (20, 50)
    total = clients * per_client
    started = time.monotonic()
    ids, refused = await _submit_all(
        load_server.url,
        clients,
        per_client,
        lambda n, i: {"type": "add", "args": {"x": n, "y": i}},
    )
    elapsed = time.monotonic() - started
    assert len(ids) == len(set(ids)) == total
    async with httpx.AsyncClient(base_url=load_server.url, timeout=30) as c:
        await wait_drained(c)
        stats = (await c.get("/stats")).json()
        high = stats["pools"]["high"]
        assert stats["accepted"] == total
        assert high["submitted"] == high["started"] == high["succeeded"] == total
        assert high["failed"] == high["cancelled"] == 0
        assert refused == 0  # the journal takes the backlog
        jobs: list[dict[str, Any]] = []
        after = 0
        while page := (
            await c.get("/jobs", params={"limit": 1000, "after": after})
        ).json()["jobs"]:
            jobs.extend(page)
            after = page[-1]["id"]
    assert sorted(job["id"] for job in jobs) == sorted(ids)
    assert all(job["state"] == "succeeded" and job["attempts"] == 1 for job in jobs)
    print(
        f"\nload: {total} jobs from {clients} clients in {elapsed:.2f} s "
        f"({total / elapsed:.0f}/s), {refused} x 429"
    )
    assert load_server.stop() == 0


async def test_sigterm_mid_load_finishes_or_keeps_every_accepted_job_for_restart(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "journal.sqlite3")
    args = server_args("low=8:40,normal=4,high=8", "--grace-period", "1")
    server = await trio.to_thread.run_sync(
        lambda: ServerProcess(tmp_path / "server.log", journal, *args)
    )
    try:
        ids: list[int] = []
        refused_after_signal: list[int] = []
        ready_after_signal: list[int] = []
        signalled = threading.Event()
        lock = threading.Lock()

        # Sync clients in threads, as in the SIGKILL test below.
        def one_client(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=10) as c:
                for i in range(10_000):
                    seconds = 0.05 if i % 3 else 3.0  # some outlive the grace
                    body = {"type": "sleep", "args": {"seconds": seconds}}
                    try:
                        response = c.post("/jobs", json=body)
                    except httpx.TransportError:
                        return  # the server has gone
                    if response.status_code == 202:
                        with lock:
                            ids.append(response.json()["id"])
                            if len(ids) == 40:
                                server.signal(signal.SIGTERM)
                                signalled.set()
                    elif response.status_code == 503:
                        refused_after_signal.append(n)
                        assert signalled.is_set()
                        with contextlib.suppress(httpx.TransportError):
                            ready = c.get("/ready")
                            ready_after_signal.append(ready.status_code)
                        return
                    else:
                        assert response.status_code == 429
                        time.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for n in range(10):
                nursery.start_soon(trio.to_thread.run_sync, one_client, n)
        assert await trio.to_thread.run_sync(server.wait) == 0
    finally:
        server.kill()
    assert refused_after_signal  # new submissions got 503 while draining
    assert set(ready_after_signal) <= {503}
    with contextlib.closing(sqlite3.connect(journal)) as db:
        states = dict(db.execute("SELECT id, state FROM jobs").fetchall())
    assert set(ids) <= set(states)  # none vanished
    # The grace period expired: what it cut off is still pending, not lost.
    left = {id for id in ids if states[id] == "queued"}
    assert left
    assert {states[id] for id in set(ids) - left} <= {"succeeded"}
    events = server.events()
    assert any(e.get("event") == "draining" for e in events)
    stopped = [e for e in events if e.get("event") == "stopped"]
    interrupted = {e["job"] for e in events if e.get("event") == "job_interrupted"}
    assert interrupted  # running past the grace period, back in the queue
    assert interrupted <= left
    assert stopped[0]["interrupted"] == len(interrupted)
    assert stopped[0]["succeeded"] + len(left) == len(ids)
    assert stopped[0]["cancelled"] == 0

    # The next start runs exactly those again.
    restarted = await trio.to_thread.run_sync(
        lambda: ServerProcess(tmp_path / "restart.log", journal, *args)
    )
    try:
        async with httpx.AsyncClient(base_url=restarted.url, timeout=10) as c:
            stats = (await c.get("/stats")).json()
            assert stats["requeued"] == 0  # all given back at the shutdown
            backlog = sum(
                p.get("queued", 0) for p in stats["journal"]["pools"].values()
            )
            assert backlog <= len(left)  # some may have run already
            await wait_drained(c)
            views = [(await c.get(f"/jobs/{id}")).json() for id in sorted(ids)]
        assert restarted.stop() == 0
    finally:
        restarted.kill()
    assert {view["state"] for view in views} == {"succeeded"}
    assert {view["id"] for view in views if view["resumed"]} == interrupted


async def test_sigkill_then_restart_resumes_every_accepted_job(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "journal.sqlite3")
    args = server_args("low=8:50,normal=4,high=8", "--grace-period", "5")
    first = await trio.to_thread.run_sync(
        lambda: ServerProcess(tmp_path / "first.log", journal, *args)
    )
    ids: list[int] = []
    try:
        lock = threading.Lock()

        # Sync clients in threads: an async client cut off mid-request by the
        # kill leaves an unfinalized body generator behind (httpx 0.29).
        def one_client() -> None:
            with httpx.Client(base_url=first.url, timeout=10) as c:
                for _ in range(10_000):
                    body = {"type": "sleep", "args": {"seconds": 0.1}}
                    try:
                        response = c.post("/jobs", json=body)
                    except httpx.TransportError:
                        return  # killed
                    if response.status_code == 202:
                        with lock:
                            ids.append(response.json()["id"])
                            if len(ids) == 150:
                                first.process.kill()
                    else:
                        assert response.status_code == 429
                        time.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(trio.to_thread.run_sync, one_client)
    finally:
        first.kill()
    assert len(ids) >= 150
    second = await trio.to_thread.run_sync(
        lambda: ServerProcess(tmp_path / "second.log", journal, *args)
    )
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=10) as c:
            resumed = (await c.get("/stats")).json()["requeued"]
            await wait_drained(c)
            views = [(await c.get(f"/jobs/{id}")).json() for id in ids]
        assert second.stop() == 0
    finally:
        second.kill()
    assert all(view["state"] == "succeeded" for view in views)
    assert 0 < resumed <= len(ids)
    # Of the jobs the dead process had claimed, those a worker had started
    # count a run the crash ended; the ones claimed ahead of a worker do not.
    assert 0 < sum(view["resumed"] for view in views) <= resumed
    assert all(view["resumed"] in (0, 1) for view in views)
    logged = [e for e in second.events() if e.get("event") == "resumed"]
    assert logged[0]["requeued"] == resumed
    print(f"\ncrash: {len(ids)} accepted before SIGKILL, {resumed} resumed")


def test_a_job_whose_type_is_gone_fails_at_restart_saying_why(tmp_path: Path) -> None:
    # A journal written by a version of the registry that had a job type (or
    # a pool) this one has not: those jobs can never run, so they end failed,
    # with the reason, instead of waiting in the journal forever.
    with serving(tmp_path, *server_args(POOLS)):
        pass  # creates the journal
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite3")) as db:
        db.executemany(
            "INSERT INTO jobs (type, priority, args, state, accepted_at, run_at)"
            " VALUES (?, ?, ?, 'queued', 1.0, 1.0)",
            [("renamed", 3, "{}"), ("add", 9, '{"x": 1}'), ("add", 3, '{"x": 1}')],
        )
        db.commit()
    with (
        serving(tmp_path, *server_args(POOLS)) as server,
        httpx.Client(base_url=server.url, timeout=10) as c,
    ):
        views = [wait_for(c, id, "succeeded", "failed") for id in (1, 2, 3)]
    assert [(v["state"], v["error"]) for v in views] == [
        (
            "failed",
            "cannot run: unknown job type 'renamed'; registered: add, digest, "
            "fail, sleep, thumbnail",
        ),
        ("failed", "cannot run: pool 9 is not configured"),
        ("succeeded", None),
    ]
    assert [v["resumed"] for v in views] == [0, 0, 0]


def test_finished_jobs_are_pruned_to_keep_results(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server.log",
        str(tmp_path / "journal.sqlite3"),
        *server_args(POOLS, "--keep-results", "5"),
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            ids = [
                c.post("/jobs", json={"type": "add", "args": {"x": i}}).json()["id"]
                for i in range(20)
            ]
            wait_for(c, ids[-1], "succeeded")
            time.sleep(1.1)  # the journal prunes at most once a second
            last = c.post("/jobs", json={"type": "add", "args": {"x": 0}}).json()["id"]
            wait_for(c, last, "succeeded")
            deadline = time.monotonic() + 10  # until the prune is committed
            while True:
                kept = [job["id"] for job in c.get("/jobs").json()["jobs"]]
                if len(kept) <= 6 or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert len(kept) <= 6
            assert ids[-1] in kept
            assert c.get(f"/jobs/{ids[0]}").status_code == 404
    finally:
        assert server.stop() == 0


def test_the_go_services_query_form_submits_a_job(client: httpx.Client) -> None:
    response = client.post("/jobs", params={"type": "sleep", "priority": "high"})
    assert response.status_code == 422  # sleep needs its seconds
    assert response.json()["fields"] == [
        {"field": "args.seconds", "message": "Field required"}
    ]
    registry_has_defaults = client.post(
        "/jobs", params={"type": "digest"}, json={"type": "digest"}
    )
    assert registry_has_defaults.status_code == 422  # a body and a query: which?
    assert registry_has_defaults.json()["fields"][0]["message"] == (
        "give the job in the body or in the query string (type=, priority=), not both"
    )


async def test_the_go_form_runs_a_job_whose_arguments_all_have_defaults() -> None:
    registry = JobRegistry()

    @registry.job(priority="high")
    async def ping(word: str = "pong") -> str:
        return word

    config = ServiceConfig.load({"pools": "high=1", "journal": ":memory:"}, {})
    service = Service(config, registry)
    transport = httpx.ASGITransport(app=create_app(service))
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(transport=transport, base_url="http://test") as c,
    ):
        await nursery.start(service.run)
        response = await c.post("/jobs", params={"type": "ping", "priority": "high"})
        assert response.status_code == 202, response.text
        id = response.json()["id"]
        with trio.fail_after(10):
            for _ in range(1000):  # polling another thread's journal writes
                view = (await c.get(f"/jobs/{id}")).json()
                if view["state"] == "succeeded":
                    break
                await trio.sleep(0.01)
        assert (view["result"], view["priority"]) == ("pong", 3)
        service.stop()
