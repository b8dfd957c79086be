"""The service's ``EventSink`` and the keepers' actions: encounters, alerts, storage, publication.

Threads and ownership
---------------------
The pipeline calls ``on_*`` from its threads. Level and spectrogram updates (the pipeline makes
them only for sources some client watches) are serialised on that thread and handed to the
event loop (``Hub.publish_threadsafe``); they are not stored. Clock ticks drive the silence
check of automatic encounters.
Everything else becomes a job for the ``StorageThread``, which owns the ``Storage`` (the one
SQLite writer); the ``EncounterBook`` and the alarms are touched only from inside those jobs,
so none of that state needs a lock. A job stores first and publishes after, so a client never
sees a segment, encounter or alert that is not on disk.

The keepers' actions and the reads the API needs are ``async`` methods: each hops to the
storage thread itself (``StorageThread.arun``), so a caller cannot run them on the wrong
thread. When storage falls ``JOB_SLOTS`` jobs behind, ``on_segment`` blocks the inference
worker (segments are never dropped; the pipeline counts the overrun).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from model import constants as C
from service.alerts import (
    FailureAlarm,
    FailureRule,
    OutboxWorker,
    WebhookDeliverer,
    alarm_column,
)
from service.config import Settings
from service.encounter import EncounterBook, EncounterRules
from service.encounter_audio import PREROLL_S, EncounterAudio
from service.errors import UnknownSource
from service.hub import Hub
from service.notify import AppriseDeliverer
from service.records import (
    AlertKind,
    AlertRow,
    EncounterRecord,
    EncounterRow,
    LiveRecords,
    OutboxRow,
    OutboxTarget,
    Outcome,
    Removed,
    SegmentRow,
)
from service.shadow import ShadowBook
from service.storage import Storage, webhook_label
from service.storage_thread import StorageThread
from service.types import (
    CallEvent,
    ClockTick,
    LevelUpdate,
    ScoredSegment,
    SourceHealth,
    SourceStatus,
    SpectrogramColumns,
)
from service.wire import (
    Alert,
    AlertMsg,
    Delivery,
    DeliveryMsg,
    Encounter,
    EncounterMsg,
    LevelMsg,
    SegmentMsg,
    SpectrogramMsg,
)

log = logging.getLogger(__name__)

EncounterAction = Literal["started", "stopped", "outcome", "updated"]

MIB = 1024 * 1024


class Monitor:
    """Receives pipeline events; keeps encounters, raises alerts, stores, publishes."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        *,
        class_names: tuple[str, str] = ("success", "failure"),
        model_version: str = "untracked",
        class0_share: float | None = None,
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
            class0_share,
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
        self.shadow = ShadowBook(class_names, enc.uncertain_band)
        """Agreement of the shadow model with the active one (``service.shadow``)."""
        if self.alarm_column is None:
            log.warning(
                "the model's classes %s are not panda outcomes and alerts.alarm_class is not set:"
                " no failure alarm will be raised",
                list(class_names),
            )
        st = settings.storage
        self.store = StorageThread(lambda: Storage(st.data_dir, keep_clips=st.keep_clips))
        self.audio = EncounterAudio(
            self.store.offer,
            self.wall_time,
            enabled=st.keep_encounter_audio,
            preroll_s=PREROLL_S,
        )
        """Whole-encounter audio; the pipeline hands it every block (``tap``)."""
        self._scored_to: dict[str, int] = {}
        """End sample of each source's latest stored segment (storage thread): a keeper's
        encounter keeps audio from there, so every segment it gets lies in its audio."""
        for source in settings.sources:
            lossless = source.kind in ("file", "synthetic") and not source.realtime
            self.audio.add_source(source.id, lossless=lossless)
        self.outbox = OutboxWorker(self.store, schedule=a.retry_schedule_s)
        """Alert delivery; a channel (``service.alerts.Deliverer``) registers before start()."""
        self.outbox.register(WebhookDeliverer(timeout_s=a.webhook_timeout_s))
        self.alert_targets: list[OutboxTarget] = [
            OutboxTarget("webhook", str(u), webhook_label(str(u))) for u in a.webhook_urls
        ]
        """One outbox row of each is stored with every alert; a channel adds its own."""
        notify = AppriseDeliverer(
            [u.get_secret_value() for u in a.notify],
            timeout_s=a.notify_timeout_s,
            source_names={s.id: s.enclosure or s.id for s in settings.sources},
        )
        self.outbox.register(notify)  # also with no URLs: it gives up rows of removed ones
        self.alert_targets += [c.target for c in notify.channels]
        self.outbox.on_change = self._deliveries_changed
        self._alarms: dict[int, FailureAlarm] = {}
        self._origins: dict[str, float] = {}
        self.source_status: dict[str, SourceHealth] = {s.id: "starting" for s in settings.sources}
        self.source_detail: dict[str, str] = {}
        self.calls = 0
        self.segments_stored = 0
        self.alerts_raised = 0

    @property
    def alarm_class(self) -> str | None:
        return None if self.alarm_column is None else self.class_names[self.alarm_column]

    @property
    def store_errors(self) -> int:
        return self.store.failed_jobs

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open storage, restore open encounters, start webhook delivery (blocking)."""
        self.store.start(then=self._restore)
        self.outbox.start()

    def stop(self) -> None:
        """Stop delivery, finish queued jobs, close automatic encounters and the database."""
        self.outbox.stop()
        self.store.stop(before=self._shutdown)

    def _restore(self, storage: Storage) -> None:
        self.segments_stored = storage.count_segments()
        self.audio.recover(storage)
        for row in storage.open_encounters():
            if row.auto:
                # Its audio context is gone with the old process: close it where it stopped.
                storage.stop_encounter(row.id)
                continue
            p = [s.p_success for s in storage.segments_of(row.id)]
            self.book.track(row.id, row.source, auto=False, p_success=p)
            self.audio.begin(storage, row.id, row.source, None)  # continues in a new file

    def _shutdown(self, storage: Storage) -> None:
        self._close_auto(storage)
        self.audio.close_all(storage)

    def _close_auto(self, storage: Storage) -> None:
        for enc in self.book.all():
            if enc.auto:
                self._stop_encounter(storage, enc.id)

    # --- EventSink (pipeline threads) ---------------------------------------------------------
    def on_clock(self, event: ClockTick) -> None:
        self._origin(event.source_id, event.sample)
        if self.settings.encounter.auto:
            self.store.submit(lambda s: self._close_if_silent(s, event.source_id, event.sample))

    def on_level(self, event: LevelUpdate) -> None:
        if not self.hub.watching(event.source_id):
            return
        self.hub.publish_threadsafe(
            LevelMsg(
                source=event.source_id,
                start_s=round(event.start / C.SAMPLE_RATE, 4),
                rms_db=(round(event.rms_db[0], 2), round(event.rms_db[1], 2)),
                peak_db=(round(event.peak_db[0], 2), round(event.peak_db[1], 2)),
            )
        )

    def on_spectrogram(self, event: SpectrogramColumns) -> None:
        if not self.hub.watching(event.source_id):
            return
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
        self.store.submit(lambda s: self._store_segment(s, event))

    def on_source_status(self, event: SourceStatus) -> None:
        previous = self.source_status.get(event.source_id)
        self.source_status[event.source_id] = event.status
        self.source_detail[event.source_id] = event.detail
        if event.status == "stalled" and previous != "stalled":
            log.warning("source %s stalled: %s", event.source_id, event.detail)
            self.store.submit(lambda s: self._raise_stalled(s, event))
        elif event.status == "ok" and previous == "stalled":
            log.info("source %s: audio flows again", event.source_id)

    def _origin(self, source: str, sample: int) -> float:
        """Unix time of the source's sample 0, fixed by its first event (wall time = origin +
        samples / rate)."""
        origin = self._origins.get(source)
        if origin is None:
            origin = self._origins.setdefault(source, time.time() - sample / C.SAMPLE_RATE)
        return origin

    def wall_time(self, source: str, sample: int) -> datetime:
        return datetime.fromtimestamp(self._origin(source, sample) + sample / C.SAMPLE_RATE, UTC)

    # --- keepers' actions (any coroutine; each hops to the storage thread) --------------------
    async def start_encounter(
        self, source: str, *, pair: str = "", keeper: str = "", notes: str = ""
    ) -> EncounterRow:
        """Start an encounter on ``source`` (its open one, if any, is stopped first)."""
        self._check_source(source)
        return await self.store.arun(
            lambda s: self._start_encounter(
                s,
                source,
                auto=False,
                pair=pair,
                keeper=keeper,
                notes=notes,
                # Segments still on their way start at or after the latest stored one's end;
                # before any, from the oldest audio the pre-roll holds.
                from_sample=self._scored_to.get(source, 0),
            )
        )

    async def stop_encounter(self, encounter_id: int) -> EncounterRow | None:
        """Stop an encounter (a stopped one is returned as it is); None when there is none."""
        return await self.store.arun(lambda s: self._stop_if_open(s, encounter_id))

    async def set_outcome(
        self,
        encounter_id: int,
        *,
        outcome: Outcome,
        copulation_observed: bool | None = None,
        pregnancy_confirmed: bool | None = None,
        notes: str | None = None,
    ) -> EncounterRow | None:
        """Record what happened; None when there is no such encounter."""

        def job(s: Storage) -> EncounterRow | None:
            if s.get_encounter(encounter_id) is None:
                return None
            row = s.set_outcome(
                encounter_id,
                outcome=outcome,
                copulation_observed=copulation_observed,
                pregnancy_confirmed=pregnancy_confirmed,
                notes=notes,
            )
            self._publish_encounter("outcome", row)
            return row

        return await self.store.arun(job)

    async def acknowledge(self, alert_id: int, by: str = "") -> AlertRow | None:
        """A keeper has seen the alert (once; later calls return it unchanged)."""

        def job(s: Storage) -> AlertRow | None:
            before = s.get_alert(alert_id)
            if before is None or before.acknowledged:
                return before
            alert = s.acknowledge_alert(alert_id, by)
            if alert is not None:
                log.info("alert %d acknowledged by %s", alert_id, by or "a keeper")
                self.hub.publish_threadsafe(AlertMsg(action="acknowledged", alert=Alert.of(alert)))
            return alert

        return await self.store.arun(job)

    async def test_alert(self, source: str | None = None) -> AlertRow:
        """Send a ``test`` alert through every channel (WebSocket, log, webhooks)."""
        if source is not None:
            self._check_source(source)

        def job(s: Storage) -> AlertRow:
            enc = None if source is None else self.book.get(source)
            where = "" if source is None else " for " + self._label(source)
            return self._raise(
                s,
                kind="test",
                source=source,
                encounter_id=None if enc is None else enc.id,
                p_failure=None,
                message=f"Test alert from PandaPulse{where}; no action needed.",
            )

        return await self.store.arun(job)

    async def apply_retention(self) -> Removed:
        """Delete what ``storage.keep_days`` and ``storage.max_disk_mb`` no longer keep."""
        st = self.settings.storage
        removed = await self.store.arun(
            lambda s: s.apply_retention(
                keep_days=st.keep_days, max_disk_bytes=int(st.max_disk_mb * MIB)
            )
        )
        if removed:
            log.info("retention removed %s", removed.summary())
        return removed

    # --- reads for the API ----------------------------------------------------------------------
    async def encounters(
        self, *, limit: int = 50, offset: int = 0, source: str | None = None
    ) -> tuple[list[EncounterRow], int]:
        """A page of encounters, newest first, and how many there are in all."""
        return await self.store.arun(
            lambda s: s.list_encounters(limit=limit, offset=offset, source=source)
        )

    async def all_encounters(self) -> list[EncounterRow]:
        return await self.store.arun(lambda s: s.all_encounters())

    async def encounter(self, encounter_id: int) -> EncounterRecord | None:
        return await self.store.arun(lambda s: s.encounter_record(encounter_id))

    async def segments_of(self, encounter_id: int) -> list[SegmentRow] | None:
        """The encounter's segments, oldest first; None when there is no such encounter."""

        def read(s: Storage) -> list[SegmentRow] | None:
            if s.get_encounter(encounter_id) is None:
                return None
            return s.segments_of(encounter_id)

        return await self.store.arun(read)

    async def clip_file(self, segment_id: int) -> Path | None:
        return await self.store.arun(lambda s: s.clip_file(segment_id))

    async def alerts(self, *, open_only: bool = False, limit: int = 100) -> list[AlertRow]:
        return await self.store.arun(lambda s: s.list_alerts(open_only=open_only, limit=limit))

    async def alerts_with_deliveries(
        self, *, open_only: bool = False, limit: int = 100
    ) -> tuple[list[AlertRow], list[OutboxRow]]:
        """Alerts, newest first, and the outbox rows (per-channel deliveries) of them."""

        def read(s: Storage) -> tuple[list[AlertRow], list[OutboxRow]]:
            alerts = s.list_alerts(open_only=open_only, limit=limit)
            return alerts, s.outbox_rows([a.id for a in alerts])

        return await self.store.arun(read)

    async def alert_with_deliveries(self, alert_id: int) -> tuple[AlertRow, list[OutboxRow]] | None:
        def read(s: Storage) -> tuple[AlertRow, list[OutboxRow]] | None:
            alert = s.get_alert(alert_id)
            return None if alert is None else (alert, s.outbox_rows([alert_id]))

        return await self.store.arun(read)

    def _deliveries_changed(self, alert_id: int) -> None:
        """Publish the alert's per-channel results after an attempt (outbox worker thread)."""

        def job(s: Storage) -> None:
            rows = s.outbox_rows([alert_id])
            self.hub.publish_threadsafe(
                DeliveryMsg(alert_id=alert_id, deliveries=[Delivery.of(r) for r in rows])
            )

        self.store.run(job)

    async def live_records(self, n_segments: int) -> LiveRecords:
        return await self.store.arun(lambda s: s.live_records(n_segments))

    async def outbox_pending(self) -> int:
        return await self.store.arun(lambda s: s.outbox_pending())

    def _check_source(self, source: str) -> None:
        if self.settings.source(source) is None:
            raise UnknownSource(source, [s.id for s in self.settings.sources])

    # --- jobs (storage thread) --------------------------------------------------------------
    def _store_segment(self, storage: Storage, ev: ScoredSegment) -> None:
        self._close_if_silent(storage, ev.source_id, ev.start)
        self._scored_to[ev.source_id] = ev.end
        enc = self.book.get(ev.source_id)
        if enc is None and self.book.needs_auto_open(ev.source_id):
            self._start_encounter(storage, ev.source_id, auto=True, from_sample=ev.start)
            enc = self.book.get(ev.source_id)
        running = verdict = None
        old_verdict = None
        if enc is not None:
            rules = self.book.rules
            old_verdict = enc.verdict(rules.min_segments_for_verdict, rules.uncertain_band)
            enc.add(ev.p_success, ev.end, ev.class0_share)
            running = enc.running_p_success
            verdict = enc.verdict(rules.min_segments_for_verdict, rules.uncertain_band)
        if ev.shadow is not None:
            self.shadow.add(
                ev.source_id,
                None if enc is None else enc.id,
                ev.p_success,
                ev.shadow,
                ev.class0_share,
            )
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
            SegmentMsg.of(seg, running_p_success=None if running is None else round(running, 4))
        )
        if enc is None:
            return
        if verdict != old_verdict:
            self._publish_encounter("updated", storage.get_encounter(enc.id))
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
                    f"{self._label(ev.source_id)}: running P({self.alarm_class})"
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
        from_sample: int | None = None,
    ) -> EncounterRow:
        """Open an encounter; its audio is kept from ``from_sample`` (the segment that opened
        it, or the end of the source's latest scored segment) or, when None, from the next
        block on."""
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
        self.book.track(row.id, source, auto=auto)
        self.audio.begin(storage, row.id, source, from_sample)
        log.info(
            "encounter %d started on %s (%s)",
            row.id,
            source,
            "auto" if auto else keeper or "keeper",
        )
        self._publish_encounter("started", row)
        return row

    def _stop_if_open(self, storage: Storage, encounter_id: int) -> EncounterRow | None:
        row = storage.get_encounter(encounter_id)
        if row is None or not row.is_open:
            return row
        return self._stop_encounter(storage, encounter_id)

    def _stop_encounter(self, storage: Storage, encounter_id: int) -> EncounterRow:
        enc = self.book.by_id(encounter_id)
        if enc is not None:
            self.book.forget(enc.source)
        self._alarms.pop(encounter_id, None)
        self.audio.end(storage, encounter_id)
        row = storage.stop_encounter(encounter_id)
        self._publish_encounter("stopped", row)
        return row

    def _publish_encounter(self, action: EncounterAction, row: EncounterRow | None) -> None:
        if row is not None:
            self.hub.publish_threadsafe(EncounterMsg(action=action, encounter=Encounter.of(row)))

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
        kind: AlertKind,
        source: str | None,
        encounter_id: int | None,
        p_failure: float | None,
        message: str,
    ) -> AlertRow:
        """Store the alert and its deliveries (outbox), log it, publish it, wake delivery."""
        alert = storage.add_alert(
            kind=kind,
            message=message,
            source=source,
            encounter_id=encounter_id,
            p_failure=p_failure,
            targets=self.alert_targets,
            payload=webhook_body,
        )
        self.alerts_raised += 1
        log.warning("ALERT %d %s: %s", alert.id, kind, message)
        self.hub.publish_threadsafe(AlertMsg(action="raised", alert=Alert.of(alert)))
        if self.alert_targets:
            self.outbox.wake()
        return alert


def webhook_body(alert: AlertRow) -> str:
    """What a webhook receives: the WebSocket ``alert`` event, so one parser serves both."""
    return AlertMsg(action="raised", alert=Alert.of(alert)).model_dump_json()
