"""Prometheus metrics, rendered from the same ``stats`` the dashboard sees.

Each app gets its own ``CollectorRegistry`` (never prometheus-client's global one, so several
apps in one process, as in the tests, do not collide). One custom collector turns the ``Stats``
of a scrape (the ``stats`` payload of docs/PROTOCOL.md) and the service's other ``Counter``s
into metric families, so the counters on ``/metrics``, ``/stats`` and the WebSocket cannot
disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.wire import Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_SOURCE_STATES = ("ok", "stalled", "stopped", "starting")


class Counter(NamedTuple):
    """A counter beyond the ``stats`` payload: exported as ``pandapulse_<name>``."""

    name: str
    value: float
    help: str


class StatsCollector(Collector):
    """Yields metric families from the ``Stats`` and counters last handed to ``update``."""

    def __init__(self) -> None:
        self._stats: Stats | None = None
        self._counters: Sequence[Counter] = ()

    def update(self, stats: Stats, counters: Sequence[Counter] = ()) -> None:
        self._stats = stats
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        if s is None:
            return
        up = GaugeMetricFamily("pandapulse_uptime_seconds", "Seconds since the service started")
        up.add_metric([], s.uptime_s)
        yield up
        info = GaugeMetricFamily(
            "pandapulse_model_info", "The loaded model (always 1)", labels=["version", "device"]
        )
        info.add_metric([s.model_version, s.device], 1)
        yield info

        status = GaugeMetricFamily(
            "pandapulse_source_status",
            "1 for the source's current state",
            labels=["source", "state"],
        )
        blocks = CounterMetricFamily(
            "pandapulse_source_blocks", "Audio blocks received", labels=["source"]
        )
        overflows = CounterMetricFamily(
            "pandapulse_source_overflows", "Sound-card overflows reported", labels=["source"]
        )
        dropped = CounterMetricFamily(
            "pandapulse_source_dropped_blocks", "Blocks dropped on a full queue", labels=["source"]
        )
        age = GaugeMetricFamily(
            "pandapulse_source_last_audio_age_seconds",
            "Seconds since audio last arrived",
            labels=["source"],
        )
        for source, src in s.sources.items():
            for state in _SOURCE_STATES:
                status.add_metric([source, state], 1.0 if src.status == state else 0.0)
            blocks.add_metric([source], src.blocks)
            overflows.add_metric([source], src.overflows)
            dropped.add_metric([source], src.dropped_blocks)
            if src.last_audio_age_s is not None:
                age.add_metric([source], src.last_audio_age_s)
        yield from (status, blocks, overflows, dropped, age)

        inf = s.inference
        segments = CounterMetricFamily("pandapulse_inference_segments", "Segments scored")
        segments.add_metric([], inf.segments)
        batches = CounterMetricFamily("pandapulse_inference_batches", "Inference batches run")
        batches.add_metric([], inf.batches)
        overruns = CounterMetricFamily(
            "pandapulse_inference_overruns", "Batches that took longer than the audio they cover"
        )
        overruns.add_metric([], inf.overruns)
        yield from (segments, batches, overruns)
        for name, value, help_text in (
            ("mean", inf.mean_ms, "Mean"),
            ("p95", inf.p95_ms, "95th percentile"),
        ):
            if value is not None:
                g = GaugeMetricFamily(
                    f"pandapulse_inference_{name}_milliseconds",
                    f"{help_text} processing time per batch (recent window)",
                )
                g.add_metric([], value)
                yield g

        clients = GaugeMetricFamily("pandapulse_ws_clients", "Connected WebSocket clients")
        clients.add_metric([], s.ws.clients)
        ws_dropped = CounterMetricFamily(
            "pandapulse_ws_dropped", "Live updates dropped for slow WebSocket clients"
        )
        ws_dropped.add_metric([], s.ws.dropped)
        stored = GaugeMetricFamily("pandapulse_storage_segments", "Segments in the database")
        stored.add_metric([], s.storage.segments)
        pending = GaugeMetricFamily("pandapulse_outbox_pending", "Webhook deliveries not yet done")
        pending.add_metric([], s.storage.outbox_pending)
        yield from (clients, ws_dropped, stored, pending)

        for counter in self._counters:
            c = CounterMetricFamily(f"pandapulse_{counter.name}", counter.help)
            c.add_metric([], counter.value)
            yield c


class Metrics:
    """A registry of its own with the stats collector registered."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = StatsCollector()
        self.registry.register(self.collector)

    def render(self, stats: Stats, counters: Sequence[Counter] = ()) -> bytes:
        """Prometheus text exposition of ``stats`` plus ``counters``."""
        self.collector.update(stats, counters)
        return generate_latest(self.registry)
