"""Helpers for the service tests: settings on a temporary data dir, a monitor without a loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from model import constants as C
from service.config import Settings, load_settings
from service.hub import Hub
from service.monitor import Monitor
from service.types import ScoredSegment
from service.wire import (
    Alert,
    AlertMsg,
    InferenceStats,
    ModelInfo,
    SnapshotMsg,
    Stats,
    StorageStats,
    WsStats,
)


class RecordingHub(Hub):
    """A hub that keeps what it is asked to publish instead of needing an event loop."""

    def __init__(self) -> None:
        super().__init__(queue_size=64)
        self.sent: list[BaseModel] = []

    def publish_threadsafe(self, message: BaseModel) -> None:
        self.sent.append(message)

    def of_type(self, kind: str) -> list[Any]:
        return [m for m in self.sent if getattr(m, "type", None) == kind]


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    base: dict[str, Any] = {
        "storage": {"data_dir": str(tmp_path / "data")},
        "sources": [{"id": "north", "enclosure": "North yard", "kind": "synthetic"}],
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(environ={}, overrides=base)


def scored(
    source: str,
    start_s: float,
    p_success: float,
    *,
    seconds: float = 2.0,
    audio: bool = True,
    class0_share: float | None = None,
) -> ScoredSegment:
    start = int(start_s * C.SAMPLE_RATE)
    n = int(seconds * C.SAMPLE_RATE)
    rng = np.random.default_rng(start)
    return ScoredSegment(
        source_id=source,
        start=start,
        end=start + n,
        audio=(0.05 * rng.standard_normal((2, n))).astype(np.float32)
        if audio
        else np.zeros((2, 0), np.float32),
        p_success=p_success,
        p_failure=1.0 - p_success,
        attention=np.full(C.N_FRAMES, 1 / C.N_FRAMES, np.float32),
        levels_db=(-30.0, -30.0),
        model_version="test",
        processing_ms=1.0,
        ready_at=time.monotonic(),
        class0_share=class0_share,
    )


def drain(monitor: Monitor) -> None:
    """Wait until every job queued so far on the storage thread has run."""
    monitor.store.run(lambda s: None).result(timeout=30)


@pytest.fixture
def monitor_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Monitor] = []

    def make(class0_share: float | None = None, **sections: Any) -> tuple[Monitor, RecordingHub]:
        hub = RecordingHub()
        monitor = Monitor(
            make_settings(tmp_path, **sections),
            hub,
            model_version="test",
            class0_share=class0_share,
        )
        monitor.start()
        made.append(monitor)
        return monitor, hub

    yield make
    for monitor in made:
        monitor.stop()


def minimal_snapshot() -> SnapshotMsg:
    """A valid, empty snapshot (for hub tests that need something to send first)."""
    return SnapshotMsg(
        model=ModelInfo(
            version="test",
            device="cpu",
            class_names=["success", "failure"],
            uncertain_band=(0.4, 0.6),
            class0_share=None,
            alarm_class="failure",
        ),
        sources=[],
        encounters=[],
        segments=[],
        alerts=[],
        stats=Stats(
            uptime_s=0.0,
            device="cpu",
            model_version="test",
            sources={},
            inference=InferenceStats(segments=0, batches=0, mean_ms=None, p95_ms=None, overruns=0),
            ws=WsStats(clients=0, dropped=0),
            storage=StorageStats(segments=0, outbox_pending=0),
        ),
    )


def alert_msg(alert_id: int) -> AlertMsg:
    return AlertMsg(
        action="raised",
        alert=Alert(
            id=alert_id,
            kind="test",
            source=None,
            encounter_id=None,
            message="test",
            p_failure=None,
            created_at="2026-01-01T00:00:00.000Z",
            acknowledged_at=None,
            acknowledged_by=None,
        ),
    )
