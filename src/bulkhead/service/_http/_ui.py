"""The dashboard: ``/ui``, its login, its assets and its live snapshot.

**One snapshot for every viewer.** :class:`Board` owns one task (started in
the app's lifespan) that, while at least one viewer is connected, builds a
snapshot once per :data:`INTERVAL` and encodes it to JSON once; each viewer's
``GET /ui/events`` stream waits for the next version and sends those same
bytes. A snapshot reads only what is kept as jobs change state: the
journal's per-pool, per-state counters (:meth:`Journal.counts`, no scan),
the dispatcher's statistics, and the per-minute counters and recent
failures of :class:`~bulkhead.service._activity.Activity`. Its cost does not
depend on the number of rows nor on the number of viewers.

**Auth.** With tokens configured, ``/ui`` needs one (any role: each
includes ``read``) like every endpoint: ``POST /ui/login`` checks it
(constant time) and keeps it in the
``bulkhead_token`` cookie, HttpOnly (scripts cannot read it), SameSite=Strict
(no other site's page sends it), ``Secure`` when served over https; the
page's own requests (``/jobs``, ``/operations``, ``/ui/events``) carry the
cookie. The static assets hold no data and need no token, so the login page
can be styled. Without a token the dashboard is open, as the API is.

**CSRF.** Every mutating request (any method but GET, HEAD, OPTIONS)
authenticated by the cookie rather than an ``Authorization`` header must
carry an ``Origin`` (or, failing that, ``Referer``) naming this server's
host, else :class:`OriginCheck` answers 403. Browsers set ``Origin`` on
every such request and scripts cannot forge it; SameSite=Strict is the
second fence. API clients sending ``Authorization: Bearer`` are unaffected.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import html
import json
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from importlib.resources import files
from typing import Any, final

import trio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .._activity import MINUTES
from .._config import TokenSpec
from .._service import Service
from .._views import pool_name
from ._auth import COOKIE
from ._errors import problem

INTERVAL = 1.0
"""Seconds between two snapshots."""
ASSETS = files("bulkhead.service._http") / "ui"
"""The page, its script and its style sheet, shipped in the package."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _utc(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@final
class Board:
    """The one snapshot the dashboard's viewers share (see the module
    docstring): :meth:`run` builds it, :meth:`updates` streams it."""

    def __init__(self, service: Service, interval: float = INTERVAL) -> None:
        self._service = service
        self._interval = interval
        self._version = 0
        self._data = b""
        self._changed = trio.Event()
        self._watched = trio.Event()
        self.viewers = 0
        """Streams open now."""
        self.built = 0
        """Snapshots built since start (one per interval while watched)."""

    async def snapshot(self) -> dict[str, Any]:
        """The dashboard's data now: O(pools), whatever the journal holds."""
        service = self._service
        now = time.time()
        stats = await service.statistics()
        counts = stats["journal"]["pools"]
        pools = []
        for priority in sorted(service.priorities, reverse=True):
            name = pool_name(priority)
            pool = stats["pools"].get(name, {})
            rows = counts.get(name, {})
            minutes = service.activity.minutes(priority, now)
            pools.append(
                {
                    "name": name,
                    "priority": priority,
                    "workers": pool.get("workers", 0),
                    "busy": pool.get("busy", 0),
                    "paused": pool.get("paused", False),
                    "backlog": rows.get("queued", 0),
                    "running": rows.get("running", 0),
                    "succeeded": rows.get("succeeded", 0),
                    "failed": rows.get("failed", 0),
                    "cancelled": rows.get("cancelled", 0),
                    "minutes": {
                        "succeeded": minutes.succeeded,
                        "failed": minutes.failed,
                    },
                }
            )
        failures = [
            {
                "id": f.id,
                "type": f.type,
                "pool": pool_name(f.priority),
                "error": f.error,
                "finished_at": _utc(f.finished_at),
            }
            for f in service.activity.failures()
        ]
        return {
            "at": _utc(now),
            "minutes": MINUTES,
            "draining": stats["draining"],
            "writable": stats["journal"]["writable"],
            "journal": stats["journal"]["location"],
            "auth": bool(service.config.credentials()),
            "uptime": stats["uptime"],
            "pools": pools,
            "failures": failures,
        }

    async def run(self) -> None:
        """Build a snapshot every interval while anyone watches; wake the
        viewers once the service drains, so their streams end."""
        while not self._service.draining:
            if not self.viewers:
                self._watched = trio.Event()
                with trio.move_on_after(self._interval):
                    await self._watched.wait()
                continue
            data = json.dumps(await self.snapshot(), separators=(",", ":"))
            self._publish(data.encode())
            self.built += 1
            with trio.move_on_after(self._interval):
                await self._service.stopped.wait()
        self._publish(self._data)

    def _publish(self, data: bytes) -> None:
        self._data = data
        self._version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def updates(self) -> AsyncGenerator[bytes, None]:
        """One viewer's stream: each snapshot as a server-sent event, the
        latest at once, until the service drains."""
        self.viewers += 1
        self._watched.set()
        try:
            seen = 0
            while not self._service.draining:
                if self._version == seen or not self._data:
                    await self._changed.wait()
                    continue
                seen = self._version
                yield b"event: snapshot\ndata: " + self._data + b"\n\n"
        finally:
            self.viewers -= 1


