"""Encounters (start, stop, list, detail, outcome, CSV), segment clips and alerts."""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.auth import require_token
from service.api.errors import ApiError
from service.api.live import RuntimeDep
from service.storage import Storage
from service.wire import Alert, Encounter, EncounterDetail, EncounterPage

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
    outcome: Literal["success", "failure", "unknown"]
    copulation_observed: bool | None = None
    pregnancy_confirmed: bool | None = None
    notes: str | None = Field(default=None, max_length=4 * _TEXT)


class AckBody(_Body):
    by: str = Field(default="", max_length=_TEXT)


class TestAlertBody(_Body):
    source: str | None = Field(default=None, max_length=64)


def _not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {ident}")


def _unknown_source(rt: Any, source: str) -> ApiError:
    known = ", ".join(s.id for s in rt.settings.sources)
    return ApiError(404, "unknown_source", f"no source {source!r}; configured sources: {known}")


# --- encounters -------------------------------------------------------------------------------
@router.post("/api/encounters", status_code=201, response_model=Encounter, tags=["encounters"])
async def create_encounter(body: EncounterCreate, rt: RuntimeDep) -> dict[str, Any]:
    """Start an encounter on a source (its open encounter, if any, is stopped first)."""
    assert rt.monitor is not None
    monitor = rt.monitor
    try:
        return await monitor.adb(
            lambda s: monitor.start_encounter(s, body.source, body.pair, body.keeper, body.notes)
        )
    except KeyError:
        raise _unknown_source(rt, body.source) from None


@router.post("/api/encounters/{encounter_id}/stop", response_model=Encounter, tags=["encounters"])
async def stop_encounter(encounter_id: int, rt: RuntimeDep) -> dict[str, Any]:
    assert rt.monitor is not None
    monitor = rt.monitor
    row = await monitor.adb(lambda s: monitor.stop_encounter(s, encounter_id))
    if row is None:
        raise _not_found("encounter", encounter_id)
    return row


@router.get("/api/encounters", response_model=EncounterPage, tags=["encounters"])
async def list_encounters(
    rt: RuntimeDep,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    source: str | None = Query(None, max_length=64),
) -> dict[str, Any]:
    """Encounters, newest first."""
    assert rt.monitor is not None
    items, total = await rt.monitor.adb(
        lambda s: s.list_encounters(limit=limit, offset=offset, source=source)
    )
    return {"items": items, "total": total}


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


def _csv(fields: list[str], rows: list[dict[str, Any]], filename: str) -> Response:
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


@router.get("/api/encounters/export.csv", tags=["encounters"], response_class=Response)
async def export_encounters(rt: RuntimeDep) -> Response:
    """Every encounter, one row each (outcomes included: these become training labels)."""
    assert rt.monitor is not None
    rows = await rt.monitor.adb(lambda s: s.all_encounters())
    return _csv(ENCOUNTER_CSV_FIELDS, rows, "encounters.csv")


@router.get("/api/encounters/{encounter_id}", response_model=EncounterDetail, tags=["encounters"])
async def get_encounter(encounter_id: int, rt: RuntimeDep) -> dict[str, Any]:
    """One encounter with its segments and alerts."""
    assert rt.monitor is not None

    def read(s: Storage) -> dict[str, Any] | None:
        row = s.get_encounter(encounter_id)
        if row is None:
            return None
        return {**row, "segments": s.segments_of(encounter_id), "alerts": s.alerts_of(encounter_id)}

    row = await rt.monitor.adb(read)
    if row is None:
        raise _not_found("encounter", encounter_id)
    return row


@router.put("/api/encounters/{encounter_id}/outcome", response_model=Encounter, tags=["encounters"])
async def set_outcome(encounter_id: int, body: OutcomeBody, rt: RuntimeDep) -> dict[str, Any]:
    """Record what happened (copulation observed, pregnancy confirmed) once it is known."""
    assert rt.monitor is not None
    monitor = rt.monitor
    row = await monitor.adb(lambda s: monitor.set_outcome(s, encounter_id, **body.model_dump()))
    if row is None:
        raise _not_found("encounter", encounter_id)
    return row


@router.get(
    "/api/encounters/{encounter_id}/export.csv", tags=["encounters"], response_class=Response
)
async def export_encounter(encounter_id: int, rt: RuntimeDep) -> Response:
    """One row per segment of the encounter."""
    assert rt.monitor is not None

    def read(s: Storage) -> list[dict[str, Any]] | None:
        if s.get_encounter(encounter_id) is None:
            return None
        return s.segments_of(encounter_id)

    rows = await rt.monitor.adb(read)
    if rows is None:
        raise _not_found("encounter", encounter_id)
    for row in rows:
        row["level_left_db"], row["level_right_db"] = row["levels_db"]
    return _csv(SEGMENT_CSV_FIELDS, rows, f"encounter-{encounter_id}.csv")


@router.get("/api/segments/{segment_id}/clip", tags=["encounters"], response_class=FileResponse)
async def clip(segment_id: int, rt: RuntimeDep) -> FileResponse:
    """The segment's audio as captured (FLAC, 44.1 kHz stereo)."""
    assert rt.monitor is not None
    path = await rt.monitor.adb(lambda s: s.clip_file(segment_id))
    if path is None:
        raise _not_found("clip for segment", segment_id)
    return FileResponse(path, media_type="audio/flac", filename=path.name)


# --- alerts -----------------------------------------------------------------------------------
@router.get("/api/alerts", response_model=list[Alert], tags=["alerts"])
async def list_alerts(
    rt: RuntimeDep,
    open: bool = Query(False, description="only alerts nobody acknowledged yet"),
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    assert rt.monitor is not None
    return await rt.monitor.adb(lambda s: s.list_alerts(open_only=open, limit=limit))


@router.post("/api/alerts/{alert_id}/ack", response_model=Alert, tags=["alerts"])
async def acknowledge(alert_id: int, rt: RuntimeDep, body: AckBody | None = None) -> dict[str, Any]:
    """A keeper has seen the alert (stored with who and when)."""
    assert rt.monitor is not None
    monitor = rt.monitor
    by = (body or AckBody()).by
    alert = await monitor.adb(lambda s: monitor.acknowledge(s, alert_id, by))
    if alert is None:
        raise _not_found("alert", alert_id)
    return alert


@router.post("/api/alerts/test", status_code=201, response_model=Alert, tags=["alerts"])
async def test_alert(rt: RuntimeDep, body: TestAlertBody | None = None) -> dict[str, Any]:
    """Send a ``test`` alert through every channel (WebSocket, log, webhooks)."""
    assert rt.monitor is not None
    monitor = rt.monitor
    source = (body or TestAlertBody()).source
    try:
        return await monitor.adb(lambda s: monitor.test_alert(s, source))
    except KeyError:
        raise _unknown_source(rt, str(source)) from None
