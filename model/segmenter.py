"""Detected calls -> 2-s segments, streaming, cut exactly as training cuts annotated calls.

``StreamingSegmenter`` runs the energy detector over blocks of any size and keeps only the
audio it may still have to cut in a ring buffer (bounded memory, whatever the block size). A
call [start, end) becomes the pieces ``model.preprocessing.piece_bounds(start, end)``, each
normalised as ``make_segment`` does; a whole 2-s piece is emitted as soon as the detector knows
the call lasts past it, the remainder when the call ends. ``segments_from_audio`` feeds a whole
recording through the same object, so offline and live segments are bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from model import constants as C
from model.detect import CallBoundary, DetectorParams, EnergyDetector, check_block
from model.preprocessing import Segment, fit_length, normalise_peak, piece_bounds

CHUNK_SAMPLES = 8192
"""Pushed blocks are processed in pieces of at most this many samples, so the ring buffer's
size does not depend on the caller's block size."""


@dataclass(frozen=True)
class DetectedSegment(Segment):
    """A ``Segment`` cut from a detected call, with the audio as captured.

    ``raw`` : np.ndarray, shape (2, end - start), float32: the source audio of [start, end),
    neither normalised nor padded (what a clip stores).
    """

    raw: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class SegmenterStep:
    """What one ``push`` produced: the call boundaries and the segments, each in order."""

    calls: list[CallBoundary]
    segments: list[DetectedSegment]


class RingBuffer:
    """The last ``capacity`` samples of a (channels, endless) float32 stream, addressed by
    absolute sample index. Written by one thread and read by the same one."""

    def __init__(self, capacity: int, *, channels: int = C.N_CHANNELS, start: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"ring capacity must be positive, got {capacity}")
        self._data = np.zeros((channels, capacity), dtype=np.float32)
        self.capacity = capacity
        self.start = start
        """Absolute index of the oldest sample still held."""
        self.end = start
        """Absolute index one past the newest sample written."""

    def write(self, block: np.ndarray) -> None:
        """Append (channels, n <= capacity) audio, overwriting the oldest samples."""
        n = block.shape[1]
        if n > self.capacity:
            raise ValueError(f"a block of {n} samples does not fit a ring of {self.capacity}")
        pos = self.end % self.capacity
        first = min(n, self.capacity - pos)
        self._data[:, pos : pos + first] = block[:, :first]
        self._data[:, : n - first] = block[:, first:]
        self.end += n
        self.start = max(self.start, self.end - self.capacity)

    def read(self, start: int, end: int) -> np.ndarray:
        """A copy of samples [start, end), (channels, end - start) float32."""
        if not self.start <= start <= end <= self.end:
            raise IndexError(
                f"samples [{start}, {end}) are not in the ring (it holds [{self.start}, {self.end}))"
            )
        pos = start % self.capacity
        n = end - start
        if pos + n <= self.capacity:
            return self._data[:, pos : pos + n].copy()
        return np.concatenate(
            [self._data[:, pos:], self._data[:, : n - (self.capacity - pos)]], axis=1
        )


