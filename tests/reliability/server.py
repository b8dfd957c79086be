"""The real service as a subprocess, for tests that kill it, restart it, read its logs or
measure its memory. It listens on 127.0.0.1 only, on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90.0
"""Longest wait for a fresh service to answer /readyz (model load and first import on 2 busy
cores); a bound, not a timing assertion."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """The test process's environment without any PANDAPULSE__ setting leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PANDAPULSE")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


class Service:
    """``argv`` run in ``cwd`` with ``env``; stdout and stderr go to ``log_path``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
        log_path: Path,
        token: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.env = dict(base_env() if env is None else env)
        self.cwd = cwd
        self.log_path = log_path
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs
        )

    def start(self) -> Service:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, path: str = "/readyz", timeout: float = START_TIMEOUT_S) -> httpx.Response:
        """Poll ``path`` until it answers 200; fail with the log's tail otherwise."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: str = "no answer"
        with self.client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"the service exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    r = client.get(path)
                    if r.status_code == 200:
                        return r
                    last = f"{r.status_code} {r.text[:300]}"
                except httpx.TransportError as err:
                    last = repr(err)
                time.sleep(0.25)
        raise AssertionError(f"{path} not ready after {timeout} s ({last}):\n{self.log_tail()}")

    def rss(self) -> int:
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (what Docker and systemd send), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return -1 if self.proc is None else int(self.proc.returncode)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return int(self.proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"the service ignored SIGTERM for {timeout} s:\n{self.log_tail()}"
            ) from None

    def stopped_cleanly(self, rc: int) -> bool:
        """0, or uvicorn's re-raised SIGTERM (-15) after a complete lifespan shutdown; systemd
        and Docker count both as a clean stop."""
        return rc in (0, -signal.SIGTERM) and "Application shutdown complete" in self.log_text()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *_: object) -> None:
        if self.alive():
            with contextlib.suppress(AssertionError):
                self.stop(timeout=20)
