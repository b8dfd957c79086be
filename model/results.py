"""Typed results of an evaluation: what a method gave on each fold, and over the folds.

``model.evaluate`` produces them, ``model.figures`` draws them and ``model.report`` writes them
(``to_json`` gives the layout of ``report.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model import baselines
from model import constants as C

METHODS = ("cganet", "svm", "flda")
ABLATION = "cganet_combined"
METHOD_LABELS = {
    "cganet": "CGANet (MFCC)",
    "svm": "SVM (MFCC)",
    "flda": "FLDA (MFCC)",
    ABLATION: "CGANet (combined 62-dim)",
}
PAPER = {
    "folds": C.CV_FOLDS,
    "epochs": C.EPOCHS,
    "batch_size": C.BATCH_SIZE,
    "lr": C.LEARNING_RATE,
    "lr_schedule": f"/10 after {C.LR_PATIENCE_EPOCHS} flat epochs",
    "early_stopping": "none (best-validation checkpoint)",
    "split": "random over segments",
    "table1": {
        "cganet": {"accuracy": 89.9, "auc": 96.7},
        "svm": {"accuracy": 84.5},
        "flda": {"accuracy": 79.5},
    },
}
"""The paper's protocol and its Table 1 (real panda data, random split over segments)."""


@dataclass
class FoldOutput:
    """Out-of-fold predictions of one method on one fold's test segments."""

    test: np.ndarray  # (M,) int64 dataset index
    p_positive: np.ndarray  # (M,) float64, P(class 0)
    metrics: dict[str, float]
    encounter_accuracy: float
    attention: np.ndarray | None = None  # (M, 86), CGANet only
    embedding: np.ndarray | None = None  # (M, 32), CGANet only
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MeanStd:
    """Mean and population standard deviation over folds (NaN folds left out; NaN if none)."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStd:
        m = baselines.mean_std(list(values))
        return cls(m["mean"], m["std"])

    def pct(self) -> str:
        """'mean ± std' in %, one decimal; 'n/a' when undefined."""
        if not math.isfinite(self.mean):
            return "n/a"
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"

    def to_json(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class MethodSummary:
    """One method over the folds of one split mode: each metric's mean and spread, and the
    folds themselves (metrics and training details)."""

    metrics: dict[str, MeanStd]  # baselines.METRICS: accuracy, F1, recall, precision, AUC
    encounter_accuracy: MeanStd
    ece: MeanStd
    folds: list[dict[str, Any]]

    @classmethod
    def of(cls, folds: Sequence[FoldOutput]) -> MethodSummary:
        return cls(
            metrics={m: MeanStd.of([f.metrics[m] for f in folds]) for m in baselines.METRICS},
            encounter_accuracy=MeanStd.of([f.encounter_accuracy for f in folds]),
            ece=MeanStd.of([f.metrics["ece"] for f in folds]),
            folds=[
                {**f.metrics, "encounter_accuracy": f.encounter_accuracy, **f.info} for f in folds
            ],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **{m: v.to_json() for m, v in self.metrics.items()},
            "encounter_accuracy": self.encounter_accuracy.to_json(),
            "ece": self.ece.to_json(),
            "folds": self.folds,
        }


def summarise(results: dict[str, list[FoldOutput]]) -> dict[str, MethodSummary]:
    """{method: its summary over the folds}, in the order of ``results``."""
    return {method: MethodSummary.of(folds) for method, folds in results.items()}


@dataclass(frozen=True)
class HeldOutRow:
    """A trained model scored on a held-out folder through one segmentation."""

    segmentation: str  # 'annotations', 'detector' or 'tiling'
    segments: int
    units: int
    aggregation_unit: str  # 'group' or 'recording'
    metrics: dict[str, float]  # baselines.METRICS
    ece: float
    encounter_accuracy: float  # aggregate.running_p_success, the service's rule (with prior)
    found: dict[str, int]  # recordings per segmentation used (Dataset.summary)
    method: str = "cganet"  # METHODS: the checkpoint, or a baseline fitted beside it
    prior: float | None = None  # the encounter rule's class-0 share (aggregate.checkpoint_share)
    encounter_accuracy_mean_rule: float | None = None  # the mean rule (prior None), when prior

    def to_json(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "encounter_accuracy": self.encounter_accuracy,
            "encounter_accuracy_mean_rule": self.encounter_accuracy_mean_rule,
            "class0_share": self.prior,
            "ece": self.ece,
            "segments": self.segments,
            "units": self.units,
            "aggregation_unit": self.aggregation_unit,
            "segmentation": self.found,
        }
