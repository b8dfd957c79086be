"""The energy detector: invariants (alternation, chunking), silence and noise, onset accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import constants as C
from model.detect import CallBoundary, DetectorParams, EnergyDetector, detect_calls
from model.preprocessing import load
from tests.streaming import blocks

SR = C.SAMPLE_RATE


def db(level_db: float) -> float:
    return float(10 ** (level_db / 20))


def noise(seconds: float, level_db: float, seed: int = 0) -> np.ndarray:
    """(2, n) white noise with RMS ``level_db`` dBFS per channel."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, int(seconds * SR))) * db(level_db)).astype(np.float32)


def pink(seconds: float, level_db: float, seed: int = 0) -> np.ndarray:
    """(2, n) pink (1/f) noise from 20 Hz up (a microphone's low cut), RMS ``level_db`` dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    spectrum = np.fft.rfft(rng.standard_normal((2, n)))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spectrum[:, 1:] /= np.sqrt(freqs[1:])
    spectrum[:, freqs < 20.0] = 0
    x = np.fft.irfft(spectrum, n)
    x *= db(level_db) / x.std(axis=1, keepdims=True)
    return x.astype(np.float32)


def add_call(
    audio: np.ndarray,
    start_s: float,
    end_s: float,
    above_db: float,
    floor_db: float,
    *,
    channel=None,
):
    """Add a harmonic call whose RMS is ``above_db`` over a floor at ``floor_db`` (in-place)."""
    s, e = int(start_s * SR), int(end_s * SR)
    t = np.arange(e - s) / SR
    call = sum(np.sin(2 * np.pi * f0 * t) / k for k, f0 in enumerate((420, 840, 1260), start=1))
    # power of the sum must be (10^(above/10) - 1) times the floor's power
    target = db(floor_db) * np.sqrt(10 ** (above_db / 10) - 1)
    call = call * (target / call.std())
    channels = [0, 1] if channel is None else [channel]
    for ch in channels:
        audio[ch, s:e] += call.astype(np.float32)
    return s, e


def chunked(detector: EnergyDetector, audio: np.ndarray, sizes: list[int]) -> list[CallBoundary]:
    events: list[CallBoundary] = []
    for block in blocks(audio, sizes):
        events += detector.push(block)
    return events + detector.flush()


@st.composite
def random_signals(draw) -> np.ndarray:
    """Noise whose level jumps between random values at random times, 2-12 s long."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(draw(st.integers(1, 12))):
        seconds = draw(st.floats(0.01, 1.5))
        level = draw(st.floats(-100, -3))
        n = max(1, int(seconds * SR))
        left, right = level, level + draw(st.sampled_from([0.0, -20.0, 10.0]))
        piece = rng.standard_normal((2, n)) * np.array([[db(left)], [db(min(right, 0.0))]])
        if draw(st.booleans()):
            piece[:, : n // 2] = 0.0  # digital silence too
        pieces.append(piece)
    return np.concatenate(pieces, axis=1).astype(np.float32)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audio=random_signals(), sizes=st.lists(st.integers(1, 30_000), min_size=1, max_size=6))
