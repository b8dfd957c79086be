"""Publishing to an MQTT broker: the box's state for other tools, Home Assistant and the fleet.

``MqttPublisher`` owns one paho-mqtt client (MQTT 3.1.1, callback API 2) and its network thread
(``loop_start``), which connects, reconnects after a lost connection (1 s, doubling to 30 s)
and answers the broker. The service hands it every event it publishes on the WebSocket
(``Hub.subscribe``: the publisher is a hub subscriber, so nothing else in the service calls
it) and it turns them into topics (docs/PROTOCOL.md, "MQTT"):

``<prefix>/<box>/status``
    ``online`` / ``offline``, retained; ``offline`` is also the connection's Last Will, so the
    broker announces a box that died or lost its network.
``<prefix>/<box>/box``
    ``BoxInfo``, retained: name, dashboard URL, sources. A restart reads the previous one back
    to remove what a source no longer configured left on the broker.
``<prefix>/<box>/source/<id>/status``
    ``SourceState``, retained: audio, open encounter, running P(success) and verdict, calls,
    last call, open alerts. Republished whenever one of them changes.
``<prefix>/<box>/source/<id>/segment``, ``.../encounter``
    The WebSocket ``segment`` (QoS 0) and ``encounter`` (QoS 1) events, as they are.
``<prefix>/<box>/alert``
    The WebSocket ``alert`` event, QoS 1. A raised alert comes from the SQLite outbox
    (``deliver_alert``): the row counts as delivered only once the broker acknowledged it, so
    an alert raised while the broker is down arrives when it is back, once.

Home Assistant discovery (``mqtt.discovery``) announces each enclosure as a device whose
sensors read the retained source status.

Errors (a refused login, an unreachable broker) never stop the service: they are logged once
per change, shown in ``/stats`` (``mqtt``) and the client keeps trying.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, ValidationError

from service.alerts import DeliveryError
from service.config import MqttSettings, Settings
from service.records import LiveRecords, OutboxRow, OutboxTarget
from service.storage import Storage
from service.types import SourceHealth
from service.wire import (
    AlertMsg,
    Encounter,
    EncounterMsg,
    MqttStats,
    SegmentMsg,
    StatsMsg,
)

if TYPE_CHECKING:
    from service.monitor import Monitor

log = logging.getLogger(__name__)

PAYLOAD_VERSION = 1
ONLINE = "online"
OFFLINE = "offline"
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
CONNECT_TIMEOUT_S = 5.0
"""How long one connection attempt (TCP, TLS, CONNECT/CONNACK) may take."""

MqttState = Literal["off", "connecting", "connected", "error"]


# --- payloads --------------------------------------------------------------------------------
class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: Literal[1] = 1


class BoxSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    enclosure: str


class BoxInfo(_Payload):
    """``<prefix>/<box>/box`` (retained)."""

    type: Literal["box"] = "box"
    box: str
    name: str
    url: str
    model_version: str
    uncertain_band: tuple[float, float]
    sources: list[BoxSource]
    discovery: bool


class SourceState(_Payload):
    """``<prefix>/<box>/source/<id>/status`` (retained): one enclosure as the box sees it now."""

    type: Literal["source_status"] = "source_status"
    box: str
    source: str
    enclosure: str
    audio: SourceHealth
    model_version: str
    encounter: Encounter | None
    """The open encounter (its figures as of its latest segment), or None."""
    running_p_success: float | None
    verdict: str | None
    calls_scored: int
    """Calls (segments) scored in the open encounter; 0 without one."""
    last_call_at: str | None
    """Wall time of the latest scored call on this source (ISO-8601 UTC)."""
    open_alerts: int
    """Alerts on this source that no keeper acknowledged yet."""
    alarm: bool
    """An unacknowledged failure alert is open on this source."""
    updated_at: str


# --- topics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topics:
    """Every topic name of one box (see the module docstring)."""

    prefix: str
    box: str
    discovery_prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.box}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def info(self) -> str:
        return f"{self.base}/box"

    @property
    def alert(self) -> str:
        return f"{self.base}/alert"

    def source(self, source: str, leaf: str) -> str:
        return f"{self.base}/source/{source}/{leaf}"

    @property
    def node(self) -> str:
        return _object_id(f"pandapulse_{self.box}")

    def discovery(self, component: str, source: str, key: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{_object_id(source)}_{key}/config"


def _object_id(text: str) -> str:
    """Home Assistant's alphabet for node and object ids."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


