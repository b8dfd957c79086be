"""Alert rules and the alert outbox: one delivery per channel, retried until it is done.

**Which class is the alarm.** A model of panda outcomes (class names ``success``, ``failure``,
``model.classes``) raises on ``failure``; a model with other class names raises only on the
class named by ``alerts.alarm_class`` (``alarm_column``), and with none named it raises nothing.

**The failure rule.** After each segment of an encounter, its running failure probability
(of the alarm class: ``1 - running_p_success`` for pandas; the same encounter-level figure keepers see on the dashboard, not
the single segment's P(failure), so one loud failure-like call cannot trip it) is compared with
``failure_threshold``. The alarm raises when the value was above the threshold for
``hold_segments`` consecutive segments and the encounter has at least ``min_segments``. After
raising it is disarmed until the value falls below ``clear_threshold`` (hysteresis), and a
second alert for the same encounter needs ``cooldown_s`` of sample-clock time since the first.

**The outbox.** Every alert is stored with one outbox row per delivery target in the same
SQLite transaction (``Storage.add_alert(targets=[(channel, target, label), ...])``), then
published on the WebSocket and logged. Each row names its *channel* (``webhook``: ``target``
is the URL; ``apprise``: ``target`` is the key of an ``alerts.notify`` URL, see
``service.notify``; ``mqtt``: added by ``service.mqtt``), and carries the alert event's JSON
(``payload``) that every channel formats for itself.

**Delivery.** An ``OutboxWorker`` thread hands each due row to the ``Deliverer`` registered for
its channel (``register(deliverer)``, before ``start()``). ``deliver(row)`` returns when the
receiver has it, or raises ``DeliveryError(reason)``: the attempt counts, the reason is kept
as ``last_error`` and the next attempt follows ``retry_schedule_s`` (the last entry repeats),
so an alert raised while a receiver is down arrives once it is back, also after a restart of
the service. ``DeliveryError(reason, permanent=True)`` gives the row up (``failed_at``): when
retrying cannot help, e.g. its Apprise URL is no longer configured; a row whose channel has no
deliverer is given up the same way. Rows are never deleted before retention removes their
alert. After every attempt ``on_change(alert_id)`` lets the monitor publish the per-channel
results (a ``delivery`` event). Deliveries run one at a time on the worker's thread, never on
the storage thread, so a slow receiver never blocks storage.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import httpx

from model.classes import is_panda
from service.errors import ConfigError
from service.records import OutboxRow
from service.storage import Storage
from service.storage_thread import StorageClosed, StorageThread

log = logging.getLogger(__name__)

T = TypeVar("T")


def alarm_column(class_names: Sequence[str], alarm_class: str | None) -> int | None:
    """The output column whose running probability raises the alarm, or None for no alarm.

    ``alarm_class`` (``alerts.alarm_class``) must be one of ``class_names`` when given; else a
    model of panda outcomes alarms on ``failure`` and any other model does not alarm.
    """
    names = list(class_names)
    if alarm_class is not None:
        if alarm_class not in names:
            raise ConfigError(
                f"alerts.alarm_class {alarm_class!r} is not a class of the model: its classes are"
                f" {names}"
            )
        return names.index(alarm_class)
    return names.index("failure") if is_panda(names) else None


@dataclass(frozen=True)
class FailureRule:
    """The ``alerts`` settings the alarm needs (sample-clock seconds)."""

    failure_threshold: float
    clear_threshold: float
    hold_segments: int
    cooldown_s: float
    min_segments: int = 1


class FailureAlarm:
    """The failure-dominates state machine of one encounter.

    ``update(p_failure, n_segments, t_s)`` is called once per segment with the encounter's
    running P(failure), its segment count and the segment's end time (s, sample clock); it
    returns True exactly when an alert must be raised.
    """

    def __init__(self, rule: FailureRule) -> None:
        self.rule = rule
        self.reset()

    def reset(self) -> None:
        self.armed = True
        self.above = 0
        self.last_raised_s: float | None = None

    def update(self, p_failure: float, n_segments: int, t_s: float) -> bool:
        rule = self.rule
        if not self.armed:
            if p_failure < rule.clear_threshold:
                self.armed = True
                self.above = 0
            return False
        self.above = self.above + 1 if p_failure > rule.failure_threshold else 0
        if self.above < rule.hold_segments or n_segments < rule.min_segments:
            return False
        if self.last_raised_s is not None and t_s - self.last_raised_s < rule.cooldown_s:
            return False
        self.armed = False
        self.above = 0
        self.last_raised_s = t_s
        return True


def backoff_s(attempts: int, schedule: Sequence[float]) -> float:
    """Wait before the next try after ``attempts`` failed ones (>= 1): the schedule, then its
    last entry forever."""
    return float(schedule[min(max(attempts, 1), len(schedule)) - 1])


class DeliveryError(Exception):
    """A delivery attempt failed: ``reason`` (no secrets) is stored as the row's last error;
    ``permanent`` gives the row up instead of retrying it."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@runtime_checkable
class Deliverer(Protocol):
    """Delivers outbox rows of one channel (``channel``: ``webhook``, ``apprise``, ``mqtt``).

    ``deliver(row)`` runs on the outbox worker's thread and blocks until the receiver has the
    alert (return) or the attempt failed (``DeliveryError``; any other exception counts as a
    failed attempt too). ``close()`` is called once when the worker stops.
    """

    channel: str

    def deliver(self, row: OutboxRow) -> None: ...

    def close(self) -> None: ...


