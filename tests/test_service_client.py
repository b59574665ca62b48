"""bulkhead.service.Client and AsyncClient against a real ``bulkhead serve``.

Every test that talks HTTP talks to a real server process on 127.0.0.1
(``_service_server.py``), or, for answers no bulkhead server gives, to
Python's own ``http.server``. The batch and delay tests need a server with
``POST /jobs/batch`` and delayed jobs (issue 17).
"""

from __future__ import annotations

import datetime
import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from bulkhead.service import (
    AlreadyFinished,
    AsyncClient,
    BacklogFull,
    Client,
    FieldError,
    JobFinished,
    JobInfo,
    JobNotFound,
    JobRejected,
    NoSuchJob,
    RemoteError,
    RequestTooLarge,
    ServiceBusy,
    ServiceError,
    ServiceUnreachable,
    Submission,
    SubmissionInvalid,
    Submitted,
    Unauthorized,
    WaitTimeout,
)

from ._service_server import ServerProcess, server_args, serving

POOLS = "low=2:10,normal=4,high=8,urgent=1:1"
TOKEN = "s3cret-token-for-client-tests"
UTC = datetime.timezone.utc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the tests of this module (journal on disk)."""
    args = server_args(POOLS, "--grace-period", "1", "--max-body", "4096")
    with serving(tmp_path_factory.mktemp("client"), *args) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=30) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Python's ``http.server`` on loopback: not a bulkhead server. It serves
    ``jobs/1`` (not JSON) and ``jobs/2`` (JSON, not a job), answers 404 in
    HTML to other GETs and 501 to every POST and DELETE."""
    root = tmp_path_factory.mktemp("foreign")
    (root / "jobs").mkdir()
    (root / "jobs" / "1").write_text("<html>hello</html>")
    (root / "jobs" / "2").write_text('{"id": 2}')
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield url
    finally:
        process.kill()
        process.wait()


def assert_utc(*times: datetime.datetime | None) -> None:
    for t in times:
        assert t is not None
        assert t.utcoffset() == datetime.timedelta(0)


def submit_until_busy(
    client: Client, *args: Any, **kwargs: Any
) -> tuple[list[int], ServiceBusy]:
    """Submit the same job until the server answers :class:`ServiceBusy`;
    return the ids accepted before it, and the error."""
    held = []
    for _ in range(50):
        try:
            held.append(client.submit(*args, **kwargs).id)
        except ServiceBusy as busy:
            return held, busy
    pytest.fail(f"no ServiceBusy after 50 submissions: {held}")


# ------------------------------------------------------------- sync client


def test_submit_then_wait_returns_the_typed_job(client: Client) -> None:
    submitted = client.submit("add", {"x": 2, "y": 3})
    assert submitted == Submitted(id=submitted.id, duplicate=False)
    info = client.wait(submitted.id, timeout=30)
    assert isinstance(info, JobInfo)
    assert (info.id, info.type, info.priority) == (submitted.id, "add", 3)
    assert (info.state, info.result, info.error) == ("succeeded", 5, None)
    assert (info.attempts, info.resumed, info.finished) == (1, 0, True)
    assert_utc(info.accepted_at, info.started_at, info.finished_at)
    assert info.started_at is not None
    assert info.finished_at is not None
    assert info.accepted_at <= info.started_at <= info.finished_at
    assert abs(info.accepted_at - datetime.datetime.now(UTC)) < datetime.timedelta(
        seconds=30
    )
    assert client.get(submitted.id) == info
    assert repr(client) == f"<bulkhead.service.Client {client._http.base_url}>"


def test_priority_by_name_and_number(client: Client) -> None:
    for priority, number in (("urgent", 4), ("low", 1), (2, 2)):
        job = client.submit("add", {"x": 1}, priority=priority)
        assert client.wait(job.id, timeout=30).priority == number


def test_idempotency_key_answers_the_first_id_as_a_duplicate(client: Client) -> None:
    first = client.submit("add", {"x": 1}, idempotency_key="client-key-1")
    again = client.submit("add", {"x": 1}, idempotency_key="client-key-1")
    assert again == Submitted(id=first.id, duplicate=True)
    assert not first.duplicate


def test_a_failed_job_is_returned_by_wait_with_its_error(client: Client) -> None:
    job = client.submit("fail", {"message": "boom"})
    info = client.wait(job.id, timeout=30)
    assert (info.state, info.error, info.result) == (
        "failed",
        "RuntimeError: boom",
        None,
    )


