"""Soak: an hour of synthetic encounter audio through the live pipeline, as fast as it goes.

Lossless replay, so nothing may be dropped: every block read, every sample covered by the
level meter, every segment cut is scored. Resident memory, measured after a warm-up, may grow
by less than 5 % over the rest of the hour.

The run happens in a fresh process (``soak_run.py``) with the allocator setting the deployment
uses (``MALLOC_MMAP_THRESHOLD_``, read from the Dockerfile's ENV): without it glibc's dynamic
mmap threshold lets the heap fragment and RSS creep up through the hour (RELIABILITY.md has
the measurements), so the deployment fixes it and the soak checks the deployed configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.audio.base import BLOCK_SAMPLES
from service.audio.meters import UPDATE_SAMPLES
from tests.deploy import dockerfile as df
from tests.reliability.record import record
from tests.reliability.server import REPO, base_env

SOAK_SECONDS = 3600
WARM_UP_MINUTES = 5
"""Audio (min) after which the reference RSS is taken: model, buffers and allocator settled."""
MAX_RSS_GROWTH = 0.05
JOIN_BOUND_S = 1500.0
"""Upper bound for the hour to drain (a hang guard on a shared 2-core box, not a timing)."""
MALLOC_SETTING = "MALLOC_MMAP_THRESHOLD_"


@pytest.mark.slow
def test_an_hour_of_audio_lossless_with_bounded_memory(untrained_checkpoint: Path) -> None:
    image_env = df.env(df.instructions(REPO / "Dockerfile"))
    assert MALLOC_SETTING in image_env, "the image must fix glibc's mmap threshold"
    env = base_env() | {MALLOC_SETTING: image_env[MALLOC_SETTING]}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.reliability.soak_run",
            str(untrained_checkpoint),
            str(SOAK_SECONDS),
            str(JOIN_BOUND_S),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=JOIN_BOUND_S + 300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["drained"], f"the hour did not drain within {JOIN_BOUND_S} s"

    total = result["total_samples"]
    src = result["stats"]["sources"]["soak"]
    inf = result["stats"]["inference"]
    segments = [tuple(s) for s in result["segments"]]
    # Nothing dropped anywhere, and nothing failed quietly.
    assert src["source"]["dropped_blocks"] == 0 and src["source"]["overflows"] == 0
    assert src["dropped_segments"] == 0 and inf["dropped_segments"] == 0
    assert inf["sink_errors"] == 0
    # Every sample went through: the level meter's 0.1-s stretches tile the hour without gaps.
    assert result["level_gaps"] == 0
    assert result["levels"] == total // UPDATE_SAMPLES
    assert src["source"]["blocks"] == -(-total // BLOCK_SAMPLES)
    # Every segment cut was scored, once, in order, with proper probabilities.
    assert len(segments) == src["segments"] == inf["segments"] > 0
    assert segments == sorted(segments) and len(set(segments)) == len(segments)
    assert result["bad_probabilities"] == 0
    assert all(0 <= s < e <= total for s, e in segments)
    assert result["statuses"][0] == "ok" and "stalled" not in result["statuses"]

    rss = {int(m): v for m, v in result["rss_by_minute"].items()}
    warm = rss[WARM_UP_MINUTES]
    final = rss[max(rss)]
    peak = max(v for m, v in rss.items() if m >= WARM_UP_MINUTES)
    growth = (final - warm) / warm
    by_minute = {m: round(v / 2**20, 1) for m, v in sorted(rss.items())}
    record(
        "soak",
        f"{SOAK_SECONDS} s of synthetic encounter audio, lossless, untrained CGANet on CPU,"
        f" {MALLOC_SETTING}={image_env[MALLOC_SETTING]}",
        f"{result['elapsed_s']:.0f} s wall ({SOAK_SECONDS / result['elapsed_s']:.0f}x real time);"
        f" {len(segments)} segments, {result['calls']} call boundaries; drops 0;"
        f" RSS {warm / 2**20:.0f} -> {final / 2**20:.0f} MiB ({growth:+.2%}),"
        f" peak {peak / 2**20:.0f} MiB",
        rss_mib_by_minute=by_minute,
        inference_mean_ms=inf["mean_ms"],
    )
    assert growth < MAX_RSS_GROWTH, by_minute
