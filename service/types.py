"""Internal events of the live pipeline, and the sink that receives them.

Every event is a frozen dataclass carrying its source's id and a sample index (at
``model.constants.SAMPLE_RATE``) counted from the moment that source started: the sample index
is the clock; wall time is derived from it once, by whoever publishes the event.

Threads: the pipeline creates these objects on its per-source threads and on its inference
worker thread, and hands them to an ``EventSink`` from those threads. After creation nobody
mutates them (the arrays inside are not written to again either), so a sink may keep them and
pass them to other threads without copying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

CallKind = Literal["start", "end"]
SourceState = Literal["ok", "stalled", "stopped"]
SourceHealth = Literal["ok", "stalled", "stopped", "starting"]
"""What the service reports for a source: a ``SourceState``, or ``starting`` before its first."""


@dataclass(frozen=True)
class AudioBlock:
    """A block of captured audio, as an ``AudioSource`` delivers it.

    Attributes
    ----------
    source_id : str
    start : int
        Sample index of the block's first sample since the source started.
    audio : np.ndarray, shape (2, n), float32, full scale +-1, at SAMPLE_RATE
    captured_at : float
        ``time.monotonic()`` when the block's last sample entered the source (the sound card
        callback, the file reader); the latency bench measures from here.
    """

    source_id: str
    start: int
    audio: np.ndarray
    captured_at: float

    @property
    def end(self) -> int:
        """Sample index one past the block's last sample."""
        return self.start + int(self.audio.shape[1])


@dataclass(frozen=True)
class LevelUpdate:
    """Per-channel levels of one stretch of audio (~0.1 s) for the meters.

    ``rms_db`` and ``peak_db`` are (left, right) in dBFS (0 dBFS = full scale); digital
    silence reads as a finite floor (``model.detect.LEVEL_FLOOR_DB``), never -inf.
    ``start`` is the sample index of the stretch's first sample.
    """

    source_id: str
    start: int
    rms_db: tuple[float, float]
    peak_db: tuple[float, float]


@dataclass(frozen=True)
class SpectrogramColumns:
    """Log-mel spectrogram columns for the dashboard's scrolling display.

    ``columns`` is (n, 64) uint8, one row per column (time), low frequency first within a
    column; 0 = -90 dBFS or less, 255 = 0 dBFS (docs/PROTOCOL.md, ``spectrogram``). ``start``
    is the sample index of the first column's frame.
    """

    source_id: str
    start: int
    columns: np.ndarray


@dataclass(frozen=True)
class ClockTick:
    """The source's audio reached ``sample`` (about once a second of audio, watched or not):
    the clock against which silence closes automatic encounters."""

    source_id: str
    sample: int


@dataclass(frozen=True)
class CallEvent:
    """The detector saw a vocalization start or end at ``sample`` (either channel counts)."""

    source_id: str
    kind: CallKind
    sample: int


@dataclass(frozen=True)
class ScoredSegment:
    """A 2-s segment cut from a detected call, scored by the classifier.

    Attributes
    ----------
    source_id : str
    start, end : int
        Sample indices of the source audio the segment covers (``end - start`` <= 88,200;
        shorter pieces were padded by repetition before scoring).
    audio : np.ndarray, shape (2, end - start), float32
        The raw audio as captured (not normalised, not padded): what the clip stores.
    p_success, p_failure : float
        Frame-averaged class probabilities; they sum to 1.
    attention : np.ndarray, shape (86,), float32
        Per-frame attention weight.
    levels_db : tuple[float, float]
        RMS level of each channel over [start, end), dBFS.
    model_version : str
    processing_ms : float
        Time the inference worker spent on this segment's batch (features + model), ms.
    ready_at : float
        ``time.monotonic()`` when the segment's last sample entered its source.
    cut_at : float
        ``time.monotonic()`` when the segmenter cut it (``cut_at - ready_at`` is the detector's
        delay: its hang-over for a call's last piece); 0.0 when unknown.
    batch : int
        Number of the inference batch that scored it (1, 2, ... per pipeline; 0 when unknown):
        every segment of one batch was scored by the same model.
    shadow : ShadowScore or None
        The shadow model's score of the same segment, when one runs (never drives verdicts or
        alerts).
    class0_share : float or None
        The scoring model's ``Classifier.class0_share``: the encounter rule's prior.
    """

    source_id: str
    start: int
    end: int
    audio: np.ndarray
    p_success: float
    p_failure: float
    attention: np.ndarray
    levels_db: tuple[float, float]
    model_version: str
    processing_ms: float
    ready_at: float
    cut_at: float = 0.0
    batch: int = 0
    shadow: ShadowScore | None = None
    class0_share: float | None = None


@dataclass(frozen=True)
class ShadowScore:
    """A shadow model's P(class 0) and P(class 1) of a segment the active model scored."""

    model_version: str
    p_success: float
    p_failure: float
    class0_share: float | None = None
    """The shadow model's ``Classifier.class0_share`` (its encounter rule's prior)."""


@dataclass(frozen=True)
class SourceStatus:
    """A source's health changed: ``ok`` (audio flows), ``stalled`` (no audio for the
    watchdog's time; ``detail`` says for how long and the likely cause), ``stopped``."""

    source_id: str
    status: SourceState
    detail: str = ""


class EventSink(Protocol):
    """Receives the pipeline's events. Implemented by the service (store, then publish).

    Every method is called from a pipeline thread (a per-source thread for clock ticks, levels,
    spectrogram columns and calls; the inference worker for segments; the watchdog for
    status), possibly
    several at once, so implementations must be thread-safe and should return quickly: a slow
    sink delays that thread's next block.
    """

    def on_clock(self, event: ClockTick) -> None: ...

    def on_level(self, event: LevelUpdate) -> None: ...

    def on_spectrogram(self, event: SpectrogramColumns) -> None: ...

    def on_call(self, event: CallEvent) -> None: ...

    def on_segment(self, event: ScoredSegment) -> None: ...

    def on_source_status(self, event: SourceStatus) -> None: ...


# --- counters (``stats()`` of sources and the pipeline; read by /stats and /metrics) ----------
@dataclass(frozen=True)
class SourceCounters:
    """An audio source's counters at one moment (``AudioSource.stats()``, any thread)."""

    kind: str
    blocks: int
    dropped_blocks: int
    overflows: int
    queued: int
    mono: bool
    lossless: bool
    last_error: str | None


@dataclass(frozen=True)
class DeviceCounters(SourceCounters):
    """A sound card's counters: which device, at what rate, how often it was reopened."""

    device: str
    device_rate: int
    reopens: int
    state: str


@dataclass(frozen=True)
class LaneCounters:
    """One source inside the pipeline: its own counters plus what the pipeline saw of it.

    ``last_audio_age_s`` is None before the pipeline started; ``pipeline_error`` is why its
    thread ended, if it ended on an error.
    """

    source: SourceCounters
    status: SourceState
    last_audio_age_s: float | None
    segments: int
    dropped_segments: int
    pipeline_error: str | None


@dataclass(frozen=True)
class InferenceCounters:
    """The inference worker: batch times over a recent window (ms; None before any batch)."""

    device: str
    segments: int
    batches: int
    mean_ms: float | None
    p95_ms: float | None
    overruns: int
    queued: int
    dropped_segments: int
    sink_errors: int


@dataclass(frozen=True)
class PipelineCounters:
    """``Pipeline.stats()``: every lane and the inference worker."""

    uptime_s: float
    sources: dict[str, LaneCounters]
    inference: InferenceCounters