def test_wait_times_out_and_cancel_stops_the_job(client: Client) -> None:
    job = client.submit("sleep", {"seconds": 60})
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait(job.id, timeout=0.3, poll=0.01, max_poll=0.05)
    assert 0.3 <= time.monotonic() - started < 30
    assert caught.value.job.id == job.id
    assert caught.value.job.state in ("queued", "running")
    assert isinstance(caught.value, TimeoutError)
    assert str(caught.value) == (
        f"job {job.id} is still {caught.value.job.state} after 0.3 s: wait longer "
        f"(timeout=), or cancel({job.id}) if it should not run"
    )
    client.cancel(job.id)
    info = client.wait(job.id, timeout=30)
    assert (info.state, info.error) == ("cancelled", "cancelled")
    with pytest.raises(AlreadyFinished) as finished:
        client.cancel(job.id)
    assert finished.value.status == 409
    assert isinstance(finished.value, JobFinished)
    assert str(finished.value) == (
        f"job {job.id} has already finished: cancelled (409 from DELETE "
        f"/jobs/{job.id}): there is nothing left to cancel; get() shows how it ended"
    )


def test_wait_with_no_timeout_polls_until_the_end(client: Client) -> None:
    job = client.submit("sleep", {"seconds": 0.3})
    info = client.wait(job.id, poll=0.01, max_poll=0.02)
    assert info.state == "succeeded"


def test_unknown_job_is_job_not_found(client: Client) -> None:
    for call in (client.get, client.wait, client.cancel):
        with pytest.raises(NoSuchJob) as caught:
            call(2**62)
        assert caught.value.status == 404
        assert isinstance(caught.value, JobNotFound)  # the Service's own error
        assert str(caught.value).endswith(
            "check the id that submit() returned; finished jobs are kept for "
            "BULKHEAD_KEEP_RESULTS_FOR seconds (and BULKHEAD_KEEP_RESULTS jobs)"
        )


def test_a_refused_submission_is_job_rejected_naming_the_field(
    client: Client,
) -> None:
    with pytest.raises(JobRejected) as caught:
        client.submit("add", {"x": "two"})
    error = caught.value
    assert (error.status, error.retry_after) == (422, None)
    assert isinstance(error, SubmissionInvalid)
    assert error.error == "args.x: Input should be a valid integer"
    assert str(error) == (
        "args.x: Input should be a valid integer (422 from POST /jobs): fix the "
        "fields named (GET /job-types lists each type's arguments) and submit "
        "again; nothing was accepted"
    )
    with pytest.raises(JobRejected) as unknown:
        client.submit("nope")
    assert unknown.value.error.startswith("type: unknown job type 'nope'")


def test_every_422_names_its_fields(client: Client) -> None:
    """Issue 17: every 422 carries ``fields``, argument errors included."""
    with pytest.raises(JobRejected) as caught:
        client.submit("add", {"x": "two"})
    assert caught.value.fields == (
        FieldError(field="args.x", message="Input should be a valid integer"),
    )


def test_a_body_over_the_limit_is_request_too_large(client: Client) -> None:
    with pytest.raises(RequestTooLarge) as caught:
        client.submit("digest", {"text": "x" * 5000})
    assert caught.value.status == 413
    assert str(caught.value).endswith(
        "send fewer jobs per submit_many() call, or smaller arguments"
    )


def test_past_the_backlog_limit_is_service_busy(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server.log",
        ":memory:",
        *server_args("low=1:1,normal=1,high=1,urgent=1:1"),
        env={"BULKHEAD_MAX_BACKLOG": "3"},
    )
    try:
        with Client(server.url) as client:
            held, busy = submit_until_busy(client, "sleep", {"seconds": 60})
        assert held  # at least the running job; with issue 17, a backlog of 3
        assert busy.status == 429
        assert isinstance(busy, BacklogFull)
        assert busy.retry_after > 0
        assert str(busy).endswith(
            "nothing was accepted; submit again after retry_after seconds"
        )
    finally:
        server.kill()


def test_the_token_is_sent_and_a_missing_one_is_unauthorized(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server.log",
        ":memory:",
        *server_args(POOLS),
        env={"BULKHEAD_TOKEN": TOKEN},
    )
    try:
        with Client(server.url) as anonymous, pytest.raises(Unauthorized) as caught:
            anonymous.submit("add", {"x": 1})
        assert caught.value.status == 401
        assert str(caught.value) == (
            "missing bearer token: send 'Authorization: Bearer <token>' (401 from "
            "POST /jobs): give the server's BULKHEAD_TOKEN as Client(url, token=...)"
        )
        with Client(server.url, token="wrong") as wrong, pytest.raises(Unauthorized):
            wrong.get(1)
        with Client(server.url, token=TOKEN) as client:
            job = client.submit("add", {"x": 1, "y": 1})
            assert client.wait(job.id, timeout=30).result == 2
    finally:
        assert server.stop() == 0


