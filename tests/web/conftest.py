"""Fixtures for the dashboard's browser tests: the real service as a subprocess, and Chromium.

The service runs ``pandapulse serve`` on the synthetic source (real time, fixed seed) with a
temporary data directory and a random token; one service serves the whole module, and a test
may restart it (same port, same data) to check that the page reconnects by itself. Chromium is
Debian's ``/usr/bin/chromium`` (``scripts/setup.sh`` installs it), driven by Python playwright;
``playwright install`` cannot download browsers here, so the executable is given explicitly.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import sync_playwright

from service.config import DEMO_MODEL

REPO = Path(__file__).resolve().parents[2]
PANDAPULSE = REPO / ".venv" / "bin" / "pandapulse"
CHROMIUM = Path(os.environ.get("PANDAPULSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-gpu",
]
SCREENSHOTS = REPO / "docs" / "screenshots"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
SOURCE_ID = "pen1"
ENCLOSURE = "North yard"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A ``pandapulse serve`` subprocess; ``start``/``kill`` keep the port and the data dir."""

    config: Path
    port: int
    token: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def login_url(self) -> str:
        return f"{self.url}/?token={self.token}"

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(PANDAPULSE),
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                # one argument: a random token may begin with "-", which argparse takes for an option
                f"--token={self.token}",
            ],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"pandapulse serve exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill()
        pytest.fail(
            f"pandapulse serve did not answer /healthz in {START_TIMEOUT_S} s:\n{self.log_tail()}"
        )

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process (SIGKILL simulates a crash); waits until it is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A REST call with the token; raises on a 4xx/5xx answer."""
        response = httpx.request(
            method,
            f"{self.url}{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            **kwargs,
        )
        response.raise_for_status()
        return response

    def wait_for(self, predicate: Any, what: str, timeout_s: float = 60.0) -> Any:
        """Poll ``predicate()`` until it returns something truthy (bounded), and return it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{self.log_tail()}")


def start_service(
    root: Path,
    model: Path,
    encounter: dict[str, Any] | None = None,
    sources: list[tuple[str, str]] | None = None,
) -> Service:
    """A real ``pandapulse serve`` on synthetic sources, configured under ``root``.

    ``sources``: (id, enclosure) pairs, each a real-time synthetic source with its own seed;
    default: the one source ``SOURCE_ID`` in ``ENCLOSURE``.
    """
    if not PANDAPULSE.exists():
        pytest.fail(f"{PANDAPULSE} is missing: run `make setup` first")
    config = {
        "sources": [
            {
                "id": source_id,
                "enclosure": enclosure,
                "kind": "synthetic",
                "realtime": True,
                "seed": 11 + i,
            }
            for i, (source_id, enclosure) in enumerate(sources or [(SOURCE_ID, ENCLOSURE)])
        ],
        "inference": {"model": str(model), "device": "cpu", "max_batch": 8},
        "encounter": {"auto": True, "min_segments_for_verdict": 2, **(encounter or {})},
        "storage": {"data_dir": str(root / "data")},
        "server": {"stats_interval_s": 1.0},
    }
    config_path = root / "pandapulse.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    svc = Service(
        config=config_path,
        port=free_port(),
        token=secrets.token_urlsafe(12),
        log_path=root / "service.log",
    )
    svc.start()
    return svc


@pytest.fixture(scope="session")
def service(
    tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint: Path
) -> Iterator[Service]:
    # The committed demo model when it is there; the tests only need some checkpoint.
    model = DEMO_MODEL if DEMO_MODEL.is_file() else untrained_checkpoint
    svc = start_service(tmp_path_factory.mktemp("dashboard"), model)
    try:
        yield svc
    finally:
        svc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """Console errors and uncaught exceptions of a page."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


def new_page(
    browser: Any, width: int = 1280, height: int = 800, locale: str = "en-US"
) -> tuple[Any, Any, Console]:
    """A fresh browser context (its own storage) and page, with console capture; ``locale``
    is the browser's language, which the dashboard follows (English unless told)."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale=locale)
    context.set_default_timeout(30_000)
    page = context.new_page()
    console = Console()
    console.attach(page)
    return context, page, console


@pytest.fixture()
def live_page(browser: Any, service: Service) -> Iterator[tuple[Any, Console]]:
    """The dashboard at 1280x800, logged in through ``/?token=``, connected to the live feed."""
    context, page, console = new_page(browser)
    page.goto(service.login_url)
    page.wait_for_selector("#conn[data-state=open]")
    try:
        yield page, console
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


LAYOUT_PROBLEMS_JS = """() => {
    const problems = [];
    const root = document.documentElement;
    if (root.scrollWidth > root.clientWidth + 1) {
        problems.push(`the page scrolls sideways: ${root.scrollWidth} > ${root.clientWidth}`);
    }
    const shown = (el) => el.getClientRects().length > 0;
    for (const el of document.querySelectorAll(".topbar, .alert-banner, main > .view, main .card")) {
        if (shown(el) && el.scrollWidth > el.clientWidth + 1) {
            const name = el.id || el.dataset.testid || el.className;
            problems.push(`${el.tagName.toLowerCase()} ${name}: ${el.scrollWidth} > ${el.clientWidth}`);
        }
    }
    const top = document.querySelector(".topbar").getBoundingClientRect();
    const tabs = document.querySelector(".tabs").getBoundingClientRect();
    const right = document.querySelector(".topbar-right").getBoundingClientRect();
    if (right.top >= tabs.bottom - 1) problems.push("the top bar wraps onto a second row");
    const below = [...document.querySelectorAll(".alert-banner, main")].filter(shown);
    for (const el of below) {
        if (el.getBoundingClientRect().top < top.bottom - 1) {
            problems.push(`${el.tagName.toLowerCase()} starts under the top bar`);
        }
    }
    return problems;
}"""


def layout_problems(page: Any) -> list[str]:
    """What overflows its card or the page sideways, and whether the top bar wraps (empty: fine)."""
    page.evaluate("window.scrollTo(0, 0)")
    problems: list[str] = page.evaluate(LAYOUT_PROBLEMS_JS)
    return problems
