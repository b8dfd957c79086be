"""Alerts: the failure rule (hold, hysteresis, cooldown), delivery from the outbox, acks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from service.alerts import FailureAlarm, FailureRule, backoff_s
from service.types import SourceStatus
from service.wire import MESSAGE_ADAPTER
from tests.service.conftest import drain, scored

RULE = FailureRule(
    failure_threshold=0.7, clear_threshold=0.5, hold_segments=3, cooldown_s=60, min_segments=1
)


def feed(alarm: FailureAlarm, values: list[float], t0: float = 0.0) -> list[int]:
    """Indices of the updates that raised."""
    return [i for i, p in enumerate(values) if alarm.update(p, i + 1, t0 + 2.0 * i)]


def test_single_segment_does_not_raise() -> None:
    assert feed(FailureAlarm(RULE), [0.9, 0.2, 0.9, 0.2, 0.95, 0.1]) == []


def test_sustained_failure_raises_once() -> None:
    assert feed(FailureAlarm(RULE), [0.8] * 20) == [2]


def test_hysteresis_rearms_only_below_clear_threshold() -> None:
    rule = FailureRule(0.7, 0.5, hold_segments=2, cooldown_s=0)
    alarm = FailureAlarm(rule)
    # raise, dip to 0.6 (above clear: still disarmed), rise again: nothing
    assert feed(alarm, [0.8, 0.8, 0.6, 0.8, 0.8, 0.8]) == [1]
    # below clear re-arms; two more above raise again
    assert feed(alarm, [0.4, 0.8, 0.8], t0=100) == [2]


def test_cooldown_holds() -> None:
    rule = FailureRule(0.7, 0.5, hold_segments=2, cooldown_s=60)
    alarm = FailureAlarm(rule)
    assert alarm.update(0.8, 1, 0.0) is False and alarm.update(0.8, 2, 2.0) is True
    assert alarm.update(0.3, 3, 4.0) is False  # re-armed
    assert alarm.update(0.8, 4, 6.0) is False
    assert alarm.update(0.8, 5, 8.0) is False  # would raise, but within 60 s
    assert alarm.update(0.8, 6, 63.0) is True


def test_min_segments() -> None:
    rule = FailureRule(0.7, 0.5, hold_segments=1, cooldown_s=0, min_segments=4)
    assert feed(FailureAlarm(rule), [0.9] * 5) == [3]


def test_backoff_schedule() -> None:
    assert [backoff_s(n, [1, 5, 30]) for n in range(1, 6)] == [1, 5, 30, 30, 30]


def test_monitor_raises_once_with_log_and_event(
    monitor_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monitor, hub = monitor_factory(
        alerts={
            "failure_threshold": 0.7,
            "clear_threshold": 0.5,
            "hold_segments": 3,
            "min_segments": 1,
        }
    )
    caplog.set_level("WARNING", logger="service.monitor")
    monitor.on_segment(scored("north", 0.0, 0.05))  # one failure-like segment: P(f) 0.95
    monitor.on_segment(scored("north", 2.0, 0.9))
    drain(monitor)
    assert hub.of_type("alert") == []
    for i in range(10):
        monitor.on_segment(scored("north", 4.0 + 2 * i, 0.05))
    drain(monitor)
    (alert,) = hub.of_type("alert")
    assert alert.action == "raised" and alert.alert.kind == "failure_dominates"
    assert alert.alert.p_failure > 0.7 and alert.alert.encounter_id is not None
    assert "ALERT" in caplog.text and "failure_dominates" in caplog.text
    stored = asyncio.run(monitor.alerts())
    assert [a.id for a in stored] == [alert.alert.id]
    # Stored before published: the segment that raised it is on disk with its encounter.
    enc = asyncio.run(monitor.encounter(alert.alert.encounter_id))
    assert enc is not None and enc.encounter.n_segments == 12


def test_acknowledgement_is_stored_and_published(monitor_factory: Any) -> None:
    monitor, hub = monitor_factory()
    alert = asyncio.run(monitor.test_alert("north"))
    acked = asyncio.run(monitor.acknowledge(alert.id, "keeper Li"))
    assert acked.acknowledged_by == "keeper Li" and acked.acknowledged_at is not None
    assert [m.action for m in hub.of_type("alert")] == ["raised", "acknowledged"]
    monitor.stop()
    from service.storage import Storage

    store = Storage(monitor.settings.storage.data_dir)
    assert store.get_alert(alert.id).acknowledged_by == "keeper Li"
    store.close()


def test_stalled_source_raises_once_per_episode(monitor_factory: Any) -> None:
    monitor, hub = monitor_factory()
    monitor.on_source_status(SourceStatus("north", "stalled", "no audio for 5.0 s"))
    monitor.on_source_status(SourceStatus("north", "stalled", "no audio for 10.0 s"))
    drain(monitor)
    (alert,) = hub.of_type("alert")
    assert alert.alert.kind == "audio_stalled" and "no audio for 5.0 s" in alert.alert.message
    monitor.on_source_status(SourceStatus("north", "ok"))
    monitor.on_source_status(SourceStatus("north", "stalled", "again"))
    drain(monitor)
    assert len(hub.of_type("alert")) == 2


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webhook_receiver_down_then_up_gets_the_alert(monitor_factory: Any) -> None:
    port = free_port()
    monitor, _ = monitor_factory(
        alerts={
            "webhook_urls": [f"http://127.0.0.1:{port}/hook"],
            "retry_schedule_s": [0.2],
            "webhook_timeout_s": 2,
        }
    )
    alert = asyncio.run(monitor.test_alert(None))
    # Nobody listens yet: attempts fail and the row stays pending.
    deadline = time.monotonic() + 20
    while monitor.outbox.failed_attempts < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert monitor.outbox.failed_attempts >= 2
    assert asyncio.run(monitor.outbox_pending()) == 1

    _Receiver.bodies = []
    _Receiver.arrived.clear()
    server = HTTPServer(("127.0.0.1", port), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _Receiver.arrived.wait(20), "the outbox never delivered after the receiver came up"
        deadline = time.monotonic() + 10
        while asyncio.run(monitor.outbox_pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    (body,) = _Receiver.bodies
    msg = MESSAGE_ADAPTER.validate_python(body)
    assert msg.type == "alert" and msg.alert.id == alert.id and msg.alert.kind == "test"
    (row,) = monitor.store.run(lambda s: s.outbox_rows()).result()
    assert row.delivered_at is not None and row.attempts >= 3 and row.last_error is None


def test_the_alarm_class_comes_from_the_model_or_the_config() -> None:
    from service.alerts import alarm_column
    from service.errors import ConfigError

    assert alarm_column(("success", "failure"), None) == 1
    assert alarm_column(("discomfort", "pain"), None) is None  # not panda outcomes: no alarm
    assert alarm_column(("discomfort", "pain"), "pain") == 1
    assert alarm_column(("pain", "calm"), "pain") == 0
    with pytest.raises(ConfigError, match="not a class of the model"):
        alarm_column(("success", "failure"), "Failure")
