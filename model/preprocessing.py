"""Recordings and calls -> 2-s segments. One implementation for training, ``/predict`` and live.

Every function takes and returns audio as float32 arrays shaped (channels, samples) at
``SAMPLE_RATE``; sample indices are the clock.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import librosa
import numpy as np
import soundfile as sf

from model import constants as C
from model.errors import AudioError


@dataclass(frozen=True)
class Recording:
    """A decoded recording at SAMPLE_RATE.

    Attributes
    ----------
    audio : np.ndarray, shape (2, n), float32
    mono : bool
        True when the input had one channel, duplicated to two.
    source_rate : int
        The input's sample rate (Hz) before resampling.
    """

    audio: np.ndarray
    mono: bool
    source_rate: int

    @property
    def duration_s(self) -> float:
        return self.audio.shape[1] / C.SAMPLE_RATE


@dataclass(frozen=True)
class Segment:
    """One model-ready segment cut from a recording.

    ``start`` and ``end`` are sample indices (at SAMPLE_RATE) of the source audio the segment
    was cut from (``end - start`` <= SEGMENT_SAMPLES; shorter pieces were padded by repetition).
    ``audio`` is (2, 88200) float32, peak-normalised.
    """

    start: int
    end: int
    audio: np.ndarray

    @property
    def start_s(self) -> float:
        return self.start / C.SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / C.SAMPLE_RATE


def to_model_audio(data: np.ndarray, sample_rate: int) -> Recording:
    """Validate and convert decoded audio to the model's format.

    Parameters
    ----------
    data : np.ndarray, shape (n,) or (n, channels) as soundfile returns it, any float dtype
    sample_rate : int, Hz, between 8,000 and 192,000
    """
    if not C.MIN_INPUT_RATE <= sample_rate <= C.MAX_INPUT_RATE:
        raise AudioError(
            f"sample rate {sample_rate} Hz is not supported: use {C.MIN_INPUT_RATE}"
            f" to {C.MAX_INPUT_RATE} Hz"
        )
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[1] not in (1, 2):
        channels = data.shape[1] if data.ndim == 2 else data.ndim
        raise AudioError(f"{channels} channels are not supported: use mono or stereo audio")
    if data.shape[0] == 0:
        raise AudioError("the recording holds no samples")
    if not np.isfinite(data).all():
        raise AudioError("the recording holds NaN or infinite samples")
    mono = data.shape[1] == 1
    audio = np.ascontiguousarray(data.T)
    if mono:
        audio = np.repeat(audio, C.N_CHANNELS, axis=0)
    if sample_rate != C.SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=C.SAMPLE_RATE, axis=-1)
    return Recording(
        audio=np.ascontiguousarray(audio, dtype=np.float32), mono=mono, source_rate=sample_rate
    )


def load(source: str | Path | BinaryIO | bytes) -> Recording:
    """Decode any format soundfile reads (WAV, FLAC, OGG, MP3, ...) into a ``Recording``."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        name = source if isinstance(source, str | Path) else "the upload"
        raise AudioError(f"cannot decode {name}: {err}; use WAV, FLAC, OGG or MP3") from err
    return to_model_audio(data, int(rate))


def normalise_peak(audio: np.ndarray) -> np.ndarray:
    """Scale (2, n) audio so its largest absolute sample is NORMALISED_PEAK; silence stays 0."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio.astype(np.float32, copy=True)
    return (audio * (C.NORMALISED_PEAK / peak)).astype(np.float32)


def fit_length(piece: np.ndarray) -> np.ndarray:
    """Pad a (2, n <= 88200) piece to (2, 88200) by repeating its own audio (the paper's rule)."""
    n = piece.shape[1]
    if n == 0:
        raise AudioError("cannot make a segment from an empty piece of audio")
    if n == C.SEGMENT_SAMPLES:
        return piece
    reps = -(-C.SEGMENT_SAMPLES // n)
    return np.tile(piece, (1, reps))[:, : C.SEGMENT_SAMPLES]


def piece_bounds(start: int, end: int) -> list[tuple[int, int]]:
    """Split the call [start, end) into pieces of at most SEGMENT_SAMPLES.

    A remainder shorter than MIN_TAIL_SAMPLES after at least one whole piece is dropped; a call
    shorter than one segment is always kept. The live segmenter uses the same rule.
    """
    if end <= start:
        return []
    bounds = []
    pos = start
    while end - pos >= C.SEGMENT_SAMPLES:
        bounds.append((pos, pos + C.SEGMENT_SAMPLES))
        pos += C.SEGMENT_SAMPLES
    if pos < end and (not bounds or end - pos >= C.MIN_TAIL_SAMPLES):
        bounds.append((pos, end))
    return bounds


def make_segment(audio: np.ndarray, start: int, end: int) -> Segment:
    """Cut [start, end) (at most one segment long) from (2, n) audio and normalise it."""
    piece = audio[:, start:end]
    return Segment(start=start, end=end, audio=normalise_peak(fit_length(piece)))


def segment_call(audio: np.ndarray, start: int, end: int) -> list[Segment]:
    """Segments of the call [start, end) (sample indices) in (2, n) audio."""
    end = min(end, audio.shape[1])
    return [make_segment(audio, s, e) for s, e in piece_bounds(max(start, 0), end)]


def tile(audio: np.ndarray) -> list[Segment]:
    """Cut a whole (2, n) recording into consecutive 2-s segments (no detection)."""
    return segment_call(audio, 0, audio.shape[1])


def stack(segments: list[Segment]) -> np.ndarray:
    """(B, 2, 88200) float32 batch of the segments' audio; (0, 2, 88200) when empty."""
    if not segments:
        return np.zeros((0, C.N_CHANNELS, C.SEGMENT_SAMPLES), dtype=np.float32)
    return np.stack([s.audio for s in segments])
