"""The service's ``EventSink``: encounters, alerts and storage, then publication.

Threads and ownership
---------------------
The pipeline calls ``on_*`` from its threads. Level and spectrogram updates are serialised on
that thread and handed to the event loop (``Hub.publish_threadsafe``): they are not stored.
Everything else becomes a job for the monitor's single worker thread, which owns the
``Storage`` (the one SQLite writer), the ``EncounterBook`` and the alarms, so none of that
state needs a lock. A job stores first and publishes after, so a client never sees a segment,
encounter or alert that is not on disk. API routes reach the same thread through ``db``/``adb``.

The job queue is bounded (``JOB_SLOTS``); when storage falls that far behind, ``on_segment``
blocks the inference worker (segments are never dropped; the pipeline counts the overrun).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from model import constants as C
from service.alerts import FailureAlarm, FailureRule, OutboxWorker, alarm_column
from service.config import Settings
from service.encounter import EncounterBook, EncounterRules, OpenEncounter
from service.hub import Hub
from service.storage import Storage
from service.types import CallEvent, LevelUpdate, ScoredSegment, SourceStatus, SpectrogramColumns
from service.wire import (
    Alert,
    AlertMsg,
    Encounter,
    EncounterMsg,
    LevelMsg,
    SegmentMsg,
    SpectrogramMsg,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
EncounterAction = Literal["started", "stopped", "outcome", "updated"]

JOB_SLOTS = 1024
"""Jobs waiting for the storage thread before producers block."""
TICK_SAMPLES = C.SAMPLE_RATE
"""How often (in source samples) level updates trigger the silence check of auto encounters."""


class Monitor:
    """Receives pipeline events; keeps encounters, raises alerts, stores, publishes."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        *,
        class_names: tuple[str, str] = ("success", "failure"),
        model_version: str = "untracked",
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.model_version = model_version
        self.class_names = class_names
        enc = settings.encounter
        self.book = EncounterBook(
            EncounterRules(
                auto=enc.auto,
                silence_close_samples=int(enc.silence_close_s * C.SAMPLE_RATE),
                min_segments_for_verdict=enc.min_segments_for_verdict,
                uncertain_band=enc.uncertain_band,
            ),
            class_names,
        )
        a = settings.alerts
        self.rule = FailureRule(
            failure_threshold=a.failure_threshold,
            clear_threshold=a.clear_threshold,
            hold_segments=a.hold_segments,
            cooldown_s=a.cooldown_s,
            min_segments=a.min_segments,
        )
        self.alarm_column = alarm_column(class_names, a.alarm_class)
        """Which output column's running probability raises the alarm (None: no alarm)."""
        if self.alarm_column is None:
            log.warning(
                "the model's classes %s are not panda outcomes and alerts.alarm_class is not set:"
                " no failure alarm will be raised",
                list(class_names),
            )
        self._alarms: dict[int, FailureAlarm] = {}
        self._origins: dict[str, float] = {}
        self._last_tick: dict[str, int] = {}
        self.source_status: dict[str, str] = {s.id: "starting" for s in settings.sources}
        self.source_detail: dict[str, str] = {}
        self.calls = 0
        self.segments_stored = 0
        self.alerts_raised = 0
        self.store_errors = 0
        self._executor: ThreadPoolExecutor | None = None
        self._slots = threading.BoundedSemaphore(JOB_SLOTS)
        self._storage: Storage | None = None
        self.outbox: OutboxWorker | None = None

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open storage on the worker thread, restore open encounters, start webhook delivery."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pandapulse-store")
        try:
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        a = self.settings.alerts
        self.outbox = OutboxWorker(
            self.db, schedule=a.retry_schedule_s, timeout_s=a.webhook_timeout_s
        )
        self.outbox.start()

    def stop(self) -> None:
        """Close automatic encounters, finish queued jobs, stop delivery, close the database."""
        if self.outbox is not None:
            self.outbox.stop()
            self.outbox = None
        if self._executor is None:
            return
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)
        self._executor = None

    def _open(self) -> None:
        st = self.settings.storage
        self._storage = Storage(st.data_dir, keep_clips=st.keep_clips)
        self.segments_stored = self._storage.count_segments()
        for row in self._storage.open_encounters():
            if row["auto"]:
                # Its audio context is gone with the old process: close it where it stopped.
                self._storage.stop_encounter(row["id"])
                continue
            p = [s["p_success"] for s in self._storage.segments_of(row["id"])]
            self.book.track(row["id"], row["source"], auto=False, p_success=p)

    def _close(self) -> None:
        assert self._storage is not None
        for enc in self.book.all():
            if enc.auto:
                self._stop_encounter(self._storage, enc.id)
        self._storage.close()
        self._storage = None

    # --- the storage thread ---------------------------------------------------------------------
    def db(self, fn: Callable[[Storage], T]) -> Future[T]:
        """Run ``fn(storage)`` on the storage thread; blocks while JOB_SLOTS jobs are waiting."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the monitor is not running")
        self._slots.acquire()
        try:
            future = executor.submit(self._job, fn)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    async def adb(self, fn: Callable[[Storage], T]) -> T:
        """``db`` for coroutines (the wait for a free slot happens off the loop)."""
        if self._slots.acquire(blocking=False):
            self._slots.release()
            return await asyncio.wrap_future(self.db(fn))
        future = await asyncio.to_thread(self.db, fn)
        return await asyncio.wrap_future(future)

    def _job(self, fn: Callable[[Storage], T]) -> T:
        if self._storage is None:
            raise RuntimeError("storage is closed")
        return fn(self._storage)

    def _background(self, fn: Callable[[Storage], Any]) -> None:
        """A fire-and-forget job from a pipeline thread; its errors are logged, not raised."""
        try:
            future = self.db(fn)
        except RuntimeError:
            return  # stopping
        future.add_done_callback(self._log_failure)

    def _log_failure(self, future: Future[Any]) -> None:
        err = future.exception()
        if err is not None:
            self.store_errors += 1
            log.error("storage job failed: %s", err, exc_info=err)

    # --- EventSink ------------------------------------------------------------------------------
    def on_level(self, event: LevelUpdate) -> None:
        self._origin(event.source_id, event.start)
        self.hub.publish_threadsafe(
            LevelMsg(
                source=event.source_id,
                start_s=round(event.start / C.SAMPLE_RATE, 4),
                rms_db=(round(event.rms_db[0], 2), round(event.rms_db[1], 2)),
                peak_db=(round(event.peak_db[0], 2), round(event.peak_db[1], 2)),
            )
        )
        last = self._last_tick.get(event.source_id)
        if last is None or event.start - last >= TICK_SAMPLES:
            self._last_tick[event.source_id] = event.start
            if self.settings.encounter.auto:
                self._background(lambda s: self._close_if_silent(s, event.source_id, event.start))

    def on_spectrogram(self, event: SpectrogramColumns) -> None:
        cols = event.columns
        self.hub.publish_threadsafe(
            SpectrogramMsg(
                source=event.source_id,
                start_s=round(event.start / C.SAMPLE_RATE, 4),
                bins=int(cols.shape[1]) if cols.ndim == 2 else 0,
                columns=cols.tolist(),
            )
        )

    def on_call(self, event: CallEvent) -> None:
        if event.kind == "start":
            self.calls += 1

    def on_segment(self, event: ScoredSegment) -> None:
        self._origin(event.source_id, event.start)
        self._background(lambda s: self._store_segment(s, event))

    def on_source_status(self, event: SourceStatus) -> None:
        previous = self.source_status.get(event.source_id)
        self.source_status[event.source_id] = event.status
        self.source_detail[event.source_id] = event.detail
        if event.status == "stalled" and previous != "stalled":
            log.warning("source %s stalled: %s", event.source_id, event.detail)
            self._background(lambda s: self._raise_stalled(s, event))
        elif event.status == "ok" and previous == "stalled":
            log.info("source %s: audio flows again", event.source_id)

    # --- jobs (storage thread) --------------------------------------------------------------
    def _origin(self, source: str, sample: int) -> float:
        """Unix time of the source's sample 0, fixed by its first event (wall time = origin +
        samples / rate)."""
        origin = self._origins.get(source)
        if origin is None:
            origin = self._origins.setdefault(source, time.time() - sample / C.SAMPLE_RATE)
        return origin

    def wall_time(self, source: str, sample: int) -> datetime:
        return datetime.fromtimestamp(self._origin(source, sample) + sample / C.SAMPLE_RATE, UTC)

    def _store_segment(self, storage: Storage, ev: ScoredSegment) -> None:
        self._close_if_silent(storage, ev.source_id, ev.start)
        enc = self.book.get(ev.source_id)
        if enc is None and self.book.needs_auto_open(ev.source_id):
            enc = self._start_encounter(storage, ev.source_id, auto=True)
        running = verdict = None
        old_verdict = None
        if enc is not None:
            rules = self.book.rules
            old_verdict = enc.verdict(rules.min_segments_for_verdict, rules.uncertain_band)
            enc.add(ev.p_success, ev.end)
            running = enc.running_p_success
            verdict = enc.verdict(rules.min_segments_for_verdict, rules.uncertain_band)
        seg = storage.add_segment(
            encounter_id=None if enc is None else enc.id,
            source=ev.source_id,
            start_sample=ev.start,
            end_sample=ev.end,
            wall_time=self.wall_time(ev.source_id, ev.start),
            p_success=ev.p_success,
            p_failure=ev.p_failure,
            attention=ev.attention,
            levels_db=ev.levels_db,
            model_version=ev.model_version,
            audio=ev.audio,
            running_p_success=running,
            verdict=verdict,
        )
        self.segments_stored += 1
        self.hub.publish_threadsafe(
            SegmentMsg(**seg, running_p_success=None if running is None else round(running, 4))
        )
        if enc is None:
            return
        if verdict != old_verdict:
            self._publish_encounter(storage, enc.id, "updated")
        if self.alarm_column is None:
            return
        alarm = self._alarms.setdefault(enc.id, FailureAlarm(self.rule))
        p_failure = enc.running_p(self.alarm_column)
        if p_failure is not None and alarm.update(
            p_failure, enc.n_segments, ev.end / C.SAMPLE_RATE
        ):
            self._raise(
                storage,
                kind="failure_dominates",
                source=ev.source_id,
                encounter_id=enc.id,
                p_failure=round(p_failure, 4),
                message=(
                    f"{self._label(ev.source_id)}: running P({self.class_names[self.alarm_column]})"
                    f" {p_failure:.2f} above"
                    f" {self.rule.failure_threshold:.2f} for {self.rule.hold_segments} segments"
                    f" ({enc.n_segments} segments in encounter {enc.id})"
                ),
            )

    def _close_if_silent(self, storage: Storage, source: str, sample: int) -> None:
        enc = self.book.silent(source, sample)
        if enc is not None:
            log.info("encounter %d (%s) closed after silence", enc.id, source)
            self._stop_encounter(storage, enc.id)

    def _label(self, source: str | None) -> str:
        cfg = None if source is None else self.settings.source(source)
        return cfg.label if cfg is not None else (source or "PandaPulse")

    def _start_encounter(
        self,
        storage: Storage,
        source: str,
        *,
        auto: bool,
        pair: str = "",
        keeper: str = "",
        notes: str = "",
    ) -> OpenEncounter:
        current = self.book.get(source)
        if current is not None:
            self._stop_encounter(storage, current.id)
        row = storage.create_encounter(
            source=source,
            enclosure=self._label(source),
            pair=pair,
            keeper=keeper,
            notes=notes,
            auto=auto,
        )
        enc = self.book.track(row["id"], source, auto=auto)
        log.info(
            "encounter %d started on %s (%s)",
            enc.id,
            source,
            "auto" if auto else keeper or "keeper",
        )
        self.hub.publish_threadsafe(
            EncounterMsg(action="started", encounter=Encounter.model_validate(row))
        )
        return enc

    def _stop_encounter(self, storage: Storage, encounter_id: int) -> dict[str, Any]:
        enc = self.book.by_id(encounter_id)
        if enc is not None:
            self.book.forget(enc.source)
        self._alarms.pop(encounter_id, None)
        row = storage.stop_encounter(encounter_id)
        self.hub.publish_threadsafe(
            EncounterMsg(action="stopped", encounter=Encounter.model_validate(row))
        )
        return row

    def _publish_encounter(
        self, storage: Storage, encounter_id: int, action: EncounterAction
    ) -> dict[str, Any]:
        row = storage.get_encounter(encounter_id)
        if row is None:
            raise KeyError(encounter_id)
        self.hub.publish_threadsafe(
            EncounterMsg(action=action, encounter=Encounter.model_validate(row))
        )
        return row

    def _raise_stalled(self, storage: Storage, ev: SourceStatus) -> None:
        enc = self.book.get(ev.source_id)
        self._raise(
            storage,
            kind="audio_stalled",
            source=ev.source_id,
            encounter_id=None if enc is None else enc.id,
            p_failure=None,
            message=f"{self._label(ev.source_id)}: audio stalled. {ev.detail}".strip(),
        )

    def _raise(
        self,
        storage: Storage,
        *,
        kind: str,
        source: str | None,
        encounter_id: int | None,
        p_failure: float | None,
        message: str,
    ) -> dict[str, Any]:
        """Store the alert and its webhook deliveries, log it, publish it, wake delivery."""
        urls = [str(u) for u in self.settings.alerts.webhook_urls]
        alert = storage.add_alert(
            kind=kind,
            message=message,
            source=source,
            encounter_id=encounter_id,
            p_failure=p_failure,
            webhook_urls=urls,
            payload=webhook_body,
        )
        self.alerts_raised += 1
        log.warning("ALERT %d %s: %s", alert["id"], kind, message)
        self.hub.publish_threadsafe(AlertMsg(action="raised", alert=Alert.model_validate(alert)))
        if urls and self.outbox is not None:
            self.outbox.wake()
        return alert

    # --- keeper actions (called through ``adb`` from the API) -------------------------------
    def start_encounter(
        self, storage: Storage, source: str, pair: str, keeper: str, notes: str
    ) -> dict[str, Any]:
        if self.settings.source(source) is None:
            raise KeyError(source)
        enc = self._start_encounter(
            storage, source, auto=False, pair=pair, keeper=keeper, notes=notes
        )
        return storage.get_encounter(enc.id) or {}

    def stop_encounter(self, storage: Storage, encounter_id: int) -> dict[str, Any] | None:
        row = storage.get_encounter(encounter_id)
        if row is None:
            return None
        if row["ended_at"] is not None:
            return row
        return self._stop_encounter(storage, encounter_id)

    def set_outcome(
        self, storage: Storage, encounter_id: int, **fields: Any
    ) -> dict[str, Any] | None:
        if storage.get_encounter(encounter_id) is None:
            return None
        row = storage.set_outcome(encounter_id, **fields)
        self.hub.publish_threadsafe(
            EncounterMsg(action="outcome", encounter=Encounter.model_validate(row))
        )
        return row

    def acknowledge(self, storage: Storage, alert_id: int, by: str) -> dict[str, Any] | None:
        before = storage.get_alert(alert_id)
        if before is None:
            return None
        if before["acknowledged_at"] is not None:
            return before
        alert = storage.acknowledge_alert(alert_id, by)
        if alert is not None:
            log.info("alert %d acknowledged by %s", alert_id, by or "a keeper")
            self.hub.publish_threadsafe(
                AlertMsg(action="acknowledged", alert=Alert.model_validate(alert))
            )
        return alert

    def test_alert(self, storage: Storage, source: str | None) -> dict[str, Any]:
        if source is not None and self.settings.source(source) is None:
            raise KeyError(source)
        enc = None if source is None else self.book.get(source)
        return self._raise(
            storage,
            kind="test",
            source=source,
            encounter_id=None if enc is None else enc.id,
            p_failure=None,
            message=(
                f"Test alert from PandaPulse{'' if source is None else ' for ' + self._label(source)};"
                " no action needed."
            ),
        )


def webhook_body(alert: dict[str, Any]) -> dict[str, Any]:
    """What a webhook receives: the WebSocket ``alert`` event, so one parser serves both."""
    return AlertMsg(action="raised", alert=Alert.model_validate(alert)).model_dump(mode="json")
