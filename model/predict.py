"""``pandapulse predict``: score recordings with a trained checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from model import aggregate, preprocessing
from model.checkpoint import DEMO_MODEL
from model.classifier import Classifier
from model.detect import DetectorParams
from model.errors import CheckpointError
from model.preprocessing import Segment
from model.segmenter import iter_segments

_NO_AUDIO = np.zeros((0, 0), np.float32)


def analyse(
    recording: preprocessing.Recording,
    classifier: Classifier,
    detector: DetectorParams | None = None,
    *,
    band: tuple[float, float] = aggregate.UNCERTAIN_BAND,
) -> dict[str, Any]:
    """Detect the calls in a recording, score their segments and aggregate: what ``/predict``
    answers.

    Segments come from the energy detector and the streaming segmenter
    (``model.segmenter``), exactly as the live service cuts them; they are scored in batches
    of ``classifier.max_batch`` so a long recording never holds all its segments at once. With
    no call found there are no segments, and ``p_success`` and ``verdict`` are None. Within
    ``band`` the verdict is ``uncertain`` (``model.aggregate``).
    """
    segments: list[Segment] = []
    p_succ: list[np.ndarray] = []
    p_fail: list[np.ndarray] = []
    attention: list[np.ndarray] = []
    batch: list[Segment] = []

    def score() -> None:
        result = classifier.predict(preprocessing.stack(batch))
        p_succ.append(result.p_success)
        p_fail.append(result.p_failure)
        attention.append(result.attention)
        # Keep only the bounds: the audio of a scored batch is not needed any more.
        segments.extend(Segment(s.start, s.end, _NO_AUDIO) for s in batch)
        batch.clear()

    for segment in iter_segments(recording.audio, detector):
        batch.append(segment)
        if len(batch) >= classifier.max_batch:
            score()
    if batch:
        score()
    pred_s = np.concatenate(p_succ) if p_succ else np.zeros(0, np.float32)
    pred_f = np.concatenate(p_fail) if p_fail else np.zeros(0, np.float32)
    att = np.concatenate(attention) if attention else np.zeros((0, 0), np.float32)
    p_success = aggregate.running_p_success(pred_s)
    return {
        "duration_s": round(recording.duration_s, 3),
        "mono": recording.mono,
        "source_rate": recording.source_rate,
        "model_version": classifier.version,
        "class_names": list(classifier.class_names),
        "segments": [
            {
                "start_s": round(seg.start_s, 3),
                "end_s": round(seg.end_s, 3),
                "p_success": round(float(pred_s[i]), 4),
                "p_failure": round(float(pred_f[i]), 4),
                "attention": [round(float(a), 5) for a in att[i]],
            }
            for i, seg in enumerate(segments)
        ],
        "p_success": None if p_success is None else round(p_success, 4),
        "verdict": aggregate.verdict(p_success, classifier.class_names, band),
        "uncertain_band": list(band),
    }


def parse_band(text: str) -> tuple[float, float]:
    """'0.4,0.6' -> (0.4, 0.6), checked (``model.aggregate.check_band``)."""
    try:
        low, high = (float(x) for x in text.split(","))
        return aggregate.check_band((low, high))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give LOWER,UPPER, e.g. 0.4,0.6 ({err})"
        ) from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="recordings to score")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"checkpoint (default: the demo model, {DEMO_MODEL.name})",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--uncertain-band",
        type=parse_band,
        default=aggregate.UNCERTAIN_BAND,
        metavar="LOWER,UPPER",
        help="P(class 0) range whose verdict is 'uncertain' (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    path = args.model or DEMO_MODEL
    if not Path(path).is_file():
        raise CheckpointError(
            f"no trained checkpoint at {path}: train one with `pandapulse train` (or `make demo-model`)"
            " and pass it with --model; PandaPulse never predicts with untrained weights"
        )
    classifier = Classifier.from_checkpoint(path, device=args.device)
    results = {}
    for file in args.files:
        results[str(file)] = analyse(preprocessing.load(file), classifier, band=args.uncertain_band)
    if args.json:
        for result in results.values():
            for seg in result["segments"]:
                seg.pop("attention")
        print(json.dumps(results, indent=2))
        return 0
    s_name, f_name = classifier.class_names
    for file, result in results.items():
        print(
            f"{file}  ({result['duration_s']:.1f} s{', mono' if result['mono'] else ''}, model {classifier.version})"
        )
        print(f"  {'start s':>8} {'end s':>8} {'P(' + s_name + ')':>14} {'P(' + f_name + ')':>14}")
        for seg in result["segments"]:
            print(
                f"  {seg['start_s']:8.2f} {seg['end_s']:8.2f} {seg['p_success']:14.3f} {seg['p_failure']:14.3f}"
            )
        if result["verdict"] is None:
            print("  verdict: no vocalization found")
        elif result["verdict"] == aggregate.UNCERTAIN:
            low, high = args.uncertain_band
            print(
                f"  verdict: uncertain (P({s_name}) = {result['p_success']:.3f} is within"
                f" {low:.2f}-{high:.2f}; over {len(result['segments'])} segments)"
            )
        else:
            print(
                f"  verdict: {result['verdict']} (P({s_name}) = {result['p_success']:.3f} over {len(result['segments'])} segments)"
            )
    return 0
