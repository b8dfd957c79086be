from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model import constants as C
from model import preprocessing as P
from model.errors import AudioError


def ramp(n: int) -> np.ndarray:
    return np.stack([np.arange(n), -np.arange(n)]).astype(np.float32) / max(n, 1)


def test_long_call_is_cut_into_two_second_pieces_and_a_long_tail_kept() -> None:
    n = 2 * C.SEGMENT_SAMPLES + C.MIN_TAIL_SAMPLES
    segments = P.segment_call(ramp(n), 0, n)
    assert [(s.start, s.end) for s in segments] == [
        (0, C.SEGMENT_SAMPLES),
        (C.SEGMENT_SAMPLES, 2 * C.SEGMENT_SAMPLES),
        (2 * C.SEGMENT_SAMPLES, n),
    ]
    assert all(s.audio.shape == (C.N_CHANNELS, C.SEGMENT_SAMPLES) for s in segments)


def test_short_tail_after_whole_pieces_is_dropped_but_a_short_call_is_kept() -> None:
    n = C.SEGMENT_SAMPLES + C.MIN_TAIL_SAMPLES - 1
    assert len(P.segment_call(ramp(n), 0, n)) == 1
    assert len(P.segment_call(ramp(100), 0, 100)) == 1


def test_short_call_is_padded_by_repeating_its_own_audio() -> None:
    piece = np.stack([np.array([1, 2, 3], np.float32), np.array([-1, -2, -3], np.float32)])
    padded = P.fit_length(piece)
    assert padded.shape == (2, C.SEGMENT_SAMPLES)
    assert np.array_equal(padded[:, :9], np.tile(piece, 3))


def test_segments_are_peak_normalised_over_both_channels() -> None:
    audio = np.stack([0.1 * np.ones(1000), -0.2 * np.ones(1000)]).astype(np.float32)
    seg = P.segment_call(audio, 0, 1000)[0]
    assert np.max(np.abs(seg.audio)) == pytest.approx(C.NORMALISED_PEAK)
    assert seg.audio[0, 0] == pytest.approx(0.5 * C.NORMALISED_PEAK)


def test_silence_stays_silent() -> None:
    seg = P.segment_call(np.zeros((2, 500), np.float32), 0, 500)[0]
    assert not seg.audio.any()


def test_mono_is_duplicated_and_flagged() -> None:
    rec = P.to_model_audio(np.linspace(-1, 1, 4410, dtype=np.float32), C.SAMPLE_RATE)
    assert rec.mono and rec.audio.shape == (2, 4410)
    assert np.array_equal(rec.audio[0], rec.audio[1])


@pytest.mark.parametrize("rate", [8_000, 22_050, 48_000, 96_000, 192_000])
def test_other_rates_are_resampled(rate: int) -> None:
    t = np.arange(rate) / rate
    rec = P.to_model_audio(np.sin(2 * np.pi * 1000 * t)[:, None].repeat(2, 1), rate)
    assert rec.source_rate == rate
    assert abs(rec.audio.shape[1] - C.SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(rec.audio[0]))
    assert abs(np.argmax(spectrum) * C.SAMPLE_RATE / rec.audio.shape[1] - 1000) < 5


@pytest.mark.parametrize(
    ("data", "rate", "message"),
    [
        (np.zeros((100, 2)), 7_999, "sample rate"),
        (np.zeros((100, 2)), 192_001, "sample rate"),
        (np.zeros((100, 8)), C.SAMPLE_RATE, "8 channels"),
        (np.zeros((0, 2)), C.SAMPLE_RATE, "no samples"),
        (np.array([[np.nan, 0.0]]), C.SAMPLE_RATE, "NaN"),
        (np.array([[np.inf, 0.0]]), C.SAMPLE_RATE, "NaN or infinite"),
    ],
)
def test_bad_audio_gets_a_clear_error(data: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        P.to_model_audio(data, rate)


def test_load_reads_files_and_bytes_and_refuses_garbage(tmp_path: Path, shared_data: Path) -> None:
    path = tmp_path / "x.wav"
    sf.write(path, np.zeros((4410, 2)), C.SAMPLE_RATE)
    assert P.load(path).audio.shape == (2, 4410)
    buf = io.BytesIO()
    sf.write(buf, np.zeros((4410, 1)), 22_050, format="FLAC")
    assert P.load(buf.getvalue()).mono
    mp3 = P.load(shared_data / "real-calls" / "giant_panda_twittering.mp3")
    assert mp3.mono and mp3.source_rate == 22_050 and mp3.duration_s == pytest.approx(3.1, abs=0.2)
    with pytest.raises(AudioError, match="cannot decode"):
        P.load(b"this is not audio at all")


def test_tile_covers_a_recording_and_stack_batches() -> None:
    segments = P.tile(ramp(3 * C.SEGMENT_SAMPLES))
    assert len(segments) == 3
    assert P.stack(segments).shape == (3, 2, C.SEGMENT_SAMPLES)
    assert P.stack([]).shape == (0, 2, C.SEGMENT_SAMPLES)


@pytest.mark.parametrize("preallocate", [P.PREALLOCATE_FRAMES, 1000])
def test_block_decoding_equals_reading_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preallocate: int
) -> None:
    # 1000 frames preallocated: the array must grow as the audio arrives (a header that
    # under-states the length, or a format without one).
    monkeypatch.setattr(P, "PREALLOCATE_FRAMES", preallocate)
    monkeypatch.setattr(P, "READ_BLOCK_FRAMES", 777)
    rng = np.random.default_rng(5)
    data = (rng.standard_normal((10_001, 2)) * 0.3).astype(np.float32)
    path = tmp_path / "x.flac"
    sf.write(path, data, C.SAMPLE_RATE, subtype="PCM_24")
    expected, _ = sf.read(path, dtype="float32")
    audio = P.load(path).audio
    assert audio.flags.c_contiguous and audio.dtype == np.float32
    assert np.array_equal(audio, expected.T)


def test_rate_and_channels_are_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "eight.wav"
    sf.write(path, np.zeros((10, 8)), C.SAMPLE_RATE)
    with pytest.raises(AudioError, match="8 channels"):
        P.load(path)
    path = tmp_path / "slow.wav"
    sf.write(path, np.zeros((10, 1)), 4_000)
    with pytest.raises(AudioError, match="4000 Hz"):
        P.load(path)
