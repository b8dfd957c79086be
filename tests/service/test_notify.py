"""Notifications: the outbox's channels, Apprise delivery (real SMTP and HTTP receivers),
per-channel results through the API, config checks, and the migration of an old outbox."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from service.alerts import DeliveryError, OutboxWorker, WebhookDeliverer
from service.api import create_app
from service.config import load_settings
from service.doctor import Finding, check_notify
from service.errors import ConfigError
from service.records import OutboxRow
from service.storage import _MIGRATIONS, DB_NAME, SCHEMA_VERSION, Storage
from service.storage_thread import StorageThread
from service.wire import MESSAGE_ADAPTER, AlertDetail


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


Receiver = tuple[str, type[_Hook]]
"""A local HTTP receiver: its ``host:port`` and its handler class, with what it got."""


@contextlib.contextmanager
def receiver_server() -> Iterator[Receiver]:
    """A local HTTP receiver on a free loopback port, for the ``with`` block."""
    handler = type("Hook", (_Hook,), {"statuses": [], "accepted": [], "refused": 0})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    """Starts local HTTP receivers on demand; stops them after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(receiver_server())


@pytest.fixture
def hook(receivers: Callable[[], Receiver]) -> Receiver:
    return receivers()


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


def test_an_old_outbox_keeps_its_rows_and_delivers_them(tmp_path: Path, hook: Receiver) -> None:
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


# --- Apprise through real receivers ---------------------------------------------------------
class _Mailbox:
    """An aiosmtpd handler that keeps every message it is handed."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def smtp_server(mailbox: _Mailbox, port: int) -> Iterator[None]:
    """A real SMTP server (aiosmtpd) on the loopback ``port``, without TLS or auth."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Mailbox]]:
    mailbox, port = _Mailbox(), free_port()
    with smtp_server(mailbox, port):
        yield port, mailbox


