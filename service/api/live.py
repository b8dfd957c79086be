"""Health, stats, metrics, the dashboard's files and the live WebSocket."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from service.api.auth import (
    WS_UNAUTHORISED,
    is_authorised,
    remember_token,
    require_token,
)
from service.api.deps import RuntimeDep, running_runtime
from service.api.errors import ApiError
from service.hub import TRY_AGAIN_LATER
from service.metrics import CONTENT_TYPE
from service.wire import SourceInfo, Stats

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
"""The dashboard's static files (``web/`` at the repository root)."""

_NO_DASHBOARD = """<!doctype html><html><head><meta charset="utf-8"><title>PandaPulse</title></head>
<body><h1>PandaPulse</h1><p>The service runs, but the dashboard files (web/index.html) are not
installed. The API is documented at <a href="/docs">/docs</a>; live events stream from
<code>/ws/live</code>.</p></body></html>"""


I18N_MARKER = "/*PANDAPULSE_I18N*/{}"
"""Where ``login.html`` takes the catalogues' login texts (it cannot fetch them: no token)."""
LOGIN_KEY_PREFIXES = ("login.", "lang.name", "top.language")


def login_page() -> str:
    """``web/login.html`` with the login texts of every ``web/i18n/*.json`` catalogue inlined."""
    page = (WEB_DIR / "login.html").read_text(encoding="utf-8")
    catalogues: dict[str, dict[str, str]] = {}
    for path in sorted((WEB_DIR / "i18n").glob("*.json")):
        try:
            messages = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a broken catalogue leaves that language out, never the sign-in page
        if isinstance(messages, dict):
            catalogues[path.stem] = {
                k: v
                for k, v in messages.items()
                if isinstance(v, str) and k.startswith(LOGIN_KEY_PREFIXES)
            }
    inline = json.dumps(catalogues, ensure_ascii=False).replace("</", "<\\/")
    return page.replace(I18N_MARKER, inline, 1)


public = APIRouter()
router = APIRouter(dependencies=[Depends(require_token)])


@public.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (no authentication)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Readiness: the model is loaded and the pipeline runs (503 otherwise)."""
    ok, reason = rt.ready()
    body = {
        "status": "ready" if ok else "not_ready",
        "detail": reason,
        "model_version": rt.model_version,
        "device": rt.device,
        "sources": {s.id: s.status for s in rt.sources()},
    }
    if not ok:
        body["error"] = "not_ready"
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/stats", tags=["health"])
async def stats(rt: RuntimeDep) -> Stats:
    """The ``stats`` event's payload: sources, inference, WebSocket and storage counters."""
    return await rt.stats()


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(rt: RuntimeDep) -> Response:
    """Prometheus text format."""
    body = rt.metrics.render(await rt.stats(), rt.counters())
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/api/sources", tags=["sources"])
async def sources(rt: RuntimeDep) -> list[SourceInfo]:
    return rt.sources()


@public.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    """The dashboard. A valid ``?token=`` also sets the session cookie for its other files.

    Without a valid token the answer is 401, as for every route but ``/healthz``; its body is a
    self-contained sign-in page (no data, no other files) so a keeper's browser can log in.
    """
    if not is_authorised(request):
        return HTMLResponse(
            login_page(),
            status_code=401,
            headers={"Cache-Control": "no-store", "WWW-Authenticate": "Bearer"},
        )
    page = WEB_DIR / "index.html"
    response: Response = FileResponse(page) if page.is_file() else HTMLResponse(_NO_DASHBOARD)
    response.headers["Cache-Control"] = "no-store"
    remember_token(request, response)
    return response


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


SWAGGER_UI = "/static/vendor/swagger-ui"
"""Swagger UI's files, vendored under ``web/vendor/swagger-ui`` (see its SOURCE.txt)."""


@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> Response:
    """The OpenAPI UI, entirely from this service's own files: it works without internet."""
    response = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="PandaPulse API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        # no badge from the online validator (swagger.io): nothing leaves the box
        swagger_ui_parameters={"validatorUrl": None},
    )
    remember_token(request, response)
    return response


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str) -> FileResponse:
    """Files under ``web/`` (resolved inside it; nothing outside is reachable)."""
    root = WEB_DIR.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise ApiError(404, "not_found", f"no dashboard file {path!r}")
    return FileResponse(target)


@public.websocket("/ws/live")
async def live(websocket: WebSocket) -> None:
    """A ``snapshot``, then live events (docs/PROTOCOL.md). ``?token=`` when one is set."""
    await websocket.accept()
    if not is_authorised(websocket):
        await websocket.close(WS_UNAUTHORISED, "unauthorized: connect with ?token=TOKEN")
        return
    rt = running_runtime(websocket)
    if rt is None:
        await websocket.close(TRY_AGAIN_LATER, "the service is starting or stopping; reconnect")
        return
    await rt.hub.serve(websocket, rt.snapshot)
