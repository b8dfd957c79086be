"""Fixtures for the reliability suite: the real service as a subprocess on 127.0.0.1."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.reliability.server import VENV_BIN, Service, free_port, write_config

TOKEN_BYTES = 24


def service_config(
    data_dir: Path, model: Path, port: int, token: str | None, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A small, fast configuration: one synthetic source in real time, an untrained model
    (these tests are about plumbing, not predictions), short stall and retry times."""
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "max_upload_mb": 4, "max_upload_s": 60},
        "sources": [{"id": "demo", "kind": "synthetic", "realtime": True, "seed": 7}],
        "inference": {"model": str(model), "device": "cpu", "max_batch": 8},
        "storage": {"data_dir": str(data_dir)},
        "alerts": {"stall_after_s": 2.0, "retry_schedule_s": [0.5, 1.0]},
    }
    if token is not None:
        config["server"]["token"] = token
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = config[name] | values
        else:
            config[name] = values
    return config


ServiceFactory = Callable[..., Service]


@pytest.fixture
def make_service(tmp_path: Path, untrained_checkpoint: Path) -> Iterator[ServiceFactory]:
    """``make_service(token=..., **sections)`` -> a started ``Service`` (stopped at teardown).

    Calling it again with ``reuse=service`` restarts the same configuration (same port, data
    directory and log file), as systemd or Docker would after a crash.
    """
    started: list[Service] = []

    def make(
        *, token: str | None = "generate", reuse: Service | None = None, **sections: Any
    ) -> Service:
        if reuse is not None:
            service = Service(
                reuse.argv,
                port=reuse.port,
                env=reuse.env,
                log_path=reuse.log_path,
                token=reuse.token,
            )
        else:
            if token == "generate":
                token = secrets.token_urlsafe(TOKEN_BYTES)
            port = free_port()
            index = len(started)
            config = service_config(
                tmp_path / "data", untrained_checkpoint, port, token, **sections
            )
            path = write_config(tmp_path / f"config-{index}.yaml", config)
            service = Service(
                [str(VENV_BIN / "pandapulse"), "serve", "--config", str(path)],
                port=port,
                log_path=tmp_path / f"service-{index}.log",
                token=token,
            )
        started.append(service)
        return service.start()

    yield make
    for service in started:
        service.__exit__()


def tone_file(path: Path, seconds: float, *, level: float = 0.25, freq: float = 440.0) -> Path:
    """A stereo 44.1 kHz float WAV tone to play into the null sink."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * 44_100)) / 44_100
    wave = (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, np.stack([wave, wave], axis=1), 44_100, subtype="FLOAT")
    return path


T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float, every: float = 0.25) -> T:
    """Poll ``fn`` until it returns something truthy, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)
