"""``pandapulse serve``: run the live monitoring service and its dashboard.

With no ``--config`` it runs the demo: the synthetic source, the bundled demo model, SQLite
under ``./data``, and (unless a token is given) a freshly generated token, printed with the
dashboard URL. The token comes from ``--token``, else ``PANDAPULSE_TOKEN``, else
``server.token`` in the config or ``PANDAPULSE__SERVER__TOKEN``.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import CheckpointError
from service.config import RawConfig, Settings, is_loopback, load_settings
from service.errors import ConfigError

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

TOKEN_ENV = "PANDAPULSE_TOKEN"
ADMIN_TOKEN_ENV = "PANDAPULSE_ADMIN_TOKEN"
"""The admin token (model routes), like ``PANDAPULSE_TOKEN`` for ``server.admin_token``."""
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number for the mmap threshold (malloc.h)."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's initial threshold; fixing it stops the dynamic raise (see ``_fix_mmap_threshold``)."""
DEMO_TOKEN_BYTES = 18
"""Entropy of a generated demo token (bytes; 24 URL-safe characters)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML configuration (see deploy/pandapulse.example.yaml); default: the demo",
    )
    parser.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    parser.add_argument(
        "--token",
        default=None,
        help=f"API token (default: ${TOKEN_ENV}, then the config; the demo generates one)",
    )


def build_settings(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> tuple[Settings, bool]:
    """The settings for ``args``; the flag says whether a demo token was generated."""
    env = dict(os.environ if environ is None else environ)
    server: RawConfig = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    token = args.token or env.get(TOKEN_ENV)
    if token is not None:
        if not token.strip():
            raise ConfigError(f"the token (--token or ${TOKEN_ENV}) is empty")
        server["token"] = token
    # Empty means unset (compose passes optional variables that way); blank is an error.
    admin_token = env.get(ADMIN_TOKEN_ENV) or None
    if admin_token is not None:
        if not admin_token.strip():
            raise ConfigError(f"${ADMIN_TOKEN_ENV} is blank")
        server["admin_token"] = admin_token
    settings = load_settings(
        args.config, environ=env, overrides={"server": server} if server else None
    )
    generated = False
    if settings.server.token is None and args.config is None:
        settings = load_settings(
            None,
            environ=env,
            overrides={"server": {**server, "token": secrets.token_urlsafe(DEMO_TOKEN_BYTES)}},
        )
        generated = True
    return settings, generated


def _check_port_free(host: str, port: int) -> None:
    """Fail now, with a clear message, rather than after loading the model and sources
    (uvicorn binds only once the lifespan has started everything)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port"
                " (or server.port) or stop what uses it"
            ) from err


def dashboard_url(settings: Settings, *, with_token: bool = False) -> str:
    """The dashboard's address (with ``?token=`` when asked and a token is set)."""
    host = settings.server.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{settings.server.port}/"
    token = settings.server.token
    return f"{url}?token={token.get_secret_value()}" if with_token and token else url


def _fix_mmap_threshold() -> None:
    """Pin glibc's mmap threshold at its initial 128 KiB, as ``MALLOC_MMAP_THRESHOLD_`` would.

    The pipeline frees many buffers just above 128 KiB (blocks, segments, STFT frames) on
    several threads; glibc then raises the threshold and serves them from the heap, which
    fragments, and resident memory creeps up hour after hour (RELIABILITY.md, finding 3).
    The Dockerfile and systemd unit set the variable; this covers a hand-started service.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (musl, ...): nothing to pin
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; allocator left as it is")


def check_alarm_class(model: Path, alarm_class: str | None) -> None:
    """Refuse, before listening, an ``alerts.alarm_class`` that is not one of the model's classes
    (``ConfigError``; the monitor warns at start when a model raises no alarm at all)."""
    from model import checkpoint
    from service.alerts import alarm_column

    alarm_column(list(checkpoint.read_metadata(model).get("class_names", [])), alarm_class)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app

    settings, generated = build_settings(args)
    _fix_mmap_threshold()
    model = settings.inference.model_path
    if not model.is_file():
        raise CheckpointError(
            f"no model at {model}: set inference.model in the config to a trained checkpoint"
            " (`pandapulse train`), or build the demo model with `make demo-model`"
        )
    check_alarm_class(model, settings.alerts.alarm_class)
    if settings.server.token is None and not is_loopback(settings.server.host):
        log.warning(
            "listening on %s without a token: anyone on the network can use the API;"
            " set server.token or $%s",
            settings.server.host,
            TOKEN_ENV,
        )
    _check_port_free(settings.server.host, settings.server.port)
    # httpx logs every webhook request with its full URL, which may carry a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings)
    sources = ", ".join(f"{s.id} ({s.kind})" for s in settings.sources)
    print(
        f"PandaPulse: sources {sources}; data in {settings.storage.data_dir.resolve()}", flush=True
    )
    if generated:
        # A token made for this demo run is shown once, on the terminal that started it. A
        # configured token is never printed: stdout ends up in journald and `docker logs`.
        print(f"Dashboard: {dashboard_url(settings, with_token=True)}", flush=True)
        print(
            "(demo token generated for this run; set --token or $PANDAPULSE_TOKEN to fix one)",
            flush=True,
        )
    elif settings.server.token is not None:
        print(f"Dashboard: {dashboard_url(settings)}?token=<your token>", flush=True)
    else:
        print(f"Dashboard: {dashboard_url(settings)}", flush=True)
    server = uvicorn.Server(server_config(app, settings))
    server.run()
    return 0 if server.started else 1


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves the app (``serve`` and the latency bench use this one).

    WebSocket messages go uncompressed: per-message deflate cost every client's copy of every
    message CPU (7 % of the busy time with 32 sources in one profile, BENCHMARKS.md), while a
    watched source's updates are about 10 KB/s of JSON.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        workers=1,
        access_log=False,
        log_config=None,
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=64 * 1024,
        ws_per_message_deflate=False,
    )
