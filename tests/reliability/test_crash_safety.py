"""Crash safety: ``kill -9`` in the middle of an encounter, then restart.

The real service (subprocess) scores a synthetic encounter as fast as it goes, with a webhook
whose receiver is down. After segments and alerts are stored (as the API reports them), the
process is killed with SIGKILL. Then: the database passes ``PRAGMA integrity_check``, every
segment (with its clip) and alert reported before the kill is still there, unchanged; the
receiver comes up, the service restarts with the same configuration, and the webhook
deliveries that were pending are made.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from service.storage import DB_NAME
from tests.reliability.conftest import ServiceFactory, wait_for
from tests.reliability.record import record
from tests.reliability.server import free_port

MIN_SEGMENTS_BEFORE_KILL = 6
BOUND_S = 180.0
"""Longest wait for each stage (a hang guard on a busy 2-core machine, not a timing target)."""


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every JSON body POSTed to it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def db_rows(db: Path, sql: str) -> list[sqlite3.Row]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_kill_9_mid_encounter_loses_nothing_stored(make_service: ServiceFactory) -> None:
    receiver_port = free_port()
    hook = f"http://127.0.0.1:{receiver_port}/hook"
    service = make_service(
        sources=[{"id": "demo", "kind": "synthetic", "realtime": False, "seed": 3}],
        encounter={"auto": False},
        # Low thresholds so a failure alert is raised early in the encounter, whatever the
        # (untrained) model says.
        alerts={
            "webhook_urls": [hook],
            "retry_schedule_s": [0.5, 1.0],
            "failure_threshold": 0.05,
            "clear_threshold": 0.01,
            "hold_segments": 1,
            "min_segments": 1,
        },
    )
    data_dir = service.log_path.parent / "data"
    db = data_dir / DB_NAME
    service.wait_ready()
    with service.client() as client:
        r = client.post(
            "/api/encounters",
            json={"source": "demo", "pair": "Mei x Tian", "keeper": "night shift"},
        )
        assert r.status_code == 201, r.text
        enc_id = r.json()["id"]

        def encounter() -> dict[str, Any]:
            return client.get(f"/api/encounters/{enc_id}").json()

        wait_for(
            "segments stored",
            lambda: encounter()["n_segments"] >= MIN_SEGMENTS_BEFORE_KILL,
            BOUND_S,
        )
        test_alert = client.post("/api/alerts/test", json={"source": "demo"})
        assert test_alert.status_code == 201, test_alert.text
        wait_for(
            "a failure alert and failed webhook attempts",
            lambda: (
                any(a["kind"] == "failure_dominates" for a in encounter()["alerts"])
                and "webhook_failed_attempts" in (m := client.get("/metrics").text)
                and any(
                    line.split()[-1] not in ("0", "0.0")
                    for line in m.splitlines()
                    if "webhook_failed_attempts" in line and not line.startswith("#")
                )
            ),
            BOUND_S,
        )
        before = encounter()
        alerts_before = client.get("/api/alerts").json()
    assert before["ended_at"] is None  # the encounter is open: the kill lands in its middle

    service.kill9()
    killed_at_segments = len(before["segments"])

    # Straight after the kill, before anything else opens the database.
    assert [r[0] for r in db_rows(db, "PRAGMA integrity_check")] == ["ok"]
    stored = {row["id"]: row for row in db_rows(db, "SELECT * FROM segments")}
    for seg in before["segments"]:
        row = stored.get(seg["id"])
        assert row is not None, f"segment {seg['id']} lost"
        assert row["p_success"] == pytest.approx(seg["p_success"], abs=1e-6)
        assert row["encounter_id"] == enc_id
        clip = data_dir / row["clip_path"]
        info = sf.info(clip)  # the clip is a complete, readable FLAC
        assert info.frames == row["end_sample"] - row["start_sample"]
    alert_ids = {row["id"] for row in db_rows(db, "SELECT id FROM alerts")}
    assert {a["id"] for a in alerts_before} <= alert_ids
    pending = db_rows(db, "SELECT * FROM outbox WHERE delivered_at IS NULL")
    assert {row["alert_id"] for row in pending} >= {a["id"] for a in alerts_before}
    assert any(row["attempts"] >= 1 for row in pending)  # delivery was tried and failed

    # The receiver comes up; the service restarts (as systemd or Docker would).
    with Receiver(receiver_port) as receiver:
        restarted = make_service(reuse=service)
        restarted.wait_ready()
        expected_ids = {a["id"] for a in alerts_before}
        wait_for(
            "pending webhooks delivered",
            lambda: expected_ids <= {b["alert"]["id"] for b in receiver.bodies},
            timeout=60,
        )
        with restarted.client() as client:
            after = client.get(f"/api/encounters/{enc_id}").json()
            alerts_after = client.get("/api/alerts").json()
            # The restored encounter's alarm starts afresh, so an alert raised just after the
            # restart may still be on its way: every delivery ends done, the old and the new.
            wait_for(
                "the outbox drained",
                lambda: client.get("/stats").json()["storage"]["outbox_pending"] == 0,
                timeout=60,
            )
        bodies = list(receiver.bodies)
    after_segments = {s["id"]: s for s in after["segments"]}
    for seg in before["segments"]:
        assert after_segments[seg["id"]] == seg, f"segment {seg['id']} changed across the crash"
    assert {a["id"] for a in alerts_before} <= {a["id"] for a in alerts_after}
    for body in bodies:
        assert body["type"] == "alert" and body["action"] == "raised"
    assert [r[0] for r in db_rows(db, "PRAGMA integrity_check")] == ["ok"]
    record(
        "crash safety",
        f"kill -9 mid-encounter after {killed_at_segments} segments reported, receiver down; restart",
        f"integrity_check ok; {killed_at_segments}/{killed_at_segments} reported segments and"
        f" {len(alerts_before)}/{len(alerts_before)} alerts intact ({len(stored)} segments in the DB at the kill);"
        f" {len(expected_ids)} pending webhook(s) delivered after restart; encounter after restart:"
        f" {'open' if after['ended_at'] is None else 'closed'}",
        segments_in_db_at_kill=len(stored),
        webhook_bodies=len(bodies),
    )