class WebhookDeliverer:
    """POSTs the payload as JSON to the row's URL; any 2xx answer is delivered."""

    channel = "webhook"

    def __init__(self, *, timeout_s: float, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def deliver(self, row: OutboxRow) -> None:
        try:
            response = self._client.post(
                row.target, content=row.payload, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as err:
            raise DeliveryError(f"{type(err).__name__}: {err}") from err
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"HTTP {response.status_code}")

    def close(self) -> None:
        self._client.close()


class OutboxWorker:
    """Delivers the alert outbox from a daemon thread (see the module docstring).

    Database access goes through the ``StorageThread``; deliveries happen on this worker's own
    thread. ``wake()`` makes it look at the outbox at once (a new alert was stored).
    ``delivered`` and ``failed_attempts`` count all channels; ``by_channel`` each one.
    """

    IDLE_POLL_S = 30.0
    """Longest sleep when nothing is due (new alerts wake the worker anyway)."""

    def __init__(
        self,
        store: StorageThread,
        *,
        schedule: Sequence[float],
        deliverers: Sequence[Deliverer] = (),
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._schedule = list(schedule)
        self._deliverers: dict[str, Deliverer] = {}
        for deliverer in deliverers:
            self.register(deliverer)
        self.on_change = on_change
        """Called with the alert's id after each attempt (on the worker's thread)."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed_attempts = 0
        self.by_channel: dict[str, ChannelCounts] = {}

    def register(self, deliverer: Deliverer) -> None:
        """Deliver the rows of ``deliverer.channel`` with it (one deliverer per channel)."""
        if deliverer.channel in self._deliverers:
            raise ValueError(f"outbox channel {deliverer.channel!r} has a deliverer already")
        self._deliverers[deliverer.channel] = deliverer

    @property
    def channels(self) -> list[str]:
        return list(self._deliverers)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pandapulse-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for deliverer in self._deliverers.values():
            try:
                deliverer.close()
            except Exception as err:  # one channel's close must not stop the rest
                log.warning("closing the %s deliverer: %s", deliverer.channel, err)

    def wake(self) -> None:
        self._wake.set()

    def _db(self, fn: Callable[[Storage], T]) -> T:
        return self._store.run(fn).result()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._deliver_due()
                next_due = self._db(lambda s: s.next_outbox_due())
            except StorageClosed as err:
                # The storage worker shut down under us: the service is stopping.
                log.debug("outbox worker stops: %s", err)
                return
            except (sqlite3.Error, OSError) as err:
                # The rows stay pending in the database; try again after a pause.
                log.error("alert outbox: %s; retrying in %.0f s", err, self.IDLE_POLL_S)
                next_due = time.time() + self.IDLE_POLL_S
            wait = self.IDLE_POLL_S if next_due is None else max(0.0, next_due - time.time())
            self._wake.wait(min(wait, self.IDLE_POLL_S))
            self._wake.clear()

    def _deliver_due(self) -> None:
        while not self._stop.is_set():
            items = self._db(lambda s: s.due_outbox(time.time()))
            if not items:
                return
            for item in items:
                if self._stop.is_set():
                    return
                self._deliver(item)

    def _counts(self, channel: str) -> ChannelCounts:
        return self.by_channel.setdefault(channel, ChannelCounts())

    def _deliver(self, item: OutboxRow) -> None:
        deliverer = self._deliverers.get(item.channel)
        where = f"{item.channel} {item.label or '(unlabelled)'}"
        try:
            if deliverer is None:
                raise DeliveryError(
                    f"no deliverer for channel {item.channel!r} (it is not configured)",
                    permanent=True,
                )
            deliverer.deliver(item)
        except Exception as err:  # every failure is an attempt that failed
            if isinstance(err, DeliveryError):
                reason, permanent = err.reason, err.permanent
            else:
                reason, permanent = f"{type(err).__name__}: {err}", False
            self.failed_attempts += 1
            self._counts(item.channel).failed_attempts += 1
            attempt = item.attempts + 1
            if permanent:
                self._counts(item.channel).given_up += 1
                self._db(lambda s: s.outbox_failed(item.id, reason, time.time(), give_up=True))
                log.error(
                    "alert %d: %s failed (%s), attempt %d; giving up",
                    item.alert_id,
                    where,
                    reason,
                    attempt,
                )
            else:
                wait = backoff_s(attempt, self._schedule)
                self._db(lambda s: s.outbox_failed(item.id, reason, time.time() + wait))
                log.warning(
                    "alert %d: %s failed (%s), attempt %d; next try in %.3g s",
                    item.alert_id,
                    where,
                    reason,
                    attempt,
                    wait,
                )
        else:
            self.delivered += 1
            self._counts(item.channel).delivered += 1
            self._db(lambda s: s.outbox_delivered(item.id))
            log.info("alert %d delivered to %s", item.alert_id, where)
        if self.on_change is not None:
            try:
                self.on_change(item.alert_id)
            except Exception as err:  # reporting must not stop delivery
                log.warning("reporting the delivery of alert %d: %s", item.alert_id, err)


@dataclass
class ChannelCounts:
    """One channel's delivery counters since start-up."""

    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