@final
class OriginCheck:
    """ASGI middleware: refuse (403) a mutating request authenticated by
    the cookie whose ``Origin`` (or ``Referer``) is not this server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, then pass the request on."""
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
            }
            if (
                "authorization" not in headers
                and f"{COOKIE}=" in headers.get("cookie", "")
                and not _same_origin(headers)
            ):
                refused = problem(
                    403,
                    "cross-origin request refused: a request authenticated by "
                    f"the {COOKIE} cookie must come from this server's pages "
                    "(its Origin header must name this host)",
                )
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _same_origin(headers: dict[str, str]) -> bool:
    source = headers.get("origin") or headers.get("referer")
    if not source or source == "null":
        return False
    # Compare host[:port] only: behind a proxy that ends TLS, the browser's
    # origin is https while this server sees http.
    return urllib.parse.urlsplit(source).netloc == headers.get("host")


def _supplied(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given:
        return given.strip()
    return request.cookies.get(COOKIE)


def _matches(tokens: Sequence[TokenSpec], supplied: str | None) -> bool:
    # Any token will do: every role includes read. Compared as _auth does:
    # SHA-256 digests, against every token whichever matches.
    if not tokens:
        return True
    if supplied is None:
        return False
    digest = hashlib.sha256(supplied.encode()).digest()
    matches = [
        hmac.compare_digest(digest, hashlib.sha256(t.token.encode()).digest())
        for t in tokens
    ]
    return True in matches


def _page(name: str, message: str = "") -> str:
    text = (ASSETS / name).read_text(encoding="utf-8")
    return text.replace("<!--message-->", html.escape(message))


def install(app: FastAPI, service: Service, secured: list[Any]) -> Board:
    """Serve the dashboard of ``service`` from ``app`` at ``/ui``: its
    routes, its assets, the snapshot task (in the app's lifespan) and the
    origin check on cookie-authenticated mutations."""
    board = Board(service)
    app.include_router(_router(service, board, secured))
    app.mount("/ui/assets", StaticFiles(directory=str(ASSETS)), name="ui-assets")
    app.add_middleware(OriginCheck)
    app.router.lifespan_context = _with_board(app.router.lifespan_context, board)
    return board


def _with_board(
    lifespan: Callable[[Any], contextlib.AbstractAsyncContextManager[Any]],
    board: Board,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    @contextlib.asynccontextmanager
    async def with_board(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state, trio.open_nursery() as nursery:
            nursery.start_soon(board.run)
            yield state
            nursery.cancel_scope.cancel()

    return with_board


def _router(service: Service, board: Board, secured: list[Any]) -> APIRouter:
    api = APIRouter(include_in_schema=False)
    tokens = service.config.credentials()

    def _cookie(response: Response, request: Request, value: str | None) -> None:
        # Secure over https, so that the token never leaves in clear text.
        if value is None:
            response.delete_cookie(COOKIE, path="/", samesite="strict", httponly=True)
            return
        response.set_cookie(
            COOKIE,
            value,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    @api.get("/ui", response_model=None)
    async def dashboard(request: Request) -> Response:
        if not _matches(tokens, _supplied(request)):
            return RedirectResponse("/ui/login", status_code=303)
        return HTMLResponse(_page("index.html"), headers=_NO_STORE)

    @api.get("/ui/login")
    async def login_form() -> HTMLResponse:
        return HTMLResponse(_page("login.html"), headers=_NO_STORE)

    @api.post("/ui/login", response_model=None)
    async def login(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not _same_origin(headers):
            return HTMLResponse(
                _page("login.html", "Refused: the form was not sent from this page."),
                status_code=403,
            )
        form = urllib.parse.parse_qs((await request.body()).decode("latin-1"))
        given = form.get("token", [""])[0].strip()
        if not given:
            return HTMLResponse(
                _page("login.html", "Enter the service's token."), status_code=400
            )
        if not _matches(tokens, given):
            return HTMLResponse(
                _page("login.html", "Wrong token: access refused."), status_code=401
            )
        response = RedirectResponse("/ui", status_code=303)
        if tokens:
            _cookie(response, request, given)
        return response

    @api.post("/ui/logout")
    async def logout(request: Request) -> RedirectResponse:
        # Cookie-authenticated: OriginCheck has checked where it comes from.
        response = RedirectResponse("/ui/login", status_code=303)
        _cookie(response, request, None)
        return response

    @api.get("/ui/events", dependencies=secured)
    async def events() -> StreamingResponse:
        return StreamingResponse(
            board.updates(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return api


_NO_STORE = {"Cache-Control": "no-store"}
