"""A short run of the capacity bench (bench/latency_bench.py): the tooling that measures how
many enclosures one box can hear keeps working. It checks what the bench reports, never how
fast anything was."""

from __future__ import annotations

from pathlib import Path

from bench import latency_bench


def test_the_capacity_bench_measures_two_sources(
    tmp_path: Path, untrained_checkpoint: Path
) -> None:
    (row,) = latency_bench.measure_capacity(
        untrained_checkpoint, tmp_path, [2], window_s=3.0, warmup_s=4.0
    )
    assert row["sources"] == 2
    # Continuously calling sources: segments were cut, scored, stored and reached the client.
    assert row["scored_total"] > 0
    assert row["dropped_blocks"] == 0 and row["dropped_segments"] == 0
    assert row["cores_used"] > 0 and row["cpu_per_source_pct"] == 100 * row["cores_used"] / 2
    assert set(row) >= {"p50_ms", "p95_ms", "received", "overruns", "realtime"}
    # Only the generated recordings' data directory is left behind, no recordings.
    assert not list(tmp_path.glob("calling*.wav"))
