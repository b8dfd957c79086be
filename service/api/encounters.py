"""Encounters (start, stop, list, detail, outcome, CSV), segment clips and alerts."""

from __future__ import annotations

import asyncio
import csv
import io
from argparse import ArgumentTypeError
from collections.abc import Iterable, Sequence

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import require_token
from service.api.deps import MonitorDep
from service.api.errors import ApiError
from service.export import (
    EncounterCalls,
    ExportOptions,
    audacity_text,
    encounter_calls,
    parse_since,
    plan_export,
    raven_text,
    zip_stream,
)
from service.records import Outcome
from service.wire import (
    Alert,
    AlertDetail,
    Encounter,
    EncounterDetail,
    EncounterPage,
    Segment,
)

router = APIRouter(dependencies=[Depends(require_token)])

_TEXT = 500
"""Longest free-text field (characters)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncounterCreate(_Body):
    source: str = Field(min_length=1, max_length=64)
    pair: str = Field(default="", max_length=_TEXT)
    """The two animals, e.g. 'Mei Lan x Da Mao'."""
    keeper: str = Field(default="", max_length=_TEXT)
    notes: str = Field(default="", max_length=4 * _TEXT)


class OutcomeBody(_Body):
    outcome: Outcome
    copulation_observed: bool | None = None
    pregnancy_confirmed: bool | None = None
    notes: str | None = Field(default=None, max_length=4 * _TEXT)


class AckBody(_Body):
    by: str = Field(default="", max_length=_TEXT)


class TestAlertBody(_Body):
    source: str | None = Field(default=None, max_length=64)


def _not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {ident}")


# --- encounters -------------------------------------------------------------------------------
@router.post("/api/encounters", status_code=201, tags=["encounters"])
async def create_encounter(body: EncounterCreate, monitor: MonitorDep) -> Encounter:
    """Start an encounter on a source (its open encounter, if any, is stopped first)."""
    row = await monitor.start_encounter(
        body.source, pair=body.pair, keeper=body.keeper, notes=body.notes
    )
    return Encounter.of(row)


@router.post("/api/encounters/{encounter_id}/stop", tags=["encounters"])
async def stop_encounter(encounter_id: int, monitor: MonitorDep) -> Encounter:
    row = await monitor.stop_encounter(encounter_id)
    if row is None:
        raise _not_found("encounter", encounter_id)
    return Encounter.of(row)


@router.get("/api/encounters", tags=["encounters"])
async def list_encounters(
    monitor: MonitorDep,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    source: str | None = Query(None, max_length=64),
) -> EncounterPage:
    """Encounters, newest first."""
    rows, total = await monitor.encounters(limit=limit, offset=offset, source=source)
    return EncounterPage(items=[Encounter.of(r) for r in rows], total=total)


ENCOUNTER_CSV_FIELDS = list(Encounter.model_fields)
SEGMENT_CSV_FIELDS = [
    "id",
    "encounter_id",
    "source",
    "start_s",
    "end_s",
    "wall_time",
    "p_success",
    "p_failure",
    "level_left_db",
    "level_right_db",
    "model_version",
    "clip_url",
]


def _csv(fields: Sequence[str], rows: Iterable[dict[str, object]], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _segment_csv_row(segment: Segment) -> dict[str, object]:
    left, right = segment.levels_db
    return {**segment.model_dump(), "level_left_db": left, "level_right_db": right}


@router.get("/api/encounters/export.csv", tags=["encounters"], response_class=Response)
async def export_encounters(monitor: MonitorDep) -> Response:
    """Every encounter, one row each (outcomes included: these become training labels)."""
    rows = await monitor.all_encounters()
    return _csv(
        ENCOUNTER_CSV_FIELDS, (Encounter.of(r).model_dump() for r in rows), "encounters.csv"
    )


ZIP_MEDIA = "application/zip"


async def _dataset_zip(
    monitor: MonitorDep, options: ExportOptions, folder: str
) -> StreamingResponse:
    """The export streamed as a zip (read from storage first, then written off the loop)."""
    data_dir = str(monitor.settings.storage.data_dir.resolve())
    plan = await monitor.store.arun(lambda s: plan_export(s, options))
    return StreamingResponse(
        zip_stream(plan, folder, data_dir=data_dir),
        media_type=ZIP_MEDIA,
        headers={"Content-Disposition": f'attachment; filename="{folder}.zip"'},
    )


@router.get(
    "/api/encounters/dataset.zip",
    tags=["encounters"],
    response_class=StreamingResponse,
    responses={200: {"content": {ZIP_MEDIA: {}}}},
)
async def export_dataset(
    monitor: MonitorDep,
    since: str | None = Query(
        None, max_length=40, description="encounters started on or after (YYYY-MM-DD, UTC)"
    ),
    source: str | None = Query(None, max_length=64),
    include_all: bool = Query(
        False, alias="all", description="also encounters without a success/failure outcome"
    ),
) -> StreamingResponse:
    """The filtered encounters as a dataset folder, zipped: what `pandapulse export-dataset`
    writes (manifest.csv, skipped.csv, each encounter's audio and its calls as a Raven table),
    ready for `pandapulse train`."""
    try:
        when = None if since is None else parse_since(since)
    except ArgumentTypeError as err:
        raise ApiError(422, "invalid_request", str(err)) from err
    options = ExportOptions(since=when, source=source, include_unlabelled=include_all)
    return await _dataset_zip(monitor, options, "pandapulse-dataset")


@router.get("/api/encounters/{encounter_id}", tags=["encounters"])
async def get_encounter(encounter_id: int, monitor: MonitorDep) -> EncounterDetail:
    """One encounter with its segments and alerts."""
    record = await monitor.encounter(encounter_id)
    if record is None:
        raise _not_found("encounter", encounter_id)
    return EncounterDetail.of_record(record)


@router.put("/api/encounters/{encounter_id}/outcome", tags=["encounters"])
async def set_outcome(encounter_id: int, body: OutcomeBody, monitor: MonitorDep) -> Encounter:
    """Record what happened (copulation observed, pregnancy confirmed) once it is known."""
    row = await monitor.set_outcome(
        encounter_id,
        outcome=body.outcome,
        copulation_observed=body.copulation_observed,
        pregnancy_confirmed=body.pregnancy_confirmed,
        notes=body.notes,
    )
    if row is None:
        raise _not_found("encounter", encounter_id)
    return Encounter.of(row)


@router.get(
    "/api/encounters/{encounter_id}/export.csv", tags=["encounters"], response_class=Response
)
async def export_encounter(encounter_id: int, monitor: MonitorDep) -> Response:
    """One row per segment of the encounter."""
    rows = await monitor.segments_of(encounter_id)
    if rows is None:
        raise _not_found("encounter", encounter_id)
    return _csv(
        SEGMENT_CSV_FIELDS,
        (_segment_csv_row(Segment.of(r)) for r in rows),
        f"encounter-{encounter_id}.csv",
    )


@router.get(
    "/api/encounters/{encounter_id}/dataset.zip",
    tags=["encounters"],
    response_class=StreamingResponse,
    responses={200: {"content": {ZIP_MEDIA: {}}}},
)
async def export_encounter_dataset(encounter_id: int, monitor: MonitorDep) -> StreamingResponse:
    """One encounter as a dataset folder, zipped (with or without an outcome)."""
    if await monitor.store.arun(lambda s: s.get_encounter(encounter_id)) is None:
        raise _not_found("encounter", encounter_id)
    options = ExportOptions(encounter_ids=(encounter_id,), include_unlabelled=True)
    return await _dataset_zip(monitor, options, f"pandapulse-encounter-{encounter_id}")


async def _calls(encounter_id: int, monitor: MonitorDep) -> EncounterCalls:
    calls = await monitor.store.arun(lambda s: encounter_calls(s, encounter_id))
    if calls is None:
        raise _not_found("encounter", encounter_id)
    return calls


@router.get(
    "/api/encounters/{encounter_id}/calls.raven.txt",
    tags=["encounters"],
    response_class=PlainTextResponse,
)
async def calls_raven(encounter_id: int, monitor: MonitorDep) -> PlainTextResponse:
    """The encounter's scored calls as a Raven Pro selection table: one selection per 2-s
    segment, times from the start of its audio file, with P(success), P(failure), the model
    version and the audio file it lies in."""
    text = await asyncio.to_thread(raven_text, await _calls(encounter_id, monitor))
    return PlainTextResponse(
        text,
        headers={
            "Content-Disposition": f'attachment; filename="encounter-{encounter_id}.Table.1'
            '.selections.txt"'
        },
    )


@router.get(
    "/api/encounters/{encounter_id}/calls.audacity.txt",
    tags=["encounters"],
    response_class=PlainTextResponse,
)
async def calls_audacity(encounter_id: int, monitor: MonitorDep) -> PlainTextResponse:
    """The encounter's scored calls as an Audacity label track (start, end, label)."""
    text = await asyncio.to_thread(audacity_text, await _calls(encounter_id, monitor))
    return PlainTextResponse(
        text,
        headers={
            "Content-Disposition": f'attachment; filename="encounter-{encounter_id}-labels.txt"'
        },
    )


@router.get("/api/segments/{segment_id}/clip", tags=["encounters"], response_class=FileResponse)
async def clip(segment_id: int, monitor: MonitorDep) -> FileResponse:
    """The segment's audio as captured (FLAC, 44.1 kHz stereo)."""
    path = await monitor.clip_file(segment_id)
    if path is None:
        raise _not_found("clip for segment", segment_id)
    return FileResponse(path, media_type="audio/flac", filename=path.name)


# --- alerts -----------------------------------------------------------------------------------
@router.get("/api/alerts", tags=["alerts"])
async def list_alerts(
    monitor: MonitorDep,
    open: bool = Query(False, description="only alerts nobody acknowledged yet"),
    limit: int = Query(100, ge=1, le=1000),
) -> list[AlertDetail]:
    """Alerts, newest first, each with its per-channel deliveries (webhook, Apprise, MQTT)."""
    alerts, deliveries = await monitor.alerts_with_deliveries(open_only=open, limit=limit)
    return [AlertDetail.with_deliveries(a, deliveries) for a in alerts]


@router.get("/api/alerts/{alert_id}", tags=["alerts"])
async def get_alert(alert_id: int, monitor: MonitorDep) -> AlertDetail:
    """One alert with its per-channel deliveries."""
    found = await monitor.alert_with_deliveries(alert_id)
    if found is None:
        raise _not_found("alert", alert_id)
    return AlertDetail.with_deliveries(*found)


@router.post("/api/alerts/{alert_id}/ack", tags=["alerts"])
async def acknowledge(alert_id: int, monitor: MonitorDep, body: AckBody | None = None) -> Alert:
    """A keeper has seen the alert (stored with who and when)."""
    alert = await monitor.acknowledge(alert_id, (body or AckBody()).by)
    if alert is None:
        raise _not_found("alert", alert_id)
    return Alert.of(alert)


@router.post("/api/alerts/test", status_code=201, tags=["alerts"])
async def test_alert(monitor: MonitorDep, body: TestAlertBody | None = None) -> AlertDetail:
    """Send a ``test`` alert through every channel (WebSocket, log, webhooks, Apprise
    notifications, MQTT); its deliveries start pending (``GET /api/alerts/{id}`` and the
    ``delivery`` event follow them)."""
    alert = await monitor.test_alert((body or TestAlertBody()).source)
    found = await monitor.alert_with_deliveries(alert.id)
    return AlertDetail.with_deliveries(*found) if found else AlertDetail.with_deliveries(alert, [])