def test_events_alternate_and_do_not_depend_on_block_size(
    audio: np.ndarray, sizes: list[int]
) -> None:
    whole = EnergyDetector()
    reference = whole.push(audio) + whole.flush()
    kinds = [ev.kind for ev in reference]
    assert kinds == ["start", "end"] * (len(kinds) // 2)
    samples = [ev.sample for ev in reference]
    assert samples == sorted(samples)
    assert all(0 <= s <= audio.shape[1] for s in samples)
    assert chunked(EnergyDetector(), audio, sizes) == reference


def test_silence_gives_no_call() -> None:
    assert detect_calls(np.zeros((2, 20 * SR), np.float32)) == []


@pytest.mark.parametrize("level_db", [-70.0, -40.0, -12.0])
@pytest.mark.parametrize("kind", ["white", "pink"])
def test_steady_noise_gives_no_call(kind: str, level_db: float) -> None:
    audio = (noise if kind == "white" else pink)(30, level_db, seed=3)
    assert detect_calls(audio) == []


def test_steady_tone_gives_no_call() -> None:
    t = np.arange(20 * SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    assert detect_calls(np.stack([tone, tone])) == []


@pytest.mark.parametrize("start_s", [1.5, 3.217, 7.9])
@pytest.mark.parametrize("channel", [None, 0, 1])
def test_call_10_db_above_the_floor_is_found_on_time(start_s: float, channel: int | None) -> None:
    floor_db = -45.0
    audio = noise(12, floor_db, seed=int(start_s * 10))
    s, e = add_call(audio, start_s, start_s + 1.2, 10.0, floor_db, channel=channel)
    calls = detect_calls(audio)
    assert len(calls) == 1
    onset, end = calls[0]
    assert abs(onset - s) <= 0.050 * SR
    assert abs(end - e) <= 0.050 * SR


def test_call_at_the_very_start_is_found() -> None:
    audio = noise(6, -50.0, seed=5)
    add_call(audio, 0.0, 0.6, 20.0, -50.0)
    (onset, end), *rest = detect_calls(audio)
    assert not rest
    assert onset == 0 and abs(end - 0.6 * SR) <= 0.050 * SR


def test_clicks_shorter_than_the_minimum_are_ignored_and_gaps_bridged() -> None:
    params = DetectorParams()
    audio = noise(8, -50.0, seed=7)
    add_call(audio, 2.0, 2.0 + params.min_call_s / 3, 30.0, -50.0)  # a click
    add_call(audio, 4.0, 4.5, 20.0, -50.0)
    add_call(audio, 4.55, 5.0, 20.0, -50.0)  # 50 ms gap < hang-over: one call
    calls = detect_calls(audio, params)
    assert len(calls) == 1
    assert abs(calls[0][0] - 4.0 * SR) <= 0.05 * SR and abs(calls[0][1] - 5.0 * SR) <= 0.05 * SR


def test_start_is_emitted_once_confirmed_and_end_after_the_hangover() -> None:
    params = DetectorParams()
    audio = noise(6, -50.0, seed=11)
    s, e = add_call(audio, 2.0, 3.0, 20.0, -50.0)
    detector = EnergyDetector(params)
    seen: dict[str, int] = {}
    for pos in range(0, audio.shape[1], 256):
        for ev in detector.push(audio[:, pos : pos + 256]):
            seen[ev.kind] = pos + 256  # where in the stream the event came out
    # Delivery is late by the confirmation / hang-over time plus at most two frames; a frame
    # that the call's onset falls into is loud already, so the start may come up to one frame
    # before onset + min_call_s.
    slack = 2 * params.frame_samples + 256
    assert -params.frame_samples <= seen["start"] - (s + params.min_call_s * SR) <= slack
    assert 0 <= seen["end"] - (e + params.hangover_s * SR) <= slack


def test_a_lasting_rise_of_the_background_does_not_hold_the_detector_on() -> None:
    params = DetectorParams(max_call_s=5.0)
    audio = np.concatenate([noise(3, -60.0, seed=1), noise(30, -30.0, seed=2)], axis=1)
    add_call(audio, 25.0, 26.0, 15.0, -30.0)
    calls = detect_calls(audio, params)
    assert calls[0][0] == pytest.approx(3 * SR, abs=0.05 * SR)
    assert calls[0][1] - calls[0][0] <= 5.1 * SR
    assert calls[-1][0] == pytest.approx(25 * SR, abs=0.05 * SR)


def test_real_panda_call_is_found(shared_data: Path) -> None:
    recording = load(shared_data / "real-calls" / "giant_panda_twittering.mp3")
    calls = detect_calls(recording.audio)
    assert calls
    assert sum(e - s for s, e in calls) > 0.5 * recording.audio.shape[1]


def test_bad_input_and_settings_are_refused() -> None:
    detector = EnergyDetector()
    with pytest.raises(ValueError, match=r"\(2, n\)"):
        detector.push(np.zeros((1, 100), np.float32))
    with pytest.raises(TypeError, match="float32"):
        detector.push(np.zeros((2, 100), np.float64))
    with pytest.raises(ValueError, match="off_db < on_db"):
        DetectorParams(on_db=3.0, off_db=6.0)
    with pytest.raises(ValueError, match="max_call_s"):
        DetectorParams(max_call_s=0.01)
