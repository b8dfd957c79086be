"""Recordings and calls -> 2-s segments. One implementation for training, ``/predict`` and live.

Every function takes and returns audio as float32 arrays shaped (channels, samples) at
``SAMPLE_RATE``; sample indices are the clock.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import librosa
import numpy as np
import soundfile as sf
import soxr

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


def _check_format(sample_rate: int, channels: int) -> None:
    if not C.MIN_INPUT_RATE <= sample_rate <= C.MAX_INPUT_RATE:
        raise AudioError(
            f"sample rate {sample_rate} Hz is not supported: use {C.MIN_INPUT_RATE}"
            f" to {C.MAX_INPUT_RATE} Hz"
        )
    if channels not in (1, 2):
        raise AudioError(f"{channels} channels are not supported: use mono or stereo audio")


def _from_planar(audio: np.ndarray, sample_rate: int) -> Recording:
    """(1 or 2, n) float32 at ``sample_rate`` -> a ``Recording``; may reuse ``audio``'s memory."""
    if audio.shape[1] == 0:
        raise AudioError("the recording holds no samples")
    if not np.isfinite(audio).all():
        raise AudioError("the recording holds NaN or infinite samples")
    mono = audio.shape[0] == 1
    if mono:
        audio = np.repeat(audio, C.N_CHANNELS, axis=0)
    if sample_rate != C.SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=C.SAMPLE_RATE, axis=-1)
    return Recording(
        audio=np.ascontiguousarray(audio, dtype=np.float32), mono=mono, source_rate=sample_rate
    )


def to_model_audio(data: np.ndarray, sample_rate: int) -> Recording:
    """Validate and convert decoded audio to the model's format.

    Parameters
    ----------
    data : np.ndarray, shape (n,) or (n, channels) as soundfile returns it, any float dtype
    sample_rate : int, Hz, between 8,000 and 192,000
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    _check_format(sample_rate, data.shape[1] if data.ndim == 2 else data.ndim)
    return _from_planar(np.ascontiguousarray(data.T), sample_rate)


READ_BLOCK_FRAMES = 1 << 18
"""Frames decoded at a time by ``load`` (about 6 s at 44.1 kHz)."""
PREALLOCATE_FRAMES = 1 << 28
"""``load`` trusts a file header's length up to this many frames (about 100 min at 44.1 kHz);
beyond it, the array grows as audio actually arrives, so a header that lies costs nothing."""


def load(source: str | Path | BinaryIO | bytes) -> Recording:
    """Decode any format soundfile reads (WAV, FLAC, OGG, MP3, ...) into a ``Recording``.

    The rate and channel count are checked from the header before any audio is decoded, and
    the audio is decoded block by block straight into one (channels, n) array, so a long
    recording costs its own size in memory, not twice that.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    name = source if isinstance(source, str | Path) else "the upload"
    try:
        with sf.SoundFile(source) as handle:
            rate, channels = int(handle.samplerate), int(handle.channels)
            _check_format(rate, channels)
            audio = np.empty((channels, min(max(handle.frames, 0), PREALLOCATE_FRAMES)), np.float32)
            filled = 0
            for block in handle.blocks(READ_BLOCK_FRAMES, dtype="float32", always_2d=True):
                end = filled + len(block)
                if end > audio.shape[1]:  # the header under-stated the length
                    grown = np.empty((channels, max(end, 2 * audio.shape[1])), np.float32)
                    grown[:, :filled] = audio[:, :filled]
                    audio = grown
                audio[:, filled:end] = block.T
                filled = end
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"cannot decode {name}: {err}; use WAV, FLAC, OGG or MP3") from err
    return _from_planar(audio[:, :filled], rate)


RESAMPLE_QUALITY = "soxr_hq"
"""soxr quality of the resampling: ``librosa.resample``'s default, which ``load`` uses."""
_RESAMPLE_HOLD = 64
"""Resampled samples ``AudioStream`` keeps back until it knows they are not past the end."""


class RecordingTooLong(AudioError):
    """A recording lasts more than the limit ``AudioStream`` was given.

    ``seconds`` is its length by the header, or, when the header under-states it, the audio
    decoded when the limit was passed (``at_least`` is then True)."""

    def __init__(self, seconds: float, limit_s: float, *, at_least: bool) -> None:
        more = "more than " if at_least else ""
        super().__init__(f"the recording lasts {more}{seconds:.0f} s; at most {limit_s:g} s")
        self.seconds = seconds
        self.limit_s = limit_s
        self.at_least = at_least


