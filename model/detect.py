"""The energy-based vocalization detector: where in a recording does an animal call?

A hysteresis state machine over per-frame RMS levels, in the manner of silero-vad's iterator:
a call starts when either channel rises ``on_db`` above its own adaptive noise floor, lasts while
either channel stays ``off_db`` above it, and ends ``hangover_s`` after the last such frame.
Calls shorter than ``min_call_s`` are never reported. The noise floor follows the level only
while no call is on: down quickly (``floor_fall_s``), up slowly (``floor_rise_s``).

``EnergyDetector`` is the streaming stage (``push`` any block size, get events);
``detect_calls`` runs it over a whole recording, so the live service, ``pandapulse predict`` and
dataset building cannot disagree about where calls are.

Latency (how long after the sound an event is emitted): a start event waits until the call has
lasted ``min_call_s`` (it carries the onset sample, so only its delivery is late); an end event
waits ``hangover_s`` after the last loud frame. Both are further rounded up to whole frames, and
the very first ``floor_init_s`` of a stream are held back until the noise floor is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model import constants as C

LEVEL_FLOOR_DB = -120.0
"""dBFS given to digital silence (log of zero), so levels stay finite."""


_RANGES: dict[str, tuple[float, float, bool]] = {
    "frame_samples": (64, 44_100, True),
    "on_db": (0.0, 60.0, False),
    "off_db": (0.0, 60.0, True),
    "min_call_s": (0.0, 10.0, True),
    "hangover_s": (0.0, 10.0, True),
    "max_call_s": (0.0, 3600.0, False),
    "floor_rise_s": (0.0, 600.0, False),
    "floor_fall_s": (0.0, 600.0, False),
    "floor_init_s": (0.0, 60.0, True),
    "floor_init_percentile": (0.0, 100.0, True),
    "min_level_db": (LEVEL_FLOOR_DB, 0.0, True),
}
"""(low, high, whether low is allowed) of each ``DetectorParams`` field; high always is."""


@dataclass(frozen=True)
class DetectorParams:
    """Settings of the energy detector. Times in seconds, levels in dB.

    The defaults suit the synthetic encounters (SNR 0-25 dB) and the real calls in
    ``../shared/data``; tune ``on_db``/``off_db`` first when a site is noisier. Declared once:
    the service's ``detector:`` configuration section is this class, validated by pydantic
    with ``__post_init__``'s checks (``_RANGES`` and the two cross-field rules).
    """

    frame_samples: int = 512
    """Samples per analysis frame at SAMPLE_RATE (512 = 11.6 ms, half the MFCC hop). Against
    1024, on 24 synthetic encounters (bench/detector_recall.py) it finds more of the annotated
    calls (93.1 % against 89.9 %) and splits fewer, and ends a call sooner after it stops."""
    on_db: float = 6.0
    """A call starts when a channel's frame RMS is this far above that channel's floor (dB)."""
    off_db: float = 4.0
    """A call goes on while a channel stays this far above its floor (dB, < on_db: hysteresis)."""
    min_call_s: float = 0.08
    """Shorter calls (clicks, knocks) are not reported (s)."""
    hangover_s: float = 0.05
    """A call ends this long after its last frame above off_db; shorter gaps are bridged (s).
    Rounded up to 5 frames (58 ms): the wait before a call's last segment can be cut, most of
    the live latency (BENCHMARKS.md, "Live latency")."""
    max_call_s: float = 30.0
    """A 'call' longer than this is taken as a lasting rise of the background: it is ended and
    the floor re-based to the current level, so a new noise (rain, a fan) cannot hold the
    detector on forever (s)."""
    floor_rise_s: float = 4.0
    """Time constant with which the floor follows a rising level while no call is on (s)."""
    floor_fall_s: float = 0.4
    """Time constant with which the floor follows a falling level (s)."""
    floor_init_s: float = 1.0
    """The floor starts at a low percentile of the first this-many seconds' frame levels; events
    about that stretch are held back until it has passed (s)."""
    floor_init_percentile: float = 10.0
    """Percentile (0-100) of the initial frame levels taken as the starting floor."""
    min_level_db: float = -80.0
    """A frame quieter than this (dBFS) never counts as calling, whatever the floor."""

    def __post_init__(self) -> None:
        problems = []
        for name, (low, high, low_closed) in _RANGES.items():
            value = getattr(self, name)
            inside = (low <= value if low_closed else low < value) and value <= high
            if not inside:  # NaN is never inside
                span = f"{'[' if low_closed else '('}{low:g}, {high:g}]"
                problems.append(f"{name} must be in {span}, got {value}")
        if not self.off_db < self.on_db:
            problems.append(
                f"off_db ({self.off_db}) must be lower than on_db ({self.on_db}): the detector"
                " needs hysteresis (off_db < on_db)"
            )
        if not self.max_call_s > self.min_call_s:
            problems.append(
                f"max_call_s ({self.max_call_s}) must exceed min_call_s ({self.min_call_s})"
            )
        if problems:
            raise ValueError("invalid detector settings: " + "; ".join(problems))

    def frames(self, seconds: float) -> int:
        """Whole frames covering ``seconds`` (rounded up)."""
        return math.ceil(seconds * C.SAMPLE_RATE / self.frame_samples - 1e-9)

    @property
    def max_delay_samples(self) -> int:
        """Upper bound on how far (samples) an event's sample may lie behind the newest sample
        pushed when the event comes out; a consumer keeping this much history never misses
        audio an event refers to."""
        held = max(
            self.frames(self.floor_init_s),
            self.frames(self.min_call_s) + self.frames(self.hangover_s),
        )
        return (held + 2) * self.frame_samples


@dataclass(frozen=True)
class CallBoundary:
    """A call started or ended. ``sample`` is the absolute sample index: for ``start`` the first
    sample of the call's first loud frame, for ``end`` one past its last loud frame."""

    kind: Literal["start", "end"]
    sample: int


