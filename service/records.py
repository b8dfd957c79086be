"""What storage hands out: frozen rows, as stored, with no knowledge of HTTP.

``service.storage.Storage`` returns these; ``service.wire`` turns each into its wire model
(clip URLs, seconds instead of samples, rounding) in one place. Times are the stored ISO-8601
UTC strings (``storage.iso``), which is also what the wire sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from model import constants as C

AlertKind = Literal["failure_dominates", "audio_stalled", "test"]
Outcome = Literal["success", "failure", "unknown"]


@dataclass(frozen=True, slots=True)
class EncounterRow:
    """One meeting of a pair at one source; ``p_success``/``verdict`` are its running figures
    after its latest segment (None before any)."""

    id: int
    source: str
    enclosure: str
    pair: str
    keeper: str
    notes: str
    started_at: str
    ended_at: str | None
    auto: bool
    n_segments: int
    p_success: float | None
    verdict: str | None
    outcome: str | None
    copulation_observed: bool | None
    pregnancy_confirmed: bool | None
    model_version: str | None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One scored 2-s segment. ``start_sample``/``end_sample`` count from its source's start;
    ``attention`` holds the 86 per-frame weights; ``clip_path`` is relative to the data directory (None when
    no clip was kept, or retention removed it)."""

    id: int
    encounter_id: int | None
    source: str
    start_sample: int
    end_sample: int
    wall_time: str
    p_success: float
    p_failure: float
    attention: tuple[float, ...]
    levels_db: tuple[float, float]
    model_version: str
    clip_path: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    kind: AlertKind
    source: str | None
    encounter_id: int | None
    message: str
    p_failure: float | None
    created_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None


ChannelKind = str
"""An outbox channel: ``webhook``, ``apprise``, ``mqtt``, or whatever a deliverer registers
(``service.alerts.OutboxWorker.register``)."""

DeliveryStatus = Literal["pending", "delivered", "failed"]


class OutboxTarget(NamedTuple):
    """Where one delivery of an alert goes: ``Storage.add_alert(targets=...)`` makes one outbox
    row of each. ``target`` addresses it within its channel (a webhook URL, the key of an
    Apprise URL, an MQTT topic); ``label`` names it for people, without secrets."""

    channel: ChannelKind
    target: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One delivery of an alert through one channel (``next_attempt_at`` in unix seconds).

    Pending until ``delivered_at`` or ``failed_at`` is set; ``failed_at`` marks a delivery
    given up for good (its deliverer said retrying cannot help), ``last_error`` the latest
    attempt's reason.
    """

    id: int
    alert_id: int
    channel: ChannelKind
    target: str
    label: str
    payload: str
    attempts: int
    next_attempt_at: float
    delivered_at: str | None
    failed_at: str | None
    last_error: str | None
    created_at: str

    @property
    def status(self) -> DeliveryStatus:
        if self.delivered_at is not None:
            return "delivered"
        return "pending" if self.failed_at is None else "failed"


@dataclass(frozen=True, slots=True)
class AudioPartRow:
    """A stretch of an encounter's whole audio, as captured (``service.encounter_audio``).

    ``path`` is relative to the data directory; the file holds ``frames`` samples from the
    source's ``start_sample`` on (``gap_samples`` of them silence where audio was missing),
    its first at ``started_at``. ``finished_at`` is None while it is written (or after a crash,
    until the next start repairs it: ``repaired``); ``removed_at`` is set when retention
    deleted the file (the row stays, so an export can say what is missing).
    """

    id: int
    encounter_id: int
    source: str
    path: str
    start_sample: int
    started_at: str
    frames: int
    size_bytes: int
    gap_samples: int
    finished_at: str | None
    repaired: bool
    removed_at: str | None
    created_at: str

    @property
    def seconds(self) -> float:
        return self.frames / C.SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class EncounterRecord:
    """An encounter with its segments and alerts, oldest first (the History view's detail)."""

    encounter: EncounterRow
    segments: list[SegmentRow]
    alerts: list[AlertRow]
    audio: list[AudioPartRow] = field(default_factory=list)
    """Its whole-audio files (``service.encounter_audio``), oldest first."""


@dataclass(frozen=True, slots=True)
class LiveRecords:
    """What a dashboard needs on connecting: open encounters, the latest segments (oldest
    first) and the alerts nobody acknowledged."""

    encounters: list[EncounterRow]
    segments: list[SegmentRow]
    alerts: list[AlertRow]


@dataclass(frozen=True, slots=True)
class Removed:
    """What one retention pass deleted."""

    encounters: int = 0
    segments: int = 0
    alerts: int = 0
    clips: int = 0
    audio_files: int = 0
    """Whole-encounter audio files (``service.encounter_audio``)."""

    def __bool__(self) -> bool:
        return any((self.encounters, self.segments, self.alerts, self.clips, self.audio_files))

    def summary(self) -> str:
        counts = {
            "encounters": self.encounters,
            "segments": self.segments,
            "alerts": self.alerts,
            "clips": self.clips,
            "encounter audio files": self.audio_files,
        }
        return ", ".join(f"{n} {what}" for what, n in counts.items() if n)


ModelRole = Literal["active", "previous", "shadow", "config"]
"""``active``/``previous``/``shadow``: the models the service runs (``active`` and ``previous``
only once a model was activated through the API); ``config``: the version of
``inference.model`` when that activation happened (a different one there since wins)."""


@dataclass(frozen=True, slots=True)
class ModelRow:
    """A stored checkpoint (``<data_dir>/models/<version>.safetensors``) and its model card.

    ``origin`` is ``upload`` (``POST /api/models``) or ``config`` (``inference.model``, copied
    in at start-up so it can be activated again); ``card`` is the checkpoint's metadata as JSON
    text (training data summary, metrics without the per-epoch history, training settings).
    """

    version: str
    path: str
    origin: str
    filename: str
    uploaded_at: str
    size_bytes: int
    format: str
    class_names: tuple[str, str]
    feature_kind: str
    n_features: int
    card: str
