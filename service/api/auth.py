"""Bearer-token authentication and keeping the token out of logs.

A request is authorised when no token is configured, or when it presents the token as
``Authorization: Bearer TOKEN``, as ``?token=TOKEN`` (browsers cannot put headers on page
loads, ``<audio>`` sources or WebSockets), or in the ``pandapulse_token`` cookie that ``GET /``
sets after a valid ``?token=`` (HttpOnly, SameSite=Strict, so the dashboard's own static files
and links work and other sites cannot use it). Comparison is constant-time.

The model routes (upload, activate, rollback, shadow) need the admin token
(``server.admin_token``) instead: ``require_admin`` answers 401 without any valid token and
403 to the keepers' token. The admin token is accepted wherever the keepers' token is.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response
from pydantic import SecretStr
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


def _matches_any(expected: SecretStr | None, presented: list[str]) -> bool:
    if expected is None:
        return False
    secret = expected.get_secret_value()
    # Check every presented value (no early exit on the first), so timing says nothing either.
    results = [token_matches(secret, t) for t in presented]
    return any(results)


def _admin_token(conn: HTTPConnection) -> SecretStr | None:
    token: SecretStr | None = getattr(conn.app.state.settings.server, "admin_token", None)
    return token


def is_authorised(conn: HTTPConnection) -> bool:
    token = conn.app.state.settings.server.token
    if token is None:
        return True
    presented = presented_tokens(conn)
    keeper = _matches_any(token, presented)
    admin = _matches_any(_admin_token(conn), presented)
    return keeper or admin


def is_admin(conn: HTTPConnection) -> bool:
    """The admin token was presented, or no token at all is configured (an open API)."""
    admin_token = _admin_token(conn)
    if admin_token is None:
        return conn.app.state.settings.server.token is None
    return _matches_any(admin_token, presented_tokens(conn))


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


async def require_admin(request: Request) -> None:
    """Dependency of the model routes: 401 without a valid token, 403 for the keepers' token."""
    if is_admin(request):
        return
    if not is_authorised(request):
        raise ApiError(
            401,
            "unauthorized",
            "this route needs the admin token: send 'Authorization: Bearer ADMIN_TOKEN'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if _admin_token(request) is None:
        raise ApiError(
            403,
            "forbidden",
            "model changes are turned off: set server.admin_token (or $PANDAPULSE_ADMIN_TOKEN)"
            " to a token distinct from the keepers' token, and send that one",
        )
    raise ApiError(
        403,
        "forbidden",
        "the keepers' token cannot change models: send the admin token (server.admin_token)",
    )


def remember_token(request: Request, response: Response) -> None:
    """Set the session cookie when the page was opened with a valid ``?token=`` (so the page's
    own requests for scripts, styles and the OpenAPI schema carry it)."""
    token = request.app.state.settings.server.token
    presented = request.query_params.get(QUERY_NAME)
    if token is None or not presented:
        return
    keeper = _matches_any(token, [presented])
    admin = _matches_any(_admin_token(request), [presented])
    if keeper or admin:
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
