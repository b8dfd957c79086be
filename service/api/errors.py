"""Every 4xx/5xx answer is JSON ``{"error": code, "detail": sentence}`` (docs/PROTOCOL.md)."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.errors import AudioError, CheckpointError, PandaPulseError
from service.errors import ConfigError, StorageError, UnknownSource
from service.storage_thread import StorageClosed

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success, with its status, short code and a sentence for people."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def not_running() -> ApiError:
    """503: the service has no runtime yet, or no longer (start-up, shutdown)."""
    return ApiError(
        503,
        "not_running",
        "the service is starting or stopping; try again in a few seconds",
        headers={"Retry-After": "5"},
    )


_OBJECT_REPR = re.compile(r"<[^<>]*? (?:object )?at 0x[0-9a-fA-F]+>")
_TEMP_PATH = re.compile(r"/tmp/[^\s'\"]*")


def clean_detail(detail: str) -> str:
    """``detail`` without Python object reprs (heap addresses) or temporary paths, which
    libraries put in their messages and a keeper has no use for."""
    return _TEMP_PATH.sub("the upload", _OBJECT_REPR.sub("the upload", detail))


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": error, "detail": clean_detail(detail)}
    return JSONResponse(body, status_code=status, headers=headers)


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


_DOMAIN_STATUS: tuple[tuple[type[PandaPulseError], int, str], ...] = (
    (AudioError, 422, "bad_audio"),
    (CheckpointError, 503, "model_unavailable"),
    (ConfigError, 400, "bad_config"),
    (StorageError, 500, "storage_error"),
    (UnknownSource, 404, "unknown_source"),
)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(
            exc.status_code, _code(exc.status_code), detail, getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for item in exc.errors():
            loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "request"
            parts.append(f"{loc}: {item.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StorageClosed)
    async def _closed(_: Request, exc: StorageClosed) -> JSONResponse:
        # Shutdown began while the request was in flight.
        err = not_running()
        return error_response(err.status, err.error, err.detail, err.headers)

    @app.exception_handler(PandaPulseError)
    async def _domain(_: Request, exc: PandaPulseError) -> JSONResponse:
        for cls, status, code in _DOMAIN_STATUS:
            if isinstance(exc, cls):
                return error_response(status, code, str(exc))
        return error_response(400, "bad_request", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error; the service log has the details")
