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
from typing import TYPE_CHECKING

from model.classifier import Classifier
from model.errors import AudioError
from service.config import Settings
from service.hub import Hub
from service.metrics import Counter, Metrics
from service.monitor import Monitor
from service.records import Removed
from service.storage_thread import StorageClosed
from service.wire import (
    Alert,
    Encounter,
    InferenceStats,
    ModelInfo,
    Segment,
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

    # --- life cycle ---------------------------------------------------------------------------
    @classmethod
    async def start(cls, settings: Settings, *, classifier: Classifier | None = None) -> Runtime:
        """Load the model (unless given), open storage, start the pipeline and the periodic
        tasks. What was started is stopped again if a later step fails."""
        hub = Hub(settings.server.ws_queue_size)
        hub.bind(asyncio.get_running_loop())
        inf = settings.inference
        if classifier is None:
            classifier = await asyncio.to_thread(
                Classifier.from_checkpoint,
                inf.model_path,
                inf.device,
                max_batch=inf.max_batch,
                precision=inf.precision,
            )
        log.info(
            "model %s on %s, %s (%s)",
            classifier.version,
            classifier.device,
            classifier.precision,
            inf.model_path.name,
        )
        monitor = Monitor(
            settings, hub, class_names=classifier.class_names, model_version=classifier.version
        )
        await asyncio.to_thread(monitor.start)
        try:
            pipeline = await asyncio.to_thread(_start_pipeline, settings, classifier, monitor)
        except BaseException:
            await asyncio.to_thread(monitor.stop)
            raise
        runtime = cls(settings, classifier, hub, monitor, pipeline)
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
        self.hub.close_all()

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
        )

    def counters(self) -> list[Counter]:
        """Counters for /metrics beyond the ``stats`` payload."""
        m = self.monitor
        return [
            Counter("predict_requests", self.predicts, "/predict requests answered"),
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
            Counter("webhook_delivered", m.outbox.delivered, "Webhook deliveries that succeeded"),
            Counter(
                "webhook_failed_attempts", m.outbox.failed_attempts, "Webhook attempts that failed"
            ),
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
    )
    pipeline.start()
    return pipeline
