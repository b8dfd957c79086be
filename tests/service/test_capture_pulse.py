"""Real capture: PulseAudio null sink -> paplay -> monitor -> sounddevice -> Pipeline.

A private PulseAudio server (``tests/pulse.py``) stands in for the enclosure's sound card. A
synthetic encounter is played into its sink with ``paplay`` while a ``DeviceSource`` records
the sink's monitor through PortAudio/ALSA's ``pulse`` device, and the pipeline detects and
scores the calls. Nothing is mocked between the sound server and the sink.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from model import constants as C
from model.classifier import Classifier
from model.detect import detect_calls
from service.audio import DeviceSource
from service.pipeline import Pipeline
from service.types import DeviceCounters
from tests.pulse import PulseServer
from tests.service.test_pipeline import RecordingSink

pytestmark = pytest.mark.pulse

SR = C.SAMPLE_RATE
ENCOUNTER_SEED = 26
"""A 10-s synthetic encounter whose calls stand apart (five of them, by the offline detector)."""


@pytest.fixture(scope="module")
def encounter_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    from model.synth import generate_encounter

    audio = generate_encounter(ENCOUNTER_SEED, outcome="success", duration_s=10.0).audio
    path = tmp_path_factory.mktemp("pulse") / "encounter.wav"
    sf.write(path, audio.T, SR, subtype="FLOAT")
    return path, audio


def locate(piece: np.ndarray, audio: np.ndarray) -> int:
    """Where (2, m) ``piece`` occurs in (2, n) ``audio``: the best cross-correlation lag."""
    probe = piece[0, : min(piece.shape[1], SR // 2)].astype(np.float64)
    signal = audio[0].astype(np.float64)
    n = len(signal) + len(probe)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(signal, size) * np.conj(np.fft.rfft(probe, size)), size)
    return int(np.argmax(corr[: len(signal)]))


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_calls_played_into_the_sink_are_captured_detected_and_scored(
    pulse: PulseServer, encounter_file: tuple[Path, np.ndarray], untrained_checkpoint: Path
) -> None:
    path, audio = encounter_file
    offline_calls = detect_calls(audio)
    assert len(offline_calls) >= 3
    classifier = Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=8)
    sink = RecordingSink()
    source = DeviceSource("pen", "pulse")
    source.check()
    pipeline = Pipeline([source], classifier, sink, stall_after_s=30.0)
    pipeline.start()
    try:
        pulse.play(path)  # real time: about 10 s
        time.sleep(0.5)  # the last call's hang-over
        stats = pipeline.stats()
    finally:
        pipeline.stop()

    source_stats = stats.sources["pen"].source
    assert isinstance(source_stats, DeviceCounters)
    assert source_stats.kind == "sounddevice" and source_stats.device_rate == SR
    assert not source_stats.mono
    captured_s = source_stats.blocks * source.block_samples / SR
    assert captured_s >= 9.0, f"only {captured_s:.1f} s captured: {source_stats}"
    assert source_stats.dropped_blocks == 0

    # The calls were detected and every segment scored.
    starts = [c for c in sink.calls if c.kind == "start"]
    assert len(starts) >= 3
    assert len(sink.segments) >= 3
    for seg in sink.segments:
        assert seg.p_success + seg.p_failure == pytest.approx(1.0, abs=1e-5)
        assert seg.attention.shape == (C.N_FRAMES,)
    assert sink.levels and max(lv.peak_db[0] for lv in sink.levels) > -20

    # What was captured is the file, sample for sample (a float32 null sink at 44.1 kHz):
    # each segment's clip sits in the played recording at one common offset.
    first = max(sink.segments, key=lambda s: s.end - s.start)
    offset = first.start - locate(first.audio, audio)
    for seg in sink.segments:
        lo, hi = seg.start - offset, seg.end - offset
        if lo >= 0 and hi <= audio.shape[1]:
            assert np.allclose(seg.audio, audio[:, lo:hi], atol=1e-6)
    # And the live calls are the offline calls, shifted by that offset (to a frame or two:
    # the noise floor was learnt from a slightly different first second).
    live = [(c.sample - offset) / SR for c in starts]
    matched = [any(abs(t - s / SR) < 0.1 for t in live) for s, _ in offline_calls]
    assert sum(matched) >= len(offline_calls) - 1, (live, offline_calls)


def test_a_vanished_sink_is_reported_and_capture_resumes_when_it_returns(
    pulse: PulseServer, encounter_file: tuple[Path, np.ndarray], untrained_checkpoint: Path
) -> None:
    path, _ = encounter_file
    classifier = Classifier.from_checkpoint(untrained_checkpoint, device="cpu")
    sink = RecordingSink()
    source = DeviceSource("pen", "pulse", reopen_after_s=1.0, backoff_s=(0.2, 0.5))
    pipeline = Pipeline([source], classifier, sink, stall_after_s=1.0)
    stop_playing = threading.Event()

    def keep_playing() -> None:
        # A sound card always delivers: keep the sink busy whenever it exists.
        while not stop_playing.is_set():
            if pulse.sink_loaded:
                process = pulse.play(path, wait=False)
                while process.poll() is None and not stop_playing.wait(0.05):
                    pass
                if process.poll() is None:
                    process.terminate()
                process.wait()
            else:
                stop_playing.wait(0.05)

    player = threading.Thread(target=keep_playing, daemon=True)
    pipeline.start()
    player.start()
    try:
        assert wait_until(lambda: source.stats().blocks > 20, 10), source.stats()
        pulse.unload_sink()
        assert wait_until(lambda: "stalled" in sink.status_kinds("pen"), 10), sink.statuses
        pulse.load_sink()
        assert wait_until(lambda: sink.status_kinds("pen")[-1] == "ok", 20), (
            sink.statuses,
            source.stats(),
        )
        blocks = source.stats().blocks
        assert wait_until(lambda: source.stats().blocks > blocks + 20, 10)
    finally:
        stop_playing.set()
        player.join(timeout=10)
        pipeline.stop()
    assert source.stats().reopens >= 1
    stalled = next(s for s in sink.statuses if s.status == "stalled")
    assert "no audio for" in stalled.detail
    error = source.stats().last_error
    assert "lost" in error or "cannot open" in error
    assert sink.status_kinds("pen")[-1] == "stopped"


def test_the_service_captures_scores_and_publishes_to_a_websocket_client(
    pulse: PulseServer,
    encounter_file: tuple[Path, np.ndarray],
    untrained_checkpoint: Path,
    tmp_path: Path,
) -> None:
    """The whole product on a real capture path: ``create_app`` with a sounddevice source on
    the null sink's monitor; a WebSocket client gets the segment and encounter events."""
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.config import load_settings
    from service.wire import MESSAGE_ADAPTER

    path, _ = encounter_file
    token = "pulse-test-token"
    settings = load_settings(
        environ={},
        overrides={
            "server": {"token": token, "stats_interval_s": 1.0},
            "sources": [
                {"id": "pen", "enclosure": "Pulse pen", "kind": "sounddevice", "device": "pulse"}
            ],
            "inference": {"model": str(untrained_checkpoint), "device": "cpu", "max_batch": 8},
            "encounter": {"auto": True, "min_segments_for_verdict": 1, "silence_close_s": 600},
            "alerts": {"stall_after_s": 60},
            "storage": {"data_dir": str(tmp_path / "data")},
        },
    )
    seen: dict[str, list[Any]] = {}
    with (
        TestClient(create_app(settings)) as client,
        client.websocket_connect(f"/ws/live?token={token}") as ws,
    ):
        first = MESSAGE_ADAPTER.validate_json(ws.receive_text())
        assert first.type == "snapshot" and [s.id for s in first.sources] == ["pen"]
        ws.send_text(json.dumps({"type": "watch", "v": 1, "sources": ["pen"]}))
        player = pulse.play(path, wait=False)
        try:
            deadline = time.monotonic() + 60
            while not (
                {"segment", "encounter", "level", "spectrogram"} <= seen.keys()
                and len(seen["segment"]) >= 3
            ):
                assert time.monotonic() < deadline, f"only {sorted(seen)} arrived"
                msg = MESSAGE_ADAPTER.validate_json(ws.receive_text())
                seen.setdefault(msg.type, []).append(msg)
        finally:
            player.wait(timeout=30)
        stats = client.get("/stats", headers={"Authorization": f"Bearer {token}"}).json()
    assert stats["sources"]["pen"]["blocks"] > 0 and stats["inference"]["segments"] >= 3
    started = seen["encounter"][0]
    assert (
        started.action == "started" and started.encounter.source == "pen" and started.encounter.auto
    )
    for msg in seen["segment"]:
        assert msg.source == "pen" and msg.encounter_id == started.encounter.id
        assert abs(msg.p_success + msg.p_failure - 1) < 1e-4 and len(msg.attention) == C.N_FRAMES
        assert msg.clip_url and msg.running_p_success is not None
    assert max(max(m.peak_db) for m in seen["level"]) > -20
