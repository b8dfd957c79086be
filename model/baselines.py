"""The paper's baselines (SVM, FLDA on MFCC) and the binary metrics of its tables.

Baseline input: the paper gives SVM and FLDA "MFCC" without saying how a (2, 86, 40) segment
becomes one vector. Here it is the mean and the standard deviation of each of the 40
coefficients over the 86 frames, per channel: 2 channels x 2 statistics x 40 = 160 values,
standardised on the training fold. SVM: RBF kernel, C = 1, gamma 'scale', Platt-scaled
probabilities. FLDA: scikit-learn's LinearDiscriminantAnalysis (SVD solver).

Metrics treat class 0 (the first class name, ``success`` for pandas) as the positive class, as
CGANet's P_s does. They are written out from the confusion counts and the rank statistic (and
checked against scikit-learn in the tests) so the report states exactly what it computed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("accuracy", "f1", "recall", "precision", "auc")
BASELINES = ("svm", "flda")
SVM_C = 1.0
PLATT_FOLDS = 3
"""Internal folds for the SVM's Platt scaling (sigmoid calibration of its decision function)."""
BASELINE_DIM_NOTE = (
    "mean and std of each MFCC coefficient over the 86 frames, per channel (160 values)"
)


def summary_vector(features: np.ndarray) -> np.ndarray:
    """(N, 2, 86, F) features -> (N, 2 * 2 * F) float64: per-channel mean and std over frames."""
    if features.ndim != 4:
        raise ValueError(f"expected (N, 2, frames, coefficients) features, got {features.shape}")
    x = features.astype(np.float64)
    return np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=2).reshape(len(x), -1)


def make_baseline(name: str, seed: int = 0) -> Any:
    """An unfitted scikit-learn pipeline: standardise, then SVM or FLDA."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "svm":
        svc = SVC(kernel="rbf", C=SVM_C, gamma="scale", random_state=seed)
        # Platt scaling of the decision function, fitted by internal cross validation
        return make_pipeline(
            StandardScaler(),
            CalibratedClassifierCV(svc, method="sigmoid", cv=PLATT_FOLDS, ensemble=False),
        )
    if name == "flda":
        return make_pipeline(StandardScaler(), LinearDiscriminantAnalysis())
    raise ValueError(f"unknown baseline {name!r}: use one of {BASELINES}")


def fit_predict_baseline(
    name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Fit on (N, 2, 86, F) features and labels {0, 1}; P(class 0) for the test segments, (M,)."""
    model = make_baseline(name, seed)
    model.fit(summary_vector(train_x), train_y)
    proba = model.predict_proba(summary_vector(test_x))
    column = list(model.classes_).index(0)
    return np.asarray(proba[:, column], dtype=np.float64)


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 counts, rows true class (0, 1), columns predicted class (0, 1)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    out = np.zeros((2, 2), dtype=np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def auc_score(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic: P(score of a positive > score of a negative).

    ``positive`` (N,) bool, ``score`` (N,) float, higher meaning more positive; ties count
    half. NaN when only one class is present.
    """
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    sorted_scores = score[order]
    # average ranks over ties (1-based)
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(score)]])
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(
    y_true: np.ndarray, p_positive: np.ndarray, y_pred: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy, F1, recall, precision (class 0 positive) and AUC, each in [0, 1].

    y_true : (N,) int labels in {0, 1}; p_positive : (N,) P(class 0); y_pred : (N,) predicted
    labels (default: class 0 where p_positive > 0.5, the paper's P_s > P_f). Precision, recall
    and F1 are 0 where undefined (no predicted or no true positives), as scikit-learn's
    ``zero_division=0``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    p_positive = np.asarray(p_positive, dtype=np.float64)
    if y_pred is None:
        y_pred = np.where(p_positive > 0.5, 0, 1)
    cm = confusion(y_true, y_pred)
    tp, fn, fp, tn = cm[0, 0], cm[0, 1], cm[1, 0], cm[1, 1]
    total = cm.sum()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float((tp + tn) / total) if total else float("nan"),
        "f1": float(f1),
        "recall": float(recall),
        "precision": float(precision),
        "auc": auc_score(y_true == 0, p_positive),
    }


def mean_std(values: list[float]) -> dict[str, float]:
    """{'mean', 'std'} over folds (population std, NaN folds ignored; NaN if none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(arr.mean()), "std": float(arr.std())}
