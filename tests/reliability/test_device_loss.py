"""Device loss: the sound server's sink vanishes during capture, then comes back.

The real service (subprocess) captures ``enclosure.monitor`` of a private PulseAudio server
through PortAudio and ALSA's ``pulse`` device, while a tone plays into the sink. Unloading the
sink takes the capture device away. Expected: an ``audio_stalled`` alert within the configured
``alerts.stall_after_s`` (plus the watchdog's polling period), the process keeps serving, and
once the sink is back and audio plays, capture resumes by itself (blocks flow, status ok).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import ServiceFactory, tone_file, wait_for
from tests.reliability.record import record

STALL_AFTER_S = 2.0
ALERT_GRACE_S = 5.0
"""Beyond stall_after_s: the watchdog polls every min(0.5, stall_after_s / 4) s, and the alert
is stored by the storage thread; this bounds the wait, it is not a latency target."""
RECOVERY_BOUND_S = 60.0
"""Longest wait for capture to resume: the device source's reopen back-off reaches 10 s."""


def stats(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/stats")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.pulse
@pytest.mark.slow
def test_sink_unloaded_then_back(make_service: ServiceFactory, pulse: Any, tmp_path: Path) -> None:
    tone = tone_file(tmp_path / "tone.wav", 120.0, level=0.2)
    player = pulse.play(tone, wait=False)
    service = make_service(
        sources=[{"id": "pen", "kind": "sounddevice", "device": "pulse"}],
        alerts={"stall_after_s": STALL_AFTER_S},
        encounter={"auto": False},
    )
    try:
        service.wait_ready()
        with service.client(timeout=10.0) as client:
            # Capture runs: blocks flow from the device.
            first = stats(client)["sources"]["pen"]["blocks"]
            wait_for(
                "capture running",
                lambda: stats(client)["sources"]["pen"]["blocks"] > first + 40,
                20,
            )

            # The device vanishes.
            lost_at = datetime.now().astimezone()
            pulse.unload_sink()
            t_lost = time.monotonic()
            player.wait(timeout=10)  # paplay ends with its sink

            def stalled_alert() -> dict[str, Any] | None:
                alerts = client.get("/api/alerts").json()
                return next(
                    (a for a in alerts if a["kind"] == "audio_stalled" and a["source"] == "pen"),
                    None,
                )

            alert = wait_for("audio_stalled alert", stalled_alert, STALL_AFTER_S + ALERT_GRACE_S)
            alert_latency = time.monotonic() - t_lost
            created = datetime.fromisoformat(alert["created_at"].replace("Z", "+00:00"))
            assert created >= lost_at.replace(microsecond=0)
            assert "stalled" in alert["message"]
            assert stats(client)["sources"]["pen"]["status"] == "stalled"
            # No crash: the process serves while the device is gone.
            time.sleep(STALL_AFTER_S)
            assert service.alive() and client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            sources = {s["id"]: s["status"] for s in client.get("/api/sources").json()}
            assert sources == {"pen": "stalled"}

            # The device returns, audio plays again: capture resumes without any help.
            pulse.load_sink()
            t_back = time.monotonic()
            player = pulse.play(tone, wait=False)
            before = stats(client)["sources"]["pen"]["blocks"]

            def resumed() -> bool:
                s = stats(client)["sources"]["pen"]
                return s["status"] == "ok" and s["blocks"] > before + 40

            wait_for("capture resumed", resumed, RECOVERY_BOUND_S, every=0.5)
            recovery = time.monotonic() - t_back
            assert service.alive()
            metrics = client.get("/metrics").text
    finally:
        player.kill()
        player.wait()
    record(
        "device loss",
        f"PulseAudio sink unloaded during capture (stall_after_s {STALL_AFTER_S:g}), then reloaded",
        f"audio_stalled alert after {alert_latency:.1f} s; process kept serving; capture resumed"
        f" {recovery:.1f} s after the sink returned",
        alert_latency_s=round(alert_latency, 2),
        recovery_s=round(recovery, 2),
    )
    assert "pen" in metrics
