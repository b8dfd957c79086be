"""torch MFCC == librosa MFCC, on the signals that break naive implementations."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from model import constants as C
from model import preprocessing
from model.features import combined, mfcc, mfcc_numpy

RNG = np.random.default_rng(7)
T = np.arange(C.SEGMENT_SAMPLES) / C.SAMPLE_RATE


def reference(segment: np.ndarray) -> np.ndarray:
    """librosa on one (2, 88200) segment -> (2, 86, 40), as the issue defines the reference."""
    ref = librosa.feature.mfcc(
        y=segment, sr=C.SAMPLE_RATE, n_mfcc=C.N_MFCC, n_fft=C.N_FFT, hop_length=C.HOP_LENGTH
    )
    return ref.transpose(0, 2, 1)[:, : C.N_FRAMES]


def stereo(left: np.ndarray, right: np.ndarray | None = None) -> np.ndarray:
    return np.stack([left, left if right is None else right]).astype(np.float32)


SIGNALS = {
    "white noise": stereo(
        RNG.standard_normal(C.SEGMENT_SAMPLES) * 0.3, RNG.standard_normal(C.SEGMENT_SAMPLES) * 0.1
    ),
    "tones": stereo(0.8 * np.sin(2 * np.pi * 440 * T), 0.5 * np.sin(2 * np.pi * 1234.5 * T)),
    "very quiet": stereo(
        1e-6 * RNG.standard_normal(C.SEGMENT_SAMPLES), 1e-7 * np.sin(2 * np.pi * 300 * T)
    ),
    "clipped": stereo(
        np.clip(3 * np.sin(2 * np.pi * 220 * T), -1, 1),
        np.clip(5 * RNG.standard_normal(C.SEGMENT_SAMPLES), -1, 1),
    ),
    "silence then burst": stereo(np.where(T > 1.5, np.sin(2 * np.pi * 900 * T), 0.0)),
}


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape == (C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)
    error = np.abs(ours - ref).max() / np.abs(ref).max()
    assert error <= 1e-3, f"relative max error {error:.2e}"


@pytest.mark.parametrize("name", list(SIGNALS))
def test_mfcc_matches_librosa(name: str) -> None:
    segment = SIGNALS[name]
    assert_close(mfcc(torch.from_numpy(segment)).numpy(), reference(segment))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Real synthesised speech: espeak-ng to WAV, sox to 44.1 kHz stereo with a level offset."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/setup.sh installs it")
    folder = tmp_path_factory.mktemp("speech")
    raw, wav = folder / "raw.wav", folder / "speech.wav"
    text = "The keepers watch the pandas meet; a bleat means yes, a roar means no."
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", "44100", "-c", "2", str(wav), "remix", "1", "1v0.5"], check=True
    )
    return preprocessing.load(wav).audio


def test_mfcc_matches_librosa_on_real_speech(speech: np.ndarray) -> None:
    segments = preprocessing.tile(speech)
    assert segments, "espeak-ng produced no audio"
    batch = preprocessing.stack(segments)
    ours = mfcc(torch.from_numpy(batch)).numpy()
    for i, segment in enumerate(batch):
        assert_close(ours[i], reference(segment))


def test_mfcc_matches_librosa_on_a_real_panda_call(shared_data: Path) -> None:
    recording = preprocessing.load(shared_data / "real-calls" / "giant_panda_twittering.mp3")
    segment = preprocessing.tile(recording.audio)[0].audio
    assert_close(mfcc_numpy(segment), reference(segment))


def test_mfcc_is_batched_over_leading_dims() -> None:
    batch = np.stack([SIGNALS["tones"], SIGNALS["white noise"]])[None]  # (1, 2, 2, 88200)
    out = mfcc(torch.from_numpy(batch))
    assert out.shape == (1, 2, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)
    single = mfcc(torch.from_numpy(SIGNALS["white noise"]))
    assert torch.allclose(out[0, 1], single, atol=1e-4)


def test_mfcc_rejects_wrong_shapes_and_dtypes() -> None:
    with pytest.raises(ValueError, match="88200"):
        mfcc(torch.zeros(1, 2, 1000))
    with pytest.raises(ValueError, match="2, 88200"):
        mfcc(torch.zeros(1, 3, C.SEGMENT_SAMPLES))
    with pytest.raises(TypeError, match="float32"):
        mfcc(torch.zeros(1, 2, C.SEGMENT_SAMPLES, dtype=torch.float64))


def test_combined_feature_has_the_papers_62_dimensions() -> None:
    out = combined(SIGNALS["tones"])
    assert out.shape == (C.N_CHANNELS, C.N_FRAMES, C.COMBINED_FEATURES)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    # Its first 40 columns are the MFCC itself.
    assert np.allclose(out[..., : C.N_MFCC], mfcc_numpy(SIGNALS["tones"]), atol=1e-4)


def test_soundfile_roundtrip_keeps_mfcc(tmp_path: Path) -> None:
    path = tmp_path / "tones.flac"
    sf.write(path, SIGNALS["tones"].T, C.SAMPLE_RATE, subtype="PCM_24")
    again = preprocessing.load(path).audio
    assert_close(mfcc_numpy(again), reference(SIGNALS["tones"]))
