"""The fleet view end to end: Mosquitto, two real ``pandapulse serve`` boxes on synthetic
sources publishing to it, and ``pandapulse fleet`` showing both in Chromium: every enclosure,
updating; a killed box turns offline (its Last Will) and comes back; a restarted fleet view
shows the same page from the broker's retained messages alone."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from service.config import DEMO_MODEL
from tests.mqtt_broker import Broker
from tests.web.conftest import PANDAPULSE, REPO, START_TIMEOUT_S, Service, free_port, new_page

SHOT = os.environ.get("PANDAPULSE_FLEET_SCREENSHOT")
"""Where to save a screenshot of the page (for a look by hand); unset: none."""
OFFLINE_WITHIN_S = 20.0
"""A box killed with SIGKILL shows as offline within this (the broker sends its Last Will as
soon as the connection drops; the page polls every second)."""


def box_service(
    root: Path, model: Path, broker: Broker, box: str, name: str, sources: list[str]
) -> Service:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "sources": [
            {"id": s, "enclosure": f"{name} {s}", "kind": "synthetic", "seed": 20 + i}
            for i, s in enumerate(sources)
        ],
        "inference": {"model": str(model), "device": "cpu", "max_batch": 8},
        "encounter": {"auto": True, "min_segments_for_verdict": 2},
        "storage": {"data_dir": str(root / "data"), "keep_clips": False},
        "server": {"stats_interval_s": 1.0},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "box_id": box,
            "box_name": name,
            "box_url": f"http://127.0.0.1:{port}/",
            "keepalive_s": 5,
        },
    }
    path = root / "pandapulse.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    svc = Service(
        config=path, port=port, token=secrets.token_urlsafe(12), log_path=root / "service.log"
    )
    svc.start()
    return svc


@dataclass
class Fleet:
    config: Path
    port: int
    token: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(PANDAPULSE),
                    "fleet",
                    "--config",
                    str(self.config),
                    "--port",
                    str(self.port),
                    f"--token={self.token}",  # a random token may begin with "-"
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"pandapulse fleet did not start:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        self.proc = None


@pytest.fixture
def fleet_setup(
    tmp_path: Path, untrained_checkpoint: Path
) -> Iterator[tuple[Broker, Service, Service, Fleet]]:
    model = DEMO_MODEL if DEMO_MODEL.is_file() else untrained_checkpoint
    broker = Broker(tmp_path / "mosquitto")
    broker.directory.mkdir()
    broker.start()
    started: list[Any] = []
    try:
        a = box_service(tmp_path / "a", model, broker, "box-a", "House A", ["north", "south"])
        started.append(a)
        b = box_service(tmp_path / "b", model, broker, "box-b", "House B", ["east"])
        started.append(b)
        config = tmp_path / "fleet.yaml"
        config.write_text(yaml.safe_dump({"mqtt": {"host": broker.host, "port": broker.port}}))
        fleet = Fleet(config, free_port(), secrets.token_urlsafe(12), tmp_path / "fleet.log")
        fleet.start()
        started.append(fleet)
        yield broker, a, b, fleet
    finally:
        for proc in reversed(started):
            proc.kill()
        broker.kill()


def tiles(page: Any) -> list[dict[str, str]]:
    result: list[dict[str, str]] = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid=fleet-tile]')].map((t) => ({
            box: t.dataset.box, source: t.dataset.source, audio: t.dataset.audio,
            band: t.dataset.band, p: t.dataset.p,
            encounter: t.querySelector('[data-testid=fleet-encounter]').dataset.id,
            last: t.querySelector('[data-testid=fleet-last-call]').textContent,
            name: t.querySelector('h2').textContent,
        }))"""
    )
    return result


def box_status(page: Any, box: str) -> str:
    status: str = page.evaluate(
        f"() => document.querySelector('[data-testid=fleet-box][data-box=\"{box}\"]')"
        "?.dataset.status || ''"
    )
    return status


def test_fleet_shows_every_enclosure_of_every_box_and_who_is_offline(
    fleet_setup: tuple[Broker, Service, Service, Fleet], browser: Any
) -> None:
    _broker, a, b, fleet = fleet_setup
    # Without the token: the sign-in page, and no data.
    assert httpx.get(f"{fleet.url}/").status_code == 401
    assert httpx.get(f"{fleet.url}/api/fleet").status_code == 401
    context, page, console = new_page(browser)
    try:
        page.goto(f"{fleet.url}/?token={fleet.token}")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=fleet-tile][data-audio=ok]').length === 3",
            timeout=60_000,
        )
        seen = tiles(page)
        assert {(t["box"], t["source"]) for t in seen} == {
            ("box-a", "north"),
            ("box-a", "south"),
            ("box-b", "east"),
        }
        assert {t["name"] for t in seen} == {"House A north", "House A south", "House B east"}
        links = page.eval_on_selector_all(
            "[data-testid=fleet-box-link]", "(ls) => ls.map((l) => l.href)"
        )
        assert sorted(links) == sorted([f"{a.url}/", f"{b.url}/"])
        assert box_status(page, "box-a") == "online" and box_status(page, "box-b") == "online"
        assert "token=" not in page.url  # the token left the address bar

        # Updating: the synthetic enclosures call, an encounter opens, its figure shows.
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=fleet-tile]')]"
            ".some((t) => t.dataset.band !== 'none' && t.dataset.p !== '')",
            timeout=90_000,
        )
        if SHOT:
            page.screenshot(path=SHOT, full_page=True)
        live = next(t for t in tiles(page) if t["band"] != "none")
        assert live["encounter"] and 0.0 <= float(live["p"]) <= 1.0
        assert live["band"] in ("success", "failure", "uncertain")
        assert live["last"] != "No call heard yet"

        # Box B dies: offline within a bounded time, its enclosure still shown (last known).
        b.kill(signal.SIGKILL)
        page.wait_for_function(
            "() => document.querySelector('[data-testid=fleet-box][data-box=\"box-b\"]')"
            "?.dataset.status === 'offline'",
            timeout=OFFLINE_WITHIN_S * 1000,
        )
        assert box_status(page, "box-a") == "online"
        assert any(t["box"] == "box-b" for t in tiles(page))
        b.start()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=fleet-box][data-box=\"box-b\"]')"
            "?.dataset.status === 'online'",
            timeout=90_000,
        )

        assert not console.errors, console.errors

        # A restarted fleet view rebuilds the same page from the retained messages alone.
        fleet.kill()
        fleet.start()
        page.goto(f"{fleet.url}/?token={fleet.token}")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=fleet-tile]').length === 3"
            " && document.querySelectorAll('[data-testid=fleet-box][data-status=online]')"
            ".length === 2",
            timeout=30_000,
        )
        # (while it was down, the open page's polls were refused, and said so)
        assert all("ERR_CONNECTION_REFUSED" in e for e in console.errors), console.errors
    finally:
        context.close()
