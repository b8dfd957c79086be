"""``pandapulse calibrate``: refit a trained checkpoint's calibration on the segments the
service scores, without training again.

A model trained on annotated calls is validated on annotated calls, but `/predict` and the live
service score the segments the vocalization detector cuts, and those differ (on the demo
model's validation pairs the detector cut 2,614 segments, 51.8 % success, where the annotations
give 3,660, 61.8 % success). Calibrated on the annotated ones, the demo model's probabilities
were off by an ECE of 0.085 on the detector's cuts of unseen encounters; refitted on the
detector's cuts of its own validation pairs, 0.050.

The command rebuilds the checkpoint's training data from its folder with the recorded settings,
redraws the same grouped validation split (refusing when the folder no longer gives the split
the checkpoint records), cuts those validation recordings with the detector and fits Platt
scaling on them (``model.train.calibrate``). The weights are unchanged; the temperature, the bias
and the prior the encounter rule takes out (``metrics.calibration.class0_share``) are new, and
so is the model version. The previous calibration is kept in the metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from model import checkpoint
from model.data import build_dataset, subsample
from model.errors import DataError
from model.train import calibrate, group_split, split_counts


def recalibrate(
    path: Path, out: Path, *, data_dir: Path | None = None, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Refit ``path``'s calibration on the detector's cuts of its validation recordings and save
    the result to ``out``; returns the saved metadata."""
    model, meta = checkpoint.load(path)
    data = meta.get("data") or {}
    training = meta.get("training") or {}
    split = data.get("split") or {}
    if not data or not split or "val_fraction" not in training:
        raise DataError(
            f"{path} does not record its training data and split: recalibrate only checkpoints"
            " saved by `pandapulse train`"
        )
    if "annotations" not in (data.get("segmentation") or {}):
        raise DataError(
            f"{path} was trained on segments cut by {sorted(data.get('segmentation') or {})}, not"
            " on annotations: its validation segments already are the detector's cuts"
        )
    folder = Path(data_dir or data["data_dir"])
    if not folder.is_dir():
        raise DataError(
            f"{folder}, the training folder {path} records, is not a folder here: give it with"
            " --data-dir"
        )
    columns = data.get("columns") or {}
    common: dict[str, Any] = {
        "feature": data.get("feature", "mfcc"),
        "group_col": columns.get("group"),
        "label_col": columns.get("label"),
        "classes": tuple(meta["class_names"]),
        "cache_dir": cache_dir,
    }
    dataset = build_dataset(folder, **common)
    drawn = data.get("subsampled")
    if drawn:
        dataset = subsample(dataset, int(drawn["to"]), seed=int(drawn["seed"]))
    tr, va = group_split(
        dataset.labels, dataset.groups, float(training["val_fraction"]), int(training["seed"])
    )
    found = split_counts(dataset.groups, tr, va)
    recorded = {key: split.get(key) for key in found}
    if found != recorded:
        raise DataError(
            f"{folder} no longer gives the training split {path} records ({recorded}; now"
            f" {found}): recalibrate against the folder it was trained on"
        )
    recordings = sorted(set(dataset.recordings[va].tolist()))
    cuts = build_dataset(folder, **common, use_annotations=False, only=recordings)
    if len(np.unique(cuts.labels)) < 2:
        raise DataError(
            f"the detector's cuts of the {len(recordings)} validation recordings hold one class:"
            " there is nothing to calibrate against"
        )
    metrics = dict(meta.get("metrics") or {})
    previous = metrics.get("calibration") or {}
    # val_ece_before: the previous calibration's ECE on these cuts
    metrics["calibration"] = calibrate(model, cuts.features, cuts.labels, "detector")
    metrics["recalibrated"] = {"from_model": meta["model_version"], "previous": previous}
    keep = {k: v for k, v in meta.items() if k not in ("format", "feature_config", "model_version")}
    return checkpoint.save(out, model, {**keep, "metrics": metrics})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a checkpoint saved by `pandapulse train`")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="CHECKPOINT", help="where to save (.safetensors)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the training folder, if it has moved (default: the one the checkpoint records)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="feature cache (default: DATA_DIR/.pandapulse-cache)",
    )


def run(args: argparse.Namespace) -> int:
    meta = recalibrate(args.checkpoint, args.out, data_dir=args.data_dir, cache_dir=args.cache_dir)
    cal = meta["metrics"]["calibration"]
    done = meta["metrics"]["recalibrated"]
    before = done["previous"]
    print(
        f"saved {args.out} (model {meta['model_version']}, the weights of {done['from_model']}):"
        f" calibrated on the detector's {cal['segments']} cuts of the validation recordings;"
        f" T {before.get('temperature', 1.0):.2f} -> {cal['temperature']:.2f},"
        f" b {before.get('bias', 0.0):+.2f} -> {cal['bias']:+.2f}, ECE on these cuts"
        f" {cal['val_ece_before']:.3f} -> {cal['val_ece_after']:.3f}; class-0 share"
        f" {cal['class0_share']:.3f}"
    )
    return 0
