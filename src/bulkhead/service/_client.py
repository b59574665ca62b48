"""A typed HTTP client of ``bulkhead serve``: :class:`Client` and :class:`AsyncClient`.

Both speak the same API with the same methods (``submit``, ``submit_many``,
``get``, ``wait``, ``cancel``); :class:`AsyncClient`'s are ``async``. They
are thin layers over httpx: the request bodies are built and checked here
(so a bad argument fails before anything is sent, with a message naming it),
and every answer other than success becomes a :class:`RemoteError` whose
class says what happened and whose message says what to do.
"""

from __future__ import annotations

import datetime
import json
import math
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, final

import anyio
import attrs
import httpx

import bulkhead

from ._errors import (
    BacklogFull,
    FieldError,
    JobFinished,
    JobNotFound,
    ServiceError,
    SubmissionInvalid,
    Unavailable,
)
from ._intake import Submission

JobStatus = Literal[
    "scheduled", "queued", "running", "succeeded", "failed", "cancelled"
]
"""The states of a job of the service."""

FINISHED: Final = frozenset({"succeeded", "failed", "cancelled"})
"""The terminal states: a job in one of them never changes again."""

DEFAULT_MAX_BATCH: Final = 10_000
"""The server's default ``BULKHEAD_MAX_BATCH``."""

_JSON = {"content-type": "application/json"}


# ---------------------------------------------------------------- errors