class AudioStream:
    """A recording decoded block by block, never held whole: what ``load`` returns, in pieces.

    Iterating yields (2, n) float32 blocks at SAMPLE_RATE whose concatenation equals
    ``load(source).audio`` exactly: the same decoding (the same reads of ``READ_BLOCK_FRAMES``
    frames), mono duplicated to two channels, and a recording at another rate resampled by the
    filter ``librosa.resample`` runs (soxr's, streamed: bit-identical samples for any block
    size; the total fixed to ``ceil(n * ratio)`` samples as librosa fixes it). Errors are
    ``load``'s, raised when met: a bad header on opening, NaN or a decoding failure in the block
    that holds it, no samples at the end. With ``limit_s``, a recording longer than that raises
    ``RecordingTooLong`` on opening (by its header) or as soon as its decoded audio passes it.

    Use as a context manager (or call ``close``); iterate once, from one thread at a time.
    """

    def __init__(
        self, source: str | Path | BinaryIO | bytes, *, limit_s: float | None = None
    ) -> None:
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        self._name = source if isinstance(source, str | Path) else "the upload"
        try:
            self._handle = sf.SoundFile(source)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            raise self._decode_error(err) from err
        try:
            self.source_rate = int(self._handle.samplerate)
            channels = int(self._handle.channels)
            header_s = max(self._handle.frames, 0) / max(self.source_rate, 1)
            if limit_s is not None and header_s > limit_s:
                raise RecordingTooLong(header_s, limit_s, at_least=False)
            _check_format(self.source_rate, channels)
        except BaseException:
            self._handle.close()
            raise
        self.mono = channels == 1
        """True when the input has one channel (each block duplicates it to two)."""
        self.header_s = header_s
        """The length the header states (s); may be wrong, the audio decides."""
        self.limit_s = limit_s
        self.samples = 0
        """Samples (at SAMPLE_RATE) yielded so far; after the last block, the recording's length."""

    def _decode_error(self, err: Exception) -> AudioError:
        return AudioError(f"cannot decode {self._name}: {err}; use WAV, FLAC, OGG or MP3")

    @property
    def duration_s(self) -> float:
        """Seconds yielded so far; after the last block, ``load(source).duration_s``."""
        return self.samples / C.SAMPLE_RATE

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def _decoded(self) -> Iterator[np.ndarray]:
        """The file's (frames, channels) float32 blocks; decoding errors become AudioError."""
        # load's reads exactly: a compressed format's decoder (MP3's) can round the last bit of
        # a sample differently when asked for fewer frames at a time.
        blocks = self._handle.blocks(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                return
            except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
                raise self._decode_error(err) from err
            if not np.isfinite(block).all():
                raise AudioError("the recording holds NaN or infinite samples")
            yield block

    def __iter__(self) -> Iterator[np.ndarray]:
        blocks: Iterator[np.ndarray]
        if self.source_rate == C.SAMPLE_RATE:
            blocks = (b for b in self._decoded() if len(b))
        else:
            blocks = self._resampled()
        for block in blocks:
            planar = np.ascontiguousarray(block.T)
            if self.mono:
                planar = np.repeat(planar, C.N_CHANNELS, axis=0)
            self.samples += planar.shape[1]
            if self.limit_s is not None and self.duration_s > self.limit_s:
                raise RecordingTooLong(self.duration_s, self.limit_s, at_least=True)
            yield planar
        if self.samples == 0:
            raise AudioError("the recording holds no samples")

    def _resampled(self) -> Iterator[np.ndarray]:
        """(frames, channels) float32 blocks at SAMPLE_RATE, as ``librosa.resample`` makes them.

        Mono is resampled once and duplicated after (``load`` resamples two equal channels)."""
        channels = 1 if self.mono else C.N_CHANNELS
        resampler = soxr.ResampleStream(
            self.source_rate, C.SAMPLE_RATE, channels, dtype="float32", quality=RESAMPLE_QUALITY
        )
        held = np.zeros((0, channels), np.float32)  # output that might lie past librosa's length
        decoded = emitted = 0
        for block in self._decoded():
            decoded += len(block)
            out = resampler.resample_chunk(np.ascontiguousarray(block), last=False)
            held = np.concatenate([held, out]) if len(held) else out
            if len(held) > _RESAMPLE_HOLD:
                ready, held = held[:-_RESAMPLE_HOLD], held[-_RESAMPLE_HOLD:]
                emitted += len(ready)
                yield ready
        if decoded == 0:
            return
        last = resampler.resample_chunk(np.zeros((0, channels), np.float32), last=True)
        # librosa.resample's length: int(np.ceil(n * ratio)) samples, cut or padded with zeros.
        want = math.ceil(decoded * (float(C.SAMPLE_RATE) / self.source_rate)) - emitted
        if want < 0:
            raise RuntimeError(f"the resampler gave {-want} samples too many before its end")
        tail = np.concatenate([held, last])[:want]
        if len(tail) < want:
            tail = np.pad(tail, ((0, want - len(tail)), (0, 0)))
        if len(tail):
            yield tail


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