@dataclass(frozen=True)
class _Entity:
    component: Literal["sensor", "binary_sensor"]
    key: str
    name: str
    template: str
    extra: dict[str, Any] = field(default_factory=dict)


ENTITIES: tuple[_Entity, ...] = (
    _Entity(
        "sensor",
        "p_success",
        "Running P(success)",
        "{{ (value_json.running_p_success * 100) | round(1)"
        " if value_json.running_p_success is not none else None }}",
        {"unit_of_measurement": "%", "state_class": "measurement", "icon": "mdi:heart-pulse"},
    ),
    _Entity(
        "sensor",
        "verdict",
        "Verdict",
        "{{ value_json.verdict if value_json.verdict else None }}",
        {"icon": "mdi:scale-balance"},
    ),
    _Entity(
        "sensor",
        "calls_scored",
        "Calls scored",
        "{{ value_json.calls_scored }}",
        {"state_class": "measurement", "icon": "mdi:waveform"},
    ),
    _Entity("sensor", "audio", "Audio", "{{ value_json.audio }}", {"icon": "mdi:microphone"}),
    _Entity(
        "binary_sensor",
        "failure_alarm",
        "Failure alarm",
        "{{ 'ON' if value_json.alarm else 'OFF' }}",
        {"device_class": "problem"},
    ),
)
"""What each enclosure shows in Home Assistant (all read the retained source status)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_box_url(settings: Settings) -> str:
    """``mqtt.box_url``, else the dashboard at this host's name and ``server.port``."""
    if settings.mqtt.box_url is not None:
        return str(settings.mqtt.box_url)
    host = settings.server.host
    if host in ("0.0.0.0", "::"):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}/"


@dataclass
class _SourceView:
    """What the retained status of one source says (publisher lock held while touched)."""

    enclosure: str
    audio: SourceHealth = "starting"
    encounter: Encounter | None = None
    running: float | None = None
    verdict: str | None = None
    calls: int = 0
    last_call_at: str | None = None
    open_alerts: set[int] = field(default_factory=set)
    failure_alerts: set[int] = field(default_factory=set)


