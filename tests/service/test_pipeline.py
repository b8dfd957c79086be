"""The live pipeline: streaming == batch end to end, counted drops, watchdog, gaps, sink faults."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import constants as C
from model.classifier import Classifier
from model.errors import AudioError
from model.predict import analyse
from model.preprocessing import load, stack
from model.segmenter import segments_from_audio
from service.audio import ReplaySource
from service.audio.base import ProducerSource
from service.pipeline import Pipeline
from service.types import (
    AudioBlock,
    CallEvent,
    ClockTick,
    LevelUpdate,
    ScoredSegment,
    SourceStatus,
    SpectrogramColumns,
)

SR = C.SAMPLE_RATE


class RecordingSink:
    """An EventSink that keeps everything (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.levels: list[LevelUpdate] = []
        self.columns: list[SpectrogramColumns] = []
        self.calls: list[CallEvent] = []
        self.segments: list[ScoredSegment] = []
        self.statuses: list[SourceStatus] = []
        self.clock: list[ClockTick] = []

    def on_clock(self, event: ClockTick) -> None:
        with self.lock:
            self.clock.append(event)

    def on_level(self, event: LevelUpdate) -> None:
        with self.lock:
            self.levels.append(event)

    def on_spectrogram(self, event: SpectrogramColumns) -> None:
        with self.lock:
            self.columns.append(event)

    def on_call(self, event: CallEvent) -> None:
        with self.lock:
            self.calls.append(event)

    def on_segment(self, event: ScoredSegment) -> None:
        with self.lock:
            self.segments.append(event)

    def on_source_status(self, event: SourceStatus) -> None:
        with self.lock:
            self.statuses.append(event)

    def status_kinds(self, source_id: str) -> list[str]:
        with self.lock:
            return [s.status for s in self.statuses if s.source_id == source_id]


def calls_recording(seed: int, seconds: float = 14.0) -> np.ndarray:
    """(2, n) float32: noise at -50 dBFS with calls of assorted lengths, 20-30 dB louder."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((2, int(seconds * SR))) * 10 ** (-50 / 20)
    t = rng.uniform(1.2, 2.0)
    while t < seconds - 0.5:
        length = float(rng.choice([0.2, 0.7, 2.3, 4.4]))
        s, e = int(t * SR), int(min(t + length, seconds) * SR)
        tone = np.sin(2 * np.pi * rng.uniform(200, 900) * np.arange(e - s) / SR)
        audio[:, s:e] += tone * 10 ** (rng.uniform(-30, -20) / 20) * np.array([[1.0], [0.6]])
        t += length + rng.uniform(0.5, 1.5)
    return audio.astype(np.float32)


@pytest.fixture(scope="module")
def classifier(untrained_checkpoint: Path) -> Classifier:
    return Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=8)


@pytest.fixture(scope="module")
def recording_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "calls.wav"
    sf.write(path, calls_recording(7).T, SR, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def predict_answer(
    recording_file: Path, untrained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """What the service's ``POST /predict`` answers for ``recording_file``."""
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.config import load_settings

    settings = load_settings(
        environ={},
        overrides={
            "sources": [
                {"id": "idle", "kind": "file", "path": str(recording_file), "realtime": False}
            ],
            # The precision this test's own classifier runs (auto may choose bf16).
            "inference": {"model": str(untrained_checkpoint), "device": "cpu", "precision": "fp32"},
            "storage": {"data_dir": str(tmp_path_factory.mktemp("predict-data"))},
        },
    )
    with TestClient(create_app(settings)) as client:
        r = client.post("/predict", files={"file": ("calls.wav", recording_file.read_bytes())})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def run_replay(
    path: Path, classifier: Classifier, sizes: list[int], **kwargs: Any
) -> RecordingSink:
    sink = RecordingSink()
    source = ReplaySource("enc", path, realtime=False, block_samples=sizes)
    with Pipeline([source], classifier, sink, **kwargs) as pipeline:
        assert pipeline.join(timeout=120), "the replay did not finish"
    return sink


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 20_000), min_size=1, max_size=5), max_batch=st.integers(1, 8))
def test_streaming_equals_batch(
    classifier: Classifier,
    recording_file: Path,
    predict_answer: dict[str, Any],
    sizes: list[int],
    max_batch: int,
) -> None:
    if max(sizes) < 300:
        sizes = [s + 300 for s in sizes]  # tiny blocks only slow the test down here
    sink = run_replay(recording_file, classifier, sizes, max_batch=max_batch)
    recording = load(recording_file)
    offline = analyse(recording, classifier)
    live = sorted(sink.segments, key=lambda s: s.start)
    assert len(live) == len(offline["segments"]) >= 5
    # The service's /predict answers as analyse does, so the live segments match it too
    # (to rounding: its batches differ from this classifier's).
    assert len(predict_answer["segments"]) == len(offline["segments"])
    for served, want in zip(predict_answer["segments"], offline["segments"], strict=True):
        assert (served["start_s"], served["end_s"]) == (want["start_s"], want["end_s"])
        assert served["p_success"] == pytest.approx(want["p_success"], abs=2e-4)
        assert np.allclose(served["attention"], want["attention"], atol=2e-4)
    for got, want in zip(live, offline["segments"], strict=True):
        assert round(got.start / SR, 3) == want["start_s"]
        assert round(got.end / SR, 3) == want["end_s"]
        assert got.p_success == pytest.approx(want["p_success"], abs=1e-4)
        assert got.p_failure == pytest.approx(want["p_failure"], abs=1e-4)
        assert np.allclose(got.attention, want["attention"], atol=1e-4)
    # Bit-identical audio: the clip is the recording's samples, the model saw the same segment.
    expected = segments_from_audio(recording.audio)
    for got, seg in zip(live, expected, strict=True):
        assert (got.start, got.end) == (seg.start, seg.end)
        assert np.array_equal(got.audio, recording.audio[:, seg.start : seg.end])
    direct = classifier.predict(stack(expected))
    assert np.allclose([s.p_success for s in live], direct.p_success, atol=1e-6)


