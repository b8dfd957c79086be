"""``create_app(settings)``: the FastAPI application and the lifespan that runs the service.

One process, one uvicorn worker: the lifespan builds the ``Runtime`` (model, storage thread,
webhook outbox, pipeline, periodic tasks) on start-up and tears it down on shutdown; outside
that window ``app.state.runtime`` is None and routes answer 503 (``service.api.deps``). Request
logging is ours (uvicorn's access log is off): method, path without the query string (which
may carry the token), status and duration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.classifier import Classifier
from service.api import encounters, errors, live, models, predict
from service.api.auth import install_log_redaction
from service.api.runtime import Runtime
from service.config import Settings

log = logging.getLogger("pandapulse.http")

QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/stats"})
"""Polled by probes and scrapers: logged at DEBUG only."""


class RequestLog:
    """ASGI middleware: one log line per HTTP request, never with its query string."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            level = logging.DEBUG if path in QUIET_PATHS and status < 400 else logging.INFO
            client = scope.get("client") or ("-", 0)
            log.log(
                level,
                '%s "%s %s" %d %.1f ms',
                client[0],
                scope.get("method", "-"),
                path,
                status,
                (time.perf_counter() - started) * 1000,
            )


def create_app(settings: Settings, *, classifier: Classifier | None = None) -> FastAPI:
    """The service application. ``classifier`` replaces loading ``inference.model`` (tests)."""
    install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings, classifier=classifier)
        app.state.runtime = runtime
        try:
            yield
        finally:
            app.state.runtime = None  # routes answer 503 from here on
            await runtime.stop()

    app = FastAPI(
        title="PandaPulse",
        version="1",
        summary="Live giant panda breeding-encounter monitoring (CGANet). Protocol: docs/PROTOCOL.md",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.runtime = None
    errors.install(app)
    app.include_router(live.public)
    app.include_router(live.router)
    app.include_router(predict.router)
    app.include_router(encounters.router)
    app.include_router(models.router)
    app.include_router(models.admin)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(RequestLog)
    return app