def our_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the service and the libraries it uses logged (not the test's SMTP server)."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail."))


def _text(message: email.message.Message) -> str:
    part = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    return str(part.get_content()) if part is not None else ""


def test_an_alert_arrives_by_mail(
    monitor_factory: Any, smtp: tuple[int, _Mailbox], caplog: pytest.LogCaptureFixture
) -> None:
    port, mailbox = smtp
    url = f"mailto://127.0.0.1:{port}?to=keeper@example.org&from=pandapulse@example.org"
    caplog.set_level(logging.DEBUG)
    monitor, hub = monitor_factory(alerts={"notify": [url], "retry_schedule_s": [0.2]})
    alert = asyncio.run(monitor.test_alert("north"))
    wait_until("the e-mail", lambda: len(mailbox.messages) == 1)
    wait_until("the delivery recorded", lambda: asyncio.run(monitor.outbox_pending()) == 0)

    (message,) = mailbox.messages
    assert mailbox.envelopes == [("pandapulse@example.org", ["keeper@example.org"])]
    assert message["Subject"] == "PandaPulse · Test alert · North yard"
    body = _text(message)
    assert "Test alert from PandaPulse for North yard" in body
    assert f"Alert #{alert.id}" in body and "Enclosure: North yard" in body
    (row,) = monitor.store.run(lambda s: s.outbox_rows([alert.id])).result()
    assert (row.channel, row.status, row.attempts) == ("apprise", "delivered", 1)
    assert row.label == f"E-Mail · mailto://127.0.0.1:{port}"
    assert url not in row.target and "keeper" not in row.target  # a key, not the URL
    # The dashboard hears of it: a delivery event with the channel's result.
    wait_until("the delivery event", lambda: bool(hub.of_type("delivery")))
    event = hub.of_type("delivery")[-1]
    assert event.alert_id == alert.id and event.deliveries[0].status == "delivered"
    assert "keeper@example.org" not in our_log(caplog)  # nor any other part of the URL


def test_a_receiver_that_fails_first_gets_the_alert_once(
    monitor_factory: Any, hook: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    base, handler = hook
    handler.statuses = [500, 503]
    url = f"json://apprise-user:s3cret-pass@{base}/notify?token=t0k3n-value"
    caplog.set_level(logging.DEBUG)
    monitor, _ = monitor_factory(alerts={"notify": [url], "retry_schedule_s": [0.2]})
    alert = asyncio.run(monitor.test_alert(None))
    wait_until("delivery after two refusals", lambda: len(handler.accepted) == 1)
    wait_until("the delivery recorded", lambda: asyncio.run(monitor.outbox_pending()) == 0)
    assert handler.refused == 2 and len(handler.accepted) == 1
    sent = json.loads(handler.accepted[0])
    assert sent["title"] == "PandaPulse · Test alert" and sent["type"] == "info"
    assert sent["message"].startswith("Test alert from PandaPulse; no action needed.")
    (row,) = monitor.store.run(lambda s: s.outbox_rows([alert.id])).result()
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    assert monitor.outbox.by_channel["apprise"].failed_attempts == 2
    for secret in ("s3cret-pass", "t0k3n-value", "apprise-user"):
        assert secret not in our_log(caplog) and secret not in row.label


def test_a_removed_url_gives_its_deliveries_up(tmp_path: Path, monitor_factory: Any) -> None:
    port = free_port()  # nobody listens: the first attempt fails, the row stays pending
    url = f"json://127.0.0.1:{port}/gone"
    first, _ = monitor_factory(alerts={"notify": [url], "retry_schedule_s": [0.5]})
    alert = asyncio.run(first.test_alert(None))
    wait_until("a failed attempt", lambda: first.outbox.failed_attempts >= 1)
    (row,) = first.store.run(lambda s: s.outbox_rows([alert.id])).result()
    assert row.status == "pending" and row.last_error
    first.stop()

    # The same data directory, the URL taken out of the configuration.
    second, _ = monitor_factory(alerts={"retry_schedule_s": [0.5]})
    wait_until(
        "the row given up",
        lambda: (
            second.store.run(lambda s: s.outbox_rows([alert.id])).result()[0].status == "failed"
        ),
    )
    (row,) = second.store.run(lambda s: s.outbox_rows([alert.id])).result()
    assert row.last_error == "this notification URL is no longer in alerts.notify"
    assert row.attempts >= 2 and asyncio.run(second.outbox_pending()) == 0


# --- through the API ------------------------------------------------------------------------
def test_the_api_shows_each_channels_result(
    tmp_path: Path, untrained_checkpoint: Path, receivers: Callable[[], Receiver]
) -> None:
    (chat, chat_got), (hook_base, hook_got) = receivers(), receivers()
    chat_got.statuses = [502]  # the chat service fails once
    secret_url = f"json://pp-user:chat-pass-123@{chat}/notify?token=chat-token-456"
    settings = load_settings(
        environ={"PANDAPULSE__ALERTS__NOTIFY": json.dumps([secret_url])},
        overrides={
            "sources": [{"id": "north", "enclosure": "North yard", "kind": "synthetic"}],
            "inference": {"model": str(untrained_checkpoint), "device": "cpu"},
            "storage": {"data_dir": str(tmp_path / "data")},
            "alerts": {
                "webhook_urls": [f"http://{hook_base}/hook/s3cret-path"],
                "retry_schedule_s": [0.2],
            },
        },
    )
    with TestClient(create_app(settings)) as client:
        made = client.post("/api/alerts/test", json={"source": "north"})
        assert made.status_code == 201, made.text
        alert = AlertDetail.model_validate(made.json())
        labels = {d.channel: d.label for d in alert.deliveries}
        assert labels == {
            "webhook": f"Webhook · http://{hook_base}",
            "apprise": f"JSON · json://{chat}",
        }

        def settled() -> AlertDetail:
            return AlertDetail.model_validate(client.get(f"/api/alerts/{alert.id}").json())

        wait_until(
            "both channels delivered",
            lambda: all(d.status == "delivered" for d in settled().deliveries),
        )
        final = {d.channel: d for d in settled().deliveries}
        assert final["webhook"].attempts == 1 and final["apprise"].attempts == 2
        assert final["apprise"].last_error is None and final["apprise"].delivered_at
        listed = client.get("/api/alerts").json()
        assert [d["status"] for d in listed[0]["deliveries"]] == ["delivered", "delivered"]
        everything = client.get("/api/alerts").text + made.text
        assert client.get("/api/alerts/999999").status_code == 404
        metrics = {
            line.split()[0]: float(line.split()[1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("pandapulse_") and " " in line
        }
    assert metrics["pandapulse_notify_delivered_total"] == 1
    assert metrics["pandapulse_notify_failed_attempts_total"] == 1
    assert metrics["pandapulse_webhook_delivered_total"] == 1
    assert metrics["pandapulse_webhook_failed_attempts_total"] == 0
    for secret in ("chat-pass-123", "chat-token-456", "pp-user", "s3cret-path"):
        assert secret not in everything
    assert len(chat_got.accepted) == 1 and chat_got.refused == 1 and len(hook_got.accepted) == 1
    event = MESSAGE_ADAPTER.validate_json(hook_got.accepted[0])
    assert event.type == "alert" and event.alert.id == alert.id


# --- configuration and doctor ---------------------------------------------------------------
def test_a_bad_apprise_url_is_refused_at_load_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = "json://hooks-7c1e.example.net/x"
    for bad, why in [
        ("tgram://not-a-bot-token-5b8f", "Apprise does not accept this tgram:// URL"),
        ("nosuchservice://hidden-key-5b8f@host", "Apprise knows no nosuchservice:// service"),
        ("hidden-key-5b8f", "is not an Apprise URL"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_settings(environ={}, overrides={"alerts": {"notify": [good, bad]}})
        assert f"alerts: notify[1]: {why}" in str(err.value)
        assert "5b8f" not in str(err.value) and "5b8f" not in caplog.text
    with pytest.raises(ConfigError, match=r"notify\[1\]: repeats notify\[0\]"):
        load_settings(environ={}, overrides={"alerts": {"notify": [good, good]}})
    settings = load_settings(environ={"PANDAPULSE__ALERTS__NOTIFY": json.dumps([good])})
    assert "7c1e" not in repr(settings) and len(settings.alerts.notify) == 1


def test_doctor_parses_the_channels_and_sends_only_when_asked(
    smtp: tuple[int, _Mailbox],
) -> None:
    port, mailbox = smtp
    dead = free_port()
    settings = load_settings(
        environ={},
        overrides={
            "alerts": {
                "notify": [
                    f"mailto://127.0.0.1:{port}?to=keeper@example.org&from=pp@example.org",
                    "tgram://123456789:AAHabcdefghijklmnopqrstuvwxyz012/987654",
                    f"json://127.0.0.1:{dead}/down",
                ],
                "webhook_urls": ["http://127.0.0.1:9/hook"],
            }
        },
    )
    parsed = list(check_notify(settings))
    assert [type(i).__name__ for i in parsed] == ["Finding", "Note", "Note", "Note"]
    assert parsed[0].detail == "3 notification URLs: E-Mail, Telegram, JSON; 1 webhook URL"
    assert [i.detail for i in parsed[1:]] == [
        f"E-Mail · mailto://127.0.0.1:{port}",
        "Telegram · tgram://",
        f"JSON · json://127.0.0.1:{dead}",
    ]
    assert mailbox.messages == []  # parsing sends nothing

    sent = [i for i in check_notify(settings, send=True) if isinstance(i, Finding)][1:]
    assert [f.ok for f in sent] == [True, False, False]
    assert len(mailbox.messages) == 1
    assert mailbox.messages[0]["Subject"] == "PandaPulse · Test notification"
    assert sent[2].detail.startswith(f"JSON · json://127.0.0.1:{dead}: not sent: ")
    assert "AAHabcdef" not in " ".join(f.detail for f in sent)  # the bot token stays hidden


def test_retention_keeps_pending_deliveries(tmp_path: Path) -> None:
    store = Storage(tmp_path)
    alert = store.add_alert(
        kind="test",
        message="m",
        targets=[("webhook", "http://127.0.0.1:9/a"), ("apprise", "k1"), ("apprise", "k2")],
    )
    done, gone, waiting = store.outbox_rows([alert.id])
    store.outbox_delivered(done.id)
    store.outbox_failed(gone.id, "no longer configured", 0.0, give_up=True)
    store.outbox_failed(waiting.id, "HTTP 503", 0.0)
    later = datetime.now(UTC) + timedelta(days=200)
    store.apply_retention(keep_days=90, max_disk_bytes=1 << 40, now=later)
    (kept,) = store.outbox_rows()
    assert kept.id == waiting.id and kept.status == "pending" and store.outbox_pending() == 1
    store.close()
