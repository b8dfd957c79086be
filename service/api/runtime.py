"""Everything the running service holds, built and torn down by the FastAPI lifespan.

``Runtime.start`` builds it whole inside the lifespan (hub -> model -> monitor, which owns the
storage thread and the webhook outbox -> pipeline -> periodic tasks), so no field is ever
missing; ``stop`` runs in reverse, so the pipeline's last segments are still stored. Routes
reach it, and its monitor, through the dependencies of ``service.api.deps``, which answer 503
while there is none (before start-up finished, after shutdown began).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from model.classifier import Classifier
from model.errors import AudioError, CheckpointError
from service.alerts import ChannelCounts
from service.config import Settings
from service.hub import Hub
from service.metrics import Counter, Metrics
from service.models_store import (
    ModelRejected,
    choose_startup,
    copy_config_model,
    load_classifier,
    model_file,
)
from service.monitor import Monitor
from service.mqtt import MqttPublisher
from service.mqtt import attach as mqtt_attach
from service.records import ModelRole, ModelRow, Removed
from service.storage_thread import StorageClosed
from service.wire import (
    Alert,
    Encounter,
    InferenceStats,
    ModelCard,
    ModelInfo,
    ModelList,
    ModelRoleName,
    Segment,
    ShadowAgreement,
    ShadowStats,
    SnapshotMsg,
    SourceInfo,
    SourceStats,
    Stats,
    StatsMsg,
    StorageStats,
    WsStats,
)

if TYPE_CHECKING:
    from service.pipeline import Pipeline

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class Runtime:
    """The service's running parts (see the module docstring); build with ``start``."""

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier,
        hub: Hub,
        monitor: Monitor,
        pipeline: Pipeline,
    ) -> None:
        self.settings = settings
        self.classifier = classifier
        self.hub = hub
        self.monitor = monitor
        self.pipeline = pipeline
        self.metrics = Metrics()
        self.started_at = time.monotonic()
        self.predict_slot = asyncio.Semaphore(1)
        self.predicts = 0
        self.predict_errors = 0
        self.retention_runs = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.mqtt: MqttPublisher | None = None
        """The MQTT publisher (a hub subscriber); None when ``mqtt.host`` is not set."""
        self.model_lock = asyncio.Lock()
        """Serialises model changes (upload, activate, rollback, shadow)."""
        self.previous: Classifier | None = None
        """The model the last activation replaced, kept loaded for ``rollback``."""
        self.previous_version: str | None = None
        self.configured_version: str | None = None
        """Version of ``inference.model`` (None when a classifier was handed in)."""
        self.model_swaps = 0

    # --- life cycle ---------------------------------------------------------------------------
    @classmethod
    async def start(cls, settings: Settings, *, classifier: Classifier | None = None) -> Runtime:
        """Load the model (unless given), open storage, start the pipeline and the periodic
        tasks. What was started is stopped again if a later step fails."""
        hub = Hub(settings.server.ws_queue_size)
        hub.bind(asyncio.get_running_loop())
        inf = settings.inference
        startup = None
        if classifier is None:
            # A model activated through the API outlives a restart (service.models_store).
            startup = await asyncio.to_thread(
                choose_startup, settings.storage.data_dir, inf.model_path
            )
            # Loaded as a swap loads: warmed (the first live batch pays no set-up, such as
            # CUDA's libraries) and checked to give probabilities.
            try:
                classifier = await asyncio.to_thread(load_classifier, startup.active, inf)
            except ModelRejected as err:
                raise CheckpointError(f"model {startup.active}: {err}") from err
        log.info(
            "model %s on %s, %s (%s)",
            classifier.version,
            classifier.device,
            classifier.precision,
            inf.model_path.name,
        )
        monitor = Monitor(
            settings,
            hub,
            class_names=classifier.class_names,
            model_version=classifier.version,
            class0_share=classifier.class0_share,
        )
        mqtt = mqtt_attach(settings, monitor, model_version=classifier.version)
        await asyncio.to_thread(monitor.start)
        try:
            if mqtt is not None:
                mqtt.restore(await monitor.live_records(settings.server.ws_snapshot_segments))
                mqtt.start()
            pipeline = await asyncio.to_thread(_start_pipeline, settings, classifier, monitor)
        except BaseException:
            await asyncio.to_thread(monitor.stop)
            if mqtt is not None:
                await asyncio.to_thread(mqtt.stop)
            raise
        runtime = cls(settings, classifier, hub, monitor, pipeline)
        runtime.mqtt = mqtt
        if startup is not None:
            await runtime._restore_models(startup.shadow, startup.previous, reset=startup.reset)
        runtime._tasks = [
            asyncio.create_task(runtime._stats_loop(), name="pandapulse-stats"),
            asyncio.create_task(runtime._retention_loop(), name="pandapulse-retention"),
        ]
        return runtime

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await asyncio.to_thread(self.pipeline.stop)
        await asyncio.to_thread(self.monitor.stop)
        if self.mqtt is not None:  # after the monitor: its last events still go out
            await asyncio.to_thread(self.mqtt.stop)
        self.hub.close_all()

    # --- models -------------------------------------------------------------------------------
    async def _restore_models(
        self, shadow: Path | None, previous: str | None, *, reset: bool
    ) -> None:
        """Record ``inference.model`` among the stored models, clear stale roles, resume the
        persisted shadow (problems are logged: the service runs on without them)."""
        inf = self.settings.inference
        data_dir = self.settings.storage.data_dir
        try:
            row = await asyncio.to_thread(copy_config_model, data_dir, inf.model_path)
            await self.monitor.store.arun(lambda s: s.get_model(row.version) or s.add_model(row))
            self.configured_version = row.version
        except (CheckpointError, OSError) as err:
            log.warning("inference.model not recorded among the stored models: %s", err)
        if reset:
            await self._persist({"active": None, "previous": None, "shadow": None, "config": None})
            return
        self.previous_version = previous
        if shadow is None:
            return
        try:
            model = await asyncio.to_thread(load_classifier, shadow, inf)
        except (CheckpointError, ModelRejected, RuntimeError, ValueError) as err:
            log.error("shadow model %s not resumed: %s", shadow.name, err)
            return
        if model.class_names != self.classifier.class_names:
            log.error("shadow model %s not resumed: its classes differ", model.version)
            return
        self.pipeline.set_shadow(model)
        log.info("shadow model %s resumed", model.version)

    @property
    def shadow_version(self) -> str | None:
        shadow = self.pipeline.shadow
        return None if shadow is None else shadow.version

    def role_of(self, version: str) -> ModelRoleName | None:
        if version == self.model_version:
            return "active"
        if version == self.shadow_version:
            return "shadow"
        if version == self.previous_version:
            return "previous"
        return None

    async def models(self) -> ModelList:
        rows = await self.monitor.store.arun(lambda s: s.list_models())
        return ModelList(
            active=self.model_version,
            shadow=self.shadow_version,
            previous=self.previous_version,
            models=[ModelCard.of(r, self.role_of(r.version)) for r in rows],
        )

    async def stored_model(self, version: str) -> ModelRow | None:
        return await self.monitor.store.arun(lambda s: s.get_model(version))

    async def _persist(self, roles: dict[ModelRole, str | None]) -> None:
        await self.monitor.store.arun(lambda s: s.set_model_roles(roles))

    async def _load(self, row: ModelRow) -> Classifier:
        """Load and warm a stored model off the event loop and the inference thread."""
        path = model_file(self.settings.storage.data_dir, row)
        try:
            model = await asyncio.to_thread(load_classifier, path, self.settings.inference)
        except (CheckpointError, RuntimeError, ValueError) as err:
            raise ModelRejected(f"stored model {row.version} cannot be loaded: {err}") from err
        if model.class_names != self.classifier.class_names:
            raise ModelRejected(
                f"model {row.version} has classes {list(model.class_names)}, the live model"
                f" {list(self.classifier.class_names)}"
            )
        return model

    async def activate(self, row: ModelRow) -> None:
        """Make ``row`` the live model from the next batch on (caller holds ``model_lock``).

        The new model is loaded and warmed first; the pipeline's sources and queue run on
        meanwhile, and the batch being scored finishes with the old model. The old model is
        kept loaded for ``rollback``; the roles are on disk before the swap.
        """
        if row.version == self.model_version:
            return
        if row.version == self.previous_version and self.previous is not None:
            model = self.previous
        else:
            model = await self._load(row)
        old = self.classifier
        stop_shadow = self.shadow_version == row.version
        roles: dict[ModelRole, str | None] = {
            "active": row.version,
            "previous": old.version,
            "config": self.configured_version,
        }
        if stop_shadow:
            roles["shadow"] = None
        await self._persist(roles)
        if stop_shadow:
            self.pipeline.set_shadow(None)
        self.pipeline.swap(model)
        self.classifier = model
        self.monitor.model_version = model.version
        self.previous, self.previous_version = old, old.version
        self.model_swaps += 1
        log.info("model %s active (was %s)", model.version, old.version)
        await self._announce_models()

    async def set_shadow(self, row: ModelRow | None) -> None:
        """Run ``row`` as the shadow model from the next batch on; None stops the shadow
        (caller holds ``model_lock``)."""
        if row is None:
            await self._persist({"shadow": None})
            old = self.pipeline.set_shadow(None)
            if old is not None:
                log.info("shadow model %s stopped", old.version)
                await self._announce_models()
            return
        if row.version == self.shadow_version:
            return
        model = await self._load(row)
        await self._persist({"shadow": row.version})
        self.pipeline.set_shadow(model)
        log.info("shadow model %s scores beside %s", model.version, self.model_version)
        await self._announce_models()

    async def _announce_models(self) -> None:
        """A ``stats`` event now, so dashboards show the model change without waiting."""
        try:
            self.hub.publish(StatsMsg.of(await self.stats()))
        except StorageClosed as err:  # stopping
            log.debug("stats after a model change skipped: %s", err)

    def shadow_stats(self) -> ShadowStats | None:
        version = self.shadow_version
        if version is None:
            return None
        book = self.monitor.shadow
        sources = {}
        for source, tally in book.current(version).items():
            active, shadow = tally.active_p_success, tally.shadow_p_success
            sources[source] = ShadowAgreement(
                encounter_id=tally.encounter_id,
                segments=tally.segments,
                same_verdicts=_round(tally.share_same),
                mean_abs_diff=_round(tally.mean_abs_diff),
                active_p_success=_round(active),
                shadow_p_success=_round(shadow),
                active_verdict=None if active is None else book.verdict(active),
                shadow_verdict=None if shadow is None else book.verdict(shadow),
            )
        return ShadowStats(model_version=version, sources=sources)

    # --- periodic tasks -----------------------------------------------------------------------
    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.server.stats_interval_s)
            try:
                stats = await self.stats()
            except StorageClosed as err:  # stopping
                log.debug("stats skipped: %s", err)
                continue
            self.hub.publish(StatsMsg.of(stats))

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.retention()
            except (RuntimeError, OSError) as err:
                log.error("retention failed: %s", err)
            await asyncio.sleep(self.settings.storage.retention_interval_s)

    async def retention(self) -> Removed:
        removed = await self.monitor.apply_retention()
        self.retention_runs += 1
        return removed

    # --- views --------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return str(self.classifier.device)

    @property
    def model_version(self) -> str:
        return self.classifier.version

    def ready(self) -> tuple[bool, str]:
        if not self.pipeline.running:
            return False, "the pipeline stopped"
        return True, "ready"

    def sources(self) -> list[SourceInfo]:
        status = self.monitor.source_status
        return [
            SourceInfo(id=s.id, enclosure=s.label, kind=s.kind, status=status.get(s.id, "starting"))
            for s in self.settings.sources
        ]

    def model_info(self) -> ModelInfo:
        return ModelInfo(
            version=self.classifier.version,
            device=self.device,
            class_names=list(self.classifier.class_names),
            uncertain_band=self.settings.encounter.uncertain_band,
            class0_share=self.classifier.class0_share,
            alarm_class=self.monitor.alarm_class,
        )

    async def stats(self) -> Stats:
        """The ``stats`` payload of docs/PROTOCOL.md."""
        pending = await self.monitor.outbox_pending()
        pipe = self.pipeline.stats()
        status = self.monitor.source_status
        sources = {}
        for src in self.settings.sources:
            lane = pipe.sources.get(src.id)
            sources[src.id] = SourceStats(
                status=status.get(src.id, "starting"),
                blocks=0 if lane is None else lane.source.blocks,
                overflows=0 if lane is None else lane.source.overflows,
                dropped_blocks=0 if lane is None else lane.source.dropped_blocks,
                last_audio_age_s=None if lane is None else lane.last_audio_age_s,
            )
        inf = pipe.inference
        return Stats(
            uptime_s=round(time.monotonic() - self.started_at, 1),
            device=self.device,
            model_version=self.model_version,
            sources=sources,
            inference=InferenceStats(
                segments=inf.segments,
                batches=inf.batches,
                mean_ms=inf.mean_ms,
                p95_ms=inf.p95_ms,
                overruns=inf.overruns,
            ),
            ws=WsStats(clients=self.hub.clients, dropped=self.hub.dropped),
            storage=StorageStats(segments=self.monitor.segments_stored, outbox_pending=pending),
            shadow=self.shadow_stats(),
            mqtt=None if self.mqtt is None else self.mqtt.status(),
        )

    def counters(self) -> list[Counter]:
        """Counters for /metrics beyond the ``stats`` payload."""
        m = self.monitor
        hooks = m.outbox.by_channel.get("webhook", ChannelCounts())
        notes = m.outbox.by_channel.get("apprise", ChannelCounts())
        return [
            Counter("predict_requests", self.predicts, "/predict requests answered"),
            Counter("model_swaps", self.model_swaps, "Live model changes (activate, rollback)"),
            Counter(
                "shadow_errors",
                self.pipeline.shadow_errors,
                "Batches the shadow model failed to score (the live scores were kept)",
            ),
            Counter("predict_errors", self.predict_errors, "/predict requests refused or failed"),
            Counter(
                "ws_slow_disconnects",
                self.hub.disconnected_slow,
                "WebSocket clients cut off as too slow",
            ),
            Counter("ws_messages_published", self.hub.published, "WebSocket messages published"),
            Counter("alerts_raised", m.alerts_raised, "Alerts raised"),
            Counter("calls_detected", m.calls, "Vocalizations detected"),
            Counter("storage_errors", m.store_errors, "Storage jobs that failed"),
            Counter(
                "encounter_audio_dropped_blocks",
                m.audio.dropped_blocks,
                "Audio blocks not kept in encounter audio (the disk fell behind; written as silence)",
            ),
            Counter(
                "encounter_audio_write_errors",
                m.audio.write_errors,
                "Encounter audio files that could not be written",
            ),
            Counter(
                "encounter_audio_seconds",
                m.audio.seconds_written,
                "Seconds of encounter audio written",
            ),
            Counter("webhook_delivered", hooks.delivered, "Webhook deliveries that succeeded"),
            Counter(
                "webhook_failed_attempts", hooks.failed_attempts, "Webhook attempts that failed"
            ),
            Counter("notify_delivered", notes.delivered, "Apprise notifications delivered"),
            Counter(
                "notify_failed_attempts",
                notes.failed_attempts,
                "Apprise notification attempts that failed",
            ),
            Counter(
                "alert_deliveries_given_up",
                sum(c.given_up for c in list(m.outbox.by_channel.values())),
                "Alert deliveries given up, any channel (e.g. its URL left the config)",
            ),
            *self._mqtt_counters(),
        ]

    def _mqtt_counters(self) -> list[Counter]:
        if self.mqtt is None:
            return []
        status = self.mqtt.status()
        return [
            Counter(
                "mqtt_connected",
                int(status.state == "connected"),
                "1 while the broker is connected",
            ),
            Counter(
                "mqtt_messages_published", status.published, "MQTT messages handed to the broker"
            ),
            Counter(
                "mqtt_alerts_delivered", status.alerts_delivered, "Alerts the broker acknowledged"
            ),
            Counter("mqtt_connects", self.mqtt.connects, "Successful connections to the broker"),
        ]

    async def snapshot(self) -> SnapshotMsg:
        live = await self.monitor.live_records(self.settings.server.ws_snapshot_segments)
        return SnapshotMsg(
            model=self.model_info(),
            sources=self.sources(),
            encounters=[Encounter.of(e) for e in live.encounters],
            segments=[Segment.of(s) for s in live.segments],
            alerts=[Alert.of(a) for a in live.alerts],
            stats=await self.stats(),
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _start_pipeline(settings: Settings, classifier: Classifier, monitor: Monitor) -> Pipeline:
    # The audio stack is imported only when serving (not for ``create_app`` in tools).
    from service.audio import block_samples_for, source_from_config
    from service.pipeline import Pipeline

    sources = []
    block_samples = block_samples_for(len(settings.sources))
    for cfg in settings.sources:
        source = source_from_config(cfg, block_samples=block_samples)
        if cfg.kind == "sounddevice":
            # A missing sound card is not fatal: the source reopens it with backoff and
            # the watchdog raises an "audio stalled" alert meanwhile.
            try:
                source.check()
            except AudioError as err:
                log.warning("%s", err)
        else:
            source.check()  # a missing file or generator is a configuration error
        sources.append(source)
    pipeline = Pipeline(
        sources,
        classifier,
        monitor,
        detector=settings.detector,
        max_batch=settings.inference.max_batch,
        stall_after_s=settings.alerts.stall_after_s,
        watched=monitor.hub.watching,
        tap=monitor.audio.tap,
    )
    pipeline.start()
    return pipeline
