"""``pandapulse fleet``: every enclosure of every box on one page, from the MQTT broker.

Several boxes publish to one broker (``service.mqtt``; docs/PROTOCOL.md, "MQTT"). The fleet
view subscribes to their retained topics only: ``<prefix>/+/status`` (online / offline, the
Last Will), ``<prefix>/+/box`` (name, dashboard URL, sources) and
``<prefix>/+/source/+/status`` (audio, open encounter, running P(success) and verdict, last
call, open alerts). It holds nothing else, so a restarted fleet view shows the same page as
soon as the broker has sent it the retained messages again.

It is its own small FastAPI app with the service's auth model (``server.token``: bearer
header, ``?token=`` or the cookie ``GET /?token=`` sets; ``service.api.auth``). Its config is
the service's file format (``server`` and ``mqtt`` sections are the ones it reads).

Routes: ``GET /`` the page (``web/fleet.html``, sign-in page without a token), ``GET
/api/fleet`` the state (``FleetSnapshot``), ``GET /static/...`` the page's files, ``GET
/healthz`` liveness.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, ValidationError

from service.api import errors
from service.api.auth import install_log_redaction, is_authorised, remember_token, require_token
from service.api.errors import ApiError
from service.api.live import WEB_DIR, login_page
from service.config import Settings
from service.errors import ConfigError
from service.mqtt import (
    OFFLINE,
    ONLINE,
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    BoxInfo,
    SourceState,
    make_client,
    refused_message,
    unreachable_message,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 8100


# --- what the page gets ----------------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FleetBox(_Model):
    box: str
    name: str
    url: str | None
    status: Literal["online", "offline", "unknown"]
    model_version: str | None
    uncertain_band: tuple[float, float] | None
    sources: list[SourceState]
    """The box's sources in its configured order (those it announced in its ``box`` message)."""


class BrokerState(_Model):
    broker: str
    state: Literal["connecting", "connected", "error"]
    error: str | None


class FleetSnapshot(_Model):
    v: Literal[1] = 1
    type: Literal["fleet"] = "fleet"
    broker: BrokerState
    boxes: list[FleetBox]


# --- the state, from retained messages --------------------------------------------------------
@dataclass
class _Box:
    status: str | None = None
    info: BoxInfo | None = None
    sources: dict[str, SourceState] = field(default_factory=dict)