def test_no_server_is_service_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, timeout=5) as client, pytest.raises(ServiceUnreachable) as caught:
        client.get(1)
    error = caught.value
    assert (error.status, error.fields, error.retry_after) == (None, (), None)
    assert error.error.startswith(f"no answer from {url}: ConnectError: ")
    assert str(error).endswith(
        "(from GET /jobs/1): check that bulkhead serve runs at this URL and "
        "answers GET /health"
    )


def test_answers_of_a_server_that_is_not_bulkhead(foreign: str) -> None:
    with Client(foreign) as client:
        with pytest.raises(RemoteError, match=r"^the answer is not JSON: ") as e:
            client.get(1)
        assert type(e.value) is RemoteError
        assert isinstance(e.value, ServiceError)
        with pytest.raises(ValueError, match=r"^not a job: \{'id': 2\} "):
            client.get(2)
        with pytest.raises(NoSuchJob, match=r"\(404 from GET /jobs/3\)"):
            client.get(3)
        with pytest.raises(RemoteError) as post:
            client.submit("add")
        assert type(post.value) is RemoteError
        assert post.value.status == 501
        assert str(post.value).endswith(
            "(501 from POST /jobs): the server does not offer this endpoint: "
            "check the URL, or upgrade bulkhead serve to the version of this client"
        )


