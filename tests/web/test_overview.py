"""A box with three enclosures: the Live view opens on their overview (issue 13, section 5).

One real service with three real-time synthetic sources serves the module; Chromium watches the
WebSocket frames, so the test sees that the overview asks for no level/spectrogram stream and
that opening an enclosure asks for that enclosure's only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    DEMO_MODEL,
    Console,
    Service,
    layout_problems,
    new_page,
    start_service,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

SOURCES = [("pen1", "North yard"), ("pen2", "South yard"), ("pen3", "Bamboo house")]
LIVE_WAIT_MS = 120_000
"""Longest wait for live events: three real-time sources scored on two shared cores."""
HEAVY = {"level", "spectrogram"}
PAIR = "Mei Lan × Bao Bao"


@pytest.fixture(scope="module")
def three(
    tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint: Path
) -> Iterator[Service]:
    model = DEMO_MODEL if DEMO_MODEL.is_file() else untrained_checkpoint
    svc = start_service(tmp_path_factory.mktemp("overview"), model, sources=SOURCES)
    try:
        yield svc
    finally:
        svc.kill()


class Frames:
    """The page's WebSocket traffic, in order: ("sent"|"received", message)."""

    def __init__(self, page: Any) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        page.on("websocket", self._attach)

    def _attach(self, ws: Any) -> None:
        ws.on("framesent", lambda payload: self._add("sent", payload))
        ws.on("framereceived", lambda payload: self._add("received", payload))

    def _add(self, direction: str, payload: str | bytes) -> None:
        with contextlib.suppress(ValueError):  # every frame of this protocol is JSON
            self.log.append((direction, json.loads(payload)))

    def watches(self) -> list[list[str]]:
        return [m["sources"] for d, m in self.log if d == "sent" and m.get("type") == "watch"]

    def received(self, since: int = 0) -> list[dict[str, Any]]:
        return [m for d, m in self.log[since:] if d == "received"]


def _band(p: float, band: list[float]) -> str:
    if band[0] < band[1] and band[0] <= p <= band[1]:
        return "uncertain"
    return "success" if p > 0.5 else "failure"


def _tile(page: Any, source: str) -> Any:
    return page.locator(f"[data-testid=overview-tile][data-source={source}]")