class RemoteError(ServiceError):
    """The service answered with an error, or could not be reached.

    The subclasses say which. Those with a twin among the service's own
    errors are that error too (:class:`JobRejected` is a
    ``SubmissionInvalid``, :class:`NoSuchJob` a ``JobNotFound``,
    and so on), so one ``except`` handles a ``Service`` in the same
    process and one over HTTP alike. ``str()`` is the server's message
    followed by what to do about it; ``fields`` holds the refused fields of
    a 422 answer (``FieldError``: ``index`` in a batch, ``field``,
    ``message``), empty otherwise.
    """

    status: int | None
    """The HTTP status; ``None`` if no answer came (:class:`ServiceUnreachable`)."""
    error: str
    """The server's ``error`` message (or the transport's, with no answer)."""
    fields: tuple[FieldError, ...]
    """The refused fields of a 422 answer; empty otherwise."""
    retry_after: int | None
    """Seconds the server asked to wait (``Retry-After``) before trying again."""

    advice: str = "see the server's log"

    def __init__(
        self,
        error: str,
        *,
        status: int | None = None,
        request: str = "",
        fields: Sequence[FieldError] = (),
        retry_after: int | None = None,
        advice: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.fields = tuple(fields)
        self.retry_after = retry_after
        answer = "" if status is None else f"{status} "
        where = f" ({answer}from {request})" if request else ""
        # Not super().__init__: the twins' constructors take other arguments.
        Exception.__init__(self, f"{error}{where}: {advice or self.advice}")


class JobRejected(RemoteError, SubmissionInvalid):
    """422 (or 400): a submission does not fit; ``fields`` says where.

    Nothing of it was accepted, a batch included. The HTTP twin of
    ``SubmissionInvalid``.
    """

    advice = (
        "fix the fields named (GET /job-types lists each type's arguments) "
        "and submit again; nothing was accepted"
    )


class ServiceBusy(RemoteError, BacklogFull):
    """429: the pool's backlog is full (``BULKHEAD_MAX_BACKLOG``). Nothing
    was accepted; ``retry_after`` says when to try again. The HTTP twin of
    ``BacklogFull``."""

    retry_after: int
    advice = "nothing was accepted; submit again after retry_after seconds"


class ServiceUnavailable(RemoteError, Unavailable):
    """503: the service is draining to stop, or cannot write its journal.
    Nothing was accepted; ``retry_after`` says when to try again. The HTTP
    twin of ``Unavailable``."""

    retry_after: int
    advice = (
        "nothing was accepted; submit again after retry_after seconds, to this "
        "server once it is back or to another one"
    )


class NoSuchJob(RemoteError, JobNotFound):
    """404: no job has this id, or it finished long enough ago to be pruned.
    The HTTP twin of ``JobNotFound``."""

    advice = (
        "check the id that submit() returned; finished jobs are kept for "
        "BULKHEAD_KEEP_RESULTS_FOR seconds (and BULKHEAD_KEEP_RESULTS jobs)"
    )


class AlreadyFinished(RemoteError, JobFinished):
    """409: :meth:`~Client.cancel` of a job that has already finished. The
    HTTP twin of ``JobFinished``."""

    advice = "there is nothing left to cancel; get() shows how it ended"


class Unauthorized(RemoteError):
    """401: the service has a token and the request did not carry it."""

    advice = "give the server's BULKHEAD_TOKEN as Client(url, token=...)"


class RequestTooLarge(RemoteError):
    """413: the body is over the server's ``BULKHEAD_MAX_BODY``."""

    advice = "send fewer jobs per submit_many() call, or smaller arguments"


class ServiceUnreachable(RemoteError):
    """No answer: the connection failed or timed out."""

    advice = "check that bulkhead serve runs at this URL and answers GET /health"


class WaitTimeout(TimeoutError):
    """:meth:`Client.wait` gave up before the job finished.

    The job goes on; :attr:`job` is how it was at the last look.
    """

    job: JobInfo
    """The job as the last poll saw it."""

    def __init__(self, job: JobInfo, timeout: float) -> None:
        super().__init__(
            f"job {job.id} is still {job.state} after {timeout:g} s: wait longer "
            f"(timeout=), or cancel({job.id}) if it should not run"
        )
        self.job = job


_MISSING_ENDPOINT: Final = (
    "the server does not offer this endpoint: check the URL, or upgrade "
    "bulkhead serve to the version of this client"
)

_ERRORS: Final[dict[int, type[RemoteError]]] = {
    400: JobRejected,
    401: Unauthorized,
    404: NoSuchJob,
    409: AlreadyFinished,
    413: RequestTooLarge,
    422: JobRejected,
    429: ServiceBusy,
    503: ServiceUnavailable,
}


# ---------------------------------------------------------------- values


def _check(submission: object, where: str = "") -> Submission:
    """``submission``, if it can be sent; else the error that says why.

    The server checks everything again; this only catches, before anything
    is sent, what no server would accept.
    """
    if not isinstance(submission, Submission):
        raise TypeError(
            f"{where}{submission!r} is not a bulkhead.service.Submission: build "
            "each with Submission(type, args, ...)"
        )
    s = submission
    if not isinstance(s.type, str):
        raise TypeError(f"{where}type must be a string, got {s.type!r}")
    if not s.type:
        raise ValueError(f"{where}type must not be empty")
    if not isinstance(s.args, Mapping):
        raise TypeError(
            f"{where}args must be a mapping of argument names to values, got {s.args!r}"
        )
    for name in s.args:
        if not isinstance(name, str):
            raise TypeError(
                f"{where}args must be keyed by argument names, got {name!r}"
            )
    if s.priority is not None and (
        isinstance(s.priority, bool) or not isinstance(s.priority, (int, str))
    ):
        raise TypeError(
            f"{where}priority must be a pool's name (low, normal, high, urgent) "
            f"or number, got {s.priority!r}"
        )
    if s.idempotency_key is not None:
        if not isinstance(s.idempotency_key, str):
            raise TypeError(
                f"{where}idempotency_key must be a string, got {s.idempotency_key!r}"
            )
        if not s.idempotency_key:
            raise ValueError(f"{where}idempotency_key must not be empty")
    if s.delay is not None:
        if isinstance(s.delay, bool) or not isinstance(s.delay, (int, float)):
            raise TypeError(
                f"{where}delay must be a number of seconds, got {s.delay!r}"
            )
        if not (math.isfinite(s.delay) and s.delay >= 0):
            raise ValueError(
                f"{where}delay must be a finite number of seconds >= 0, got {s.delay}"
            )
    if s.run_at is not None:
        if not isinstance(s.run_at, datetime.datetime):
            raise TypeError(
                f"{where}run_at must be a datetime.datetime, got {s.run_at!r}"
            )
        if s.run_at.utcoffset() is None:
            raise ValueError(
                f"{where}run_at must say its time zone, got the naive "
                f"{s.run_at.isoformat()}: use datetime.datetime.now("
                "datetime.timezone.utc) or .astimezone()"
            )
        if s.delay is not None:
            raise ValueError(f"{where}give delay or run_at, not both")
    return s


def _body(s: Submission) -> dict[str, Any]:
    """The JSON body of ``POST /jobs`` for a checked submission."""
    body: dict[str, Any] = {"type": s.type, "args": s.args}
    if s.priority is not None:
        body["priority"] = s.priority
    if s.idempotency_key is not None:
        body["idempotency_key"] = s.idempotency_key
    if s.delay is not None:
        body["delay"] = s.delay
    if s.run_at is not None:
        body["run_at"] = s.run_at.isoformat()
    return body


@final
@attrs.frozen
class Submitted:
    """The answer to :meth:`Client.submit`: the job's id, and whether its
    idempotency key was seen before (then ``id`` is the first job's)."""

    id: int
    """The job's id, for :meth:`~Client.get`, :meth:`~Client.wait` and
    :meth:`~Client.cancel`."""
    duplicate: bool
    """``True`` if the idempotency key was seen before and nothing new was
    accepted."""


def _time(value: object) -> datetime.datetime | None:
    """An RFC 3339 string (or Unix seconds, as servers before 0.2 sent) as
    an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if isinstance(value, str):
        # fromisoformat reads a "Z" suffix only from Python 3.11 on.
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        parsed = datetime.datetime.fromisoformat(text)
        if parsed.utcoffset() is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        return parsed.astimezone(datetime.timezone.utc)
    raise ValueError(f"not a time: {value!r}")


@final
@attrs.frozen
class JobInfo:
    """A job as ``GET /jobs/{id}`` shows it; times are aware UTC datetimes.

    ``type`` is its job type's name; the other fields are below.

    ::

        info = client.get(job_id)
        if info.state == "succeeded":
            print(info.result, info.finished_at - info.started_at)
    """

    id: int
    """The job's id."""
    type: str
    """Its job type."""
    priority: int
    """The number of the pool it runs in."""
    state: JobStatus
    """``scheduled`` (not due yet), ``queued``, ``running``, ``succeeded``,
    ``failed`` or ``cancelled``."""
    attempts: int
    """Attempts started so far (retries included)."""
    resumed: int
    """Restarts of the server that found it unfinished and ran it again."""
    accepted_at: datetime.datetime
    """When the server accepted it."""
    run_at: datetime.datetime | None
    """When it is due (``None`` from a server that has no delayed jobs)."""
    started_at: datetime.datetime | None
    """When its latest attempt started; ``None`` before."""
    finished_at: datetime.datetime | None
    """When it finished; ``None`` before."""
    result: Any
    """Its return value as JSON, once ``succeeded``."""
    error: str | None
    """Its exception's type and message once ``failed`` (or why it was
    ``cancelled``)."""

    @property
    def finished(self) -> bool:
        """Whether the job is in a terminal state (it will not change again)."""
        return self.state in FINISHED

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobInfo:
        """Read a ``GET /jobs/{id}`` answer.

        Raises:
            ValueError: if ``data`` is not such an answer.
        """
        try:
            accepted_at = _time(data["accepted_at"])
            if accepted_at is None:
                raise ValueError("accepted_at is null")
            return cls(
                id=int(data["id"]),
                type=str(data["type"]),
                priority=int(data["priority"]),
                state=data["state"],
                attempts=int(data["attempts"]),
                resumed=int(data.get("resumed", 0)),
                accepted_at=accepted_at,
                run_at=_time(data.get("run_at")),
                started_at=_time(data.get("started_at")),
                finished_at=_time(data.get("finished_at")),
                result=data.get("result"),
                error=data.get("error"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"not a job: {data!r} ({exc}); is this URL a bulkhead serve?"
            ) from None


# ---------------------------------------------------------------- protocol


def _headers(token: str | None) -> dict[str, str]:
    headers = {"user-agent": f"bulkhead-client/{bulkhead.__version__}"}
    if token is not None:
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty string, or None for none")
        headers["authorization"] = f"Bearer {token}"
    return headers


def _encode(body: object, what: str = "the job's arguments are") -> bytes:
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{what} not JSON ({exc}): give str, int, finite float, bool, None, "
            "and lists and dicts of them"
        ) from None


def _job_id(id: object) -> int:
    if isinstance(id, bool) or not isinstance(id, int):
        raise TypeError(f"a job id is an int, as submit() returns it, got {id!r}")
    if id < 1:
        raise ValueError(f"a job id is 1 or more, got {id}")
    return id


def _batch(submissions: object, max_batch: int) -> bytes:
    if isinstance(submissions, (str, bytes, Submission)) or not isinstance(
        submissions, Sequence
    ):
        raise TypeError(
            f"submit_many() takes a list of Submission, got {submissions!r}"
        )
    if len(submissions) > max_batch:
        raise ValueError(
            f"{len(submissions)} submissions are more than one batch may hold "
            f"({max_batch}, the server's BULKHEAD_MAX_BATCH): split them into "
            "several submit_many() calls (each is all or nothing), or give "
            "Client(max_batch=...) if the server allows more"
        )
    bodies = [
        _body(_check(s, f"submissions[{i}]: ")) for i, s in enumerate(submissions)
    ]
    try:
        return _encode({"jobs": bodies})
    except ValueError:
        for i, body in enumerate(bodies):  # which one: say it
            _encode(body, f"the arguments of submissions[{i}] are")
        raise


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    # Whole seconds; never an HTTP date from bulkhead serve.
    return int(value) if value.isdigit() else None


def _fields(payload: Mapping[str, Any]) -> list[FieldError]:
    fields = payload.get("fields")
    if not isinstance(fields, list):
        return []
    return [
        FieldError(
            field=str(item.get("field", "")),
            message=str(item.get("message", "")),
            index=item.get("index") if isinstance(item.get("index"), int) else None,
        )
        for item in fields
        if isinstance(item, Mapping)
    ]


def _answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer; else the :class:`RemoteError` it means."""
    request = f"{response.request.method} {response.request.url.path}"
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.is_success and payload is not None:
        return payload
    if response.is_success:
        raise RemoteError(
            f"the answer is not JSON: {response.text[:200]!r}",
            status=response.status_code,
            request=request,
        )
    if isinstance(payload, Mapping) and isinstance(payload.get("error"), str):
        error = payload["error"]
        fields = _fields(payload)
    else:  # not one of our servers' answers (a proxy's, or no such route)
        error = response.text[:200] or response.reason_phrase
        fields = []
    kind = _ERRORS.get(response.status_code, RemoteError)
    advice = None
    if response.status_code in (404, 405, 501) and response.request.method == "POST":
        # No such endpoint (GET and DELETE name a job, POST does not).
        kind, advice = RemoteError, _MISSING_ENDPOINT
    retry_after = _retry_after(response)
    if kind in (ServiceBusy, ServiceUnavailable) and retry_after is None:
        retry_after = 1  # they always carry one, as BacklogFull does
    raise kind(
        error,
        status=response.status_code,
        request=request,
        fields=fields,
        retry_after=retry_after,
        advice=advice,
    )


def _submitted(payload: Any) -> Submitted:
    return Submitted(id=int(payload["id"]), duplicate=bool(payload["duplicate"]))


def _ids(payload: Any, expected: int) -> list[int]:
    ids = [int(id) for id in payload["ids"]]
    if len(ids) != expected:
        raise RemoteError(
            f"{expected} jobs sent, {len(ids)} ids answered",
            request="POST /jobs/batch",
        )
    return ids


def _unreachable(exc: httpx.TransportError, base_url: httpx.URL) -> ServiceUnreachable:
    # httpx sets the request of every error its client raises.
    request = f"{exc.request.method} {exc.request.url.path}"
    return ServiceUnreachable(
        f"no answer from {base_url}: {type(exc).__name__}: {exc}", request=request
    )


@attrs.define
class _Backoff:
    """When :meth:`Client.wait` polls next: ``poll`` seconds, growing by half
    each time up to ``max_poll``, never past the deadline."""

    timeout: float | None
    interval: float
    max_poll: float
    deadline: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        for name, value in (("poll", self.interval), ("max_poll", self.max_poll)):
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value}")
        if self.timeout is not None and not (
            isinstance(self.timeout, (int, float)) and self.timeout >= 0
        ):
            raise ValueError(
                f"timeout must be seconds >= 0, or None to wait for ever, "
                f"got {self.timeout!r}"
            )
        timeout = math.inf if self.timeout is None else self.timeout
        self.deadline = time.monotonic() + timeout

    def next(self, job: JobInfo) -> float:
        """Seconds to sleep before the next look at ``job``.

        Raises:
            WaitTimeout: if the deadline has passed.
        """
        left = self.deadline - time.monotonic()
        if left <= 0:
            assert self.timeout is not None
            raise WaitTimeout(job, self.timeout)
        delay = min(self.interval, left)
        self.interval = min(self.interval * 1.5, self.max_poll)
        return delay


def _check_max_batch(max_batch: int) -> int:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
    return max_batch


# ---------------------------------------------------------------- clients


@final
class Client:
    """A client of ``bulkhead serve`` at ``base_url`` (sync; see :class:`AsyncClient`).

    Use it as a context manager, which closes its connections at exit::

        from bulkhead.service import Client, Submission

        with Client("http://127.0.0.1:8080", token="s3cret") as client:
            job = client.submit("add", {"x": 2, "y": 3})
            print(client.wait(job.id, timeout=10).result)  # 5
            ids = client.submit_many(
                [Submission("add", {"x": i}) for i in range(1000)]
            )

    Args:
        base_url: The service's URL, such as ``"http://127.0.0.1:8080"``.
        token: The server's bearer token (``BULKHEAD_TOKEN``), if it has one.
        timeout: Seconds for each HTTP request (connect, send, answer), or
            ``None`` for no limit. :meth:`wait` has its own ``timeout``.
        max_batch: The most jobs :meth:`submit_many` sends in one call: the
            server's ``BULKHEAD_MAX_BATCH``.

    Every method raises :class:`RemoteError` (one of its subclasses) when
    the server refuses or cannot be reached.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.max_batch = _check_max_batch(max_batch)
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(token), timeout=timeout
        )

    def __repr__(self) -> str:
        return f"<bulkhead.service.Client {self._http.base_url}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connections; it cannot be used after this."""
        self._http.close()

    def _request(self, method: str, path: str, content: bytes | None = None) -> Any:
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                headers=None if content is None else _JSON,
            )
        except httpx.TransportError as exc:
            raise _unreachable(exc, self._http.base_url) from exc
        return _answer(response)

    def submit(
        self,
        type: str,
        args: Mapping[str, Any] | None = None,
        *,
        priority: int | str | None = None,
        idempotency_key: str | None = None,
        delay: float | None = None,
        run_at: datetime.datetime | None = None,
    ) -> Submitted:
        """Submit one job (``POST /jobs``); it is in the server's journal
        when this returns.

        ::

            job = client.submit("add", {"x": 2, "y": 3})
            later = client.submit("report", {"day": "mon"}, delay=3600)

        Args are those of ``Submission``.

        Returns:
            Submitted: the job's id, and whether the idempotency key was
            seen before.

        Raises:
            TypeError, ValueError: if an argument is bad (nothing is sent).
            JobRejected: if the server refuses the type, priority or args.
            ServiceBusy: if the pool's backlog is full or the service drains.
        """
        submission = Submission(
            type, {} if args is None else args, priority, idempotency_key, delay, run_at
        )
        content = _encode(_body(_check(submission)))
        return _submitted(self._request("POST", "/jobs", content))

    def submit_many(self, submissions: Sequence[Submission]) -> list[int]:
        """Submit a batch of jobs in one request (``POST /jobs/batch``): all
        are accepted or none is.

        One call sends one batch; a list longer than ``max_batch`` is
        refused, never split (splitting would make it several transactions).
        An empty list sends nothing and returns ``[]``.

        ::

            ids = client.submit_many(
                [Submission("add", {"x": i, "y": 1}) for i in range(1000)]
            )

        Returns:
            list[int]: the jobs' ids, in the order of ``submissions``.

        Raises:
            ValueError: if there are more than ``max_batch`` submissions.
            TypeError: if an item is not a ``Submission``.
            JobRejected: if any job is refused (its ``fields``
                names each by its ``index``); nothing was accepted.
            ServiceBusy: if a pool's backlog is full; nothing was accepted.
        """
        content = _batch(submissions, self.max_batch)
        if not submissions:
            return []
        return _ids(self._request("POST", "/jobs/batch", content), len(submissions))

    def get(self, id: int) -> JobInfo:
        """Read a job (``GET /jobs/{id}``).

        ::

            info = client.get(job.id)   # info.state == "queued", ...

        Raises:
            NoSuchJob: if there is no such job (or it was pruned).
        """
        return JobInfo.from_json(self._request("GET", f"/jobs/{_job_id(id)}"))

    def wait(
        self,
        id: int,
        timeout: float | None = None,
        *,
        poll: float = 0.05,
        max_poll: float = 1.0,
    ) -> JobInfo:
        """Poll a job until it has finished, and return it.

        It polls after ``poll`` seconds, then half again as long each time,
        up to ``max_poll``. A failed or cancelled job is returned too: look
        at its ``state`` and ``error``.

        ::

            info = client.wait(job.id, timeout=30)
            if info.state == "succeeded":
                print(info.result)

        Args:
            id: The job's id.
            timeout: Seconds to wait at most; ``None`` waits for ever.
            poll: Seconds before the second look.
            max_poll: The longest pause between two looks.

        Raises:
            WaitTimeout: if the job has not finished within ``timeout``
                (the job goes on).
            NoSuchJob: if there is no such job.
        """
        backoff = _Backoff(timeout, poll, max_poll)
        while True:
            job = self.get(id)
            if job.finished:
                return job
            time.sleep(backoff.next(job))

    def cancel(self, id: int) -> JobInfo:
        """Cancel a scheduled, queued or running job (``DELETE /jobs/{id}``).

        Returns the job as it is once cancellation is requested; it ends
        ``cancelled`` soon after (:meth:`wait` for it).

        Raises:
            NoSuchJob: if there is no such job.
            AlreadyFinished: if it has already finished.
        """
        return JobInfo.from_json(self._request("DELETE", f"/jobs/{_job_id(id)}"))


