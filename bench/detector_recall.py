"""The detector's recall against the synthetic annotations, for several hang-over settings.

The hang-over (``detector.hangover_s``) is what a call's last segment waits before it can be
cut, so it is most of the live latency (BENCHMARKS.md, "Live latency"). Shortening it must
not find fewer calls. For each hang-over this scores the same synthetic encounters
(``model.synth.generate_encounter``, seeds 1..N, 30 s each, both outcomes) and reports:

- call recall: the share of the focal pair's annotated calls that a detected call overlaps;
- time recall: the share of annotated call time inside detected calls;
- detections per minute and the share of detected time outside every annotated call (what
  the extra segments would be made of: noise, the neighbour's calls, tails);
- calls split: annotated calls overlapped by more than one detection.

Usage: ``python bench/detector_recall.py [--encounters 24] [--hangovers 0.06,0.04,0.02]
[--frame-samples 1024]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/detector_recall.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from model import constants as C  # noqa: E402
from model.detect import DetectorParams, detect_calls  # noqa: E402
from model.hardware import cpu_model  # noqa: E402
from model.synth import generate_encounter  # noqa: E402

DURATION_S = 30.0


def score(
    truth: list[tuple[int, int]], found: list[tuple[int, int]], n: int
) -> dict[str, float | int]:
    """Recall and spill of ``found`` against ``truth`` (sample intervals) in ``n`` samples."""
    true_mask = np.zeros(n, bool)
    found_mask = np.zeros(n, bool)
    for a, b in truth:
        true_mask[a:b] = True
    for a, b in found:
        found_mask[a:b] = True
    hits = split = 0
    for a, b in truth:
        overlapping = sum(1 for s, e in found if s < b and e > a)
        hits += overlapping > 0
        split += overlapping > 1
    return {
        "calls": len(truth),
        "hit": hits,
        "split": split,
        "true_s": float(true_mask.sum()) / C.SAMPLE_RATE,
        "covered_s": float((true_mask & found_mask).sum()) / C.SAMPLE_RATE,
        "found": len(found),
        "found_s": float(found_mask.sum()) / C.SAMPLE_RATE,
        "outside_s": float((found_mask & ~true_mask).sum()) / C.SAMPLE_RATE,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encounters", type=int, default=24)
    parser.add_argument("--hangovers", default="0.06,0.04,0.02")
    parser.add_argument(
        "--frame-samples",
        type=int,
        default=DetectorParams().frame_samples,
        help="the detector's frame (default %(default)s)",
    )
    args = parser.parse_args(argv)
    hangovers = [float(x) for x in args.hangovers.split(",")]
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; {args.encounters} synthetic"
        f" encounters of {DURATION_S:g} s (seeds 1..{args.encounters}, outcomes alternating)"
    )
    totals = {h: dict.fromkeys(("calls", "hit", "split", "found"), 0) for h in hangovers}
    times = {
        h: dict.fromkeys(("true_s", "covered_s", "found_s", "outside_s"), 0.0) for h in hangovers
    }
    base = DetectorParams(frame_samples=args.frame_samples)
    for seed in range(1, args.encounters + 1):
        enc = generate_encounter(
            seed, outcome="success" if seed % 2 else "failure", duration_s=DURATION_S
        )
        n = enc.audio.shape[1]
        truth = [
            (int(c.onset_s * C.SAMPLE_RATE), int(c.offset_s * C.SAMPLE_RATE)) for c in enc.calls
        ]
        for h in hangovers:
            found = detect_calls(enc.audio, dataclasses.replace(base, hangover_s=h))
            result = score(truth, found, n)
            for key in totals[h]:
                totals[h][key] += int(result[key])
            for key in times[h]:
                times[h][key] += float(result[key])
    minutes = args.encounters * DURATION_S / 60
    frame_ms = base.frame_samples / C.SAMPLE_RATE * 1000
    print(
        "\n| hang-over (s) | as frames (ms) | call recall | time recall | calls split |"
        " detections / min | detected time outside calls |"
    )
    print("|---|---|---|---|---|---|---|")
    for h in hangovers:
        t, s = totals[h], times[h]
        frames = base.frames(h)
        print(
            f"| {h:g} | {frames} ({frames * frame_ms:.0f}) | {t['hit']}/{t['calls']}"
            f" ({t['hit'] / t['calls']:.1%}) | {s['covered_s'] / s['true_s']:.1%} |"
            f" {t['split']} | {t['found'] / minutes:.1f} |"
            f" {s['outside_s'] / max(s['found_s'], 1e-9):.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
