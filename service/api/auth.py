"""Bearer-token authentication and keeping the token out of logs.

A request is authorised when no token is configured, or when it presents the token as
``Authorization: Bearer TOKEN``, as ``?token=TOKEN`` (browsers cannot put headers on page
loads, ``<audio>`` sources or WebSockets), or in the ``pandapulse_token`` cookie that ``GET /``
sets after a valid ``?token=`` (HttpOnly, SameSite=Strict, so the dashboard's own static files
and links work and other sites cannot use it). Comparison is constant-time.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response
from starlette.requests import HTTPConnection

from service.api.errors import ApiError

COOKIE_NAME = "pandapulse_token"
QUERY_NAME = "token"
WS_UNAUTHORISED = 4401
"""WebSocket close code for a missing or wrong token (docs/PROTOCOL.md)."""


def token_matches(expected: str, presented: str | None) -> bool:
    if presented is None:
        return False
    return secrets.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))


def presented_tokens(conn: HTTPConnection) -> list[str]:
    found = []
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        found.append(value.strip())
    found.append(conn.query_params.get(QUERY_NAME, ""))
    found.append(conn.cookies.get(COOKIE_NAME, ""))
    # An empty value is never a credential, whatever the configuration says.
    return [t for t in found if t]


def is_authorised(conn: HTTPConnection) -> bool:
    token = conn.app.state.settings.server.token
    if token is None:
        return True
    expected = token.get_secret_value()
    # Check every presented value (no early exit on the first), so timing says nothing either.
    results = [token_matches(expected, t) for t in presented_tokens(conn)]
    return any(results)


async def require_token(request: Request) -> None:
    """Dependency of every protected route: 401 JSON unless authorised."""
    if not is_authorised(request):
        raise ApiError(
            401,
            "unauthorized",
            "this service needs a token: send 'Authorization: Bearer TOKEN' (or ?token=TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorised = Annotated[None, Depends(require_token)]


def remember_token(request: Request, response: Response) -> None:
    """Set the session cookie when the page was opened with a valid ``?token=`` (so the page's
    own requests for scripts, styles and the OpenAPI schema carry it)."""
    token = request.app.state.settings.server.token
    presented = request.query_params.get(QUERY_NAME)
    if token is not None and presented and token_matches(token.get_secret_value(), presented):
        response.set_cookie(COOKIE_NAME, presented, httponly=True, samesite="strict", path="/")


_QUERY_SECRET = re.compile(r"([?&](?:token|access_token)=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the values of ``token=`` query parameters replaced by ``***``."""
    return _QUERY_SECRET.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """Rewrites log records so no ``?token=...`` value reaches a handler (uvicorn logs the
    WebSocket URL, query included, when a connection is accepted or refused)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message.lower():
            record.msg = redact(message)
            record.args = None
        return True


def install_log_redaction() -> None:
    """Attach ``RedactTokens`` to the uvicorn loggers (idempotent)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
