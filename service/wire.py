"""Wire messages of docs/PROTOCOL.md (v1): the WebSocket events and the REST objects.

Every WebSocket message is a pydantic model with a literal ``type`` (the discriminator) and
``v = 1``; ``Message`` parses any of them (``MESSAGE_ADAPTER.validate_json``), which the tests
and scripts use to check what the service sends.

This is the one place a stored row (``service.records``) becomes what clients see: the
``of(row)`` constructors turn sample indices into seconds, round, and name the clip route.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from model import constants as C
from service.records import (
    AlertKind,
    AlertRow,
    AudioPartRow,
    DeliveryStatus,
    EncounterRecord,
    EncounterRow,
    ModelRow,
    OutboxRow,
    SegmentRow,
)
from service.types import SourceHealth

PROTOCOL_VERSION = 1

DROPPABLE_TYPES = frozenset({"level", "spectrogram", "stats"})
"""Live updates a slow WebSocket client may lose (the next one replaces them)."""
DISPLAY_TYPES = frozenset({"level", "spectrogram"})
"""Per-source updates sent only to clients that watch the source (``WatchMsg``)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- REST objects -------------------------------------------------------------------------
class Encounter(_Wire):
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

    @classmethod
    def of(cls, row: EncounterRow) -> Encounter:
        return cls(**_fields(row, cls))


def clip_url(segment_id: int) -> str:
    """The route that serves a segment's stored clip."""
    return f"/api/segments/{segment_id}/clip"


class Segment(_Wire):
    id: int
    encounter_id: int | None
    source: str
    start_s: float
    end_s: float
    wall_time: str
    p_success: float
    p_failure: float
    attention: list[float]
    levels_db: list[float]
    model_version: str
    clip_url: str | None

    @classmethod
    def of(cls, row: SegmentRow, **extra: Any) -> Segment:
        """The segment's wire form; ``extra`` fills fields of subclasses (``SegmentMsg``)."""
        return cls(
            id=row.id,
            encounter_id=row.encounter_id,
            source=row.source,
            start_s=round(row.start_sample / C.SAMPLE_RATE, 4),
            end_s=round(row.end_sample / C.SAMPLE_RATE, 4),
            wall_time=row.wall_time,
            p_success=row.p_success,
            p_failure=row.p_failure,
            attention=[round(a, 5) for a in row.attention],
            levels_db=list(row.levels_db),
            model_version=row.model_version,
            clip_url=clip_url(row.id) if row.clip_path else None,
            **extra,
        )


class Alert(_Wire):
    id: int
    kind: AlertKind
    source: str | None
    encounter_id: int | None
    message: str
    p_failure: float | None
    created_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None

    @classmethod
    def of(cls, row: AlertRow) -> Alert:
        return cls(**_fields(row, cls))


class Delivery(_Wire):
    """One channel's delivery of an alert (an outbox row): where to, by its label only."""

    channel: str
    """``webhook``, ``apprise``, ``mqtt``."""
    label: str
    """Which receiver, without secrets (``E-Mail · mailto://smtp.example.org``)."""
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    """The latest failed attempt's reason (None once delivered)."""
    next_attempt_at: str | None
    """When the next attempt is due (while pending)."""
    delivered_at: str | None
    failed_at: str | None
    """When it was given up (retrying could not help, e.g. the channel was removed)."""

    @classmethod
    def of(cls, row: OutboxRow) -> Delivery:
        due = datetime.fromtimestamp(row.next_attempt_at, UTC).isoformat(timespec="milliseconds")
        return cls(
            channel=row.channel,
            label=row.label or row.channel,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            next_attempt_at=due.replace("+00:00", "Z") if row.status == "pending" else None,
            delivered_at=row.delivered_at,
            failed_at=row.failed_at,
        )


class AlertDetail(Alert):
    """An alert with the result of each channel's delivery (``GET /api/alerts``)."""

    deliveries: list[Delivery]

    @classmethod
    def with_deliveries(cls, row: AlertRow, deliveries: list[OutboxRow]) -> AlertDetail:
        return cls(
            **_fields(row, Alert),
            deliveries=[Delivery.of(d) for d in deliveries if d.alert_id == row.id],
        )


AudioState = Literal["recording", "kept", "removed", "unfinished"]


