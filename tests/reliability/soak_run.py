"""The soak run, in its own process: ``python -m tests.reliability.soak_run CHECKPOINT SECONDS``
prints one JSON object with the pipeline's counters, the sink's checks and RSS per minute of
audio. ``test_soak.py`` runs it with the deployment's environment and asserts on the result.

One synthetic encounter (3 min, ``model.synth``) is generated once and played back to back
until the requested audio has passed (generating a whole hour would take longer than the soak).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from model import constants as C
from model.classifier import Classifier
from service.audio.base import ProducerSource
from service.audio.meters import UPDATE_SAMPLES
from service.pipeline import Pipeline
from service.types import (
    CallEvent,
    ClockTick,
    LevelUpdate,
    ScoredSegment,
    SourceStatus,
    SpectrogramColumns,
)

ENCOUNTER_SECONDS = 180.0
RSS_SAMPLE_EVERY_S = 60
"""Audio (s) between RSS samples."""
MAX_BATCH = 32


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

    def on_clock(self, event: ClockTick) -> None:
        pass

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


def soak(checkpoint: Path, seconds: int, join_bound_s: float) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from model.synth import generate_encounter

    audio = generate_encounter(
        11, outcome="failure", duration_s=ENCOUNTER_SECONDS, quiet_spells=True
    ).audio
    total = seconds * C.SAMPLE_RATE
    classifier = Classifier.from_checkpoint(checkpoint, device="cpu", max_batch=MAX_BATCH)
    # Part of the warm-up: one batch of the largest size, so the allocator has seen the biggest
    # working set inference can need (batch sizes vary with how many segments are queued).
    classifier.predict(np.zeros((MAX_BATCH, C.N_CHANNELS, C.SEGMENT_SAMPLES), np.float32))
    sink = MeasuringSink()
    pipeline = Pipeline(
        [LoopedEncounter(audio, total)], classifier, sink, max_batch=MAX_BATCH, stall_after_s=30.0
    )
    started = time.monotonic()
    pipeline.start()
    try:
        drained = pipeline.join(timeout=join_bound_s)
        elapsed = time.monotonic() - started
        stats = pipeline.stats()
    finally:
        pipeline.stop()
    return {
        "drained": drained,
        "elapsed_s": round(elapsed, 1),
        "total_samples": total,
        "stats": dataclasses.asdict(stats),
        "levels": sink.levels,
        "level_gaps": sink.level_gaps,
        "calls": sink.calls,
        "segments": sink.segments,
        "bad_probabilities": sink.bad_probabilities,
        "statuses": sink.statuses,
        "rss_by_minute": sink.rss,
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
    }


if __name__ == "__main__":
    result = soak(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
    print(json.dumps(result))
