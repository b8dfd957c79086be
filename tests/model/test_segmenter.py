"""The streaming segmenter: one cutting rule, streaming == batch, early emission, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import constants as C
from model.detect import DetectorParams, detect_calls
from model.preprocessing import make_segment, piece_bounds
from model.segmenter import (
    DetectedSegment,
    RingBuffer,
    StreamingSegmenter,
    iter_segments,
    segments_from_audio,
)
from tests.streaming import blocks

SR = C.SAMPLE_RATE


def encounter(seed: int, calls: list[tuple[float, float]], seconds: float = 20.0) -> np.ndarray:
    """Stereo noise at -50 dBFS with noisy 'calls' 20-30 dB louder at the given (start_s, end_s)."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((2, int(seconds * SR))) * 10 ** (-50 / 20)
    for start_s, end_s in calls:
        s, e = int(start_s * SR), int(end_s * SR)
        gain = 10 ** (rng.uniform(-30, -20) / 20) * np.array([[1.0], [rng.uniform(0.3, 1.0)]])
        audio[:, s:e] += rng.standard_normal((2, e - s)) * gain
    return audio.astype(np.float32)


CALLS = [(1.4, 1.7), (2.5, 7.3), (8.0, 8.2), (9.0, 11.1), (12.0, 14.5), (16.0, 16.35), (18.0, 20.0)]


def feed(
    segmenter: StreamingSegmenter, audio: np.ndarray, sizes: list[int]
) -> list[DetectedSegment]:
    out: list[DetectedSegment] = []
    for block in blocks(audio, sizes):
        out += segmenter.push(block)
    return out + segmenter.flush().segments


def assert_same(got: list[DetectedSegment], want: list[DetectedSegment]) -> None:
    assert [(s.start, s.end) for s in got] == [(s.start, s.end) for s in want]
    for a, b in zip(got, want, strict=True):
        assert a.audio.dtype == np.float32 and a.audio.shape == (2, C.SEGMENT_SAMPLES)
        assert np.array_equal(a.audio, b.audio)
        assert np.array_equal(a.raw, b.raw)


def test_segments_are_detected_calls_cut_by_the_training_rule() -> None:
    audio = encounter(0, CALLS)
    calls = detect_calls(audio)
    assert len(calls) == len(CALLS)
    segments = segments_from_audio(audio)
    expected = [make_segment(audio, s, e) for call in calls for s, e in piece_bounds(*call)]
    assert [(s.start, s.end) for s in segments] == [(s.start, s.end) for s in expected]
    for got, want in zip(segments, expected, strict=True):
        assert np.array_equal(got.audio, want.audio)
        assert np.array_equal(got.raw, audio[:, got.start : got.end])
    # The long calls gave whole pieces and, where long enough, a padded tail.
    assert any(s.end - s.start == C.SEGMENT_SAMPLES for s in segments)
    assert any(s.end - s.start < C.SEGMENT_SAMPLES for s in segments)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    sizes=st.lists(st.integers(1, 50_000), min_size=1, max_size=8),
)
def test_any_block_sizes_give_the_same_segments_as_the_whole_file(
    seed: int, sizes: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    calls, t = [], rng.uniform(0.0, 1.0)
    while t < 13.0:
        length = rng.choice([0.1, 0.4, 1.9, 2.0, 2.6, 4.3])
        calls.append((t, min(t + length, 15.0)))
        t += length + rng.uniform(0.3, 2.0)
    audio = encounter(seed, calls, seconds=15.0)
    if max(sizes) < 200:  # keep tiny-block examples fast: a few seconds suffice there
        audio = audio[:, : 4 * SR]
    assert_same(feed(StreamingSegmenter(), audio, sizes), segments_from_audio(audio))


def test_whole_pieces_come_out_while_the_call_goes_on() -> None:
    audio = encounter(1, [(1.5, 9.0)], seconds=10.0)
    (call_start, _), *_ = detect_calls(audio)
    segmenter = StreamingSegmenter()
    frame = segmenter.params.frame_samples
    first_piece_end = call_start + C.SEGMENT_SAMPLES
    pushed, out = 0, []
    while not out:
        out = segmenter.push(audio[:, pushed : pushed + 512])
        pushed += 512
    assert (out[0].start, out[0].end) == (call_start, first_piece_end)
    # Out within two frames and one block of its last sample: not at the call's end.
    assert pushed - first_piece_end <= 2 * frame + 512


def test_memory_is_bounded_whatever_the_block_size() -> None:
    audio = encounter(2, [(1.0, 29.0)], seconds=30.0)
    small, big = StreamingSegmenter(), StreamingSegmenter()
    assert_same(feed(small, audio, [333]), feed(big, audio, [audio.shape[1]]))
    assert small._ring.capacity == big._ring.capacity < 4 * C.SEGMENT_SAMPLES


def test_iter_segments_matches_segments_from_audio() -> None:
    audio = encounter(3, CALLS)
    assert_same(list(iter_segments(audio, block_samples=12_345)), segments_from_audio(audio))


def test_no_call_no_segment_and_reset_restarts_the_clock() -> None:
    quiet = encounter(4, [], seconds=5.0)
    assert segments_from_audio(quiet) == []
    audio = encounter(5, [(1.5, 2.5)], seconds=4.0)
    segmenter = StreamingSegmenter(start=1_000_000)
    segments = segmenter.push(audio) + segmenter.flush().segments
    baseline = segments_from_audio(audio)
    assert [(s.start - 1_000_000, s.end - 1_000_000) for s in segments] == [
        (s.start, s.end) for s in baseline
    ]


def test_step_reports_call_boundaries_in_order() -> None:
    audio = encounter(6, [(1.5, 2.5), (3.0, 3.5)], seconds=5.0)
    segmenter = StreamingSegmenter(DetectorParams())
    kinds = []
    for pos in range(0, audio.shape[1], 4096):
        kinds += [c.kind for c in segmenter.step(audio[:, pos : pos + 4096]).calls]
    kinds += [c.kind for c in segmenter.flush().calls]
    assert kinds == ["start", "end", "start", "end"]


def test_ring_buffer_keeps_the_newest_samples() -> None:
    ring = RingBuffer(10, start=100)
    data = np.arange(2 * 25, dtype=np.float32).reshape(2, 25)
    for i in range(0, 25, 7):
        ring.write(data[:, i : i + 7])
    assert (ring.start, ring.end) == (115, 125)
    assert np.array_equal(ring.read(117, 125), data[:, 17:25])
    with pytest.raises(IndexError, match="not in the ring"):
        ring.read(110, 120)
    with pytest.raises(ValueError, match="does not fit"):
        ring.write(np.zeros((2, 11), np.float32))


def test_bad_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(2, n\)"):
        StreamingSegmenter().push(np.zeros((100, 2), np.float32))