def test_events_reach_the_sink_with_their_fields(
    classifier: Classifier, recording_file: Path
) -> None:
    sink = run_replay(recording_file, classifier, [1024])
    n = load(recording_file).audio.shape[1]
    # ~10 level and spectrogram events per second, contiguous on the sample clock.
    assert [lv.start for lv in sink.levels] == [i * SR // 10 for i in range(n // (SR // 10))]
    assert all(len(lv.rms_db) == 2 and lv.peak_db[0] >= lv.rms_db[0] for lv in sink.levels)
    cols = np.concatenate([c.columns for c in sink.columns])
    assert cols.dtype == np.uint8 and cols.shape[1] == 64 and len(sink.columns) >= n / SR * 9
    # Calls alternate start/end and every segment lies inside a call.
    kinds = [c.kind for c in sink.calls]
    assert kinds == ["start", "end"] * (len(kinds) // 2)
    calls = list(zip(sink.calls[::2], sink.calls[1::2], strict=True))
    for seg in sink.segments:
        assert seg.source_id == "enc"
        assert any(s.sample <= seg.start < seg.end <= e.sample for s, e in calls)
        assert seg.audio.shape == (2, seg.end - seg.start) and seg.audio.dtype == np.float32
        assert seg.attention.shape == (C.N_FRAMES,)
        assert seg.p_success + seg.p_failure == pytest.approx(1.0, abs=1e-5)
        assert -60 < seg.levels_db[0] < 0 and seg.processing_ms > 0 and seg.ready_at > 0
        assert seg.model_version == classifier.version
    assert sink.status_kinds("enc") == ["ok", "stopped"]


def test_a_source_nobody_watches_produces_no_spectrogram(
    classifier: Classifier, recording_file: Path
) -> None:
    watched = run_replay(recording_file, classifier, [4096])
    unwatched = run_replay(recording_file, classifier, [4096], watched=lambda source: False)
    assert watched.columns and watched.levels
    assert unwatched.columns == [] and unwatched.levels == []
    # Everything else is unchanged: the clock (it closes silent encounters), calls, scores.
    n = load(recording_file).audio.shape[1]
    ticks = [t.sample for t in unwatched.clock]
    assert ticks == [t.sample for t in watched.clock] and len(ticks) == -(-n // SR)
    assert all(b - a >= SR for a, b in itertools.pairwise(ticks))
    assert [(c.kind, c.sample) for c in unwatched.calls] == [
        (c.kind, c.sample) for c in watched.calls
    ]
    # The same segments, scored alike (to float rounding: batches form by timing, as in
    # test_streaming_equals_batch).
    got = sorted(unwatched.segments, key=lambda s: s.start)
    want = sorted(watched.segments, key=lambda s: s.start)
    assert [s.start for s in got] == [s.start for s in want] and got
    for g, w in zip(got, want, strict=True):
        assert g.p_success == pytest.approx(w.p_success, abs=1e-4)


def test_a_source_watched_from_the_middle_starts_its_spectrogram_there(
    classifier: Classifier, recording_file: Path
) -> None:
    n = load(recording_file).audio.shape[1]
    later = n // 2
    seen: list[int] = []

    def watched_from_half(source: str) -> bool:
        # Called once per block, from the lane's thread: say yes from the middle on.
        seen.append(len(seen))
        return len(seen) * 4096 > later

    sink = run_replay(recording_file, classifier, [4096], watched=watched_from_half)
    starts = [c.start for c in sink.columns]
    assert starts and starts[0] >= later - 4096 and starts == sorted(starts)
    cols = np.concatenate([c.columns for c in sink.columns])
    assert cols.shape[1] == 64


class GatedSource(ProducerSource):
    """A live source whose audio pauses while ``gate`` is clear (a stand-in for a lost card)."""

    kind = "test"

    def __init__(
        self, source_id: str, audio: np.ndarray, gate: threading.Event, **kwargs: Any
    ) -> None:
        super().__init__(source_id, realtime=False, **kwargs)
        self.audio = audio
        self.gate = gate

    def check(self) -> None:
        return None

    def _chunks(self) -> Iterator[np.ndarray]:
        for i in range(0, self.audio.shape[1], 4410):
            while not self.gate.wait(0.05):
                if self._stopping.is_set():
                    return
            yield self.audio[:, i : i + 4410]


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_watchdog_reports_a_stall_and_the_recovery(classifier: Classifier) -> None:
    gate = threading.Event()
    gate.set()
    sink = RecordingSink()
    source = GatedSource("pen", calls_recording(1, seconds=30.0), gate)
    with Pipeline([source], classifier, sink, stall_after_s=0.3) as pipeline:
        wait_for(lambda: source.stats().blocks > 10)
        gate.clear()
        wait_for(lambda: "stalled" in sink.status_kinds("pen"))
        assert pipeline.stats().sources["pen"].status == "stalled"
        gate.set()
        wait_for(lambda: sink.status_kinds("pen")[-1] == "ok")
    assert sink.status_kinds("pen")[:3] == ["ok", "stalled", "ok"]
    assert sink.status_kinds("pen")[-1] == "stopped"
    stalled = next(s for s in sink.statuses if s.status == "stalled")
    assert "no audio for" in stalled.detail


class JumpySource(ProducerSource):
    """Delivers a recording losslessly, its sample clock jumping ``gap`` samples at sample
    ``at`` (a block boundary): what a device source reports after an outage."""

    kind = "test"

    def __init__(self, source_id: str, audio: np.ndarray, at: int, gap: int) -> None:
        super().__init__(source_id, realtime=False, block_samples=2048)
        self.audio, self.at, self.gap = audio, at, gap

    def check(self) -> None:
        return None

    def _chunks(self) -> Iterator[np.ndarray]:
        yield self.audio

    def _to_block(self, item: AudioBlock) -> AudioBlock:
        return replace(item, start=item.start + self.gap) if item.start >= self.at else item


def test_a_gap_in_the_audio_ends_the_call_in_progress(classifier: Classifier) -> None:
    audio = np.zeros((2, 6 * SR), np.float32)
    rng = np.random.default_rng(0)
    audio += (rng.standard_normal(audio.shape) * 1e-3).astype(np.float32)
    audio[:, 2 * SR : 5 * SR] += (rng.standard_normal((2, 3 * SR)) * 0.05).astype(np.float32)
    at = 3 * SR - (3 * SR) % 2048  # the outage falls inside the call
    source = JumpySource("gap", audio, at=at, gap=10 * SR)
    sink = RecordingSink()
    with Pipeline([source], classifier, sink) as pipeline:
        assert pipeline.join(timeout=60)
    kinds = [(c.kind, c.sample) for c in sink.calls]
    assert [k for k, _ in kinds] == ["start", "end", "start", "end"]
    assert kinds[1][1] <= at < at + 10 * SR <= kinds[2][1]
    assert all(s.end <= at or s.start >= at + 10 * SR for s in sink.segments)


class FailingSink(RecordingSink):
    def on_clock(self, event: ClockTick) -> None:
        pass

    def on_level(self, event: LevelUpdate) -> None:
        raise RuntimeError("the sink is broken")


def test_a_failing_sink_does_not_stop_the_pipeline(
    classifier: Classifier, recording_file: Path
) -> None:
    sink = FailingSink()
    source = ReplaySource("enc", recording_file, realtime=False)
    with Pipeline([source], classifier, sink) as pipeline:
        assert pipeline.join(timeout=120)
        stats = pipeline.stats()
    assert sink.segments and stats.inference.sink_errors > 0


def test_live_drops_and_overruns_are_counted(
    untrained_checkpoint: Path, recording_file: Path
) -> None:
    slow = Classifier.from_checkpoint(untrained_checkpoint, device="cpu")
    real_predict = slow.predict

    def predict(batch: np.ndarray) -> Any:
        time.sleep(0.4)  # far slower than the segments arrive
        return real_predict(batch)

    slow.predict = predict  # type: ignore[method-assign]
    sink = RecordingSink()
    sources = [ReplaySource(f"s{i}", recording_file, realtime=False) for i in range(3)]
    for source in sources:
        source.lossless = False  # deliver as fast as possible, but drop like a live source
    with Pipeline(
        sources, slow, sink, max_batch=1, queue_segments=2, overrun_after_s=0.5
    ) as pipeline:
        pipeline.join(timeout=60)
        stats = pipeline.stats()
    assert stats.inference.dropped_segments > 0
    assert stats.inference.overruns > 0
    scored = stats.inference.segments
    assert scored == len(sink.segments) > 0
    assert scored + stats.inference.dropped_segments == sum(
        s.segments + s.dropped_segments for s in stats.sources.values()
    )


def test_bad_construction_is_refused(classifier: Classifier, recording_file: Path) -> None:
    with pytest.raises(ValueError, match="at least one source"):
        Pipeline([], classifier, RecordingSink())
    twins = [ReplaySource("a", recording_file), ReplaySource("a", recording_file)]
    with pytest.raises(ValueError, match="distinct"):
        Pipeline(twins, classifier, RecordingSink())


def test_a_failed_start_leaves_nothing_running(
    classifier: Classifier, recording_file: Path, tmp_path: Path
) -> None:
    good = ReplaySource("good", recording_file, realtime=True)
    bad = ReplaySource("bad", tmp_path / "missing.wav")
    pipeline = Pipeline([good, bad], classifier, RecordingSink())
    with pytest.raises(AudioError, match="cannot decode"):
        pipeline.start()
    assert good._thread is None  # stopped again
    assert not pipeline.running


class BrokenSource(GatedSource):
    """Delivers a malformed block (a source bug): the lane must report it, not vanish."""

    def _to_block(self, item: AudioBlock) -> AudioBlock:
        block = super()._to_block(item)
        return replace(block, audio=np.zeros((3, 100), np.float32)) if block.start > 0 else block


def test_a_lane_that_fails_is_reported_stalled_with_the_cause(classifier: Classifier) -> None:
    gate = threading.Event()
    gate.set()
    sink = RecordingSink()
    source = BrokenSource("bug", calls_recording(2, seconds=2.0), gate)
    with Pipeline([source], classifier, sink, stall_after_s=0.3) as pipeline:
        wait_for(lambda: "stalled" in sink.status_kinds("bug"))
        stats = pipeline.stats()
    assert "pipeline thread failed" in (stats.sources["bug"].pipeline_error or "")
    stalled = next(s for s in sink.statuses if s.status == "stalled")
    assert "ValueError" in stalled.detail