class FleetState:
    """Boxes as their retained messages describe them (paho's thread writes, the API reads)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._boxes: dict[str, _Box] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._boxes.clear()

    def apply(self, topic: str, payload: bytes) -> None:
        """One message; an empty payload deletes what the topic said."""
        if not topic.startswith(self.prefix + "/"):
            return
        parts = topic[len(self.prefix) + 1 :].split("/")
        with self._lock:
            if len(parts) == 2 and parts[1] == "status":
                box = self._boxes.setdefault(parts[0], _Box())
                text = payload.decode("utf-8", "replace").strip()
                box.status = text if text in (ONLINE, OFFLINE) else None
            elif len(parts) == 2 and parts[1] == "box":
                box = self._boxes.setdefault(parts[0], _Box())
                box.info = _parse(BoxInfo, payload, topic)
            elif len(parts) == 4 and parts[1] == "source" and parts[3] == "status":
                box = self._boxes.setdefault(parts[0], _Box())
                state = _parse(SourceState, payload, topic)
                if state is None:
                    box.sources.pop(parts[2], None)
                else:
                    box.sources[parts[2]] = state
            else:
                return
            if box.status is None and box.info is None and not box.sources:
                del self._boxes[parts[0]]

    def boxes(self) -> list[FleetBox]:
        with self._lock:
            out = []
            for box_id, box in sorted(self._boxes.items()):
                info = box.info
                if info is None:
                    sources = [box.sources[k] for k in sorted(box.sources)]
                else:
                    sources = [box.sources[s.id] for s in info.sources if s.id in box.sources]
                out.append(
                    FleetBox(
                        box=box_id,
                        name=info.name if info else box_id,
                        url=info.url if info else None,
                        status=_status(box.status),
                        model_version=info.model_version if info else None,
                        uncertain_band=info.uncertain_band if info else None,
                        sources=sources,
                    )
                )
            return out


def _status(text: str | None) -> Literal["online", "offline", "unknown"]:
    if text == ONLINE:
        return "online"
    return "offline" if text == OFFLINE else "unknown"


def _parse(model: type[Any], payload: bytes, topic: str) -> Any:
    if not payload:
        return None
    try:
        return model.model_validate_json(payload)
    except ValidationError as err:
        log.warning("fleet: ignoring a malformed message on %s: %s", topic, err)
        return None


# --- the subscriber ---------------------------------------------------------------------------
class FleetSubscriber:
    """Keeps ``FleetState`` from the broker (paho's network thread, reconnecting by itself)."""

    def __init__(self, settings: Settings, state: FleetState) -> None:
        self.cfg = settings.mqtt
        self.state = state
        self.status: Literal["connecting", "connected", "error"] = "connecting"
        self.error: str | None = None
        prefix = self.cfg.topic_prefix
        self.topics = [f"{prefix}/+/status", f"{prefix}/+/box", f"{prefix}/+/source/+/status"]
        client_id = f"{self.cfg.client}-fleet-{os.getpid()}"
        self.client = make_client(self.cfg, client_id=client_id)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        log.info(
            "fleet: reading %s/# from %s:%d", self.cfg.topic_prefix, self.cfg.host, self.cfg.port
        )
        self.client.connect_async(str(self.cfg.host), self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def broker_state(self) -> BrokerState:
        return BrokerState(
            broker=f"{self.cfg.host}:{self.cfg.port}", state=self.status, error=self.error
        )

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        if reason.is_failure:
            self._failed(refused_message(self.cfg, reason))
            return
        log.info("fleet: connected to %s:%d", self.cfg.host, self.cfg.port)
        self.status, self.error = "connected", None
        # A fresh session: the retained messages come again and rebuild the whole state.
        self.state.clear()
        client.subscribe([(topic, 1) for topic in self.topics])

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        self._failed(unreachable_message(self.cfg, sys.exc_info()[1]))

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        if self.status == "connected":
            log.warning("fleet: connection to the broker lost (%s); reconnecting", reason)
            self.status = "connecting"

    def _failed(self, message: str) -> None:
        if message != self.error:
            log.error("fleet: %s; retrying", message)
        self.status, self.error = "error", message

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        self.state.apply(msg.topic, bytes(msg.payload))


# --- the app -----------------------------------------------------------------------------------
router = APIRouter(dependencies=[Depends(require_token)])
public = APIRouter()


@public.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@public.get("/", include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    """The fleet page; without a valid token, the self-contained sign-in page (401)."""
    if not is_authorised(request):
        return HTMLResponse(login_page(), status_code=401)
    response = HTMLResponse((WEB_DIR / "fleet.html").read_text(encoding="utf-8"))
    remember_token(request, response)
    return response


@router.get("/api/fleet")
async def fleet(request: Request) -> FleetSnapshot:
    """Every box and enclosure the broker's retained messages describe."""
    subscriber: FleetSubscriber = request.app.state.subscriber
    return FleetSnapshot(broker=subscriber.broker_state(), boxes=subscriber.state.boxes())


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str) -> FileResponse:
    root = WEB_DIR.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise ApiError(404, "not_found", f"no file {path!r}")
    return FileResponse(target)


def create_fleet_app(settings: Settings) -> FastAPI:
    if not settings.mqtt.enabled:
        raise ConfigError(
            "pandapulse fleet reads the boxes from an MQTT broker: set mqtt.host (and"
            " mqtt.username, PANDAPULSE__MQTT__PASSWORD) in its config"
        )
    install_log_redaction()
    state = FleetState(settings.mqtt.topic_prefix)
    subscriber = FleetSubscriber(settings, state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        subscriber.start()
        try:
            yield
        finally:
            subscriber.stop()

    app = FastAPI(
        title="PandaPulse fleet",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.subscriber = subscriber
    errors.install(app)
    app.include_router(public)
    app.include_router(router)
    return app


# --- the command -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config with the mqtt section (and server.token); same format as serve's",
    )
    parser.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--token", default=None, help="page token (default: $PANDAPULSE_TOKEN, then the config)"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.main import build_settings, dashboard_url

    settings, generated = build_settings(args)
    app = create_fleet_app(settings)
    url = dashboard_url(settings, with_token=generated)
    if generated:
        print(f"PandaPulse fleet: {url}", flush=True)
        print("(token generated for this run; set --token or $PANDAPULSE_TOKEN to fix one)")
    elif settings.server.token is not None:
        print(f"PandaPulse fleet: {url}?token=<your token>", flush=True)
    else:
        print(f"PandaPulse fleet: {url}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            access_log=False,
            log_config=None,
            lifespan="on",
        )
    )
    server.run()
    return 0 if server.started else 1
