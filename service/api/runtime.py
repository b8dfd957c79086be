"""Everything the running service holds, built and torn down by the FastAPI lifespan.

``Runtime`` owns the classifier, the hub, the monitor (storage thread, webhook outbox), the
pipeline (sources, detector, inference worker) and two periodic tasks on the event loop:
the ``stats`` broadcast and retention. Routes reach it as ``request.app.state.runtime``.
Start order: hub -> model -> monitor (the sink) -> pipeline; stop runs in reverse, so the
pipeline's last segments are still stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from model.classifier import Classifier
from model.errors import AudioError
from service.config import Settings
from service.hub import Hub
from service.metrics import Metrics
from service.monitor import Monitor
from service.wire import (
    Alert,
    Encounter,
    ModelInfo,
    Segment,
    SnapshotMsg,
    SourceInfo,
    Stats,
    StatsMsg,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class Runtime:
    """The service's parts (see the module docstring)."""

    def __init__(self, settings: Settings, *, classifier: Classifier | None = None) -> None:
        self.settings = settings
        self.classifier = classifier
        self.hub = Hub(settings.server.ws_queue_size)
        self.metrics = Metrics()
        self.monitor: Monitor | None = None
        self.pipeline: Any = None
        self.started_at = time.monotonic()
        self.predict_slot = asyncio.Semaphore(1)
        self.predicts = 0
        self.predict_errors = 0
        self.retention_runs = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.running = False

    # --- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.hub.bind(asyncio.get_running_loop())
        inf = self.settings.inference
        if self.classifier is None:
            self.classifier = await asyncio.to_thread(
                Classifier.from_checkpoint, inf.model_path, inf.device, max_batch=inf.max_batch
            )
        log.info(
            "model %s on %s (%s)",
            self.classifier.version,
            self.classifier.device,
            inf.model_path.name,
        )
        self.monitor = Monitor(
            self.settings,
            self.hub,
            class_names=self.classifier.class_names,
            model_version=self.classifier.version,
        )
        await asyncio.to_thread(self.monitor.start)
        try:
            self.pipeline = await asyncio.to_thread(self._start_pipeline)
        except BaseException:
            await asyncio.to_thread(self.monitor.stop)
            raise
        self.running = True
        self._tasks = [
            asyncio.create_task(self._stats_loop(), name="pandapulse-stats"),
            asyncio.create_task(self._retention_loop(), name="pandapulse-retention"),
        ]

    def _start_pipeline(self) -> Any:
        # The audio stack is imported only when serving (not for ``create_app`` in tools).
        from service.audio import source_from_config
        from service.pipeline import Pipeline

        assert self.classifier is not None and self.monitor is not None
        sources = []
        for cfg in self.settings.sources:
            source = source_from_config(cfg)
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
            self.classifier,
            self.monitor,
            detector=self.settings.detector.params(),
            max_batch=self.settings.inference.max_batch,
            stall_after_s=self.settings.alerts.stall_after_s,
        )
        pipeline.start()
        return pipeline

    async def stop(self) -> None:
        self.running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.pipeline is not None:
            await asyncio.to_thread(self.pipeline.stop)
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.stop)
        self.hub.close_all()

    # --- periodic tasks -----------------------------------------------------------------------
    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.server.stats_interval_s)
            try:
                stats = await self.stats()
            except RuntimeError as err:  # stopping
                log.debug("stats skipped: %s", err)
                continue
            self.hub.publish(StatsMsg(**stats))

    async def _retention_loop(self) -> None:
        st = self.settings.storage
        while True:
            try:
                await self.retention()
            except (RuntimeError, OSError) as err:
                log.error("retention failed: %s", err)
            await asyncio.sleep(st.retention_interval_s)

    async def retention(self) -> dict[str, int]:
        st = self.settings.storage
        assert self.monitor is not None
        removed = await self.monitor.adb(
            lambda s: s.apply_retention(
                keep_days=st.keep_days, max_disk_bytes=int(st.max_disk_mb * MIB)
            )
        )
        self.retention_runs += 1
        if any(removed.values()):
            log.info("retention removed %s", ", ".join(f"{v} {k}" for k, v in removed.items() if v))
        return removed

    # --- views --------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return "none" if self.classifier is None else str(self.classifier.device)

    @property
    def model_version(self) -> str:
        return "none" if self.classifier is None else self.classifier.version

    def ready(self) -> tuple[bool, str]:
        if self.classifier is None:
            return False, "the model is not loaded"
        if not self.running or self.pipeline is None:
            return False, "the pipeline is not running"
        alive = getattr(self.pipeline, "running", True)
        if not alive:
            return False, "the pipeline stopped"
        return True, "ready"

    def sources(self) -> list[SourceInfo]:
        status = {} if self.monitor is None else self.monitor.source_status
        return [
            SourceInfo(id=s.id, enclosure=s.label, kind=s.kind, status=status.get(s.id, "starting"))  # type: ignore[arg-type]
            for s in self.settings.sources
        ]

    async def stats(self) -> dict[str, Any]:
        """The ``stats`` payload of docs/PROTOCOL.md (validated)."""
        if self.monitor is None:
            raise RuntimeError("the service is not running")
        pending = await self.monitor.adb(lambda s: s.outbox_pending())
        pipe = self.pipeline.stats() if self.pipeline is not None else {}
        status = self.monitor.source_status
        sources = {}
        for src in self.settings.sources:
            p = dict(pipe.get("sources", {}).get(src.id, {}))
            sources[src.id] = {
                "status": status.get(src.id, "starting"),
                "blocks": int(p.get("blocks", 0)),
                "overflows": int(p.get("overflows", 0)),
                "dropped_blocks": int(p.get("dropped_blocks", 0)),
                "last_audio_age_s": p.get("last_audio_age_s"),
            }
        inf = dict(pipe.get("inference", {}))
        stats = Stats(
            uptime_s=round(time.monotonic() - self.started_at, 1),
            device=self.device,
            model_version=self.model_version,
            sources=sources,  # type: ignore[arg-type]
            inference={  # type: ignore[arg-type]
                "segments": int(inf.get("segments", 0)),
                "batches": int(inf.get("batches", 0)),
                "mean_ms": inf.get("mean_ms"),
                "p95_ms": inf.get("p95_ms"),
                "overruns": int(inf.get("overruns", 0)),
            },
            ws={"clients": self.hub.clients, "dropped": self.hub.dropped},  # type: ignore[arg-type]
            storage={"segments": self.monitor.segments_stored, "outbox_pending": pending},  # type: ignore[arg-type]
        )
        return stats.model_dump()

    def extra_counters(self) -> dict[str, tuple[float, str]]:
        """Counters for /metrics beyond the ``stats`` payload."""
        m = self.monitor
        out: dict[str, tuple[float, str]] = {
            "predict_requests": (self.predicts, "/predict requests answered"),
            "predict_errors": (self.predict_errors, "/predict requests refused or failed"),
            "ws_slow_disconnects": (
                self.hub.disconnected_slow,
                "WebSocket clients cut off as too slow",
            ),
            "ws_messages_published": (self.hub.published, "WebSocket messages published"),
        }
        if m is not None:
            out["alerts_raised"] = (m.alerts_raised, "Alerts raised")
            out["calls_detected"] = (m.calls, "Vocalizations detected")
            out["storage_errors"] = (m.store_errors, "Storage jobs that failed")
            if m.outbox is not None:
                out["webhook_delivered"] = (m.outbox.delivered, "Webhook deliveries that succeeded")
                out["webhook_failed_attempts"] = (
                    m.outbox.failed_attempts,
                    "Webhook attempts that failed",
                )
        return out

    async def snapshot(self) -> SnapshotMsg:
        assert self.monitor is not None and self.classifier is not None
        n = self.settings.server.ws_snapshot_segments

        def read(s: Any) -> tuple[list[Any], list[Any], list[Any]]:
            return s.open_encounters(), s.recent_segments(n), s.list_alerts(open_only=True)

        encounters, segments, alerts = await self.monitor.adb(read)
        return SnapshotMsg(
            model=ModelInfo(
                version=self.classifier.version,
                device=self.device,
                class_names=list(self.classifier.class_names),
                uncertain_band=self.settings.encounter.uncertain_band,
                alarm_class=None
                if self.monitor.alarm_column is None
                else self.classifier.class_names[self.monitor.alarm_column],
            ),
            sources=self.sources(),
            encounters=[Encounter.model_validate(e) for e in encounters],
            segments=[Segment.model_validate(s) for s in segments],
            alerts=[Alert.model_validate(a) for a in alerts],
            stats=Stats.model_validate(await self.stats()),
        )
