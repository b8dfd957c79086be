"""Ablation of the default training recipe: each part removed in turn, on the same grouped folds.

Grouped K-fold cross validation (``model.evaluate.make_folds``, by individual) of CGANet with
the default recipe, the recipe less one part at a time, and the paper's recipe at the same
epoch budget, beside the SVM and FLDA baselines on the same folds. Prints segment AUC (mean and
std over folds) per variant, and writes the table to ``docs/reports/<name>/ablation.md``.

Usage: .venv/bin/python bench/recipe_ablation.py DATA_DIR --cache-dir DIR [--folds 3]
       [--max-segments 400] [--epochs 25] [--variants default,no-mixup,...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import aggregate, baselines, calibration
from model.data import build_dataset, subsample
from model.evaluate import _cganet_fold, make_folds
from model.hardware import cpu_model
from model.train import TrainConfig, set_threads

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-standardise": {"standardise": False},
    "mixup-0.4": {"mixup": 0.4},
    "no-augment": {"augment": False},
    "no-class-weights": {"class_weighted": False},
    "lr-3e-4": {"lr": 3e-4},
    "wd-0.1": {"weight_decay": 0.1},
    "lr-3e-4-wd-0.1": {"lr": 3e-4, "weight_decay": 0.1},
    "ema-0.99": {"ema": 0.99},
    "lr-3e-4-ema-0.99": {"lr": 3e-4, "ema": 0.99},
    "select-on-accuracy": {"selection": "accuracy"},
    "paper": {"recipe": "paper"},
}
"""Overrides of the default recipe per variant ('paper': the paper's recipe, same epochs)."""


def config_for(variant: str, epochs: int, seed: int) -> TrainConfig:
    overrides = dict(VARIANTS[variant])
    recipe = overrides.pop("recipe", "default")
    config = TrainConfig.for_recipe(recipe, epochs=epochs, seed=seed, device="cpu", progress=False)
    return replace(config, **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--max-segments", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--name", default=None, help="report folder name (default: data dir's)")
    args = parser.parse_args()
    set_threads(None)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}: use {', '.join(VARIANTS)}")
    data = subsample(
        build_dataset(args.data_dir, cache_dir=args.cache_dir), args.max_segments, seed=args.seed
    )
    folds = make_folds("encounter", data.labels, data.groups, args.folds, args.seed)
    y = data.labels
    rows: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for name in ("svm", "flda"):
        aucs = []
        for k, (train, test) in enumerate(folds, start=1):
            p = baselines.fit_predict_baseline(
                name, data.features[train], y[train], data.features[test], seed=args.seed + k
            )
            aucs.append(baselines.binary_metrics(y[test], p, aggregate.decide(p))["auc"])
        rows[name] = {"auc": aucs}
        print(f"{name:20s} AUC {np.mean(aucs):.3f} ± {np.std(aucs):.3f}  {np.round(aucs, 3)}")
    for variant in variants:
        aucs, eces, epochs, seconds = [], [], [], []
        for k, (train, test) in enumerate(folds, start=1):
            config = config_for(variant, args.epochs, args.seed + k)
            t0 = time.perf_counter()
            p, pred, _, _, info = _cganet_fold(
                data, train, test, config, config.val_fraction, grouped=True
            )
            seconds.append(time.perf_counter() - t0)
            aucs.append(baselines.binary_metrics(y[test], p, pred)["auc"])
            epochs.append(info["best_epoch"])
            eces.append(calibration.reliability(p, y[test] == 0).ece)
        rows[variant] = {"auc": aucs, "ece": eces, "best_epoch": epochs, "seconds": seconds}
        print(
            f"{variant:20s} AUC {np.mean(aucs):.3f} ± {np.std(aucs):.3f}  {np.round(aucs, 3)}"
            f"  test ECE {np.mean(eces):.3f}  best epochs {epochs}  {sum(seconds):.0f} s",
            flush=True,
        )
    out = Path("docs/reports") / (args.name or args.data_dir.name)
    out.mkdir(parents=True, exist_ok=True)
    machine = (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__},"
        f" load average {os.getloadavg()[0]:.2f} at the end"
    )
    lines = [
        f"# Recipe ablation: {args.data_dir.name}",
        "",
        f"Grouped {args.folds}-fold cross validation by individual, {len(data)} segments"
        f" ({data.class_counts()}), at most {args.epochs} epochs per fold, seed {args.seed};"
        f" written by `bench/recipe_ablation.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        f" in {(time.perf_counter() - started) / 60:.0f} min. Machine: {machine}.",
        "",
        "Segment AUC on the held-out individuals, mean ± std over folds; test ECE is the"
        " expected calibration error of the calibrated p(class 0) on the test fold.",
        "",
        "| variant | AUC | per fold | test ECE | best epochs |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        auc = np.asarray(row["auc"])
        ece = f"{np.mean(row['ece']):.3f}" if "ece" in row else "–"
        best = ", ".join(map(str, row.get("best_epoch", []))) or "–"
        lines.append(
            f"| {name} | {auc.mean():.3f} ± {auc.std():.3f} | {', '.join(f'{a:.3f}' for a in auc)}"
            f" | {ece} | {best} |"
        )
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written to {out / 'ablation.md'}")


if __name__ == "__main__":
    main()
