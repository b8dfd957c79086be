"""Storage: WAL mode, schema version, round trips, clips, retention."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model import constants as C
from service.errors import StorageError
from service.records import Removed, SegmentRow
from service.storage import DB_NAME, SCHEMA_VERSION, Storage, read_only
from service.wire import Segment


def add_segment(store: Storage, enc: int | None, start: int, *, audio: bool = True) -> SegmentRow:
    rng = np.random.default_rng(start)
    return store.add_segment(
        encounter_id=enc,
        source="north",
        start_sample=start,
        end_sample=start + C.SEGMENT_SAMPLES,
        wall_time=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        p_success=0.25,
        p_failure=0.75,
        attention=np.full(C.N_FRAMES, 1 / C.N_FRAMES, np.float32),
        levels_db=(-30.0, -31.5),
        model_version="abc123",
        audio=(0.1 * rng.standard_normal((2, C.SEGMENT_SAMPLES))).astype(np.float32)
        if audio
        else None,
        running_p_success=0.25,
        verdict=None,
    )


def test_wal_and_schema(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    assert store.journal_mode == "wal"
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    # A second open reads the same schema and migrates nothing.
    other = Storage(tmp_path)
    assert other.schema_version() == SCHEMA_VERSION
    other.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StorageError, match="newer than this"):
        Storage(tmp_path)


def test_encounter_segment_alert_round_trip(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    enc = store.create_encounter(source="north", enclosure="North", pair="A x B", keeper="Li")
    assert enc.ended_at is None and enc.n_segments == 0 and enc.p_success is None
    seg = add_segment(store, enc.id, 44_100)
    assert seg.start_sample == C.SAMPLE_RATE and seg.end_sample == 3 * C.SAMPLE_RATE
    assert seg.levels_db == (-30.0, -31.5) and len(seg.attention) == C.N_FRAMES
    assert seg.clip_path is not None and seg.clip_path.endswith(".flac")
    # Seconds, rounding and the clip's route are the wire's business, not storage's.
    wire = Segment.of(seg)
    assert wire.start_s == 1.0 and wire.end_s == 3.0 and wire.levels_db == [-30.0, -31.5]
    assert wire.clip_url == f"/api/segments/{seg.id}/clip"
    clip = store.clip_file(seg.id)
    assert clip is not None and clip.suffix == ".flac"
    data, rate = sf.read(clip, always_2d=True)
    assert rate == C.SAMPLE_RATE and data.shape == (C.SEGMENT_SAMPLES, 2)
    enc = store.get_encounter(enc.id)
    assert enc is not None and enc.n_segments == 1 and enc.p_success == 0.25
    assert enc.model_version == "abc123"

    alert = store.add_alert(
        kind="failure_dominates",
        message="m",
        source="north",
        encounter_id=enc.id,
        p_failure=0.8,
        webhook_urls=["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"],
    )
    assert store.outbox_pending() == 2
    assert [a.id for a in store.list_alerts(open_only=True)] == [alert.id]
    acked = store.acknowledge_alert(alert.id, "Li")
    assert acked is not None and acked.acknowledged_by == "Li" and acked.acknowledged_at
    assert store.list_alerts(open_only=True) == []

    store.stop_encounter(enc.id)
    done = store.set_outcome(enc.id, outcome="success", copulation_observed=True, notes="seen")
    assert done.ended_at and done.outcome == "success" and done.copulation_observed is True
    assert done.pregnancy_confirmed is None and done.notes == "seen"
    store.close()

    # Everything survives a reopen.
    again = Storage(tmp_path)
    assert again.get_segment(seg.id) == seg
    assert again.segments_of(enc.id) == [seg]
    assert again.alerts_of(enc.id)[0].acknowledged_by == "Li"
    items, total = again.list_encounters()
    assert total == 1 and items[0].outcome == "success"
    again.close()


def test_no_clips_when_disabled(tmp_path: Path) -> None:
    store = Storage(tmp_path, keep_clips=False)
    seg = add_segment(store, None, 0)
    assert seg.clip_path is None and Segment.of(seg).clip_url is None
    assert store.clip_file(seg.id) is None
    assert not list((tmp_path / "clips").rglob("*.flac"))


def test_outbox_schedule(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    store.add_alert(kind="test", message="t", webhook_urls=["http://127.0.0.1:1/x"], now=100.0)
    assert store.due_outbox(99.0) == []
    (item,) = store.due_outbox(100.0)
    store.outbox_failed(item.id, "refused", 160.0)
    assert store.due_outbox(150.0) == [] and store.next_outbox_due() == 160.0
    (item,) = store.due_outbox(161.0)
    assert item.attempts == 1
    store.outbox_delivered(item.id)
    assert store.outbox_pending() == 0 and store.next_outbox_due() is None


def test_retention_by_age(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    old = store.create_encounter(source="north")
    seg_old = add_segment(store, old.id, 0)
    store.stop_encounter(old.id)
    store.add_alert(kind="failure_dominates", message="m", encounter_id=old.id)
    current = store.create_encounter(source="north")
    seg_new = add_segment(store, current.id, C.SEGMENT_SAMPLES)
    clip_old = store.clip_file(seg_old.id)
    assert clip_old is not None

    # Nothing is old yet.
    assert store.apply_retention(keep_days=1, max_disk_bytes=10**9).segments == 0
    # 2 days later: the closed encounter goes; the open one (and its segment) stays.
    removed = store.apply_retention(
        keep_days=1, max_disk_bytes=10**9, now=datetime.now(UTC) + timedelta(days=2)
    )
    assert removed == Removed(encounters=1, segments=1, alerts=1, clips=1)
    assert store.get_encounter(old.id) is None and store.get_segment(seg_old.id) is None
    assert not clip_old.exists()
    assert store.get_segment(seg_new.id) is not None
    assert store.get_encounter(current.id) is not None


def test_retention_by_disk_use(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    segs = [add_segment(store, None, i * C.SEGMENT_SAMPLES) for i in range(4)]
    one = store.clips_bytes() // 4
    removed = store.apply_retention(keep_days=30, max_disk_bytes=int(2.5 * one))
    assert removed.clips == 2 and removed.segments == 0
    # Oldest clips went first; their rows stay without a clip.
    kept = [store.get_segment(s.id) for s in segs]
    assert [k is not None and k.clip_path is not None for k in kept] == [False, False, True, True]
    assert store.clips_bytes() <= 2.5 * one


def test_read_only_reads_a_database_in_any_folder_and_never_writes(tmp_path: Path) -> None:
    folder = tmp_path / "box #2? 100%"  # characters that mean something in a URI
    store = Storage(folder)
    enc = store.create_encounter(source="north")
    store.close()
    db = folder / DB_NAME
    (row,) = read_only(db, "SELECT id, source FROM encounters")
    assert (row["id"], row["source"]) == (enc.id, "north")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        read_only(db, "DELETE FROM encounters")
    assert len(read_only(db, "SELECT id FROM encounters")) == 1
    with pytest.raises(sqlite3.Error):
        read_only(folder / "missing.sqlite3", "SELECT 1")  # never created
    assert not (folder / "missing.sqlite3").exists()