# ------------------------------------------------------ client-side checks


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"type": ""}, ValueError, "type must not be empty"),
        ({"type": 3}, TypeError, "type must be a string, got 3"),
        ({"type": None}, TypeError, "type must be a string, got None"),
        (
            {"args": [1]},
            TypeError,
            "args must be a mapping of argument names to values, got [1]",
        ),
        ({"args": {1: 2}}, TypeError, "args must be keyed by argument names, got 1"),
        (
            {"priority": True},
            TypeError,
            "priority must be a pool's name (low, normal, high, urgent) or number, "
            "got True",
        ),
        (
            {"priority": 1.5},
            TypeError,
            "priority must be a pool's name (low, normal, high, urgent) or number, "
            "got 1.5",
        ),
        ({"idempotency_key": ""}, ValueError, "idempotency_key must not be empty"),
        (
            {"delay": -1},
            ValueError,
            "delay must be a finite number of seconds >= 0, got -1",
        ),
        (
            {"delay": math.nan},
            ValueError,
            "delay must be a finite number of seconds >= 0, got nan",
        ),
        (
            {"delay": math.inf},
            ValueError,
            "delay must be a finite number of seconds >= 0, got inf",
        ),
        ({"delay": "5"}, TypeError, "delay must be a number of seconds, got '5'"),
        ({"delay": True}, TypeError, "delay must be a number of seconds, got True"),
        (
            {"run_at": "2030-01-01T00:00:00Z"},
            TypeError,
            "run_at must be a datetime.datetime, got '2030-01-01T00:00:00Z'",
        ),
        (
            {"run_at": datetime.datetime(2030, 1, 1)},
            ValueError,
            "run_at must say its time zone, got the naive 2030-01-01T00:00:00: use "
            "datetime.datetime.now(datetime.timezone.utc) or .astimezone()",
        ),
        (
            {"delay": 1, "run_at": datetime.datetime(2030, 1, 1, tzinfo=UTC)},
            ValueError,
            "give delay or run_at, not both",
        ),
    ],
)
def test_bad_submissions_are_refused_before_anything_is_sent(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    fields = {"type": "add", **kwargs}
    # No server listens there: these fail before anything is sent.
    with Client("http://127.0.0.1:1") as client:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            client.submit(**fields)
        with pytest.raises(error, match=f"^submissions\\[1\\]: {re.escape(message)}$"):
            client.submit_many([Submission("add"), Submission(**fields)])


def test_arguments_that_are_not_json_are_refused_before_sending() -> None:
    with Client("http://127.0.0.1:1") as client:
        for args in ({"x": math.nan}, {"x": object()}):
            with pytest.raises(
                ValueError,
                match=r"^the job's arguments are not JSON \(.*\): give str, int, "
                r"finite float, bool, None, and lists and dicts of them$",
            ):
                client.submit("add", args)


def test_a_batch_with_arguments_that_are_not_json_names_the_job() -> None:
    jobs = [Submission("add", {"x": 1}), Submission("add", {"x": math.inf})]
    with (
        Client("http://127.0.0.1:1") as client,
        pytest.raises(
            ValueError,
            match=r"^the arguments of submissions\[1\] are not JSON \(.*\): give "
            r"str, int, finite float, bool, None, and lists and dicts of them$",
        ),
    ):
        client.submit_many(jobs)


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^max_batch must be an int >= 1, got 0$"):
        Client("http://127.0.0.1:1", max_batch=0)
    with pytest.raises(ValueError, match=r"^max_batch must be an int >= 1, got True$"):
        AsyncClient("http://127.0.0.1:1", max_batch=True)
    with pytest.raises(
        ValueError, match=r"^token must be a non-empty string, or None for none$"
    ):
        Client("http://127.0.0.1:1", token="")
    with Client("http://127.0.0.1:1") as client:
        with pytest.raises(
            TypeError, match=r"^a job id is an int, as submit\(\) returns it, got '1'$"
        ):
            client.get("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^a job id is 1 or more, got 0$"):
            client.cancel(0)
        for bad, message in (
            (
                {"timeout": -1},
                r"^timeout must be seconds >= 0, or None to wait for "
                r"ever, got -1$",
            ),
            ({"poll": 0}, r"^poll must be a number of seconds > 0, got 0$"),
            (
                {"max_poll": math.inf},
                r"^max_poll must be a number of seconds > 0, "
                r"got inf$",
            ),
        ):
            with pytest.raises(ValueError, match=message):
                client.wait(1, **bad)


def test_submit_many_refuses_more_than_one_batch_before_sending() -> None:
    with Client("http://127.0.0.1:1", max_batch=5) as client:
        assert client.submit_many([]) == []
        jobs = [Submission("add", {"x": i}) for i in range(6)]
        with pytest.raises(
            ValueError,
            match=r"^6 submissions are more than one batch may hold \(5, the "
            r"server's BULKHEAD_MAX_BATCH\): split them into several "
            r"submit_many\(\) calls \(each is all or nothing\), or give "
            r"Client\(max_batch=\.\.\.\) if the server allows more$",
        ):
            client.submit_many(jobs)
        with pytest.raises(
            TypeError,
            match=r"^submissions\[1\]: \{'type': 'add'\} is not a "
            r"bulkhead\.service\.Submission: build each with "
            r"Submission\(type, args, \.\.\.\)$",
        ):
            client.submit_many([jobs[0], {"type": "add"}])  # type: ignore[list-item]
        with pytest.raises(
            TypeError, match=r"^submit_many\(\) takes a list of Submission, got "
        ):
            client.submit_many(jobs[0])  # type: ignore[arg-type]


def test_job_info_reads_rfc_3339_times_and_refuses_what_is_no_job() -> None:
    data: dict[str, Any] = {
        "id": 7,
        "type": "add",
        "priority": 3,
        "state": "scheduled",
        "attempts": 0,
        "resumed": 0,
        "accepted_at": "2026-12-03T10:00:00.250Z",
        "run_at": "2026-12-03T12:00:00+02:00",
        "started_at": None,
        "finished_at": None,
        "result": None,
        "error": None,
    }
    info = JobInfo.from_json(data)
    assert info.accepted_at == datetime.datetime(2026, 12, 3, 10, 0, 0, 250000, UTC)
    assert info.run_at == datetime.datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    assert_utc(info.accepted_at, info.run_at)
    assert not info.finished
    naive = JobInfo.from_json({**data, "accepted_at": "2026-12-03T10:00:00"})
    assert naive.accepted_at == datetime.datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    unix = JobInfo.from_json({**data, "accepted_at": 0})
    assert unix.accepted_at == datetime.datetime(1970, 1, 1, tzinfo=UTC)
    for bad in ({**data, "accepted_at": None}, {**data, "run_at": []}, {"id": 1}):
        with pytest.raises(
            ValueError, match=r"^not a job: .*; is this URL a bulkhead serve\?$"
        ):
            JobInfo.from_json(bad)


# ------------------------------------------------------------ async client


async def test_async_client_submits_waits_and_cancels(server: ServerProcess) -> None:
    async with AsyncClient(server.url, timeout=30) as client:
        assert repr(client).startswith("<bulkhead.service.AsyncClient http://")
        job = await client.submit("add", {"x": 20, "y": 22})
        info = await client.wait(job.id, timeout=30, poll=0.01)
        assert (info.state, info.result) == ("succeeded", 42)
        assert await client.get(job.id) == info
        slow = await client.submit("sleep", {"seconds": 60})
        with pytest.raises(WaitTimeout):
            await client.wait(slow.id, timeout=0.2, poll=0.01)
        await client.cancel(slow.id)
        assert (await client.wait(slow.id, timeout=30)).state == "cancelled"
        with pytest.raises(NoSuchJob):
            await client.get(2**62)
        with pytest.raises(JobRejected):
            await client.submit("add", {"x": "two"})
        assert await client.submit_many([]) == []


async def test_every_async_method_is_a_checkpoint(server: ServerProcess) -> None:
    async with AsyncClient(server.url, timeout=30) as client:
        with trio.testing.assert_checkpoints():
            job = await client.submit("add", {"x": 1})
        with trio.testing.assert_checkpoints():
            await client.get(job.id)
        with trio.testing.assert_checkpoints():
            await client.wait(job.id, timeout=30)
        with trio.testing.assert_checkpoints():
            assert await client.submit_many([]) == []
        with trio.testing.assert_checkpoints(), pytest.raises(AlreadyFinished):
            await client.cancel(job.id)


async def test_async_wait_obeys_the_callers_cancel_scope(
    server: ServerProcess,
) -> None:
    async with AsyncClient(server.url, timeout=30) as client:
        slow = await client.submit("sleep", {"seconds": 60})
        with trio.move_on_after(0.3) as scope:
            await client.wait(slow.id)
        assert scope.cancelled_caught
        await client.cancel(slow.id)
        assert (await client.wait(slow.id, timeout=30)).state == "cancelled"


async def test_async_client_no_server_is_service_unreachable() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ServiceUnreachable, match=r"ConnectError"):
            await client.submit("add", {"x": 1})


