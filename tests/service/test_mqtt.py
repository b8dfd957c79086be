"""MQTT end to end against a real Mosquitto (tests/mqtt_broker.py): the service's events and
retained state with the payloads of docs/PROTOCOL.md, Home Assistant discovery and its
clean-up, alerts through the outbox across a broker restart, and a refused or missing broker
reported in /stats, the log and ``doctor`` while the service runs on."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from model import constants as C
from service import doctor
from service.api import create_app
from service.config import Settings, load_settings
from service.mqtt import BoxInfo, MqttPublisher, SourceState, check_broker
from service.wire import MESSAGE_ADAPTER, Alert, AlertMsg, EncounterMsg, SegmentMsg
from tests.mqtt_broker import Broker, Listener, broker, free_port, make_ca

__all__ = ["broker"]  # the fixture, imported for the tests below

TOKEN = "mqtt-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOX = "box1"


@pytest.fixture(scope="module")
def encounter_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.synth import generate_encounter

    enc = generate_encounter(5, outcome="failure", duration_s=16.0)
    path = tmp_path_factory.mktemp("audio") / "encounter.wav"
    sf.write(path, enc.audio.T, C.SAMPLE_RATE)
    return path


def settings_for(
    tmp_path: Path,
    checkpoint: Path,
    broker: Broker | None,
    sources: list[dict[str, Any]],
    environ: dict[str, str] | None = None,
    **mqtt: Any,
) -> Settings:
    return load_settings(
        environ=environ or {},
        overrides={
            "server": {"token": TOKEN, "stats_interval_s": 0.2},
            "sources": sources,
            "inference": {"model": str(checkpoint), "device": "cpu"},
            "encounter": {"min_segments_for_verdict": 2, "silence_close_s": 600},
            # no failure alarm from the untrained model: the tests raise their own alerts
            "alerts": {"retry_schedule_s": [0.2], "failure_threshold": 0.99},
            "storage": {"data_dir": str(tmp_path / "data"), "keep_clips": False},
            "mqtt": {
                "host": "127.0.0.1",
                "port": free_port() if broker is None else broker.port,
                "box_id": BOX,
                "box_name": "Test box",
                "box_url": "http://box1.example:8000/",
                **mqtt,
            },
        },
    )


def replay(path: Path, source: str = "yard") -> dict[str, Any]:
    return {
        "id": source,
        "enclosure": f"{source} enclosure",
        "kind": "file",
        "path": str(path),
        "realtime": False,
    }


def idle(source: str) -> dict[str, Any]:
    """A source that scores nothing during a test: synthetic audio at real-time pace."""
    return {"id": source, "enclosure": f"{source} enclosure", "kind": "synthetic", "seed": 3}


@pytest.fixture
def service(tmp_path: Path, untrained_checkpoint: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def start(settings: Settings) -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def stats_mqtt(client: TestClient) -> dict[str, Any]:
    stats = client.get("/stats", headers=AUTH)
    assert stats.status_code == 200
    return dict(stats.json()["mqtt"])


# --- events and retained state -------------------------------------------------------------------
def test_events_and_retained_state_arrive_with_the_documented_payloads(
    broker: Broker,
    service: Any,
    tmp_path: Path,
    untrained_checkpoint: Path,
    encounter_wav: Path,
) -> None:
    listener = Listener(broker, ["pandapulse/#"])
    base = f"pandapulse/{BOX}"
    settings = settings_for(tmp_path, untrained_checkpoint, broker, [replay(encounter_wav)])
    client = service(settings)

    listener.wait_for(lambda m: (f"{base}/status", b"online", False) in m)
    info = BoxInfo.model_validate_json(listener.wait_for(lambda m: listener.latest(f"{base}/box")))
    assert info.name == "Test box" and info.url == "http://box1.example:8000/"
    assert [s.id for s in info.sources] == ["yard"] and not info.discovery

    # Every call of the replayed encounter: a segment event, as on the WebSocket.
    segments = listener.wait_for(
        lambda m: len(js := listener.json_on(f"{base}/source/yard/segment")) >= 3 and js
    )
    for payload in segments:
        msg = MESSAGE_ADAPTER.validate_python(payload)
        assert isinstance(msg, SegmentMsg) and msg.v == 1 and msg.source == "yard"
    started = [
        MESSAGE_ADAPTER.validate_python(p)
        for p in listener.json_on(f"{base}/source/yard/encounter")
    ]
    assert started and isinstance(started[0], EncounterMsg) and started[0].action == "started"
    encounter_id = started[0].encounter.id
    assert segments[-1]["encounter_id"] == encounter_id

    # The retained status follows the encounter: its running figure is the last segment's.
    def settled(messages: Any) -> Any:
        states = [
            SourceState.model_validate(p) for p in listener.json_on(f"{base}/source/yard/status")
        ]
        last = states[-1] if states else None
        seg = listener.json_on(f"{base}/source/yard/segment")
        if last and last.encounter and last.calls_scored == len(seg):
            return last
        return None

    state = listener.wait_for(settled)
    assert state.box == BOX and state.enclosure == "yard enclosure"
    assert state.encounter is not None and state.encounter.id == encounter_id
    assert (
        state.running_p_success
        == listener.json_on(f"{base}/source/yard/segment")[-1]["running_p_success"]
    )
    assert state.last_call_at == listener.json_on(f"{base}/source/yard/segment")[-1]["wall_time"]
    assert state.model_version == info.model_version and not state.alarm

    # A keeper acknowledges an alert: the acknowledgement goes out at once; the open-alert
    # count in the status rises and falls with it.
    alert = client.post("/api/alerts/test", json={"source": "yard"}, headers=AUTH).json()
    listener.wait_for(
        lambda m: any(s["open_alerts"] == 1 for s in listener.json_on(f"{base}/source/yard/status"))
    )
    client.post(f"/api/alerts/{alert['id']}/ack", json={"by": "Li"}, headers=AUTH)
    acked = listener.wait_for(
        lambda m: [a for a in listener.json_on(f"{base}/alert") if a["action"] == "acknowledged"]
    )
    msg = MESSAGE_ADAPTER.validate_python(acked[0])
    assert isinstance(msg, AlertMsg) and msg.alert.id == alert["id"]
    assert msg.alert.acknowledged_by == "Li"
    listener.wait_for(
        lambda m: listener.json_on(f"{base}/source/yard/status")[-1]["open_alerts"] == 0
    )

    # /stats says where it publishes; a clean stop leaves "offline" retained.
    mqtt = stats_mqtt(client)
    assert mqtt["state"] == "connected" and mqtt["error"] is None
    assert mqtt["topic"] == base and mqtt["published"] > 0
    metrics = client.get("/metrics", headers=AUTH).text
    assert (
        "pandapulse_mqtt_connected" in metrics and "pandapulse_mqtt_messages_published" in metrics
    )
    client.__exit__(None, None, None)
    listener.wait_for(lambda m: listener.latest(f"{base}/status") == b"offline")
    listener.close()
    late = Listener(broker, [f"{base}/status", f"{base}/source/+/status"])
    late.wait_for(lambda m: late.latest(f"{base}/status") == b"offline")
    late.wait_for(lambda m: late.json_on(f"{base}/source/yard/status"))
    late.close()


# --- alerts through the outbox ---------------------------------------------------------------------
def raised_ids(listener: Listener) -> list[int]:
    return [
        int(a["alert"]["id"])
        for a in listener.json_on(f"pandapulse/{BOX}/alert")
        if a["action"] == "raised"
    ]


def test_alerts_raised_while_the_broker_is_down_arrive_once_it_is_back(
    tmp_path_factory: pytest.TempPathFactory,
    service: Any,
    tmp_path: Path,
    untrained_checkpoint: Path,
) -> None:
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), persistent=True)
    broker.start()
    try:
        # The subscriber's session outlives the broker's crash, as a real consumer's would.
        listener = Listener(broker, [f"pandapulse/{BOX}/#"], session="alert-consumer")
        settings = settings_for(tmp_path, untrained_checkpoint, broker, [idle("north")])
        client = service(settings)
        _wait(lambda: stats_mqtt(client)["state"] == "connected")
        enc = client.post("/api/encounters", json={"source": "north"}, headers=AUTH).json()
        first = client.post("/api/alerts/test", json={"source": "north"}, headers=AUTH).json()
        listener.wait_for(lambda m: first["id"] in raised_ids(listener))
        # The broker forwards to subscribers before it acknowledges the publisher: wait for the
        # acknowledgement too, so that only the alerts raised while it is down are pending.
        _wait(lambda: client.get("/stats", headers=AUTH).json()["storage"]["outbox_pending"] == 0)

        broker.kill()  # mid-encounter
        _wait(lambda: stats_mqtt(client)["state"] != "connected")
        during = [
            client.post("/api/alerts/test", json={"source": "north"}, headers=AUTH).json()["id"]
            for _ in range(3)
        ]
        _wait(lambda: client.get("/stats", headers=AUTH).json()["storage"]["outbox_pending"] == 3)

        broker.start()  # same port: the box and the consumer reconnect by themselves
        listener.wait_for(lambda m: set(during) <= set(raised_ids(listener)))
        _wait(lambda: client.get("/stats", headers=AUTH).json()["storage"]["outbox_pending"] == 0)
        ids = raised_ids(listener)
        assert set(ids) == {first["id"], *during}, ids
        # Each raised while the broker was away is published once. (The consumer may get the
        # first one twice: it was in flight to it when the broker died, and QoS 1 resends.)
        assert all(ids.count(i) == 1 for i in during), ids
        assert stats_mqtt(client)["alerts_delivered"] == 4
        # The encounter is still open on the broker's retained status after the restart.
        state = listener.wait_for(
            lambda m: [
                s
                for s in listener.json_on(f"pandapulse/{BOX}/source/north/status")
                if s["open_alerts"] == 4
            ]
        )[-1]
        assert state["encounter"]["id"] == enc["id"] and state["encounter"]["ended_at"] is None
        listener.close()
    finally:
        broker.kill()


# --- Home Assistant discovery --------------------------------------------------------------------
def discovery_topics(listener: Listener) -> dict[str, bytes]:
    """The latest payload of every discovery config topic seen (b"" = removed)."""
    latest: dict[str, bytes] = {}
    for topic, payload, _ in listener.messages:
        if topic.startswith("homeassistant/"):
            latest[topic] = payload
    return latest


def test_discovery_announces_each_enclosure_and_removes_a_dropped_source(
    broker: Broker, service: Any, tmp_path: Path, untrained_checkpoint: Path
) -> None:
    listener = Listener(broker, ["homeassistant/#", f"pandapulse/{BOX}/source/+/status"])
    both = settings_for(
        tmp_path, untrained_checkpoint, broker, [idle("north"), idle("south")], discovery=True
    )
    client = service(both)
    configs = listener.wait_for(
        lambda m: len(d := {t: p for t, p in discovery_topics(listener).items() if p}) == 10 and d
    )
    node = f"pandapulse_{BOX}"
    p_success = json.loads(configs[f"homeassistant/sensor/{node}/north_p_success/config"])
    assert p_success["state_topic"] == f"pandapulse/{BOX}/source/north/status"
    assert p_success["availability_topic"] == f"pandapulse/{BOX}/status"
    assert p_success["device"]["name"] == "north enclosure"
    assert p_success["device"]["configuration_url"] == "http://box1.example:8000/"
    assert p_success["unique_id"] == f"{node}_north_p_success"
    alarm = json.loads(configs[f"homeassistant/binary_sensor/{node}/south_failure_alarm/config"])
    assert alarm["device_class"] == "problem" and "value_json.alarm" in alarm["value_template"]
    kinds = {t.split("/")[-2].split("_", 1)[1] for t in configs if "/north_" in t}
    assert kinds == {"p_success", "verdict", "calls_scored", "audio", "failure_alarm"}
    client.__exit__(None, None, None)

    # Restarted without "south": its entities and its retained status go away.
    north_only = settings_for(
        tmp_path, untrained_checkpoint, broker, [idle("north")], discovery=True
    )
    service(north_only)
    listener.wait_for(
        lambda m: all(
            p == b"" for t, p in discovery_topics(listener).items() if f"{node}/south_" in t
        )
    )
    listener.wait_for(lambda m: listener.latest(f"pandapulse/{BOX}/source/south/status") == b"")
    listener.close()
    fresh = Listener(broker, ["homeassistant/#"])
    fresh.wait_for(lambda m: len(discovery_topics(fresh)) == 5)
    assert all("/north_" in t for t in discovery_topics(fresh))
    fresh.close()


def test_the_failure_alarm_follows_unacknowledged_failure_alerts(
    broker: Broker, tmp_path: Path, untrained_checkpoint: Path
) -> None:
    """The publisher alone, fed the service's events: a failure alert turns the source's alarm
    (the Home Assistant binary sensor) on, its acknowledgement turns it off; other alerts
    count as open alerts but are no alarm."""
    listener = Listener(broker, [f"pandapulse/{BOX}/source/north/status"])
    settings = settings_for(tmp_path, untrained_checkpoint, broker, [idle("north")])
    publisher = MqttPublisher(settings, model_version="m1")
    publisher.start()
    try:
        _wait(lambda: publisher.status().state == "connected")

        def alert(alert_id: int, kind: str, acked: bool) -> AlertMsg:
            return AlertMsg(
                action="acknowledged" if acked else "raised",
                alert=Alert(
                    id=alert_id,
                    kind=kind,  # type: ignore[arg-type]
                    source="north",
                    encounter_id=None,
                    message="m",
                    p_failure=0.8,
                    created_at="2026-01-01T00:00:00.000Z",
                    acknowledged_at="2026-01-01T00:01:00.000Z" if acked else None,
                    acknowledged_by="Li" if acked else None,
                ),
            )

        def latest() -> dict[str, Any]:
            states = listener.json_on(f"pandapulse/{BOX}/source/north/status")
            return states[-1] if states else {}

        publisher.on_event(alert(1, "audio_stalled", acked=False))
        listener.wait_for(lambda m: latest().get("open_alerts") == 1)
        assert latest()["alarm"] is False
        publisher.on_event(alert(2, "failure_dominates", acked=False))
        listener.wait_for(lambda m: latest().get("open_alerts") == 2)
        assert latest()["alarm"] is True
        publisher.on_event(alert(2, "failure_dominates", acked=True))
        listener.wait_for(lambda m: latest().get("open_alerts") == 1 and not latest()["alarm"])
        assert latest()["alarm"] is False
    finally:
        publisher.stop()
        listener.close()


# --- errors --------------------------------------------------------------------------------------
@pytest.fixture
def locked_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto"), users={"keeper": "right-password"})
    b.start()
    yield b
    b.kill()


def test_wrong_credentials_are_reported_and_the_service_runs_on(
    locked_broker: Broker,
    service: Any,
    tmp_path: Path,
    untrained_checkpoint: Path,
    encounter_wav: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.mqtt")
    env = {"PANDAPULSE__MQTT__PASSWORD": "wrong-password"}
    settings = settings_for(
        tmp_path,
        untrained_checkpoint,
        locked_broker,
        [replay(encounter_wav)],
        env,
        username="keeper",
    )
    assert settings.mqtt.password is not None
    assert "wrong-password" not in repr(settings)
    client = service(settings)
    listener_errors: list[str] = []

    def refused() -> bool:
        mqtt = stats_mqtt(client)
        listener_errors[:] = [str(mqtt["error"])]
        return mqtt["state"] == "error"

    _wait(refused)
    error = listener_errors[0]
    assert "refused the connection" in error and "PANDAPULSE__MQTT__PASSWORD" in error
    assert f"127.0.0.1:{locked_broker.port}" in error
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("refused the connection" in line for line in logged)
    assert not any("wrong-password" in r.getMessage() for r in caplog.records)
    # The service scores on, and answers.
    _wait(lambda: client.get("/stats", headers=AUTH).json()["storage"]["segments"] > 0)
    assert client.get("/readyz", headers=AUTH).status_code == 200

    ok, detail = check_broker(settings.mqtt, timeout_s=5)
    assert not ok and "refused the connection" in detail
    found = findings(settings)
    assert len(found) == 1 and not found[0].ok and "refused" in found[0].detail
    assert "PANDAPULSE__MQTT__PASSWORD" in found[0].fix

    right = settings_for(
        tmp_path,
        untrained_checkpoint,
        locked_broker,
        [replay(encounter_wav)],
        {"PANDAPULSE__MQTT__PASSWORD": "right-password"},
        username="keeper",
    )
    found = findings(right)
    assert found[0].ok, found[0].detail


def test_an_unreachable_broker_is_reported_and_the_service_runs_on(
    service: Any, tmp_path: Path, untrained_checkpoint: Path, encounter_wav: Path
) -> None:
    settings = settings_for(tmp_path, untrained_checkpoint, None, [replay(encounter_wav)])
    client = service(settings)
    _wait(lambda: stats_mqtt(client)["state"] == "error")
    error = stats_mqtt(client)["error"]
    assert "cannot reach the MQTT broker" in error and "refused" in error.lower()
    _wait(lambda: client.get("/stats", headers=AUTH).json()["storage"]["segments"] > 0)
    found = findings(settings)
    assert not found[0].ok and "cannot reach" in found[0].detail


def findings(settings: Settings) -> list[doctor.Finding]:
    found = [f for f in doctor.check_mqtt(settings) if isinstance(f, doctor.Finding)]
    return found


def test_tls_with_the_brokers_ca_connects_and_a_foreign_ca_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
    service: Any,
    tmp_path: Path,
    untrained_checkpoint: Path,
) -> None:
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), tls=True)
    broker.start()
    try:
        good = settings_for(
            tmp_path, untrained_checkpoint, broker, [idle("north")], ca_file=str(broker.ca_file)
        )
        assert good.mqtt.use_tls
        assert findings(good)[0].ok, findings(good)[0].detail
        client = service(good)
        _wait(lambda: stats_mqtt(client)["state"] == "connected")

        foreign_ca, _ = make_ca(tmp_path_factory.mktemp("foreign"), "other-ca")
        bad = settings_for(
            tmp_path, untrained_checkpoint, broker, [idle("north")], ca_file=str(foreign_ca)
        )
        found = findings(bad)
        assert not found[0].ok and "TLS" in found[0].detail
        assert "CERTIFICATE_VERIFY_FAILED" in found[0].detail
        # Plain MQTT against the TLS listener is no answer either.
        plain = settings_for(tmp_path, untrained_checkpoint, broker, [idle("north")])
        found = [f for f in doctor.check_mqtt(plain, timeout_s=2) if isinstance(f, doctor.Finding)]
        assert not found[0].ok, found[0].detail
    finally:
        broker.kill()


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)