def test_overview_tiles_follow_each_enclosure_and_open_its_full_view(
    browser: Any, three: Service, screenshots: Path
) -> None:
    context, page, console = new_page(browser)
    frames = Frames(page)
    try:
        # A keeper follows a named pair in one enclosure; the others run automatic encounters.
        three.api("POST", "/api/encounters", json={"source": "pen1", "pair": PAIR, "keeper": "Li"})
        page.goto(three.login_url)
        page.wait_for_selector("#conn[data-state=open]")
        # One tile per enclosure, in the configured order; the full Live view stays hidden.
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=overview-tile]').length === 3"
        )
        tiles = page.locator("[data-testid=overview-tile]")
        assert [tiles.nth(i).get_attribute("data-source") for i in range(3)] == [
            s for s, _ in SOURCES
        ]
        assert [tiles.nth(i).locator("h2").inner_text() for i in range(3)] == [
            e for _, e in SOURCES
        ]
        assert page.locator("#view-live").is_hidden()
        assert page.locator("#source-pick").is_hidden()
        # Every enclosure's audio runs, and each gets an automatic encounter with a running
        # P(success) shown in its verdict band.
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=tile-audio][data-status=ok]').length === 3",
            timeout=LIVE_WAIT_MS,
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=overview-tile]')]"
            ".every((t) => t.dataset.p !== '')",
            timeout=LIVE_WAIT_MS,
        )
        band = page.evaluate("window.pandapulse.state.model.uncertain_band")
        for source, _ in SOURCES:
            tile = _tile(page, source)
            shown = page.evaluate(
                """(id) => {
                    const tile = document.querySelector(`[data-testid=overview-tile][data-source=${id}]`);
                    const enc = window.pandapulse.state.openEncounters.get(id);
                    return { p: Number(tile.dataset.p), band: tile.dataset.band,
                             outlook: tile.querySelector('[data-testid=tile-outlook]').className,
                             text: tile.querySelector('.tile-p').textContent,
                             state: enc ? enc.p_success : null, id: enc ? enc.id : null };
                }""",
                source,
            )
            assert shown["state"] is not None and 0.0 <= shown["p"] <= 1.0
            assert shown["band"] == _band(shown["p"], band)
            assert shown["band"] in shown["outlook"]
            assert shown["text"] == f"{round(shown['p'] * 100)}%"
            assert "Encounter open" in tile.inner_text()
            stored = three.api("GET", f"/api/encounters/{shown['id']}").json()
            assert stored["source"] == source and stored["ended_at"] is None
        # The overview never asked for level or spectrogram updates, and got none, while the
        # scored calls of all three enclosures kept arriving.
        _pump_until(
            page,
            lambda: (
                {m["source"] for m in frames.received() if m.get("type") == "segment"}
                == {s for s, _ in SOURCES}
            ),
            "scored calls of every enclosure over the WebSocket",
        )
        assert frames.watches() and all(w == [] for w in frames.watches())
        assert not [m for m in frames.received() if m.get("type") in HEAVY]

        assert PAIR in _tile(page, "pen1").inner_text()
        # An open alert shows on its enclosure's tile only.
        for alert in three.api("GET", "/api/alerts?open=true").json():
            three.api("POST", f"/api/alerts/{alert['id']}/ack", json={"by": "overview test"})
        three.api("POST", "/api/alerts/test", json={"source": "pen2"})
        page.wait_for_function(
            "() => document.querySelector('[data-source=pen2] [data-testid=tile-alerts]')"
            ".dataset.count === '1'",
            timeout=15_000,
        )
        assert "Test alert" in _tile(page, "pen2").locator("[data-testid=tile-alerts]").inner_text()
        for other in ("pen1", "pen3"):
            assert "Test alert" not in _tile(page, other).inner_text()
        assert layout_problems(page) == []
        page.screenshot(path=str(screenshots / "overview-1280x800.png"))
        page.set_viewport_size({"width": 768, "height": 1024})
        assert layout_problems(page) == []

        # A tile opens that enclosure's full view, which watches that enclosure only.
        mark = len(frames.log)
        _tile(page, "pen2").click()
        page.wait_for_selector("#view-live", state="visible")
        assert page.url.endswith("#live/pen2")
        page.wait_for_selector("#enc-info h1:has-text('South yard')")
        assert page.locator("#view-overview").is_hidden()
        assert page.locator("#source-pick").is_visible()
        assert frames.watches()[-1] == ["pen2"]
        page.wait_for_function(
            "() => Number(document.querySelector('#spectrogram').dataset.columns) > 0",
            timeout=LIVE_WAIT_MS,
        )
        heavy = [m for m in frames.received(mark) if m.get("type") in HEAVY]
        assert heavy and {m["source"] for m in heavy} == {"pen2"}
        assert layout_problems(page) == []
        # The picker switches to another enclosure's full view; "All enclosures" goes back.
        page.select_option("#source-select", "pen3")
        page.wait_for_selector("#enc-info h1:has-text('Bamboo house')")
        assert page.url.endswith("#live/pen3")
        assert frames.watches()[-1] == ["pen3"]
        page.click("#live-back")
        page.wait_for_selector("#view-overview", state="visible")
        assert frames.watches()[-1] == []
        _assert_clean(console)
    finally:
        context.close()


def _assert_clean(console: Console) -> None:
    assert console.errors == []


def _pump_until(page: Any, predicate: Any, what: str, timeout_ms: int = LIVE_WAIT_MS) -> None:
    """Let the page run (its WebSocket events reach ``Frames``) until ``predicate()`` holds."""
    waited = 0
    while not predicate():
        if waited >= timeout_ms:
            pytest.fail(f"timed out after {timeout_ms} ms waiting for {what}")
        page.wait_for_timeout(250)
        waited += 250


def test_the_overview_in_chinese_is_translated_and_fits(browser: Any, three: Service) -> None:
    from .test_i18n import _check_layout, _check_translated

    context, page, console = new_page(browser, locale="zh-CN")
    try:
        page.goto(three.login_url)
        page.wait_for_selector("#conn[data-state=open]")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=overview-tile]').length === 3"
        )
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=tile-audio][data-status=ok]').length === 3",
            timeout=LIVE_WAIT_MS,
        )
        assert page.text_content("#view-overview h2") == "各圈舍概览"
        assert "音频 正常" in _tile(page, "pen3").inner_text()
        _check_translated(page, console, "zh-CN", "overview")
        _check_layout(page, "overview")
    finally:
        context.close()