def frame_levels(frames: np.ndarray) -> np.ndarray:
    """RMS level of each frame, dBFS.

    Parameters
    ----------
    frames : np.ndarray, shape (channels, n_frames, frame_samples), float

    Returns
    -------
    np.ndarray, shape (channels, n_frames), float64, >= LEVEL_FLOOR_DB
    """
    power = np.square(frames, dtype=np.float64).mean(axis=-1)
    with np.errstate(divide="ignore"):
        return np.maximum(10.0 * np.log10(power), LEVEL_FLOOR_DB)


_IDLE, _CANDIDATE, _ON = 0, 1, 2


class EnergyDetector:
    """Streaming energy detector over (2, n) float32 blocks at SAMPLE_RATE.

    ``push`` accepts any block size and returns the ``CallBoundary`` events it completed;
    events alternate start/end, and feeding the same audio in any chunking gives the same
    events. A trailing partial frame waits for the next block (``flush`` drops it).
    """

    def __init__(self, params: DetectorParams | None = None, *, start: int = 0) -> None:
        self.params = params or DetectorParams()
        self.reset(start)

    def reset(self, start: int = 0) -> None:
        """Forget everything; the next pushed sample has absolute index ``start``."""
        p = self.params
        self._frame = p.frame_samples
        self._min_call = p.min_call_s * C.SAMPLE_RATE
        self._hang_frames = p.frames(p.hangover_s)
        self._max_call = p.max_call_s * C.SAMPLE_RATE
        frame_s = p.frame_samples / C.SAMPLE_RATE
        self._rise = 1.0 - math.exp(-frame_s / p.floor_rise_s)
        self._fall = 1.0 - math.exp(-frame_s / p.floor_fall_s)
        self._init_frames = max(1, p.frames(p.floor_init_s))
        # Samples of an incomplete frame, waiting for the next block; its first is self._next.
        self._partial = np.zeros((C.N_CHANNELS, 0), dtype=np.float32)
        self._next = start
        self._floor: tuple[float, float] | None = None
        self._held: list[tuple[int, float, float]] = []  # frames seen before the floor is known
        self._state = _IDLE
        self._onset = 0
        self._last_loud_end = 0
        self._quiet_frames = 0

    @property
    def position(self) -> int:
        """Absolute index of the next sample ``push`` expects."""
        return self._next + self._partial.shape[1]

    @property
    def floor_db(self) -> tuple[float, float] | None:
        """The current noise floor per channel (dBFS), None until initialised."""
        return self._floor

    @property
    def call_extent(self) -> tuple[int, int] | None:
        """(onset, end of the last loud frame) of the reported call that is on, else None."""
        return (self._onset, self._last_loud_end) if self._state == _ON else None

    def push(self, block: np.ndarray) -> list[CallBoundary]:
        """Feed (2, n) float32 audio; return the events completed by it, in order."""
        block = check_block(block)
        if self._partial.shape[1]:
            block = np.concatenate([self._partial, block], axis=1)
        n_frames = block.shape[1] // self._frame
        used = n_frames * self._frame
        events: list[CallBoundary] = []
        if n_frames:
            levels = frame_levels(block[:, :used].reshape(C.N_CHANNELS, n_frames, self._frame))
            start = self._next
            for i, (left, right) in enumerate(
                zip(levels[0].tolist(), levels[1].tolist(), strict=True)
            ):
                self._frame_step(start + i * self._frame, left, right, events)
            self._next = start + used
        self._partial = block[:, used:].copy()
        return events

    def flush(self) -> list[CallBoundary]:
        """End of stream: decide on what is held, close a call that is on (dropping a trailing
        partial frame). The detector then continues as if a silence gap had passed."""
        events: list[CallBoundary] = []
        if self._floor is None and self._held:
            self._init_floor(events)
        if self._state == _ON:
            events.append(CallBoundary("end", self._last_loud_end))
        self._state = _IDLE
        self._next += self._partial.shape[1]
        self._partial = self._partial[:, :0]
        return events

    def skip_to(self, position: int) -> list[CallBoundary]:
        """Audio from ``position`` on follows a gap (an outage): end any call in progress
        (as ``flush`` does) and continue at ``position``, keeping the noise floor."""
        if position < self.position:
            raise ValueError(f"cannot skip back from sample {self.position} to {position}")
        events = self.flush()
        self._next = position
        return events

    # -- per-frame state machine ---------------------------------------------------------------

    def _frame_step(
        self, start: int, left: float, right: float, events: list[CallBoundary]
    ) -> None:
        if self._floor is None:
            self._held.append((start, left, right))
            if len(self._held) >= self._init_frames:
                self._init_floor(events)
            return
        self._decide(start, left, right, events)

    def _init_floor(self, events: list[CallBoundary]) -> None:
        held = np.array([(lv_l, lv_r) for _, lv_l, lv_r in self._held])
        floor = np.percentile(held, self.params.floor_init_percentile, axis=0)
        self._floor = (float(floor[0]), float(floor[1]))
        frames, self._held = self._held, []
        for start, left, right in frames:
            self._decide(start, left, right, events)

    def _decide(self, start: int, left: float, right: float, events: list[CallBoundary]) -> None:
        p = self.params
        assert self._floor is not None
        floor_l, floor_r = self._floor
        gate = p.min_level_db
        above_l = left - floor_l if left >= gate else -math.inf
        above_r = right - floor_r if right >= gate else -math.inf
        above = max(above_l, above_r)  # a call on either channel counts
        end = start + self._frame

        if self._state == _IDLE:
            if above >= p.on_db:
                self._state = _CANDIDATE
                self._onset = start
                self._last_loud_end = end
                self._quiet_frames = 0
                self._confirm(events)
            else:
                self._floor = (self._follow(floor_l, left), self._follow(floor_r, right))
            return

        if above >= p.off_db:
            self._last_loud_end = end
            self._quiet_frames = 0
        else:
            self._quiet_frames += 1
        if self._state == _CANDIDATE:
            self._confirm(events)
        if self._quiet_frames >= self._hang_frames and self._quiet_frames > 0:
            if self._state == _ON:
                events.append(CallBoundary("end", self._last_loud_end))
            self._state = _IDLE
        elif self._state == _ON and end - self._onset >= self._max_call:
            events.append(CallBoundary("end", self._last_loud_end))
            self._state = _IDLE
            self._floor = (max(left, LEVEL_FLOOR_DB), max(right, LEVEL_FLOOR_DB))

    def _confirm(self, events: list[CallBoundary]) -> None:
        if self._last_loud_end - self._onset >= self._min_call:
            self._state = _ON
            events.append(CallBoundary("start", self._onset))

    def _follow(self, floor: float, level: float) -> float:
        rate = self._fall if level < floor else self._rise
        return floor + (level - floor) * rate


def check_block(block: np.ndarray) -> np.ndarray:
    """``block`` itself if it is (2, n) float32 audio, else a ValueError/TypeError saying why."""
    if not isinstance(block, np.ndarray) or block.ndim != 2 or block.shape[0] != C.N_CHANNELS:
        shape = getattr(block, "shape", type(block).__name__)
        raise ValueError(f"expected audio shaped ({C.N_CHANNELS}, n), got {shape}")
    if block.dtype != np.float32:
        raise TypeError(f"expected float32 audio, got {block.dtype}")
    return block


def detect_calls(audio: np.ndarray, params: DetectorParams | None = None) -> list[tuple[int, int]]:
    """Calls in a whole recording, by the streaming detector.

    Parameters
    ----------
    audio : np.ndarray, shape (2, n), float32, at SAMPLE_RATE
    params : DetectorParams, optional

    Returns
    -------
    list of (start, end) sample indices, end exclusive, in order, not overlapping
    """
    detector = EnergyDetector(params)
    events = detector.push(audio) + detector.flush()
    calls = []
    for ev in events:
        if ev.kind == "start":
            onset = ev.sample
        else:
            calls.append((onset, ev.sample))
    return calls
