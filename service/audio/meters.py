"""What the dashboard draws while it listens: level meters and a scrolling log-mel spectrogram.

Two streaming stages (``reset()`` / ``push(block) -> list[event]``, any block size) that run on
a source's pipeline thread, each emitting about ten events a second (docs/PROTOCOL.md,
``level`` and ``spectrogram``).
"""

from __future__ import annotations

import librosa
import numpy as np

from model import constants as C
from model.detect import LEVEL_FLOOR_DB, check_block
from service.types import LevelUpdate, SpectrogramColumns

UPDATE_SAMPLES = C.SAMPLE_RATE // 10
"""Samples between two level / spectrogram events (0.1 s)."""
SPEC_BINS = 64
"""Mel bands per spectrogram column (low frequency first)."""
SPEC_N_FFT = 2048
SPEC_HOP = 1024
"""One column per 1024 samples (23.2 ms), each from a 2048-sample Hann window."""
SPEC_FLOOR_DB = -90.0
"""dBFS mapped to 0; 0 dBFS maps to 255."""


def to_db(values: np.ndarray) -> np.ndarray:
    """20 log10 of amplitudes (any shape), floored at LEVEL_FLOOR_DB, float64."""
    with np.errstate(divide="ignore"):
        return np.maximum(20.0 * np.log10(np.asarray(values, dtype=np.float64)), LEVEL_FLOOR_DB)


class LevelMeter:
    """RMS and peak level per channel (dBFS) of each consecutive 0.1-s stretch."""

    def __init__(self, source_id: str, *, interval: int = UPDATE_SAMPLES, start: int = 0) -> None:
        if interval < 1:
            raise ValueError(f"interval must be positive, got {interval}")
        self.source_id = source_id
        self.interval = interval
        self.reset(start)

    def reset(self, start: int = 0) -> None:
        self._start = start  # first sample of the stretch being measured
        self._filled = 0
        self._sum_sq = np.zeros(C.N_CHANNELS)
        self._peak = np.zeros(C.N_CHANNELS)

    def push(self, block: np.ndarray) -> list[LevelUpdate]:
        """(2, n) float32 audio -> the level updates of the stretches it completed."""
        block = check_block(block)
        events = []
        pos = 0
        while pos < block.shape[1]:
            take = min(self.interval - self._filled, block.shape[1] - pos)
            part = block[:, pos : pos + take]
            self._sum_sq += np.square(part, dtype=np.float64).sum(axis=1)
            self._peak = np.maximum(self._peak, np.abs(part).max(axis=1))
            self._filled += take
            pos += take
            if self._filled == self.interval:
                rms = to_db(np.sqrt(self._sum_sq / self.interval))
                peak = to_db(self._peak)
                events.append(
                    LevelUpdate(
                        self.source_id,
                        self._start,
                        (float(rms[0]), float(rms[1])),
                        (float(peak[0]), float(peak[1])),
                    )
                )
                self.reset(self._start + self.interval)
        return events


class SpectrogramStage:
    """Log-mel columns of the two channels' mean power, in bytes (0 = -90 dBFS, 255 = 0 dBFS).

    Column j covers samples [start + j * 1024, start + j * 1024 + 2048); columns are handed
    out in groups of four or five, ten groups per second of audio.
    """

    def __init__(self, source_id: str, *, interval: int = UPDATE_SAMPLES, start: int = 0) -> None:
        self.source_id = source_id
        self.interval = interval
        window = np.hanning(SPEC_N_FFT + 1)[:-1]  # periodic Hann
        self._window = window.astype(np.float32)
        # Triangles of height 1, so a full-scale sine reads about 0 dB in its band.
        self._mel = librosa.filters.mel(
            sr=C.SAMPLE_RATE, n_fft=SPEC_N_FFT, n_mels=SPEC_BINS, norm=None
        )
        self._ref_power = (window.sum() / 2.0) ** 2
        self.reset(start)

    def reset(self, start: int = 0) -> None:
        self._buffer = np.zeros((C.N_CHANNELS, 0), dtype=np.float32)
        self._buffer_start = start  # sample index of self._buffer[:, 0], a column start
        self._columns: list[np.ndarray] = []
        self._columns_start = start
        self._next_emit = start + self.interval  # emit once the columns' hops reach this sample

    def push(self, block: np.ndarray) -> list[SpectrogramColumns]:
        """(2, n) float32 audio -> groups of columns completed by it."""
        block = check_block(block)
        self._buffer = np.concatenate([self._buffer, block], axis=1)
        n_cols = (
            0
            if self._buffer.shape[1] < SPEC_N_FFT
            else 1 + (self._buffer.shape[1] - SPEC_N_FFT) // SPEC_HOP
        )
        events = []
        if n_cols:
            frames = np.lib.stride_tricks.sliding_window_view(self._buffer, SPEC_N_FFT, axis=1)[
                :, ::SPEC_HOP
            ][:, :n_cols]
            power = np.square(np.abs(np.fft.rfft(frames * self._window, axis=-1))).mean(
                axis=0
            )  # (n_cols, bins)
            mel_db = 10.0 * np.log10(np.maximum(power @ self._mel.T / self._ref_power, 1e-30))
            scaled = np.clip((mel_db - SPEC_FLOOR_DB) * (255.0 / -SPEC_FLOOR_DB), 0, 255)
            columns = np.rint(scaled).astype(np.uint8)
            self._buffer = self._buffer[:, n_cols * SPEC_HOP :].copy()
            self._buffer_start += n_cols * SPEC_HOP
            for column in columns:
                self._columns.append(column)
                if self._columns_start + len(self._columns) * SPEC_HOP >= self._next_emit:
                    events.append(self._emit())
                    self._next_emit += self.interval
        return events

    def _emit(self) -> SpectrogramColumns:
        event = SpectrogramColumns(self.source_id, self._columns_start, np.stack(self._columns))
        self._columns_start += len(self._columns) * SPEC_HOP
        self._columns = []
        return event
