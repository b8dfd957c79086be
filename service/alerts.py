"""Alert rules and webhook delivery.

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

**Delivery.** Every alert is stored with one outbox row per webhook URL in the same SQLite
transaction (``Storage.add_alert``), then published on the WebSocket and logged. An
``OutboxWorker`` thread POSTs due rows as JSON with httpx; a failure (connection refused,
timeout, non-2xx) schedules the next attempt from ``retry_schedule_s`` (the last entry
repeats), so an alert raised while the receiver is down arrives once it is back, also after a
restart of the service.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

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


class OutboxWorker:
    """Delivers the webhook outbox from a daemon thread.

    Database access goes through the ``StorageThread``; the HTTP calls happen on this worker's
    own thread, so a slow receiver never blocks storage.
    ``wake()`` makes it look at the outbox at once (a new alert was stored).
    """

    IDLE_POLL_S = 30.0
    """Longest sleep when nothing is due (new alerts wake the worker anyway)."""

    def __init__(
        self,
        store: StorageThread,
        *,
        schedule: Sequence[float],
        timeout_s: float,
        client: httpx.Client | None = None,
    ) -> None:
        self._store = store
        self._schedule = list(schedule)
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed_attempts = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pandapulse-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()

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
                log.error("webhook outbox: %s; retrying in %.0f s", err, self.IDLE_POLL_S)
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

    def _deliver(self, item: OutboxRow) -> None:
        try:
            response = self._client.post(
                item.url, content=item.payload, headers={"Content-Type": "application/json"}
            )
            ok = 200 <= response.status_code < 300
            error = "" if ok else f"HTTP {response.status_code}"
        except httpx.HTTPError as err:
            ok, error = False, f"{type(err).__name__}: {err}"
        if ok:
            self.delivered += 1
            self._db(lambda s: s.outbox_delivered(item.id))
            log.info("alert %d delivered to webhook %s", item.alert_id, _host(item.url))
            return
        self.failed_attempts += 1
        wait = backoff_s(item.attempts + 1, self._schedule)
        self._db(lambda s: s.outbox_failed(item.id, error, time.time() + wait))
        log.warning(
            "alert %d: webhook %s failed (%s), attempt %d; next try in %.3g s",
            item.alert_id,
            _host(item.url),
            error,
            item.attempts + 1,
            wait,
        )


def _host(url: str) -> str:
    """The URL without credentials or query (either may carry a secret), for log lines."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"
