"""Notifications: the outbox's channels, Apprise delivery (real SMTP and HTTP receivers),
per-channel results through the API, config checks, and the migration of an old outbox."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from service.alerts import DeliveryError, OutboxWorker, WebhookDeliverer
from service.records import OutboxRow
from service.storage import _MIGRATIONS, DB_NAME, SCHEMA_VERSION, Storage
from service.storage_thread import StorageThread


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Hook(BaseHTTPRequestHandler):
    """Answers POSTs with the next status of ``statuses`` (then 200) and keeps the bodies it
    accepted."""

    statuses: ClassVar[list[int]] = []
    accepted: ClassVar[list[bytes]] = []
    refused: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        if status < 300:
            type(self).accepted.append(body)
        else:
            type(self).refused += 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[tuple[str, type[_Hook]]]:
    """A local HTTP receiver: (base URL, its handler class with what it got)."""
    handler = type("Hook", (_Hook,), {"statuses": [], "accepted": [], "refused": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


# --- the outbox's channels ------------------------------------------------------------------
def _old_database(data_dir: Path, url: str) -> None:
    """A database as the first schema left it: two alerts, one webhook delivery pending (with
    a failed attempt behind it) and one delivered."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    db.executescript("BEGIN;" + _MIGRATIONS[0] + "PRAGMA user_version=1; COMMIT;")
    for i in (1, 2):
        db.execute(
            "INSERT INTO alerts (id, kind, message, created_at) VALUES (?, 'test', ?, ?)",
            (i, f"old alert {i}", "2026-01-01T00:00:00.000Z"),
        )
    db.execute(
        "INSERT INTO outbox (alert_id, url, payload, attempts, next_attempt_at, last_error,"
        " created_at) VALUES (1, ?, '{\"old\": 1}', 1, 0, 'HTTP 503', '2026-01-01T00:00:00.000Z')",
        (url,),
    )
    db.execute(
        "INSERT INTO outbox (alert_id, url, payload, attempts, next_attempt_at, delivered_at,"
        " created_at) VALUES (2, ?, '{\"old\": 2}', 1, 0, '2026-01-01T00:00:01.000Z',"
        " '2026-01-01T00:00:00.000Z')",
        (url,),
    )
    db.close()


def test_an_old_outbox_keeps_its_rows_and_delivers_them(
    tmp_path: Path, hook: tuple[str, type[_Hook]]
) -> None:
    base, handler = hook
    url = f"http://user:pw@{base}/old-hook?key=secret"
    _old_database(tmp_path, url)
    store = Storage(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    pending, delivered = store.outbox_rows()
    assert (pending.alert_id, pending.channel, pending.target) == (1, "webhook", url)
    assert (pending.payload, pending.attempts, pending.last_error) == ('{"old": 1}', 1, "HTTP 503")
    assert pending.status == "pending" and pending.failed_at is None
    assert delivered.status == "delivered" and delivered.delivered_at == "2026-01-01T00:00:01.000Z"
    assert store.outbox_pending() == 1
    store.close()

    # The upgraded row is delivered like a new one.
    thread = StorageThread(lambda: Storage(tmp_path))
    thread.start()
    worker = OutboxWorker(thread, schedule=[0.1], deliverers=[WebhookDeliverer(timeout_s=5)])
    worker.start()
    try:
        wait_until("the old webhook delivery", lambda: worker.delivered == 1)
    finally:
        worker.stop()
        thread.stop()
    assert handler.accepted == [b'{"old": 1}']
    again = Storage(tmp_path)
    assert [r.status for r in again.outbox_rows()] == ["delivered", "delivered"]
    again.close()


class _Recorder:
    """A deliverer of a channel of its own: fails as told, then records what it delivers."""

    def __init__(self, channel: str, failures: list[DeliveryError]) -> None:
        self.channel = channel
        self.failures = failures
        self.delivered: list[OutboxRow] = []
        self.closed = False

    def deliver(self, row: OutboxRow) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(row)

    def close(self) -> None:
        self.closed = True


def test_rows_go_to_the_deliverer_of_their_channel(tmp_path: Path) -> None:
    thread = StorageThread(lambda: Storage(tmp_path))
    thread.start()
    retried = _Recorder("mqtt", [DeliveryError("broker down")])
    given_up = _Recorder("pager", [DeliveryError("number unknown", permanent=True)])
    changed: list[int] = []
    worker = OutboxWorker(thread, schedule=[0.1], deliverers=[retried, given_up])
    worker.on_change = changed.append
    with pytest.raises(ValueError, match="has a deliverer already"):
        worker.register(_Recorder("mqtt", []))
    alert = thread.run(
        lambda s: s.add_alert(
            kind="test",
            message="m",
            targets=[("mqtt", "pp/alerts"), ("pager", "123", "Pager"), ("fax", "0")],
        )
    ).result()
    worker.start()
    try:
        wait_until("the mqtt delivery", lambda: len(retried.delivered) == 1)
        wait_until(
            "three rows settled", lambda: thread.run(lambda s: s.outbox_pending()).result() == 0
        )
    finally:
        worker.stop()
    rows = {r.channel: r for r in thread.run(lambda s: s.outbox_rows([alert.id])).result()}
    thread.stop()
    assert retried.closed and given_up.closed
    assert retried.delivered[0].target == "pp/alerts"
    assert rows["mqtt"].status == "delivered" and rows["mqtt"].attempts == 2
    assert rows["pager"].status == "failed" and rows["pager"].last_error == "number unknown"
    assert rows["pager"].attempts == 1 and rows["pager"].label == "Pager"
    assert rows["fax"].status == "failed" and "no deliverer for channel 'fax'" in str(
        rows["fax"].last_error
    )
    assert given_up.delivered == [] and set(changed) == {alert.id}
    assert worker.by_channel["mqtt"].delivered == 1 and worker.by_channel["pager"].given_up == 1
