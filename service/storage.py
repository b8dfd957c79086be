"""SQLite (WAL) storage for encounters, segments, alerts and the alert outbox, plus FLAC clips.

Ownership: a ``Storage`` holds one sqlite3 connection, created by and used from one thread only
(sqlite3's ``check_same_thread`` enforces it). In the service that thread is the monitor's
worker (``service.monitor``); every read and write goes through it, so there is exactly one
writer and no locking here.

Durability: WAL with ``synchronous=NORMAL`` for segments and encounters (a power cut may lose
the last transactions, never corrupts), ``synchronous=FULL`` around alert and outbox writes so
an alert acknowledged to the pipeline is on disk.

Layout under ``data_dir``: ``pandapulse.sqlite3`` (+ WAL files) and
``clips/<source>/<YYYY-MM-DD>/<source>_<start sample>_<time>.flac``, and whole-encounter audio
``encounter-audio/<source>/<YYYY-MM-DD>/<source>_encounter<id>_<time>.flac``
(``service.encounter_audio``; paths stored relative).
Schema version lives in ``PRAGMA user_version``; ``_MIGRATIONS[i]`` upgrades from version i.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf

from model import constants as C
from service.errors import StorageError
from service.records import (
    AlertKind,
    AlertRow,
    AudioPartRow,
    EncounterRecord,
    EncounterRow,
    LiveRecords,
    ModelRole,
    ModelRow,
    OutboxRow,
    OutboxTarget,
    Removed,
    SegmentRow,
)

log = logging.getLogger(__name__)

DB_NAME = "pandapulse.sqlite3"
CLIPS_DIR = "clips"
ENCOUNTER_AUDIO_DIR = "encounter-audio"
"""Whole-encounter audio (``service.encounter_audio``): ``<source>/<YYYY-MM-DD>/*.flac``."""
CLIP_SUBTYPE = "PCM_24"
"""FLAC sample format of stored clips: 24-bit keeps quiet calls usable for retraining."""

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE encounters (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        enclosure TEXT NOT NULL DEFAULT '',
        pair TEXT NOT NULL DEFAULT '',
        keeper TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        started_at TEXT NOT NULL,
        ended_at TEXT,
        auto INTEGER NOT NULL DEFAULT 0,
        n_segments INTEGER NOT NULL DEFAULT 0,
        p_success REAL,
        verdict TEXT,
        outcome TEXT,
        copulation_observed INTEGER,
        pregnancy_confirmed INTEGER,
        model_version TEXT
    );
    CREATE INDEX encounters_source ON encounters (source, id);
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        encounter_id INTEGER REFERENCES encounters (id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        start_sample INTEGER NOT NULL,
        end_sample INTEGER NOT NULL,
        wall_time TEXT NOT NULL,
        p_success REAL NOT NULL,
        p_failure REAL NOT NULL,
        attention BLOB NOT NULL,
        level_left_db REAL NOT NULL,
        level_right_db REAL NOT NULL,
        model_version TEXT NOT NULL,
        clip_path TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX segments_encounter ON segments (encounter_id, id);
    CREATE INDEX segments_created ON segments (created_at);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        source TEXT,
        encounter_id INTEGER REFERENCES encounters (id) ON DELETE SET NULL,
        message TEXT NOT NULL,
        p_failure REAL,
        created_at TEXT NOT NULL,
        acknowledged_at TEXT,
        acknowledged_by TEXT
    );
    CREATE INDEX alerts_encounter ON alerts (encounter_id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER REFERENCES alerts (id) ON DELETE CASCADE,
        url TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        delivered_at TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
    """,
    # The outbox serves several channels (webhook, apprise, mqtt): each row names its channel,
    # its target within it and a label without secrets; failed_at marks a delivery given up.
    # Rows already there are webhook deliveries and keep everything they hold.
    """
    ALTER TABLE outbox RENAME COLUMN url TO target;
    ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook';
    ALTER TABLE outbox ADD COLUMN label TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN failed_at TEXT;
    DROP INDEX outbox_due;
    CREATE INDEX outbox_due ON outbox (delivered_at, failed_at, next_attempt_at);
    CREATE INDEX outbox_alert ON outbox (alert_id);
    """,
    # Stored models (POST /api/models) and which of them the service runs (model swap).
    """
    CREATE TABLE models (
        version TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        origin TEXT NOT NULL,
        filename TEXT NOT NULL DEFAULT '',
        uploaded_at TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        format TEXT NOT NULL,
        class_names TEXT NOT NULL,
        feature_kind TEXT NOT NULL,
        n_features INTEGER NOT NULL,
        card TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE model_roles (
        role TEXT PRIMARY KEY CHECK (role IN ('active', 'previous', 'shadow', 'config')),
        version TEXT NOT NULL
    );
    """,
    # Whole-encounter audio (service.encounter_audio): one row per file.
    """
    CREATE TABLE encounter_audio (
        id INTEGER PRIMARY KEY,
        encounter_id INTEGER NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        path TEXT NOT NULL,
        start_sample INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        frames INTEGER NOT NULL DEFAULT 0,
        size_bytes INTEGER NOT NULL DEFAULT 0,
        gap_samples INTEGER NOT NULL DEFAULT 0,
        finished_at TEXT,
        repaired INTEGER NOT NULL DEFAULT 0,
        removed_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX encounter_audio_encounter ON encounter_audio (encounter_id, id);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def read_only(db: Path, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
    """The rows of one query on the database file ``db``, opened read-only: for readers that
    are not the storage thread (``doctor``, the model roles read before storage opens). Raises
    ``sqlite3.Error`` when it cannot be read (missing table included)."""
    con = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql, tuple(params)).fetchall()
    finally:
        con.close()


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: what every stored and sent time looks like."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Storage:
    """The service's database and clip store (see the module docstring for threading)."""

    def __init__(self, data_dir: str | Path, *, keep_clips: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.keep_clips = keep_clips
        try:
            self.clips_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.data_dir / DB_NAME, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise StorageError(f"cannot open the data directory {self.data_dir}: {err}") from err
        self._db.row_factory = sqlite3.Row
        self.journal_mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    @property
    def clips_dir(self) -> Path:
        return self.data_dir / CLIPS_DIR

    def close(self) -> None:
        self._db.close()

    # --- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.data_dir / DB_NAME} has schema version {version}, newer than this"
                f" PandaPulse ({SCHEMA_VERSION}): upgrade PandaPulse or use another data_dir"
            )
        for v in range(version, SCHEMA_VERSION):
            try:
                self._db.executescript(
                    "BEGIN IMMEDIATE;" + _MIGRATIONS[v] + f"PRAGMA user_version={v + 1}; COMMIT;"
                )
            except sqlite3.Error as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(
                    f"cannot upgrade {self.data_dir / DB_NAME} to schema {v + 1}: {err}"
                ) from err

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    # --- encounters -----------------------------------------------------------------------
    def create_encounter(
        self,
        *,
        source: str,
        enclosure: str = "",
        pair: str = "",
        keeper: str = "",
        notes: str = "",
        auto: bool = False,
        started_at: datetime | None = None,
    ) -> EncounterRow:
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO encounters (source, enclosure, pair, keeper, notes, started_at, auto)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (source, enclosure, pair, keeper, notes, iso(started_at or utc_now()), int(auto)),
            )
        return self._encounter(int(cur.lastrowid or 0))

    def stop_encounter(self, encounter_id: int, ended_at: datetime | None = None) -> EncounterRow:
        with self._tx():
            self._db.execute(
                "UPDATE encounters SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
                (iso(ended_at or utc_now()), encounter_id),
            )
        return self._encounter(encounter_id)

    def set_outcome(
        self,
        encounter_id: int,
        *,
        outcome: str,
        copulation_observed: bool | None = None,
        pregnancy_confirmed: bool | None = None,
        notes: str | None = None,
    ) -> EncounterRow:
        with self._tx():
            self._db.execute(
                "UPDATE encounters SET outcome = ?, copulation_observed = ?,"
                " pregnancy_confirmed = ?, notes = COALESCE(?, notes) WHERE id = ?",
                (
                    outcome,
                    None if copulation_observed is None else int(copulation_observed),
                    None if pregnancy_confirmed is None else int(pregnancy_confirmed),
                    notes,
                    encounter_id,
                ),
            )
        return self._encounter(encounter_id)

    def get_encounter(self, encounter_id: int) -> EncounterRow | None:
        row = self._db.execute("SELECT * FROM encounters WHERE id = ?", (encounter_id,)).fetchone()
        return None if row is None else _encounter_row(row)

    def _encounter(self, encounter_id: int) -> EncounterRow:
        found = self.get_encounter(encounter_id)
        if found is None:
            raise KeyError(encounter_id)
        return found

    def list_encounters(
        self, *, limit: int = 50, offset: int = 0, source: str | None = None
    ) -> tuple[list[EncounterRow], int]:
        where, args = ("WHERE source = ?", [source]) if source else ("", [])
        total = self._db.execute(f"SELECT COUNT(*) FROM encounters {where}", args).fetchone()[0]
        rows = self._db.execute(
            f"SELECT * FROM encounters {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_encounter_row(r) for r in rows], int(total)

    def open_encounters(self) -> list[EncounterRow]:
        rows = self._db.execute(
            "SELECT * FROM encounters WHERE ended_at IS NULL ORDER BY id"
        ).fetchall()
        return [_encounter_row(r) for r in rows]

    def encounter_record(self, encounter_id: int) -> EncounterRecord | None:
        """The encounter with its segments and alerts, or None when there is no such id."""
        encounter = self.get_encounter(encounter_id)
        if encounter is None:
            return None
        return EncounterRecord(
            encounter,
            self.segments_of(encounter_id),
            self.alerts_of(encounter_id),
            self.audio_parts_of(encounter_id),
        )

    def live_records(self, n_segments: int) -> LiveRecords:
        """Open encounters, the ``n_segments`` latest segments and the open alerts."""
        return LiveRecords(
            self.open_encounters(),
            self.recent_segments(n_segments),
            self.list_alerts(open_only=True),
        )

    # --- segments -------------------------------------------------------------------------
    def add_segment(
        self,
        *,
        encounter_id: int | None,
        source: str,
        start_sample: int,
        end_sample: int,
        wall_time: datetime,
        p_success: float,
        p_failure: float,
        attention: np.ndarray,
        levels_db: Sequence[float],
        model_version: str,
        audio: np.ndarray | None,
        running_p_success: float | None = None,
        verdict: str | None = None,
    ) -> SegmentRow:
        """Store one scored segment (its clip first) and update its encounter's running figures.

        ``attention`` is (86,) float32; ``audio`` (2, n) float32 as captured, or None for no
        clip.
        """
        clip = None
        if self.keep_clips and audio is not None and audio.size:
            clip = self._write_clip(source, start_sample, wall_time, audio)
        att = np.ascontiguousarray(attention, dtype="<f4")
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO segments (encounter_id, source, start_sample, end_sample, wall_time,"
                " p_success, p_failure, attention, level_left_db, level_right_db, model_version,"
                " clip_path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    encounter_id,
                    source,
                    int(start_sample),
                    int(end_sample),
                    iso(wall_time),
                    float(p_success),
                    float(p_failure),
                    att.tobytes(),
                    float(levels_db[0]),
                    float(levels_db[1]),
                    model_version,
                    clip,
                    iso(utc_now()),
                ),
            )
            if encounter_id is not None:
                self._db.execute(
                    "UPDATE encounters SET n_segments = n_segments + 1, p_success = ?,"
                    " verdict = ?, model_version = ? WHERE id = ?",
                    (running_p_success, verdict, model_version, encounter_id),
                )
        return self._segment(int(cur.lastrowid or 0))

    def _write_clip(
        self, source: str, start_sample: int, wall_time: datetime, audio: np.ndarray
    ) -> str | None:
        day = wall_time.astimezone(UTC)
        rel = Path(CLIPS_DIR) / source / day.strftime("%Y-%m-%d")
        name = f"{source}_{int(start_sample)}_{day.strftime('%H%M%S%f')}.flac"
        try:
            (self.data_dir / rel).mkdir(parents=True, exist_ok=True)
            data = np.clip(np.asarray(audio, dtype=np.float32).T, -1.0, 1.0)
            sf.write(
                self.data_dir / rel / name, data, C.SAMPLE_RATE, format="FLAC", subtype=CLIP_SUBTYPE
            )
        except (OSError, sf.LibsndfileError, RuntimeError) as err:
            # The scores matter more than the clip: store the segment without it.
            log.error("cannot write clip %s: %s (segment stored without audio)", rel / name, err)
            return None
        return str(rel / name)

    def get_segment(self, segment_id: int) -> SegmentRow | None:
        row = self._db.execute("SELECT * FROM segments WHERE id = ?", (segment_id,)).fetchone()
        return None if row is None else _segment_row(row)

    def _segment(self, segment_id: int) -> SegmentRow:
        found = self.get_segment(segment_id)
        if found is None:
            raise KeyError(segment_id)
        return found

    def clip_file(self, segment_id: int) -> Path | None:
        """Absolute path of a segment's clip, or None (no such segment, or no clip kept)."""
        row = self._db.execute(
            "SELECT clip_path FROM segments WHERE id = ?", (segment_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        path = self.data_dir / row[0]
        return path if path.is_file() else None

    def segments_of(self, encounter_id: int) -> list[SegmentRow]:
        rows = self._db.execute(
            "SELECT * FROM segments WHERE encounter_id = ? ORDER BY id", (encounter_id,)
        ).fetchall()
        return [_segment_row(r) for r in rows]

    def recent_segments(self, n: int) -> list[SegmentRow]:
        """The ``n`` latest segments, oldest first."""
        rows = self._db.execute("SELECT * FROM segments ORDER BY id DESC LIMIT ?", (n,)).fetchall()
        return [_segment_row(r) for r in reversed(rows)]

    def count_segments(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM segments").fetchone()[0])

    # --- alerts and the outbox ------------------------------------------------------------
    def add_alert(
        self,
        *,
        kind: AlertKind,
        message: str,
        source: str | None = None,
        encounter_id: int | None = None,
        p_failure: float | None = None,
        targets: Iterable[OutboxTarget | tuple[str, str] | tuple[str, str, str]] = (),
        webhook_urls: Iterable[str] = (),
        payload: Callable[[AlertRow], str] | None = None,
        now: float | None = None,
    ) -> AlertRow:
        """Store an alert and, in the same transaction, one outbox row per delivery target.

        ``targets`` are ``(channel, target[, label])`` rows (``OutboxTarget``);
        ``webhook_urls`` is short for ``("webhook", url)`` each. ``payload(alert)`` makes the
        body every row carries (JSON text) from the stored alert (default: the row's fields as
        a JSON object); ``now`` (unix seconds) is when the first delivery is due.
        """
        rows = [OutboxTarget("webhook", url, webhook_label(url)) for url in webhook_urls]
        rows += [OutboxTarget(*t) for t in targets]
        created = utc_now()
        first_due = created.timestamp() if now is None else now
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._tx():
                cur = self._db.execute(
                    "INSERT INTO alerts (kind, source, encounter_id, message, p_failure, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (kind, source, encounter_id, message, p_failure, iso(created)),
                )
                alert_id = int(cur.lastrowid or 0)
                alert = self._alert(alert_id)
                body = json.dumps(asdict(alert)) if payload is None else payload(alert)
                for row in rows:
                    self._db.execute(
                        "INSERT INTO outbox (alert_id, channel, target, label, payload,"
                        " next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (alert_id, *row, body, first_due, iso(created)),
                    )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        return alert

    def acknowledge_alert(self, alert_id: int, by: str = "") -> AlertRow | None:
        with self._tx():
            self._db.execute(
                "UPDATE alerts SET acknowledged_at = ?, acknowledged_by = ?"
                " WHERE id = ? AND acknowledged_at IS NULL",
                (iso(utc_now()), by, alert_id),
            )
        return self.get_alert(alert_id)

    def get_alert(self, alert_id: int) -> AlertRow | None:
        row = self._db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else _alert_row(row)

    def _alert(self, alert_id: int) -> AlertRow:
        found = self.get_alert(alert_id)
        if found is None:
            raise KeyError(alert_id)
        return found

    def list_alerts(self, *, open_only: bool = False, limit: int = 100) -> list[AlertRow]:
        where = "WHERE acknowledged_at IS NULL" if open_only else ""
        rows = self._db.execute(
            f"SELECT * FROM alerts {where} ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_alert_row(r) for r in rows]

    def alerts_of(self, encounter_id: int) -> list[AlertRow]:
        rows = self._db.execute(
            "SELECT * FROM alerts WHERE encounter_id = ? ORDER BY id", (encounter_id,)
        ).fetchall()
        return [_alert_row(r) for r in rows]

    def due_outbox(self, now: float, limit: int = 20) -> list[OutboxRow]:
        rows = self._db.execute(
            f"SELECT * FROM outbox WHERE {_PENDING} AND next_attempt_at <= ? ORDER BY id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [OutboxRow(**dict(r)) for r in rows]

    def next_outbox_due(self) -> float | None:
        """Unix time of the earliest pending delivery, or None when nothing is pending."""
        row = self._db.execute(
            f"SELECT MIN(next_attempt_at) FROM outbox WHERE {_PENDING}"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def outbox_retry_now(self, channel: str, now: float) -> int:
        """Make the pending deliveries of ``channel`` due at ``now`` (its receiver is back:
        the MQTT broker reconnected); returns how many."""
        with self._tx():
            cur = self._db.execute(
                f"UPDATE outbox SET next_attempt_at = ? WHERE {_PENDING} AND channel = ?"
                " AND next_attempt_at > ?",
                (now, channel, now),
            )
        return int(cur.rowcount)

    def outbox_delivered(self, item_id: int) -> None:
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._tx():
                self._db.execute(
                    "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL"
                    " WHERE id = ?",
                    (iso(utc_now()), item_id),
                )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def outbox_failed(
        self, item_id: int, error: str, next_attempt_at: float, *, give_up: bool = False
    ) -> None:
        """Record a failed attempt: retry at ``next_attempt_at``, or never (``give_up``)."""
        with self._tx():
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " failed_at = ? WHERE id = ?",
                (error[:500], next_attempt_at, iso(utc_now()) if give_up else None, item_id),
            )

    def outbox_pending(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM outbox WHERE {_PENDING}").fetchone()[0])

    def outbox_rows(self, alert_ids: Sequence[int] | None = None) -> list[OutboxRow]:
        """Every outbox row (of the alerts ``alert_ids`` when given), oldest first."""
        if alert_ids is None:
            rows = self._db.execute("SELECT * FROM outbox ORDER BY id").fetchall()
            return [OutboxRow(**dict(r)) for r in rows]
        found: list[OutboxRow] = []
        for chunk in _chunks(list(alert_ids), 500):
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT * FROM outbox WHERE alert_id IN ({marks}) ORDER BY id", chunk
            ).fetchall()
            found += [OutboxRow(**dict(r)) for r in rows]
        return sorted(found, key=lambda r: r.id)

    # --- models -----------------------------------------------------------------------------
    def add_model(self, row: ModelRow) -> ModelRow:
        """Record a stored checkpoint (its file is already in place); KeyError if its version
        is stored already."""
        try:
            with self._tx():
                self._db.execute(
                    "INSERT INTO models (version, path, origin, filename, uploaded_at, size_bytes,"
                    " format, class_names, feature_kind, n_features, card)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row.version,
                        row.path,
                        row.origin,
                        row.filename,
                        row.uploaded_at,
                        row.size_bytes,
                        row.format,
                        json.dumps(list(row.class_names)),
                        row.feature_kind,
                        row.n_features,
                        row.card,
                    ),
                )
        except sqlite3.IntegrityError as err:
            raise KeyError(row.version) from err
        return row

    def get_model(self, version: str) -> ModelRow | None:
        row = self._db.execute("SELECT * FROM models WHERE version = ?", (version,)).fetchone()
        return None if row is None else _model_row(row)

    def list_models(self) -> list[ModelRow]:
        rows = self._db.execute("SELECT * FROM models ORDER BY uploaded_at, version").fetchall()
        return [_model_row(r) for r in rows]

    def model_roles(self) -> dict[ModelRole, str]:
        rows = self._db.execute("SELECT role, version FROM model_roles").fetchall()
        return {r["role"]: r["version"] for r in rows}

    def set_model_roles(self, roles: dict[ModelRole, str | None]) -> None:
        """Set (a version) or clear (None) each role given, in one transaction."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._tx():
                for role, version in roles.items():
                    if version is None:
                        self._db.execute("DELETE FROM model_roles WHERE role = ?", (role,))
                    else:
                        self._db.execute(
                            "INSERT INTO model_roles (role, version) VALUES (?, ?)"
                            " ON CONFLICT (role) DO UPDATE SET version = excluded.version",
                            (role, version),
                        )
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    # --- whole-encounter audio ------------------------------------------------------------------
    @property
    def encounter_audio_dir(self) -> Path:
        return self.data_dir / ENCOUNTER_AUDIO_DIR

    def add_audio_part(
        self, *, encounter_id: int, source: str, path: str, start_sample: int, started_at: str
    ) -> AudioPartRow:
        """Record a part about to be written (``path`` relative to the data directory)."""
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO encounter_audio (encounter_id, source, path, start_sample,"
                " started_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (encounter_id, source, path, int(start_sample), started_at, iso(utc_now())),
            )
        return self._audio_part(int(cur.lastrowid or 0))

    def finish_audio_part(
        self,
        part_id: int,
        *,
        frames: int,
        size_bytes: int,
        gap_samples: int,
        repaired: bool = False,
    ) -> None:
        """The part's file is complete (``frames`` 0: nothing was kept, the file is gone)."""
        now = iso(utc_now())
        with self._tx():
            self._db.execute(
                "UPDATE encounter_audio SET frames = ?, size_bytes = ?, gap_samples = ?,"
                " finished_at = ?, repaired = ?,"
                " removed_at = CASE WHEN ? = 0 THEN ? ELSE removed_at END WHERE id = ?",
                (frames, size_bytes, gap_samples, now, int(repaired), frames, now, part_id),
            )

    def _audio_part(self, part_id: int) -> AudioPartRow:
        row = self._db.execute("SELECT * FROM encounter_audio WHERE id = ?", (part_id,)).fetchone()
        if row is None:
            raise KeyError(part_id)
        return _audio_row(row)

    def audio_parts_of(self, encounter_id: int) -> list[AudioPartRow]:
        """The encounter's audio parts, oldest first (removed ones included)."""
        rows = self._db.execute(
            "SELECT * FROM encounter_audio WHERE encounter_id = ? ORDER BY id", (encounter_id,)
        ).fetchall()
        return [_audio_row(r) for r in rows]

    def unfinished_audio_parts(self) -> list[AudioPartRow]:
        rows = self._db.execute(
            "SELECT * FROM encounter_audio WHERE finished_at IS NULL ORDER BY id"
        ).fetchall()
        return [_audio_row(r) for r in rows]

    def audio_file(self, part: AudioPartRow) -> Path | None:
        """The part's file when it is complete and still on disk."""
        if part.finished_at is None or part.removed_at is not None or part.frames == 0:
            return None
        path = self.data_dir / part.path
        return path if path.is_file() else None

    def encounter_audio_bytes(self) -> int:
        return _bytes_under(self.encounter_audio_dir)

    # --- exports ----------------------------------------------------------------------------
    def all_encounters(self) -> list[EncounterRow]:
        rows = self._db.execute("SELECT * FROM encounters ORDER BY id").fetchall()
        return [_encounter_row(r) for r in rows]

    def encounters_where(
        self,
        *,
        since: str | None = None,
        source: str | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[EncounterRow]:
        """Encounters (oldest first) that started at or after ``since`` (ISO-8601 UTC), on
        ``source``, among ``ids``; None means no condition."""
        where: list[str] = []
        args: list[str | int] = []
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})" if ids else "0")
            args.extend(ids)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(f"SELECT * FROM encounters {clause} ORDER BY id", args).fetchall()
        return [_encounter_row(r) for r in rows]

    # --- retention ----------------------------------------------------------------------------
    def apply_retention(
        self, *, keep_days: float, max_disk_bytes: int, now: datetime | None = None
    ) -> Removed:
        """Delete what is older than ``keep_days``, then audio files (oldest first) beyond the
        budget.

        By age: encounters that ended before the cut-off (with their segments, alerts and
        whole audio), segments and acknowledged alerts without an encounter, delivered outbox
        rows, and the clips of every deleted segment. By disk use (clips and whole-encounter
        audio together, ``max_disk_bytes``): whole-encounter audio first, oldest first, then
        clips, oldest first (an hour of audio weighs as much as thousands of clips, and the
        History view plays the clips); their rows stay (a segment without its clip, an audio
        part marked removed). A part being written is never removed.
        """
        cutoff = iso((now or utc_now()) - timedelta(days=keep_days))
        old_audio = self._db.execute(
            "SELECT a.id, a.path FROM encounter_audio a JOIN encounters e"
            " ON e.id = a.encounter_id WHERE e.ended_at IS NOT NULL AND e.ended_at < ?",
            (cutoff,),
        ).fetchall()
        with self._tx():
            old_segments = self._db.execute(
                "SELECT id, clip_path FROM segments WHERE created_at < ? AND (encounter_id IS NULL"
                " OR encounter_id IN (SELECT id FROM encounters WHERE ended_at IS NOT NULL"
                " AND ended_at < ?))",
                (cutoff, cutoff),
            ).fetchall()
            ids = [r["id"] for r in old_segments]
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                self._db.execute(f"DELETE FROM segments WHERE id IN ({marks})", chunk)
            n_alerts = self._db.execute(
                "DELETE FROM alerts WHERE created_at < ? AND (acknowledged_at IS NOT NULL OR"
                " encounter_id IN (SELECT id FROM encounters WHERE ended_at < ?))",
                (cutoff, cutoff),
            ).rowcount
            n_encounters = self._db.execute(
                "DELETE FROM encounters WHERE ended_at IS NOT NULL AND ended_at < ?"
                " AND id NOT IN (SELECT DISTINCT encounter_id FROM segments"
                " WHERE encounter_id IS NOT NULL)",
                (cutoff,),
            ).rowcount
            self._db.execute(
                "DELETE FROM outbox WHERE COALESCE(delivered_at, failed_at) < ?", (cutoff,)
            )
        clips = sum(self._unlink(row["clip_path"]) for row in old_segments)
        # Parts whose encounter was deleted went with it (ON DELETE CASCADE): now their files.
        audio = sum(
            self._unlink(row["path"])
            for row in old_audio
            if self._db.execute(
                "SELECT 1 FROM encounter_audio WHERE id = ?", (row["id"],)
            ).fetchone()
            is None
        )
        trimmed_clips, trimmed_audio = self._trim_disk(max_disk_bytes)
        self._remove_empty_dirs()
        return Removed(
            encounters=n_encounters,
            segments=len(ids),
            alerts=n_alerts,
            clips=clips + trimmed_clips,
            audio_files=audio + trimmed_audio,
        )

    def clips_bytes(self) -> int:
        return _bytes_under(self.clips_dir)

    def _trim_disk(self, max_bytes: int) -> tuple[int, int]:
        """Remove finished audio parts, then clips, oldest first, until they fit in
        ``max_bytes``: (clips, audio files) removed."""
        used = self.clips_bytes() + self.encounter_audio_bytes()
        if used <= max_bytes:
            return 0, 0
        clips = self._db.execute(
            "SELECT created_at, id, clip_path AS path, 'clip' AS kind FROM segments"
            " WHERE clip_path IS NOT NULL ORDER BY created_at, id"
        )
        parts = self._db.execute(
            "SELECT created_at, id, path, 'audio' AS kind FROM encounter_audio"
            " WHERE finished_at IS NOT NULL AND removed_at IS NULL ORDER BY created_at, id"
        )
        removed = {"clip": 0, "audio": 0}
        for row in [*parts.fetchall(), *clips.fetchall()]:
            if used <= max_bytes:
                break
            path = self.data_dir / row["path"]
            size = path.stat().st_size if path.is_file() else 0
            with self._tx():
                if row["kind"] == "clip":
                    self._db.execute(
                        "UPDATE segments SET clip_path = NULL WHERE id = ?", (row["id"],)
                    )
                else:
                    self._db.execute(
                        "UPDATE encounter_audio SET removed_at = ? WHERE id = ?",
                        (iso(utc_now()), row["id"]),
                    )
            removed[row["kind"]] += self._unlink(row["path"])
            used -= size
        return removed["clip"], removed["audio"]

    def _unlink(self, rel: str | None) -> int:
        if not rel:
            return 0
        try:
            (self.data_dir / rel).unlink()
        except FileNotFoundError:
            return 0
        except OSError as err:
            log.warning("cannot delete clip %s: %s", rel, err)
            return 0
        return 1

    def _remove_empty_dirs(self) -> None:
        below = [*self.clips_dir.rglob("*"), *self.encounter_audio_dir.rglob("*")]
        for path in sorted(below, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


class _Transaction:
    """``with`` block = one IMMEDIATE transaction (autocommit connection, explicit BEGIN)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self._db.in_transaction:
            return
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _chunks(items: list[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _opt_bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _encounter_row(row: sqlite3.Row) -> EncounterRow:
    """The columns are the row's fields; SQLite's integers become booleans."""
    return EncounterRow(
        **{
            **dict(row),
            "auto": bool(row["auto"]),
            "copulation_observed": _opt_bool(row["copulation_observed"]),
            "pregnancy_confirmed": _opt_bool(row["pregnancy_confirmed"]),
        }
    )


def _segment_row(row: sqlite3.Row) -> SegmentRow:
    return SegmentRow(
        id=row["id"],
        encounter_id=row["encounter_id"],
        source=row["source"],
        start_sample=row["start_sample"],
        end_sample=row["end_sample"],
        wall_time=row["wall_time"],
        p_success=row["p_success"],
        p_failure=row["p_failure"],
        attention=tuple(np.frombuffer(row["attention"], dtype="<f4").tolist()),
        levels_db=(row["level_left_db"], row["level_right_db"]),
        model_version=row["model_version"],
        clip_path=row["clip_path"],
        created_at=row["created_at"],
    )


def _alert_row(row: sqlite3.Row) -> AlertRow:
    return AlertRow(**dict(row))


_PENDING = "delivered_at IS NULL AND failed_at IS NULL"
"""SQL condition of an outbox row still to deliver."""


def webhook_label(url: str) -> str:
    """``Webhook · https://hooks.example.org``: the URL's scheme, host and port only; its
    credentials, path (a Slack hook's path is its token) and query may carry secrets."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "Webhook"
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return f"Webhook · {scheme}://{authority.rpartition('@')[2]}"


def _audio_row(row: sqlite3.Row) -> AudioPartRow:
    return AudioPartRow(**{**dict(row), "repaired": bool(row["repaired"])})


def _bytes_under(folder: Path) -> int:
    """Bytes of the FLAC files below ``folder`` (0 when there is none)."""
    total = 0
    for path in folder.rglob("*.flac"):
        try:
            total += path.stat().st_size
        except OSError:  # removed meanwhile
            continue
    return total


def _model_row(row: sqlite3.Row) -> ModelRow:
    names = json.loads(row["class_names"])
    return ModelRow(**{**dict(row), "class_names": (str(names[0]), str(names[1]))})
