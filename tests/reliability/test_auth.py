"""Authentication and exposure: constant-time token check, the token never in the logs, the
dashboard's API only after login, CORS closed by default."""

from __future__ import annotations

import ast
import inspect
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.requests import HTTPConnection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.api import auth
from tests.reliability.conftest import ServiceFactory
from tests.reliability.record import record
from tests.reliability.server import REPO

PROTECTED = ["/readyz", "/stats", "/metrics", "/api/sources", "/api/encounters", "/api/alerts"]
FOREIGN_ORIGIN = "http://evil.example"


# --- constant-time comparison ----------------------------------------------------------------


def _connection(token: str | None, header: str | None = None, query: str = "") -> HTTPConnection:
    settings = SimpleNamespace(
        server=SimpleNamespace(token=None if token is None else SecretStr(token))
    )
    app = SimpleNamespace(state=SimpleNamespace(settings=settings))
    headers = [] if header is None else [(b"authorization", header.encode())]
    scope = {"type": "http", "headers": headers, "query_string": query.encode(), "app": app}
    return HTTPConnection(scope)


def test_token_check_goes_through_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behaviour: every presented token is compared by ``secrets.compare_digest``."""
    calls: list[tuple[Any, Any]] = []
    real = secrets.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.secrets, "compare_digest", spy)
    token = "correct-horse-battery-staple"
    assert auth.is_authorised(_connection(token, f"Bearer {token}"))
    assert not auth.is_authorised(_connection(token, "Bearer correct-horse"))
    assert not auth.is_authorised(_connection(token, "Bearer x", query="token=also-wrong"))
    assert not auth.is_authorised(_connection(token))
    assert auth.is_authorised(_connection(None))  # no token configured: open
    # One comparison per presented value (3 + 1 + ... ), none skipped after the first failure.
    assert len(calls) == 4
    assert calls[0] == (token.encode(), token.encode())


def _service_sources() -> list[Path]:
    return sorted((REPO / "service").rglob("*.py"))


def secret_comparisons(text: str) -> list[int]:
    """Line numbers where a secret's value (``get_secret_value()``, or a parameter named
    ``expected``/``token``/``presented``) meets ``==``, ``!=``, ``in`` or ``not in``."""
    offenders = []
    tree = ast.parse(text)
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        secret_names = {
            target.id
            for node in ast.walk(func)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "get_secret_value"
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        secret_names |= {
            a.arg for a in func.args.args if a.arg in {"expected", "token", "presented"}
        }
        for node in ast.walk(func):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
                continue
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Constant) and o.value is None for o in operands):
                continue  # a comparison with None says nothing about the secret's value
            for operand in operands:
                is_secret_call = (
                    isinstance(operand, ast.Call)
                    and isinstance(operand.func, ast.Attribute)
                    and operand.func.attr == "get_secret_value"
                )
                if is_secret_call or (isinstance(operand, ast.Name) and operand.id in secret_names):
                    offenders.append(node.lineno)
                    break
    return offenders


def test_the_secret_comparison_scan_finds_plain_equality() -> None:
    bad = (
        "def check(settings, header):\n"
        "    expected = settings.token.get_secret_value()\n"
        "    return header == expected\n"
        "def other(token, presented):\n"
        "    return presented != token\n"
        "def fine(token):\n"
        "    return token is None or secrets.compare_digest(token, 'x')\n"
    )
    assert secret_comparisons(bad) == [3, 5]


def test_no_plain_equality_on_a_secret_anywhere_in_the_service() -> None:
    """Code path: nowhere in ``service/`` is a secret compared with ``==``/``!=``/``in``, and
    the comparison routine is ``compare_digest``."""
    offenders = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _service_sources()
        for line in secret_comparisons(path.read_text())
    ]
    assert offenders == []
    source = inspect.getsource(auth.token_matches)
    assert "compare_digest(" in source and "==" not in source


# --- behaviour of the running service --------------------------------------------------------


def _ws_close_code(url: str) -> int | None:
    """Connect; return the close code the server sends before any data (None if it sent data)."""
    with connect(url, open_timeout=10, close_timeout=5) as ws:
        try:
            ws.recv(timeout=10)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def test_running_service_auth_logs_and_cors(make_service: ServiceFactory) -> None:
    service = make_service()
    service.wait_ready()
    token = service.token
    assert token
    base = service.base_url
    ws = base.replace("http://", "ws://") + "/ws/live"
    with httpx.Client(base_url=base, timeout=30) as anon:
        # Liveness is open; everything else needs the token.
        assert anon.get("/healthz").status_code == 200
        for path in PROTECTED:
            r = anon.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.json()["error"] == "unauthorized" and r.json()["detail"]
        # The page answers 401 too, with a sign-in form that holds no data and loads nothing.
        page = anon.get("/")
        assert page.status_code == 401 and 'id="login-form"' in page.text
        assert "app.js" not in page.text and "/static/" not in page.text
        for wrong in (
            "x",
            token[:-1],
            token + "x",
            token.upper() if token.upper() != token else "y",
        ):
            r = anon.get("/api/encounters", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401, wrong
        assert (
            anon.get("/api/encounters", headers={"Authorization": f"Basic {token}"}).status_code
            == 401
        )
        # With the token in the header, the API answers.
        r = anon.get("/api/encounters", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "items" in r.json()
        # A request that uses the token in the query string (as the dashboard's links do).
        assert anon.get("/stats", params={"token": token}).status_code == 200

    # The dashboard: nothing before login; after opening it with ?token= the session cookie
    # carries the API calls it makes.
    with httpx.Client(base_url=base, timeout=30) as browser:
        assert browser.get("/api/encounters").status_code == 401
        page = browser.get("/", params={"token": token})
        assert page.status_code == 200
        cookie = page.headers.get("set-cookie", "")
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert browser.get("/api/encounters").status_code == 200
        assert browser.get("/stats").status_code == 200

    # WebSocket: refused with 4401 without or with a wrong token; a snapshot with it.
    assert _ws_close_code(ws) == 4401
    assert _ws_close_code(f"{ws}?token=wrong") == 4401
    with connect(f"{ws}?token={token}", open_timeout=10) as conn:
        first = conn.recv(timeout=20)
        assert '"type": "snapshot"' in first or '"type":"snapshot"' in first

    # CORS closed by default: no allow-origin for a foreign page, simple request or preflight.
    with service.client() as authed:
        r = authed.get("/api/encounters", headers={"Origin": FOREIGN_ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        pre = authed.options(
            "/api/encounters",
            headers={
                "Origin": FOREIGN_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert "access-control-allow-origin" not in pre.headers
        assert "access-control-allow-credentials" not in pre.headers

    rc = service.stop()
    assert service.stopped_cleanly(rc), (rc, service.log_tail())
    # The token never reaches the logs: the service's stdout and stderr (what journald and
    # `docker logs` keep) and any file it wrote beside its data.
    logs = service.log_text()
    data_files = [
        p
        for p in (service.log_path.parent / "data").rglob("*")
        if p.is_file() and p.suffix in {".log", ".txt"}
    ]
    leaks = [line for line in logs.splitlines() if token in line]
    for path in data_files:
        leaks += [
            f"{path.name}: {line}"
            for line in path.read_text(errors="replace").splitlines()
            if token in line
        ]
    record(
        "auth",
        "token in header, query string, cookie and WS query; grep stdout/stderr/log files",
        f"{len(leaks)} log line(s) contain the token",
        first=[line.replace(token, "<TOKEN>")[:160] for line in leaks[:3]],
    )
    assert leaks == [], "token found in the log:\n" + "\n".join(
        line.replace(token, "<TOKEN>") for line in leaks
    )


def test_cors_allows_only_the_configured_origin(make_service: ServiceFactory) -> None:
    allowed = "https://dashboard.zoo.example"
    service = make_service(server={"cors_origins": [allowed]})
    service.wait_ready()
    with service.client() as authed:
        ok = authed.get("/api/encounters", headers={"Origin": allowed})
        assert ok.headers.get("access-control-allow-origin") == allowed
        foreign = authed.get("/api/encounters", headers={"Origin": FOREIGN_ORIGIN})
        assert "access-control-allow-origin" not in foreign.headers


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_configured_token_never_opens_the_api(blank: str) -> None:
    """``PANDAPULSE__SERVER__TOKEN=`` (an empty secret in an env file) must either be refused as
    configuration or leave the API closed; it must not let ``?token=`` (empty) in."""
    from service.config import load_settings
    from service.errors import ConfigError

    try:
        settings = load_settings(environ={"PANDAPULSE__SERVER__TOKEN": blank})
    except ConfigError:
        return  # refused at start-up: the operator is told
    token = settings.server.token
    assert token is not None, "a blank token silently turned authentication off"
    presented = _connection(token.get_secret_value(), query=f"token={blank}")
    header = _connection(token.get_secret_value(), header=f"Bearer {blank}".rstrip() + " x")
    assert not auth.is_authorised(presented), "an empty ?token= passes a blank configured token"
    assert not auth.is_authorised(header)
