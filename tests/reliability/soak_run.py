"""Soak: an hour of synthetic encounter audio through the live pipeline, as fast as it goes.

Lossless replay, so nothing may be dropped: every block read, every sample covered by the
level meter, every segment cut is scored. Resident memory, measured after a warm-up, may grow
by less than 5 % over the rest of the hour.

One synthetic encounter (3 min, ``model.synth``) is generated once and played back to back
until an hour of audio has passed (generating a whole hour would take longer than the soak).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from model import constants as C
from model.classifier import Classifier
from service.audio.base import BLOCK_SAMPLES, ProducerSource
from service.audio.meters import UPDATE_SAMPLES
from service.pipeline import Pipeline
from service.types import CallEvent, LevelUpdate, ScoredSegment, SourceStatus, SpectrogramColumns
from tests.reliability.record import record

SOAK_SECONDS = 3600
ENCOUNTER_SECONDS = 180.0
WARM_UP_SECONDS = 300
"""Audio (s) after which the reference RSS is taken: model, buffers and allocator settled."""
RSS_SAMPLE_EVERY_S = 60
"""Audio (s) between RSS samples."""
MAX_RSS_GROWTH = 0.05
JOIN_BOUND_S = 1200.0
"""Upper bound for the whole hour to drain (a hang guard, not a timing assertion)."""


class LoopedEncounter(ProducerSource):
    """``audio`` played again and again until ``total`` samples have been produced."""

    kind = "synthetic"

    def __init__(self, audio: np.ndarray, total: int) -> None:
        super().__init__("soak", realtime=False)
        self.audio = audio
        self.total = total

    def check(self) -> None:
        """Nothing to check: the audio is in memory."""

    def _chunks(self) -> Iterator[np.ndarray]:
        left = self.total
        while left > 0:
            n = min(left, self.audio.shape[1])
            yield self.audio[:, :n]
            left -= n


class MeasuringSink:
    """Counts every event, checks the level meter covers the sample clock without gaps, and
    samples this process's RSS as the audio clock passes each minute (pipeline threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.levels = 0
        self.level_gaps = 0
        self.next_level_start = 0
        self.spectrogram_columns = 0
        self.calls = 0
        self.segments: list[tuple[int, int]] = []
        self.bad_probabilities = 0
        self.statuses: list[str] = []
        self.rss: dict[int, int] = {}
        self.process = psutil.Process()

    def on_level(self, event: LevelUpdate) -> None:
        with self.lock:
            if event.start != self.next_level_start:
                self.level_gaps += 1
            self.levels += 1
            self.next_level_start = event.start + UPDATE_SAMPLES
            minute = int(event.start // (C.SAMPLE_RATE * RSS_SAMPLE_EVERY_S))
            if minute not in self.rss:
                self.rss[minute] = int(self.process.memory_info().rss)

    def on_spectrogram(self, event: SpectrogramColumns) -> None:
        with self.lock:
            self.spectrogram_columns += int(event.columns.shape[0])

    def on_call(self, event: CallEvent) -> None:
        with self.lock:
            self.calls += 1

    def on_segment(self, event: ScoredSegment) -> None:
        with self.lock:
            self.segments.append((event.start, event.end))
            total = event.p_success + event.p_failure
            if not (np.isfinite(total) and abs(total - 1.0) < 1e-3):
                self.bad_probabilities += 1

    def on_source_status(self, event: SourceStatus) -> None:
        with self.lock:
            self.statuses.append(event.status)


@pytest.fixture(scope="module")
def encounter() -> np.ndarray:
    from model.synth import generate_encounter

    return generate_encounter(
        11, outcome="failure", duration_s=ENCOUNTER_SECONDS, quiet_spells=True
    ).audio


@pytest.mark.slow
def test_an_hour_of_audio_lossless_with_bounded_memory(
    encounter: np.ndarray, untrained_checkpoint: Path
) -> None:
    total = SOAK_SECONDS * C.SAMPLE_RATE
    classifier = Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=32)
    source = LoopedEncounter(encounter, total)
    sink = MeasuringSink()
    pipeline = Pipeline([source], classifier, sink, max_batch=32, stall_after_s=30.0)
    started = time.monotonic()
    pipeline.start()
    try:
        drained = pipeline.join(timeout=JOIN_BOUND_S)
        elapsed = time.monotonic() - started
        stats = pipeline.stats()
    finally:
        pipeline.stop()
    assert drained, f"the hour did not drain within {JOIN_BOUND_S} s: {pipeline.stats()}"

    src = stats["sources"]["soak"]
    inf = stats["inference"]
    # Nothing dropped anywhere, and nothing failed quietly.
    assert src["dropped_blocks"] == 0 and src["overflows"] == 0
    assert src["dropped_segments"] == 0 and inf["dropped_segments"] == 0
    assert inf["sink_errors"] == 0
    # Every sample went through: the level meter's 0.1-s stretches tile the hour without gaps.
    assert sink.level_gaps == 0
    assert sink.levels == total // UPDATE_SAMPLES
    assert src["blocks"] == -(-total // BLOCK_SAMPLES)
    # Every segment cut was scored, once, in order, with proper probabilities.
    assert len(sink.segments) == src["segments"] == inf["segments"] > 0
    assert sink.segments == sorted(sink.segments) and len(set(sink.segments)) == len(sink.segments)
    assert sink.bad_probabilities == 0
    assert all(0 <= s < e <= total for s, e in sink.segments)
    assert sink.statuses[0] == "ok" and "stalled" not in sink.statuses

    warm_minute = WARM_UP_SECONDS // RSS_SAMPLE_EVERY_S
    rss = dict(sorted(sink.rss.items()))
    warm = rss[warm_minute]
    final = rss[max(rss)]
    peak = max(v for m, v in rss.items() if m >= warm_minute)
    growth = (final - warm) / warm
    record(
        "soak",
        f"{SOAK_SECONDS} s of synthetic encounter audio, lossless, untrained CGANet on CPU",
        f"{elapsed:.0f} s wall ({SOAK_SECONDS / elapsed:.0f}x real time); {len(sink.segments)} segments,"
        f" {sink.calls} call boundaries; drops 0; RSS {warm / 2**20:.0f} -> {final / 2**20:.0f} MiB"
        f" ({growth:+.2%}), peak {peak / 2**20:.0f} MiB",
        elapsed_s=round(elapsed, 1),
        segments=len(sink.segments),
        rss_mib_by_minute={m: round(v / 2**20, 1) for m, v in rss.items()},
        inference_mean_ms=inf["mean_ms"],
    )
    assert growth < MAX_RSS_GROWTH, {m: round(v / 2**20, 1) for m, v in rss.items()}