# ------------------------------------- batch and delay (issue 17's server)


def test_submit_many_answers_the_ids_in_order_and_every_job_runs(
    client: Client,
) -> None:
    ids = client.submit_many([Submission("add", {"x": i, "y": 1}) for i in range(100)])
    assert len(ids) == len(set(ids)) == 100
    for i, id in enumerate(ids):
        info = client.wait(id, timeout=30)
        assert (info.state, info.result) == ("succeeded", i + 1)


def test_submit_many_is_all_or_nothing_and_names_the_index(client: Client) -> None:
    jobs = [Submission("add", {"x": i}) for i in range(10)]
    jobs[7] = Submission("add", {"x": "seven"})
    before = client.submit("add", {"x": 0}).id
    with pytest.raises(JobRejected) as caught:
        client.submit_many(jobs)
    assert caught.value.status == 422
    assert caught.value.fields == (
        FieldError(index=7, field="args.x", message="Input should be a valid integer"),
    )
    assert client.submit("add", {"x": 0}).id == before + 1  # nothing accepted


def test_a_delayed_job_starts_once_it_is_due(client: Client) -> None:
    job = client.submit("add", {"x": 1}, delay=0.5)
    done = client.wait(job.id, timeout=30)
    assert done.state == "succeeded"
    assert done.run_at is not None
    due = done.run_at - done.accepted_at
    assert datetime.timedelta(seconds=0.49) <= due <= datetime.timedelta(seconds=0.51)
    assert done.started_at is not None
    assert done.started_at >= done.run_at


def test_run_at_in_any_time_zone_is_the_same_instant(client: Client) -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    at = (datetime.datetime.now(UTC) + datetime.timedelta(seconds=0.5)).astimezone(
        plus_two
    )
    job = client.submit("add", {"x": 1}, run_at=at)
    done = client.wait(job.id, timeout=30)
    assert done.state == "succeeded"
    assert done.run_at is not None
    assert abs(done.run_at - at) < datetime.timedelta(milliseconds=1)
    assert done.started_at is not None
    assert done.started_at >= at


def test_a_delayed_job_can_be_cancelled_before_it_is_due(client: Client) -> None:
    job = client.submit("add", {"x": 1}, delay=3600)
    assert client.get(job.id).state == "scheduled"
    client.cancel(job.id)
    assert client.wait(job.id, timeout=30).state == "cancelled"


async def test_async_submit_many_and_delay(server: ServerProcess) -> None:
    async with AsyncClient(server.url, timeout=30) as client:
        later = await client.submit_many(
            [Submission("add", {"x": i}, delay=3600) for i in range(5)]
        )
        assert [(await client.get(id)).state for id in later] == ["scheduled"] * 5
        soon = await client.submit_many(
            [Submission("add", {"x": i}, delay=0.2) for i in range(5)]
        )
        results = [(await client.wait(id, timeout=30)).result for id in soon]
        assert results == list(range(5))
        for id in later:
            await client.cancel(id)
            assert (await client.wait(id, timeout=30)).state == "cancelled"