class AudioPart(_Wire):
    """One file of an encounter's whole audio (``storage.keep_encounter_audio``)."""

    file: str
    started_at: str
    seconds: float | None
    """None while it is written."""
    state: AudioState
    """``removed``: retention deleted it; ``unfinished``: a crash, repaired at the next start."""

    @classmethod
    def of(cls, row: AudioPartRow, recording: bool) -> AudioPart:
        state: AudioState
        if row.removed_at is not None:
            state = "removed"
        elif row.finished_at is not None:
            state = "kept"
        else:
            state = "recording" if recording else "unfinished"
        return cls(
            file=row.path.rsplit("/", 1)[-1],
            started_at=row.started_at,
            seconds=None if row.finished_at is None else round(row.seconds, 3),
            state=state,
        )


class EncounterDetail(Encounter):
    segments: list[Segment]
    alerts: list[Alert]
    audio: list[AudioPart] = []
    """Its whole audio, one entry per file; [] when none was kept."""

    @classmethod
    def of_record(cls, record: EncounterRecord) -> EncounterDetail:
        return cls(
            **_fields(record.encounter, Encounter),
            segments=[Segment.of(s) for s in record.segments],
            alerts=[Alert.of(a) for a in record.alerts],
            audio=[AudioPart.of(p, record.encounter.is_open) for p in record.audio],
        )


class EncounterPage(_Wire):
    items: list[Encounter]
    total: int


class SourceInfo(_Wire):
    id: str
    enclosure: str
    kind: str
    status: SourceHealth


class ModelInfo(_Wire):
    version: str
    device: str
    class_names: list[str]
    uncertain_band: tuple[float, float]
    """P(class 0) range whose verdict is "uncertain" (``encounter.uncertain_band``)."""
    class0_share: float | None
    """Class 0's share of the model's training segments: the encounter rule's prior
    (``model.aggregate``); None when the model does not record it (then: mean P(class 0))."""
    alarm_class: str | None
    """The class whose running probability raises the alarm; None: no alarm."""


class SourceStats(_Wire):
    status: SourceHealth
    blocks: int
    overflows: int
    dropped_blocks: int
    last_audio_age_s: float | None


class InferenceStats(_Wire):
    segments: int
    batches: int
    mean_ms: float | None
    p95_ms: float | None
    overruns: int


class WsStats(_Wire):
    clients: int
    dropped: int


class StorageStats(_Wire):
    segments: int
    outbox_pending: int


class ShadowAgreement(_Wire):
    """One source's current encounter as the active and the shadow model scored it."""

    encounter_id: int | None
    segments: int
    """Segments both models scored in this encounter (since the shadow started)."""
    same_verdicts: float | None
    """Share of those segments with the same verdict from both models (0..1)."""
    mean_abs_diff: float | None
    """Mean absolute difference of the two models' P(success)."""
    active_p_success: float | None
    shadow_p_success: float | None
    """Each model's running P(success) over those segments by the encounter rule, with its own
    ``class0_share`` (``model.aggregate``)."""
    active_verdict: str | None
    shadow_verdict: str | None
    """Each model's encounter verdict from that figure (``encounter.uncertain_band``)."""


class ShadowStats(_Wire):
    model_version: str
    sources: dict[str, ShadowAgreement]


class MqttStats(_Wire):
    """The MQTT publisher (``mqtt``; docs/PROTOCOL.md, "MQTT")."""

    broker: str
    client_id: str
    topic: str
    """This box's topic root, ``<topic_prefix>/<box_id>``."""
    state: Literal["off", "connecting", "connected", "error"]
    error: str | None
    """Why the broker is not connected (refused login, unreachable), or None."""
    connected_since: str | None
    published: int
    alerts_delivered: int


class Stats(_Wire):
    uptime_s: float
    device: str
    model_version: str
    sources: dict[str, SourceStats]
    inference: InferenceStats
    ws: WsStats
    storage: StorageStats
    shadow: ShadowStats | None = None
    """The shadow model and its agreement with the active one; None when no shadow runs."""
    mqtt: MqttStats | None = None
    """The MQTT publisher's connection; None when ``mqtt.host`` is not set."""


# --- WebSocket events ---------------------------------------------------------------------
class _Event(_Wire):
    v: Literal[1] = 1


class SnapshotMsg(_Event):
    type: Literal["snapshot"] = "snapshot"
    model: ModelInfo
    sources: list[SourceInfo]
    encounters: list[Encounter]
    segments: list[Segment]
    alerts: list[Alert]
    stats: Stats


class LevelMsg(_Event):
    type: Literal["level"] = "level"
    source: str
    start_s: float
    rms_db: tuple[float, float]
    peak_db: tuple[float, float]


class SpectrogramMsg(_Event):
    type: Literal["spectrogram"] = "spectrogram"
    source: str
    start_s: float
    bins: int
    columns: list[list[Annotated[int, Field(ge=0, le=255)]]]