class StreamingSegmenter:
    """Energy detector + cutting into 2-s segments, over (2, n) float32 blocks of any size.

    ``push`` returns the segments completed by a block; ``step`` also returns the detector's
    call boundaries. Segment sample indices are absolute (counted from ``reset(start)``).
    """

    def __init__(self, params: DetectorParams | None = None, *, start: int = 0) -> None:
        self.params = params or DetectorParams()
        self.reset(start)

    def reset(self, start: int = 0) -> None:
        """Forget everything; the next pushed sample has absolute index ``start``."""
        self._detector = EnergyDetector(self.params, start=start)
        history = C.SEGMENT_SAMPLES + self.params.max_delay_samples + CHUNK_SAMPLES
        self._ring = RingBuffer(history, start=start)
        self._call_start: int | None = None  # onset of the reported call that is on
        self._next_piece = 0  # first sample of that call not yet emitted as a segment

    @property
    def position(self) -> int:
        """Absolute index of the next sample ``push`` expects."""
        return self._ring.end

    @property
    def detector(self) -> EnergyDetector:
        return self._detector

    def push(self, block: np.ndarray) -> list[DetectedSegment]:
        """Feed (2, n) float32 audio; return the segments it completed, in order."""
        return self.step(block).segments

    def step(self, block: np.ndarray) -> SegmenterStep:
        """Feed (2, n) float32 audio; return the call boundaries and segments it completed."""
        calls: list[CallBoundary] = []
        segments: list[DetectedSegment] = []
        block = check_block(block)
        for i in range(0, block.shape[1], CHUNK_SAMPLES):
            chunk = block[:, i : i + CHUNK_SAMPLES]
            events = self._detector.push(chunk)
            self._ring.write(chunk)
            self._handle(events, segments)
            calls.extend(events)
            extent = self._detector.call_extent
            if extent is not None and self._call_start is not None:
                while extent[1] - self._next_piece >= C.SEGMENT_SAMPLES:
                    segments.append(
                        self._cut(self._next_piece, self._next_piece + C.SEGMENT_SAMPLES)
                    )
                    self._next_piece += C.SEGMENT_SAMPLES
        return SegmenterStep(calls, segments)

    def flush(self) -> SegmenterStep:
        """End of stream: close the call that is on and return its last segments."""
        events = self._detector.flush()
        segments: list[DetectedSegment] = []
        self._handle(events, segments)
        return SegmenterStep(events, segments)

    def skip_to(self, position: int) -> SegmenterStep:
        """Audio resumes at ``position`` after a gap: close the call in progress (its last
        segments are returned) and go on from there with the same noise floor."""
        events = self._detector.skip_to(position)
        segments: list[DetectedSegment] = []
        self._handle(events, segments)
        self._ring = RingBuffer(self._ring.capacity, start=position)
        return SegmenterStep(events, segments)

    def _handle(self, events: list[CallBoundary], segments: list[DetectedSegment]) -> None:
        for event in events:
            if event.kind == "start":
                self._call_start = self._next_piece = event.sample
            elif self._call_start is not None:
                for start, end in piece_bounds(self._call_start, event.sample):
                    if start >= self._next_piece:
                        segments.append(self._cut(start, end))
                self._call_start = None

    def _cut(self, start: int, end: int) -> DetectedSegment:
        raw = self._ring.read(start, end)
        # The same two steps as preprocessing.make_segment, on the same samples.
        return DetectedSegment(start=start, end=end, audio=normalise_peak(fit_length(raw)), raw=raw)


def stream_segments(
    blocks: Iterable[np.ndarray], params: DetectorParams | None = None
) -> Iterator[DetectedSegment]:
    """Segments of a stream of (2, n) float32 blocks, yielded as they are cut, the last ones
    once the stream ends (bounded memory: a decoder, a file in pieces)."""
    segmenter = StreamingSegmenter(params)
    for block in blocks:
        yield from segmenter.push(block)
    yield from segmenter.flush().segments


def iter_segments(
    audio: np.ndarray,
    params: DetectorParams | None = None,
    *,
    block_samples: int = C.SAMPLE_RATE * 10,
) -> Iterator[DetectedSegment]:
    """Segments of a whole (2, n) float32 recording, yielded as they are cut (bounded memory)."""
    blocks = (audio[:, i : i + block_samples] for i in range(0, audio.shape[1], block_samples))
    return stream_segments(blocks, params)


def segments_from_audio(
    audio: np.ndarray, params: DetectorParams | None = None
) -> list[DetectedSegment]:
    """All segments of a whole recording: the streaming segmenter fed the file at once.

    Parameters
    ----------
    audio : np.ndarray, shape (2, n), float32, at SAMPLE_RATE

    Returns
    -------
    list of DetectedSegment, in time order; empty when no call was found
    """
    segmenter = StreamingSegmenter(params)
    return segmenter.push(audio) + segmenter.flush().segments
