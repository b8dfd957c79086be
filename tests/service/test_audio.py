"""Audio sources and meters: lossless replay, live drops, loops, synthetic encounters, the
device source's callback and conversions, level and spectrogram stages."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from model import constants as C
from model.errors import AudioError
from model.preprocessing import load
from service.audio import DeviceSource, ReplaySource, SyntheticSource, source_from_config
from service.audio.base import AudioSource
from service.audio.meters import LevelMeter, SpectrogramStage
from service.config import SourceSettings
from service.types import AudioBlock
from tests.streaming import blocks

SR = C.SAMPLE_RATE


def read_all(source: AudioSource, limit_s: float = 30.0) -> list[AudioBlock]:
    blocks = []
    deadline = time.monotonic() + limit_s
    while not source.finished and time.monotonic() < deadline:
        block = source.read(timeout=0.2)
        if block is not None:
            blocks.append(block)
    return blocks


@pytest.fixture
def stereo_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "rec.wav"
    sf.write(
        path, (0.1 * rng.standard_normal((SR * 3 + 123, 2))).astype(np.float32), SR, subtype="FLOAT"
    )
    return path


def test_lossless_replay_delivers_the_whole_recording_in_order(stereo_file: Path) -> None:
    source = ReplaySource(
        "a", stereo_file, realtime=False, block_samples=[1000, 7, 4096], queue_blocks=4
    )
    source.start()
    blocks = read_all(source)
    source.stop()
    assert source.finished and source.read(timeout=0.01) is None
    assert [b.start for b in blocks] == [0, *np.cumsum([b.audio.shape[1] for b in blocks])[:-1]]
    assert [b.audio.shape[1] for b in blocks[:4]] == [1000, 7, 4096, 1000]
    assert all(b.audio.dtype == np.float32 and b.audio.flags.c_contiguous for b in blocks)
    assert np.array_equal(
        np.concatenate([b.audio for b in blocks], axis=1), load(stereo_file).audio
    )
    assert source.stats().dropped_blocks == 0 and source.stats().blocks == len(blocks)


def test_mono_and_other_rates_are_converted_and_flagged(tmp_path: Path) -> None:
    path = tmp_path / "mono.flac"
    t = np.arange(22_050 * 2) / 22_050
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), 22_050)
    source = ReplaySource("m", path, realtime=False)
    source.start()
    audio = np.concatenate([b.audio for b in read_all(source)], axis=1)
    source.stop()
    assert source.mono and source.stats().mono
    assert audio.shape == (2, 2 * SR) and np.array_equal(audio[0], audio[1])


def test_looping_replay_keeps_a_continuous_clock(stereo_file: Path) -> None:
    n = load(stereo_file).audio.shape[1]
    source = ReplaySource("l", stereo_file, realtime=False, loop=True, block_samples=5000)
    source.start()
    blocks = []
    while sum(b.audio.shape[1] for b in blocks) < 2 * n + 10_000:
        block = source.read(timeout=1.0)
        assert block is not None
        blocks.append(block)
    source.stop()
    audio = np.concatenate([b.audio for b in blocks], axis=1)
    assert blocks[-1].end == audio.shape[1] and not source.finished
    assert np.array_equal(audio[:, n : 2 * n], audio[:, :n])


def test_a_live_source_drops_the_newest_blocks_when_nobody_reads(stereo_file: Path) -> None:
    source = ReplaySource("r", stereo_file, realtime=True, queue_blocks=3)
    source.start()
    time.sleep(0.6)  # ~25 blocks fall due, only 3 fit
    first = source.read(timeout=1.0)
    source.stop()
    stats = source.stats()
    assert stats.dropped_blocks > 0 and stats.blocks >= 3
    assert first is not None and first.start == 0  # the oldest blocks were kept


def test_replay_check_explains_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no file"):
        ReplaySource("x", tmp_path / "missing.wav").check()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="cannot decode"):
        ReplaySource("x", junk).check()


def fake_generator(seed: int, outcome: str, duration_s: float) -> np.ndarray:
    """A stand-in for model.synth: a recognisable constant per seed."""
    n = int(duration_s * SR)
    return np.full((2, n), seed / 1000 + (0.5 if outcome == "success" else 0.0), np.float32)


def test_synthetic_source_plays_encounters_back_to_back() -> None:
    source = SyntheticSource("s", seed=7, realtime=False, encounter_s=0.5, generate=fake_generator)
    source.start()
    blocks = [source.read(timeout=5.0) for _ in range(100)]
    source.stop()
    assert all(b is not None for b in blocks)
    audio = np.concatenate([b.audio for b in blocks if b is not None], axis=1)
    played = list(source.played)
    assert [p.seed for p in played[:3]] == [7, 8, 9]
    assert played[1].start == played[0].samples == SR // 2
    for enc in played:
        expected = fake_generator(enc.seed, enc.outcome, 0.5)[
            :, : max(0, audio.shape[1] - enc.start)
        ]
        assert np.array_equal(audio[:, enc.start : enc.start + expected.shape[1]], expected)
    assert {p.outcome for p in played} <= {"success", "failure"}
    again = SyntheticSource("s", seed=7, encounter_s=0.5, generate=fake_generator)
    assert [again.outcome_of(p.seed) for p in played] == [p.outcome for p in played]


def test_synthetic_source_with_the_real_generator() -> None:
    source = SyntheticSource("demo", seed=3, realtime=False, encounter_s=4.0)
    source.check()
    source.start()
    blocks = [source.read(timeout=30.0) for _ in range(200)]
    source.stop()
    assert all(
        b is not None and b.audio.shape[0] == 2 and b.audio.dtype == np.float32 for b in blocks
    )
    audio = np.concatenate([b.audio for b in blocks if b is not None], axis=1)
    assert 0 < np.abs(audio).max() <= 1.0


def test_sources_from_config(stereo_file: Path) -> None:
    replay = source_from_config(
        SourceSettings(id="f", kind="file", path=stereo_file, realtime=False)
    )
    assert isinstance(replay, ReplaySource) and replay.lossless
    synth = source_from_config(SourceSettings(id="s", kind="synthetic", seed=4))
    assert isinstance(synth, SyntheticSource) and synth.seed == 4 and not synth.lossless
    device = source_from_config(SourceSettings(id="d", kind="sounddevice", device="pulse"))
    assert isinstance(device, DeviceSource) and device.device == "pulse"


def test_device_callback_only_queues_and_counts() -> None:
    source = DeviceSource("card", queue_blocks=2)
    ok = SimpleNamespace(input_overflow=False)
    data = np.ones((1024, 2), np.float32)
    for _ in range(3):
        source._callback(data, 1024, None, ok)
    source._callback(data, 1024, None, SimpleNamespace(input_overflow=True))
    data[:] = 5.0  # PortAudio reuses its buffer: the queued copy must not change
    stats = source.stats()
    assert (stats.blocks, stats.dropped_blocks, stats.overflows) == (2, 2, 1)
    block = source.read(timeout=0.1)
    assert block is not None and block.start == 0 and np.all(block.audio == 1.0)


def test_device_blocks_mono_duplicated_and_resampled() -> None:
    import soxr

    source = DeviceSource("card")
    source.device_rate = 48_000
    source._resampler = soxr.ResampleStream(48_000, SR, 2, dtype="float32")
    t = np.arange(48_000) / 48_000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[:, None]  # mono, 1 s
    out = []
    for i in range(0, 48_000, 960):
        block = source._to_block((tone[i : i + 960], time.monotonic()))
        if block is not None:
            out.append(block)
    audio = np.concatenate([b.audio for b in out], axis=1)
    assert [b.start for b in out] == [0, *np.cumsum([b.audio.shape[1] for b in out])[:-1]]
    assert abs(audio.shape[1] - SR) < 0.02 * SR  # 1 s, less the resampler's delay
    assert np.array_equal(audio[0], audio[1])
    spectrum = np.abs(np.fft.rfft(audio[0, 4410:]))
    peak_hz = np.argmax(spectrum) * SR / (audio.shape[1] - 4410)
    assert abs(peak_hz - 1000) < 5


def test_device_check_names_the_available_inputs() -> None:
    try:
        import sounddevice  # noqa: F401
    except OSError as err:
        pytest.fail(f"PortAudio missing: {err}")
    with pytest.raises(AudioError, match="no input device 'no-such-card'"):
        DeviceSource("card", "no-such-card").check()


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 9000), min_size=1, max_size=5))
def test_meters_do_not_depend_on_block_size(sizes: list[int]) -> None:
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((2, SR))).astype(np.float32)
    whole_levels = LevelMeter("x").push(audio)
    whole_cols = SpectrogramStage("x").push(audio)
    levels, spec = LevelMeter("x"), SpectrogramStage("x")
    got_levels, got_cols = [], []
    for block in blocks(audio, sizes):
        got_levels += levels.push(block)
        got_cols += spec.push(block)
    assert len(got_levels) == len(whole_levels) == 10
    for a, b in zip(got_levels, whole_levels, strict=True):
        assert a.start == b.start
        assert np.allclose(a.rms_db, b.rms_db, atol=1e-9) and a.peak_db == b.peak_db
    assert [c.start for c in got_cols] == [c.start for c in whole_cols]
    assert np.array_equal(
        np.concatenate([c.columns for c in got_cols]),
        np.concatenate([c.columns for c in whole_cols]),
    )


def test_level_meter_reads_dbfs() -> None:
    t = np.arange(SR // 10) / SR
    sine = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    (event,) = LevelMeter("x").push(np.stack([sine, np.zeros_like(sine)]))
    assert event.rms_db[0] == pytest.approx(-3.01, abs=0.05)
    assert event.peak_db[0] == pytest.approx(0.0, abs=0.01)
    assert event.rms_db[1] == event.peak_db[1] == -120.0


def test_spectrogram_shows_a_tone_in_its_band() -> None:
    t = np.arange(SR) / SR
    tone = (0.1 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)  # -20 dBFS peak
    events = SpectrogramStage("x").push(np.stack([tone, tone]))
    assert 9 <= len(events) <= 10  # ten groups a second (the last needs one more window)
    columns = np.concatenate([e.columns for e in events])
    assert columns.dtype == np.uint8 and columns.shape[1] == 64
    mean = columns.mean(axis=0)
    band = int(np.argmax(mean))
    import librosa

    centres = librosa.mel_frequencies(n_mels=64 + 2, fmax=SR / 2)[1:-1]
    assert abs(centres[band] - 3000) < 300
    # About -20 dB in its band (0 = -90 dBFS, 255 = 0 dBFS), silence elsewhere is far lower.
    assert abs(mean[band] - (70 / 90) * 255) < 15
    silent = SpectrogramStage("x").push(np.zeros((2, SR // 2), np.float32))
    assert all(int(e.columns.max()) == 0 for e in silent)


def test_device_clock_skips_an_outage() -> None:
    source = DeviceSource("card")
    data = np.zeros((1024, 2), np.float32)
    t0 = time.monotonic()
    first = source._to_block((data, t0))
    source._gap_from = t0  # the stream was lost just after that block...
    after = source._to_block((data, t0 + 3.0))  # ...and its next block arrived 3 s later
    assert first is not None and after is not None
    assert after.start - first.end == round((3.0 - 1024 / SR) * SR)


def test_few_sources_are_read_in_small_blocks_many_in_larger_ones() -> None:
    from service.audio import block_samples_for
    from service.audio.base import BLOCK_SAMPLES, SMALL_BLOCK_SAMPLES, SMALL_SITE_SOURCES

    assert SMALL_BLOCK_SAMPLES < BLOCK_SAMPLES
    assert block_samples_for(1) == block_samples_for(SMALL_SITE_SOURCES) == SMALL_BLOCK_SAMPLES
    assert block_samples_for(SMALL_SITE_SOURCES + 1) == block_samples_for(96) == BLOCK_SAMPLES
