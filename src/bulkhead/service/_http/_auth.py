"""Bearer tokens with names and roles: every endpoint but ``/health`` and
``/ready`` needs one when the service has any, the schema and its docs
included.

Roles include the ones below them: ``read`` (``GET`` endpoints: the
dashboard, stats, jobs, the audit log), ``submit`` (submit and cancel jobs),
``operate`` (operations on every job a filter matches). A router's
dependency asks for ``read`` on ``GET`` and ``HEAD`` and for its own role on
every other method, so a router needs no per-route wiring. The token's name
is put on ``request.state.token_name`` for the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from .._config import ROLES, TokenSpec

COOKIE = "bulkhead_token"
"""The cookie a browser may carry the token in (the docs pages fetch the
schema with it)."""
ANONYMOUS = "anonymous"
"""The name the audit log gives a caller when the service has no token."""
READS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that need only ``read``."""


def require_roles(tokens: Sequence[TokenSpec], *, writes: str) -> list[Any]:
    """The dependencies that check a request's token against ``tokens``
    (none if there are none): ``read`` for :data:`READS`, ``writes`` for
    other methods.

    The token may come as ``Authorization: Bearer <token>`` or in the
    :data:`COOKIE` cookie. Its SHA-256 is compared with every token's in
    constant time (:func:`hmac.compare_digest`, equal lengths), all of them
    whichever matches. A wrong token is 401; a right one without the role
    is 403 naming the role needed.
    """
    if writes not in ROLES:
        raise ValueError(f"role {writes!r} is not one of {', '.join(ROLES)}")
    if not tokens:
        return []
    digests = [(hashlib.sha256(t.token.encode()).digest(), t) for t in tokens]

    async def authorized(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given:
            supplied = given.strip()
        elif COOKIE in request.cookies:
            supplied = request.cookies[COOKIE]
        else:
            raise HTTPException(
                401, "missing bearer token: send 'Authorization: Bearer <token>'"
            )
        digest = hashlib.sha256(supplied.encode()).digest()
        matches = [hmac.compare_digest(digest, d) for d, _ in digests]
        if True not in matches:
            raise HTTPException(401, "wrong bearer token")
        spec = digests[matches.index(True)][1]
        needed = "read" if request.method in READS else writes
        if ROLES.index(spec.role) < ROLES.index(needed):
            raise HTTPException(
                403,
                f"token {spec.name!r} has role {spec.role}; "
                f"{request.method} {request.url.path} needs role {needed}",
            )
        request.state.token_name = spec.name

    return [Depends(authorized)]


def require_token(token: str | None) -> list[Any]:
    """The dependencies that check the one ``token`` (none if ``None``), as
    the token ``default`` with every role."""
    tokens = [] if token is None else [TokenSpec("default", "operate", token)]
    return require_roles(tokens, writes="submit")


def caller(request: Request) -> str:
    """The name of the token ``request`` carried (:data:`ANONYMOUS` when the
    service has none)."""
    return str(getattr(request.state, "token_name", ANONYMOUS))


UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Missing or wrong bearer token (if the service has one)",
        "headers": {
            "WWW-Authenticate": {
                "description": "``Bearer``",
                "schema": {"type": "string"},
            }
        },
    },
    403: {"description": "The token lacks the role this needs (the answer names it)"},
}
"""The 401 and 403 answers, for the OpenAPI schema of guarded endpoints."""