# --- connecting ------------------------------------------------------------------------------
def make_client(cfg: MqttSettings, *, client_id: str | None = None) -> paho.Client:
    """A paho client configured from ``cfg`` (credentials, TLS); not connected yet."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or cfg.client,
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    client.connect_timeout = CONNECT_TIMEOUT_S
    if cfg.username is not None:
        password = None if cfg.password is None else cfg.password.get_secret_value()
        client.username_pw_set(cfg.username, password)
    if cfg.use_tls:
        client.tls_set(
            ca_certs=None if cfg.ca_file is None else str(cfg.ca_file),
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return client


def refused_message(cfg: MqttSettings, reason: ReasonCode | int | str) -> str:
    """A refused CONNECT in words, with what to check."""
    text = str(reason)
    hint = ""
    if re.search(r"user name|password|authori[sz]ed", text, re.IGNORECASE):
        hint = (
            "; check mqtt.username and the password in PANDAPULSE__MQTT__PASSWORD against the"
            " broker's password file"
        )
    elif re.search(r"identifier", text, re.IGNORECASE):
        hint = "; set a unique mqtt.client_id"
    return f"broker {cfg.host}:{cfg.port} refused the connection: {text}{hint}"


def unreachable_message(cfg: MqttSettings, error: BaseException | None) -> str:
    why = "" if error is None else f": {_os_error(error)}"
    return (
        f"cannot reach the MQTT broker at {cfg.host}:{cfg.port}{why}"
        f" (check mqtt.host, mqtt.port{', mqtt.ca_file' if cfg.use_tls else ''}"
        " and that the broker runs)"
    )


def _os_error(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def check_broker(cfg: MqttSettings, timeout_s: float = CONNECT_TIMEOUT_S) -> tuple[bool, str]:
    """Connect once (``pandapulse doctor``): (True, what answered) or (False, why not)."""
    client = make_client(cfg, client_id=f"{cfg.client}-doctor")
    client.connect_timeout = timeout_s
    answered = threading.Event()
    result: list[tuple[bool, str]] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None) -> None:
        if reason.is_failure:
            result.append((False, refused_message(cfg, reason)))
        else:
            result.append((True, f"{cfg.host}:{cfg.port} accepted {cfg.client}-doctor"))
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(str(cfg.host), cfg.port, keepalive=max(5, int(timeout_s)))
    except (OSError, ValueError) as err:
        return False, unreachable_message(cfg, err)
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return False, (
                f"the MQTT broker at {cfg.host}:{cfg.port} did not answer within {timeout_s:g} s"
            )
        return result[0]
    finally:
        client.disconnect()
        client.loop_stop()


# --- the publisher ---------------------------------------------------------------------------
class MqttPublisher:
    """Publishes the box's events and retained state (see the module docstring).

    ``on_event`` is the hub subscriber (any thread); ``deliver_alert`` is the outbox's
    deliverer (the outbox thread); both only hand messages to paho, whose network thread
    sends them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        model_version: str,
        url: str | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.mqtt
        if not self.cfg.enabled:
            raise ValueError("mqtt.host is not set")
        self.topics = Topics(self.cfg.topic_prefix, self.cfg.box, self.cfg.discovery_prefix)
        self.url = url or default_box_url(settings)
        self.model_version = model_version
        self._lock = threading.RLock()
        self._views = {s.id: _SourceView(enclosure=s.label) for s in settings.sources}
        self._pending: dict[int, paho.MQTTMessageInfo] = {}
        self.on_connected: Callable[[], None] | None = None
        """Called on paho's thread after each successful connection (``attach``: retry the
        pending alerts now)."""
        self.state: MqttState = "connecting"
        self.error: str | None = None
        self.connected_since: str | None = None
        self.published = 0
        self.alerts_delivered = 0
        self.connects = 0
        self.client = make_client(self.cfg)
        self.client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # --- life cycle ---------------------------------------------------------------------------
    def restore(self, records: LiveRecords) -> None:
        """Start from what storage holds (open encounters, recent segments, open alerts), so a
        restarted service republishes the same retained state."""
        with self._lock:
            for row in records.encounters:
                view = self._views.get(row.source)
                if view is not None:
                    self._set_encounter(view, Encounter.of(row))
            for seg in records.segments:
                view = self._views.get(seg.source)
                if view is not None:
                    view.last_call_at = seg.wall_time
            for alert in records.alerts:
                view = self._views.get(alert.source or "")
                if view is not None:
                    view.open_alerts.add(alert.id)
                    if alert.kind == "failure_dominates":
                        view.failure_alerts.add(alert.id)

    def start(self) -> None:
        """Connect in the background (never blocks, never raises for a broker problem)."""
        cfg = self.cfg
        log.info(
            "MQTT: publishing as %s to %s:%d%s under %s/",
            cfg.client,
            cfg.host,
            cfg.port,
            " (TLS)" if cfg.use_tls else "",
            self.topics.base,
        )
        self.client.connect_async(str(cfg.host), cfg.port, keepalive=cfg.keepalive_s)
        self.client.loop_start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Say ``offline`` (a clean stop sends no Last Will) and disconnect."""
        if self.client.is_connected():
            info = self.client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            _wait(info, timeout_s)
        self.state = "off"
        self.connected_since = None
        self.client.disconnect()
        self.client.loop_stop()

    def status(self) -> MqttStats:
        return MqttStats(
            broker=f"{self.cfg.host}:{self.cfg.port}",
            client_id=self.cfg.client,
            topic=self.topics.base,
            state=self.state,
            error=self.error,
            connected_since=self.connected_since,
            published=self.published,
            alerts_delivered=self.alerts_delivered,
        )

    # --- paho callbacks (network thread) --------------------------------------------------------
    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _props: Any = None,
    ) -> None:
        if reason.is_failure:
            self._failed(refused_message(self.cfg, reason))
            return
        self.connects += 1
        self.state = "connected"
        self.error = None
        self.connected_since = _now()
        log.info("MQTT: connected to %s:%d", self.cfg.host, self.cfg.port)
        # The previous box info comes back first (the broker handles our packets in order),
        # then our new one: what it lists beyond the configured sources is removed.
        client.subscribe(self.topics.info, qos=1)
        self._publish(self.topics.status, ONLINE, qos=1, retain=True)
        with self._lock:
            self._publish_info()
            if self.cfg.discovery:
                self._publish_discovery()
            for source in self._views:
                self._publish_status(source)
        if self.on_connected is not None:
            self.on_connected()

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the exception says why.
        self._failed(unreachable_message(self.cfg, sys.exc_info()[1]))

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _props: Any = None,
    ) -> None:
        if self.state == "connected":
            self.state = "connecting"
            self.connected_since = None
            log.warning(
                "MQTT: connection to %s:%d lost (%s); reconnecting",
                self.cfg.host,
                self.cfg.port,
                reason,
            )

    def _failed(self, message: str) -> None:
        if message != self.error:
            log.error("MQTT: %s; the service goes on and keeps trying", message)
        self.state = "error"
        self.error = message
        self.connected_since = None

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic != self.topics.info or not msg.payload:
            return
        try:
            previous = BoxInfo.model_validate_json(msg.payload)
        except ValidationError as err:
            log.warning("MQTT: ignoring a malformed %s: %s", msg.topic, err)
            return
        self._clean_up(previous)

    def _clean_up(self, previous: BoxInfo) -> None:
        """Remove what ``previous`` published for sources this box no longer has (and its
        Home Assistant entities, also when discovery was turned off)."""
        gone = [s.id for s in previous.sources if s.id not in self._views]
        undiscover = (
            [s.id for s in previous.sources]
            if previous.discovery and not self.cfg.discovery
            else gone
        )
        for source in gone:
            log.info("MQTT: source %s is no longer configured; removing its retained state", source)
            self._publish(self.topics.source(source, "status"), b"", qos=1, retain=True)
        for source in undiscover if previous.discovery else []:
            for entity in ENTITIES:
                self._publish(
                    self.topics.discovery(entity.component, source, entity.key),
                    b"",
                    qos=1,
                    retain=True,
                )

    # --- publishing -----------------------------------------------------------------------------
    def _publish(
        self, topic: str, payload: str | bytes, *, qos: int = 0, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.published += 1
        return info

    def _publish_info(self) -> None:
        info = BoxInfo(
            box=self.cfg.box,
            name=self.cfg.name,
            url=self.url,
            model_version=self.model_version,
            uncertain_band=self.settings.encounter.uncertain_band,
            sources=[BoxSource(id=s.id, enclosure=s.label) for s in self.settings.sources],
            discovery=self.cfg.discovery,
        )
        self._publish(self.topics.info, info.model_dump_json(), qos=1, retain=True)

    def _publish_discovery(self) -> None:
        for source, view in self._views.items():
            device = {
                "identifiers": [f"{self.topics.node}_{_object_id(source)}"],
                "name": view.enclosure,
                "manufacturer": "PandaPulse",
                "model": "Breeding-encounter monitor",
                "sw_version": self.model_version,
                "configuration_url": self.url,
            }
            for entity in ENTITIES:
                config = {
                    "name": entity.name,
                    "unique_id": f"{self.topics.node}_{_object_id(source)}_{entity.key}",
                    "state_topic": self.topics.source(source, "status"),
                    "value_template": entity.template,
                    "availability_topic": self.topics.status,
                    "payload_available": ONLINE,
                    "payload_not_available": OFFLINE,
                    "device": device,
                    "origin": {"name": "PandaPulse"},
                    **entity.extra,
                }
                self._publish(
                    self.topics.discovery(entity.component, source, entity.key),
                    json.dumps(config),
                    qos=1,
                    retain=True,
                )

    def _state(self, source: str) -> SourceState:
        view = self._views[source]
        return SourceState(
            box=self.cfg.box,
            source=source,
            enclosure=view.enclosure,
            audio=view.audio,
            model_version=self.model_version,
            encounter=view.encounter,
            running_p_success=view.running,
            verdict=view.verdict,
            calls_scored=view.calls,
            last_call_at=view.last_call_at,
            open_alerts=len(view.open_alerts),
            alarm=bool(view.failure_alerts),
            updated_at=_now(),
        )

    def _publish_status(self, source: str) -> None:
        self._publish(
            self.topics.source(source, "status"),
            self._state(source).model_dump_json(),
            qos=1,
            retain=True,
        )

    # --- the hub subscriber (any thread) ---------------------------------------------------------
    def on_event(self, message: BaseModel) -> None:
        """One WebSocket event of the service (``Hub.subscribe``)."""
        if isinstance(message, SegmentMsg):
            self._on_segment(message)
        elif isinstance(message, EncounterMsg):
            self._on_encounter(message)
        elif isinstance(message, AlertMsg):
            self._on_alert(message)
        elif isinstance(message, StatsMsg):
            self._on_stats(message)

    def _on_segment(self, msg: SegmentMsg) -> None:
        self._publish(self.topics.source(msg.source, "segment"), msg.model_dump_json())
        with self._lock:
            view = self._views.get(msg.source)
            if view is None:
                return
            view.last_call_at = msg.wall_time
            enc = view.encounter
            if enc is not None and msg.encounter_id == enc.id:
                view.calls = enc.n_segments + 1
                view.running = msg.running_p_success
                view.encounter = enc.model_copy(
                    update={"n_segments": view.calls, "p_success": msg.running_p_success}
                )
            self._publish_status(msg.source)

    def _on_encounter(self, msg: EncounterMsg) -> None:
        enc = msg.encounter
        self._publish(self.topics.source(enc.source, "encounter"), msg.model_dump_json(), qos=1)
        with self._lock:
            view = self._views.get(enc.source)
            if view is None:
                return
            current = view.encounter
            if enc.ended_at is None:
                self._set_encounter(view, enc)
            elif current is not None and current.id == enc.id:
                view.encounter = None
                view.running = view.verdict = None
                view.calls = 0
            else:
                return
            self._publish_status(enc.source)

    @staticmethod
    def _set_encounter(view: _SourceView, enc: Encounter) -> None:
        view.encounter = enc
        view.running = enc.p_success
        view.verdict = enc.verdict
        view.calls = enc.n_segments

    def _on_alert(self, msg: AlertMsg) -> None:
        alert = msg.alert
        if msg.action == "acknowledged":
            # A raised alert reaches the broker through the outbox (``deliver_alert``).
            self._publish(self.topics.alert, msg.model_dump_json(), qos=1)
        with self._lock:
            view = self._views.get(alert.source or "")
            if view is None:
                return
            if msg.action == "raised" and alert.acknowledged_at is None:
                view.open_alerts.add(alert.id)
                if alert.kind == "failure_dominates":
                    view.failure_alerts.add(alert.id)
            else:
                view.open_alerts.discard(alert.id)
                view.failure_alerts.discard(alert.id)
            self._publish_status(alert.source or "")

    def _on_stats(self, msg: StatsMsg) -> None:
        with self._lock:
            if msg.model_version != self.model_version:
                self.model_version = msg.model_version
                self._publish_info()
                if self.cfg.discovery:
                    self._publish_discovery()
                for source in self._views:
                    self._publish_status(source)
            for source, stats in msg.sources.items():
                view = self._views.get(source)
                if view is not None and view.audio != stats.status:
                    view.audio = stats.status
                    self._publish_status(source)

    # --- the outbox deliverer (outbox thread) -----------------------------------------------------
    def deliver_alert(self, key: int, topic: str, payload: str) -> None:
        """Publish one outbox row's alert with QoS 1 and wait for the broker's PUBACK.

        Returns once the broker acknowledged it; raises ``DeliveryError`` otherwise (the
        outbox tries again later). A publish that timed out stays with paho, which resends it
        after a reconnect; the next try waits for that one instead of publishing a second copy.
        """
        info = self._pending.get(key)
        if info is None:
            if not self.client.is_connected():
                raise DeliveryError(
                    self.error
                    or f"not connected to the MQTT broker {self.cfg.host}:{self.cfg.port}"
                    " (reconnecting)"
                )
            info = self._publish(topic, payload, qos=1)
            self._pending[key] = info
        if _wait(info, self.cfg.publish_timeout_s):
            del self._pending[key]
            self.alerts_delivered += 1
            return
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            del self._pending[key]  # never queued: publish again next time
            raise DeliveryError(f"publish failed: {paho.error_string(info.rc)}")
        raise DeliveryError(
            f"the MQTT broker did not acknowledge within {self.cfg.publish_timeout_s:g} s"
            f" ({self.error or 'connection lost'})"
        )


class MqttDeliverer:
    """The outbox's ``mqtt`` channel (``service.alerts.Deliverer``): each row is the alert
    event, published to its ``target`` topic with QoS 1."""

    channel = "mqtt"

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher

    def deliver(self, row: OutboxRow) -> None:
        self.publisher.deliver_alert(row.id, row.target, row.payload)

    def close(self) -> None:
        """The publisher outlives the outbox (the monitor's last events still go out)."""


def _wait(info: paho.MQTTMessageInfo, timeout_s: float) -> bool:
    """Whether the broker acknowledged ``info`` within ``timeout_s`` (QoS 1: its PUBACK)."""
    deadline = time.monotonic() + timeout_s
    while not info.is_published():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            try:
                info.wait_for_publish(min(left, 0.5))
            except (RuntimeError, ValueError):
                time.sleep(min(left, 0.05))
        else:  # queued while disconnected: paho sends it after reconnecting
            time.sleep(min(left, 0.05))
    return True


def attach(settings: Settings, monitor: Monitor, *, model_version: str) -> MqttPublisher | None:
    """Wire the publisher into the service when ``mqtt.host`` is set (None otherwise); call it
    before ``Monitor.start``. It becomes the outbox's ``mqtt`` channel (every alert gets a row
    for the broker), a subscriber of the hub's events, and on each (re)connection it makes the
    pending ``mqtt`` rows due at once. ``start`` it after the monitor started, with the
    monitor's ``live_records`` given to ``restore`` first."""
    if not settings.mqtt.enabled:
        return None
    publisher = MqttPublisher(settings, model_version=model_version)
    cfg = settings.mqtt
    monitor.outbox.register(MqttDeliverer(publisher))
    monitor.alert_targets.append(
        OutboxTarget("mqtt", publisher.topics.alert, f"MQTT {cfg.host}:{cfg.port}")
    )
    monitor.hub.subscribe(publisher.on_event)

    def retry_pending() -> None:
        def job(storage: Storage) -> None:
            if storage.outbox_retry_now("mqtt", time.time()):
                monitor.outbox.wake()

        monitor.store.submit(job)

    publisher.on_connected = retry_pending
    return publisher
