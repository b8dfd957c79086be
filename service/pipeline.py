"""The live pipeline: audio sources -> detector and segmenter -> one batched inference worker.

Threads and what each owns
--------------------------
- **source thread** (one per source, ``pipeline-<id>``): reads blocks from its source and owns
  that source's ``StreamingSegmenter``, level meter, spectrogram stage and block-time history.
  It hands a clock tick each second of audio, call boundaries and (only while someone watches
  the source: ``watched``) levels and spectrogram columns straight to the sink, and queues
  each segment for inference. It writes ``_Lane.last_audio`` (a float; the watchdog reads it).
- **inference worker** (``pipeline-inference``): owns the classifier. It takes up to
  ``max_batch`` queued segments from all sources, scores them in one forward pass, and hands
  each ``ScoredSegment`` to the sink. It owns the inference counters.

Model swap: ``swap(classifier)`` and ``set_shadow(classifier)`` replace a reference that the
worker reads once at the start of each batch, so a batch is scored whole by one model and the
new one takes over at the next batch. The caller loads and warms the new ``Classifier`` on its
own thread first; sources keep running throughout. A shadow model scores the same batch after
the active one; its scores ride along in ``ScoredSegment.shadow`` and a failure of the shadow
never costs the active scores.
- **watchdog** (``pipeline-watchdog``): owns each lane's ``status``; reports ``stalled`` when a
  source delivered no audio for ``stall_after_s`` and ``ok`` when audio is back, ``stopped``
  when a file ends or the pipeline stops.

The segment queue is bounded. A live source never waits for inference: when the queue is full
the segment is dropped and counted (``dropped_segments``). A lossless source (file replay or
synthetic audio as fast as consumed) waits instead, so every segment is scored. An *overrun*
is a batch whose oldest segment waited longer than ``overrun_after_s`` (one segment's duration
by default) between being cut and being scored: inference did not keep up with real time.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model import constants as C
from model.classifier import Classifier
from model.detect import DetectorParams
from model.preprocessing import stack
from model.segmenter import DetectedSegment, SegmenterStep, StreamingSegmenter
from service.audio.base import AudioSource
from service.audio.meters import LevelMeter, SpectrogramStage, to_db
from service.types import (
    AudioBlock,
    CallEvent,
    ClockTick,
    EventSink,
    InferenceCounters,
    LaneCounters,
    PipelineCounters,
    ScoredSegment,
    ShadowScore,
    SourceState,
    SourceStatus,
)

log = logging.getLogger(__name__)

QUEUE_SEGMENTS = 256
"""Segments waiting for inference (all sources together) before live sources drop."""
READ_TIMEOUT_S = 0.1
"""How long a source thread waits for a block before checking whether to stop (s)."""
CLOCK_SAMPLES = C.SAMPLE_RATE
"""Audio between two clock ticks of a source (1 s)."""
LATENCY_WINDOW = 1000
"""Batches over which the mean and 95th-percentile processing times are computed."""


@dataclass
class _Job:
    """A segment waiting for inference (created by a source thread, consumed by the worker)."""

    source_id: str
    segment: DetectedSegment
    ready_at: float
    queued_at: float


@dataclass
class _Lane:
    """One source and its per-source stages (see the module docstring for ownership)."""

    source: AudioSource
    segmenter: StreamingSegmenter
    levels: LevelMeter
    spectrogram: SpectrogramStage
    thread: threading.Thread | None = None
    last_audio: float = 0.0
    status: SourceState = "ok"
    displayed: bool = True
    """Its level meter and spectrogram have been fed every block so far (watched throughout)."""
    next_clock: int = 0
    """Sample at or after which the next ``ClockTick`` is due."""
    finished: bool = False
    error: str | None = None
    segments: int = 0
    dropped_segments: int = 0
    block_ends: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=4096))


class Pipeline:
    """Runs sources through detection, segmentation and batched inference into an EventSink.

    Parameters
    ----------
    sources : the audio sources (distinct ``source_id``); started and stopped by the pipeline
    classifier : the model, shared by every source through one worker thread
    sink : receives every event (from the pipeline's threads; see ``service.types.EventSink``)
    detector : energy detector settings (the defaults when None)
    max_batch : most segments scored in one forward pass
    stall_after_s : a source without audio for this long is reported ``stalled`` (s)
    overrun_after_s : a segment waiting longer than this to be scored counts an overrun (s)
    queue_segments : capacity of the segment queue
    watched : ``watched(source_id)`` says whether anyone displays that source; its level meter
        and spectrogram run only then (None: always)
    tap : receives every block as read, on its source thread, before detection (the service's
        whole-encounter audio, ``service.encounter_audio``); it must not wait
    """

    def __init__(
        self,
        sources: Sequence[AudioSource],
        classifier: Classifier,
        sink: EventSink,
        *,
        detector: DetectorParams | None = None,
        max_batch: int = 32,
        stall_after_s: float = 5.0,
        overrun_after_s: float = float(C.SEGMENT_SECONDS),
        queue_segments: int = QUEUE_SEGMENTS,
        watched: Callable[[str], bool] | None = None,
        tap: Callable[[AudioBlock], None] | None = None,
    ) -> None:
        ids = [s.source_id for s in sources]
        if not ids:
            raise ValueError("a pipeline needs at least one source")
        if len(set(ids)) != len(ids):
            raise ValueError(f"source ids must be distinct, got {ids}")
        if max_batch < 1 or stall_after_s <= 0 or queue_segments < 1:
            raise ValueError("max_batch and queue_segments must be >= 1 and stall_after_s > 0")
        self.classifier = classifier
        self.sink = sink
        self.detector = detector or DetectorParams()
        self.max_batch = max_batch
        self.stall_after_s = stall_after_s
        self.overrun_after_s = overrun_after_s
        self._watched = watched
        self._tap = tap
        self.tap_errors = 0
        self._lanes = {
            s.source_id: _Lane(
                s,
                StreamingSegmenter(self.detector),
                LevelMeter(s.source_id),
                SpectrogramStage(s.source_id),
            )
            for s in sources
        }
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=queue_segments)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at: float | None = None
        # Segments queued but not yet handed to the sink (guarded by _idle).
        self._idle = threading.Condition()
        self._pending = 0
        self._shadow: Classifier | None = None
        # Owned by the inference worker (read by stats()):
        self._segments = 0
        self._batches = 0
        self._overruns = 0
        self._batch_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._sink_errors = 0
        self.shadow_errors = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def sources(self) -> dict[str, AudioSource]:
        return {sid: lane.source for sid, lane in self._lanes.items()}

    @property
    def running(self) -> bool:
        return self._started_at is not None and not self._stopping.is_set()

    def start(self) -> None:
        """Start every source and the pipeline's threads."""
        if self._started_at is not None:
            raise RuntimeError("a pipeline starts once; build a new one to start again")
        self._started_at = time.monotonic()
        worker = threading.Thread(
            target=self._inference_loop, name="pipeline-inference", daemon=True
        )
        watchdog = threading.Thread(
            target=self._watchdog_loop, name="pipeline-watchdog", daemon=True
        )
        started: list[AudioSource] = []
        for sid, lane in self._lanes.items():
            try:
                lane.source.start()
            except Exception:
                for source in started:  # leave nothing running behind a failed start
                    source.stop()
                self._started_at = None
                raise
            started.append(lane.source)
            lane.last_audio = time.monotonic()
            self._emit_status(lane, "ok", "started")
            lane.thread = threading.Thread(
                target=self._source_loop, args=(lane,), name=f"pipeline-{sid}", daemon=True
            )
        self._threads = [lane.thread for lane in self._lanes.values() if lane.thread] + [
            worker,
            watchdog,
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sources and threads; segments already queued are scored first. Idempotent."""
        if self._started_at is None or self._stopping.is_set():
            return
        self._stopping.set()
        for lane in self._lanes.values():
            lane.source.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("pipeline: thread %s did not stop within %g s", thread.name, timeout)
        for lane in self._lanes.values():
            if lane.status != "stopped":
                self._emit_status(lane, "stopped", "pipeline stopped")

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every source has finished (files played to the end) and all their
        segments reached the sink. True when that happened within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for lane in self._lanes.values():
            if lane.thread is None:
                return False
            lane.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if lane.thread.is_alive():
                return False
        with self._idle:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            return self._idle.wait_for(lambda: self._pending == 0, timeout=remaining)

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- source threads ------------------------------------------------------------------------------

    def _source_loop(self, lane: _Lane) -> None:
        try:
            self._run_lane(lane)
        except Exception as err:  # a bug must not kill the thread silently: say so, stall
            lane.error = f"pipeline thread failed: {type(err).__name__}: {err}"
            log.exception("pipeline: source %s stopped processing", lane.source.source_id)

    def _run_lane(self, lane: _Lane) -> None:
        source = lane.source
        while not self._stopping.is_set():
            block = source.read(timeout=READ_TIMEOUT_S)
            if block is None:
                if source.finished:
                    self._close_calls(lane)
                    lane.finished = True
                    return
                continue
            lane.last_audio = time.monotonic()
            if block.start > lane.segmenter.position:
                # Audio is missing (a device outage): end the call in progress and go on from
                # the new position (the detector keeps its noise floor).
                self._publish(lane, lane.segmenter.skip_to(block.start))
                lane.levels.reset(block.start)
                lane.spectrogram.reset(block.start)
            lane.block_ends.append((block.end, block.captured_at))
            self._tap_block(block)
            step = lane.segmenter.step(block.audio)
            if self._watched is None or self._watched(lane.source.source_id):
                if not lane.displayed:  # nobody watched until now: start from this block
                    lane.levels.reset(block.start)
                    lane.spectrogram.reset(block.start)
                    lane.displayed = True
                for level in lane.levels.push(block.audio):
                    self._deliver("on_level", level)
                for columns in lane.spectrogram.push(block.audio):
                    self._deliver("on_spectrogram", columns)
            else:
                lane.displayed = False
            if block.end >= lane.next_clock:
                self._deliver("on_clock", ClockTick(lane.source.source_id, block.end))
                lane.next_clock = block.end + CLOCK_SAMPLES
            self._publish(lane, step)
        # Stopping: what was cut so far is still scored.
        self._close_calls(lane)

    def _tap_block(self, block: AudioBlock) -> None:
        tap = self._tap
        if tap is None:
            return
        try:
            tap(block)
        except Exception:  # keeping audio must never stop the detector
            self.tap_errors += 1
            if self.tap_errors <= 10 or self.tap_errors % 1000 == 0:
                log.exception("pipeline: the audio tap failed (%d failures)", self.tap_errors)

    def _close_calls(self, lane: _Lane) -> None:
        self._publish(lane, lane.segmenter.flush())

    def _publish(self, lane: _Lane, step: SegmenterStep) -> None:
        sid = lane.source.source_id
        for boundary in step.calls:
            self._deliver("on_call", CallEvent(sid, boundary.kind, boundary.sample))
        for segment in step.segments:
            self._enqueue(lane, segment)

    def _ready_at(self, lane: _Lane, end: int) -> float:
        """When the block holding sample ``end - 1`` entered the source (monotonic s)."""
        ends = lane.block_ends
        i = bisect.bisect_left(ends, end, key=lambda item: item[0])
        return ends[min(i, len(ends) - 1)][1] if ends else time.monotonic()

    def _enqueue(self, lane: _Lane, segment: DetectedSegment) -> None:
        job = _Job(
            lane.source.source_id, segment, self._ready_at(lane, segment.end), time.monotonic()
        )
        with self._idle:
            self._pending += 1
        if lane.source.lossless:
            # The worker outlives every source thread, so this wait always ends.
            self._queue.put(job)
        else:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                lane.dropped_segments += 1
                self._done(1)
                if lane.dropped_segments <= 10 or lane.dropped_segments % 100 == 0:  # rate-limited
                    log.warning(
                        "pipeline: inference queue full, %s has dropped %d segments",
                        lane.source.source_id,
                        lane.dropped_segments,
                    )
                return
        lane.segments += 1

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            if self._pending == 0:
                self._idle.notify_all()

    # -- inference worker ------------------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=READ_TIMEOUT_S)
            except queue.Empty:
                if self._stopping.is_set() and not any(
                    lane.thread is not None and lane.thread.is_alive()
                    for lane in self._lanes.values()
                ):
                    return
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._score(batch)
            except Exception:  # a failing batch must not end live inference
                log.exception("pipeline: scoring a batch of %d segments failed", len(batch))
            finally:
                self._done(len(batch))

    # -- model swap (any thread) ------------------------------------------------------------------

    @property
    def shadow(self) -> Classifier | None:
        return self._shadow

    def swap(self, classifier: Classifier) -> Classifier:
        """Score from the next batch on with ``classifier`` (loaded and warmed by the caller);
        returns the model it replaces. The batch in progress finishes with the old one."""
        old, self.classifier = self.classifier, classifier
        return old

    def set_shadow(self, classifier: Classifier | None) -> Classifier | None:
        """Run ``classifier`` beside the active model from the next batch on (None: stop);
        returns the shadow it replaces."""
        old, self._shadow = self._shadow, classifier
        return old

    def _score(self, batch: list[_Job]) -> None:
        # One read of each reference per batch: a swap takes effect at the next batch.
        classifier = self.classifier
        shadow_model = self._shadow
        t0 = time.perf_counter()
        segments = stack([job.segment for job in batch])
        prediction = classifier.predict(segments)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        shadows: list[ShadowScore | None] = [None] * len(batch)
        if shadow_model is not None:
            try:
                other = shadow_model.predict(segments)
            except Exception:  # the shadow is on trial: its failure costs nothing live
                self.shadow_errors += 1
                log.exception("pipeline: shadow model %s failed a batch", shadow_model.version)
            else:
                shadows = [
                    ShadowScore(
                        shadow_model.version,
                        float(other.p_success[i]),
                        float(other.p_failure[i]),
                        shadow_model.class0_share,
                    )
                    for i in range(len(batch))
                ]
        now = time.monotonic()
        self._batches += 1
        self._segments += len(batch)
        self._batch_ms.append(elapsed_ms)
        if now - min(job.queued_at for job in batch) > self.overrun_after_s:
            self._overruns += 1
        for i, job in enumerate(batch):
            seg = job.segment
            rms = to_db(np.sqrt(np.square(seg.raw, dtype=np.float64).mean(axis=1)))
            self._deliver(
                "on_segment",
                ScoredSegment(
                    source_id=job.source_id,
                    start=seg.start,
                    end=seg.end,
                    audio=seg.raw,
                    p_success=float(prediction.p_success[i]),
                    p_failure=float(prediction.p_failure[i]),
                    attention=prediction.attention[i].copy(),
                    levels_db=(float(rms[0]), float(rms[1])),
                    model_version=classifier.version,
                    processing_ms=elapsed_ms,
                    ready_at=job.ready_at,
                    cut_at=job.queued_at,
                    batch=self._batches,
                    shadow=shadows[i],
                    class0_share=classifier.class0_share,
                ),
            )

    # -- watchdog ----------------------------------------------------------------------------------------

    def _watchdog_loop(self) -> None:
        period = min(0.5, self.stall_after_s / 4)
        while not self._stopping.wait(period):
            now = time.monotonic()
            for lane in self._lanes.values():
                if lane.status == "stopped":
                    continue
                if lane.finished:
                    why = lane.source.last_error or "end of the recording"
                    self._emit_status(lane, "stopped", why)
                    continue
                age = now - lane.last_audio
                if lane.status == "ok" and age > self.stall_after_s:
                    cause = lane.error or lane.source.last_error or "the source delivers nothing"
                    self._emit_status(lane, "stalled", f"no audio for {age:.1f} s: {cause}")
                elif lane.status == "stalled" and age <= self.stall_after_s:
                    self._emit_status(lane, "ok", "audio is flowing again")

    def _emit_status(self, lane: _Lane, status: SourceState, detail: str) -> None:
        lane.status = status
        log.log(
            logging.WARNING if status == "stalled" else logging.INFO,
            "source %s: %s (%s)",
            lane.source.source_id,
            status,
            detail,
        )
        self._deliver("on_source_status", SourceStatus(lane.source.source_id, status, detail))

    # -- sink and stats ----------------------------------------------------------------------------------

    def _deliver(self, method: str, event: Any) -> None:
        try:
            getattr(self.sink, method)(event)
        except Exception:  # one bad event must not stop a pipeline thread
            self._sink_errors += 1
            if self._sink_errors <= 10 or self._sink_errors % 1000 == 0:
                log.exception(
                    "pipeline: sink.%s failed (%d failures so far)", method, self._sink_errors
                )

    def stats(self) -> PipelineCounters:
        """Counters for ``/stats`` and ``/metrics``, from any thread."""
        now = time.monotonic()
        times = np.array(self._batch_ms) if self._batch_ms else np.zeros(0)
        sources = {
            sid: LaneCounters(
                source=lane.source.stats(),
                status=lane.status,
                last_audio_age_s=round(now - lane.last_audio, 3) if self._started_at else None,
                segments=lane.segments,
                dropped_segments=lane.dropped_segments,
                pipeline_error=lane.error,
            )
            for sid, lane in self._lanes.items()
        }
        return PipelineCounters(
            uptime_s=round(now - self._started_at, 3) if self._started_at else 0.0,
            sources=sources,
            inference=InferenceCounters(
                device=str(self.classifier.device),
                segments=self._segments,
                batches=self._batches,
                mean_ms=round(float(times.mean()), 3) if times.size else None,
                p95_ms=round(float(np.percentile(times, 95)), 3) if times.size else None,
                overruns=self._overruns,
                queued=self._queue.qsize(),
                dropped_segments=sum(lane.dropped_segments for lane in self._lanes.values()),
                sink_errors=self._sink_errors,
            ),
        )