@final
class AsyncClient:
    """The async twin of :class:`Client`, for trio (httpx runs on it through
    anyio): the same arguments and methods, awaited.

    ::

        from bulkhead.service import AsyncClient

        async with AsyncClient("http://127.0.0.1:8080") as client:
            job = await client.submit("add", {"x": 2, "y": 3})
            info = await client.wait(job.id, timeout=10)

    Each method is a checkpoint. Cancelled during a request, it may or may
    not have reached the server: a cancelled :meth:`submit` may have
    accepted the job (give an ``idempotency_key`` to submit it again
    safely).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | None = 30.0,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.max_batch = _check_max_batch(max_batch)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(token), timeout=timeout
        )

    def __repr__(self) -> str:
        return f"<bulkhead.service.AsyncClient {self._http.base_url}>"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections; it cannot be used after this."""
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, content: bytes | None = None
    ) -> Any:
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                headers=None if content is None else _JSON,
            )
        except httpx.TransportError as exc:
            raise _unreachable(exc, self._http.base_url) from exc
        return _answer(response)

    async def submit(
        self,
        type: str,
        args: Mapping[str, Any] | None = None,
        *,
        priority: int | str | None = None,
        idempotency_key: str | None = None,
        delay: float | None = None,
        run_at: datetime.datetime | None = None,
    ) -> Submitted:
        """Like :meth:`Client.submit`, awaited."""
        submission = Submission(
            type, {} if args is None else args, priority, idempotency_key, delay, run_at
        )
        content = _encode(_body(_check(submission)))
        payload = await self._request("POST", "/jobs", content)
        return _submitted(payload)

    async def submit_many(self, submissions: Sequence[Submission]) -> list[int]:
        """Like :meth:`Client.submit_many`, awaited."""
        content = _batch(submissions, self.max_batch)
        if not submissions:
            await anyio.lowlevel.checkpoint()
            return []
        payload = await self._request("POST", "/jobs/batch", content)
        return _ids(payload, len(submissions))

    async def get(self, id: int) -> JobInfo:
        """Like :meth:`Client.get`, awaited."""
        return JobInfo.from_json(await self._request("GET", f"/jobs/{_job_id(id)}"))

    async def wait(
        self,
        id: int,
        timeout: float | None = None,  # noqa: ASYNC109  # Client.wait's signature
        *,
        poll: float = 0.05,
        max_poll: float = 1.0,
    ) -> JobInfo:
        """Like :meth:`Client.wait`, awaited; a cancel scope around it works too."""
        backoff = _Backoff(timeout, poll, max_poll)
        while True:
            job = await self.get(id)
            if job.finished:
                return job
            await anyio.sleep(backoff.next(job))

    async def cancel(self, id: int) -> JobInfo:
        """Like :meth:`Client.cancel`, awaited."""
        return JobInfo.from_json(await self._request("DELETE", f"/jobs/{_job_id(id)}"))
