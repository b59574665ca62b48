"""The bearer token: every endpoint but ``/health`` and ``/ready`` needs it
when the service has one, the schema and its docs included."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

COOKIE = "bulkhead_token"
"""The cookie a browser may carry the token in (the docs pages fetch the
schema with it)."""


def require_token(token: str | None) -> list[Any]:
    """The dependencies that check ``token`` (none if ``token`` is None).

    The token may come as ``Authorization: Bearer <token>`` or in the
    :data:`COOKIE` cookie; it is compared in constant time.
    """
    if token is None:
        return []
    expected = token.encode()

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
        if not hmac.compare_digest(supplied.encode(), expected):
            raise HTTPException(401, "wrong bearer token")

    return [Depends(authorized)]


UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Missing or wrong bearer token (if the service has one)",
        "headers": {
            "WWW-Authenticate": {
                "description": "``Bearer``",
                "schema": {"type": "string"},
            }
        },
    }
}
"""The 401 answer, for the OpenAPI schema of guarded endpoints."""