class SegmentMsg(Segment, _Event):
    type: Literal["segment"] = "segment"
    running_p_success: float | None


class EncounterMsg(_Event):
    type: Literal["encounter"] = "encounter"
    action: Literal["started", "stopped", "outcome", "updated"]
    encounter: Encounter


class AlertMsg(_Event):
    type: Literal["alert"] = "alert"
    action: Literal["raised", "acknowledged"]
    alert: Alert


class DeliveryMsg(_Event):
    """An alert's deliveries after an attempt through one of its channels."""

    type: Literal["delivery"] = "delivery"
    alert_id: int
    deliveries: list[Delivery]


class StatsMsg(Stats, _Event):
    type: Literal["stats"] = "stats"

    @classmethod
    def of(cls, stats: Stats) -> StatsMsg:
        return cls(**{name: getattr(stats, name) for name in Stats.model_fields})


# --- what a client may send -----------------------------------------------------------------
class WatchMsg(_Event):
    """The sources whose ``level`` and ``spectrogram`` updates the client wants (it displays
    them); it replaces the client's previous choice. Until it sends one, a client gets none."""

    type: Literal["watch"] = "watch"
    sources: Annotated[list[str], Field(max_length=256)]


CLIENT_ADAPTER: TypeAdapter[WatchMsg] = TypeAdapter(WatchMsg)

Message = Annotated[
    SnapshotMsg
    | LevelMsg
    | SpectrogramMsg
    | SegmentMsg
    | EncounterMsg
    | AlertMsg
    | DeliveryMsg
    | StatsMsg,
    Field(discriminator="type"),
]
MESSAGE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)


# --- POST /predict ------------------------------------------------------------------------
class PredictSegment(_Wire):
    start_s: float
    end_s: float
    p_success: float
    p_failure: float
    attention: list[float]
    running_p_success: float
    """The recording's P(success) by the encounter rule after this segment (time order)."""


class PredictResult(_Wire):
    """``POST /predict``'s answer: ``pandapulse predict --json`` plus each segment's attention."""

    duration_s: float
    mono: bool
    source_rate: int
    model_version: str
    class_names: list[str]
    segments: list[PredictSegment]
    p_success: float | None
    verdict: str | None
    uncertain_band: tuple[float, float]
    class0_share: float | None
    """Class 0's share of the model's training segments: the encounter rule's prior
    (``model.aggregate``); None when the model does not record it (then: mean P(class 0))."""


# --- models (/api/models) -------------------------------------------------------------------
ModelRoleName = Literal["active", "shadow", "previous"]


class ModelCard(_Wire):
    """A stored checkpoint and its model card."""

    version: str
    role: ModelRoleName | None
    """``active`` (scores the live audio), ``shadow`` (scores beside it), ``previous`` (what
    ``rollback`` returns to), or None."""
    origin: Literal["upload", "config"]
    filename: str
    uploaded_at: str
    size_bytes: int
    format: str
    class_names: list[str]
    feature_kind: str
    n_features: int
    val_auc: float | None
    val_accuracy: float | None
    calibrated: bool
    recordings: int | None
    """Recordings the model was trained on (its training data summary)."""
    card: dict[str, Any]
    """The checkpoint's metadata: training data summary, metrics, training settings."""

    @classmethod
    def of(cls, row: ModelRow, role: ModelRoleName | None) -> ModelCard:
        card = json.loads(row.card or "{}")
        metrics = card.get("metrics") or {}
        recordings = (card.get("data") or {}).get("recordings")
        return cls(
            version=row.version,
            role=role,
            origin="config" if row.origin == "config" else "upload",
            filename=row.filename,
            uploaded_at=row.uploaded_at,
            size_bytes=row.size_bytes,
            format=row.format,
            class_names=list(row.class_names),
            feature_kind=row.feature_kind,
            n_features=row.n_features,
            val_auc=_number(metrics.get("val_auc")),
            val_accuracy=_number(metrics.get("val_accuracy")),
            calibrated="temperature" in (metrics.get("calibration") or {}),
            recordings=recordings if isinstance(recordings, int) else None,
            card=card,
        )


class ModelList(_Wire):
    active: str
    shadow: str | None
    previous: str | None
    models: list[ModelCard]
    """Every stored model, oldest first."""


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fields(row: object, model: type[BaseModel]) -> dict[str, Any]:
    """The attributes of ``row`` that ``model`` declares (rows and wire models share names)."""
    return {name: getattr(row, name) for name in model.model_fields}
