"""The paper's baselines (SVM, FLDA on MFCC) and the binary metrics of its tables.

Baseline input: the paper gives SVM and FLDA "MFCC" without saying how a (2, 86, 40) segment
becomes one vector. Here it is the mean and the standard deviation of each of the 40
coefficients over the 86 frames, per channel: 2 channels x 2 statistics x 40 = 160 values,
standardised on the training fold. SVM: RBF kernel, C = 1, gamma 'scale', Platt-scaled
probabilities. FLDA: scikit-learn's LinearDiscriminantAnalysis (SVD solver).

Metrics treat class 0 (the first class name, ``success`` for pandas) as the positive class, as
CGANet's P_s does; scikit-learn computes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model import aggregate

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


def fit_baseline(name: str, train_x: np.ndarray, train_y: np.ndarray, seed: int = 0) -> Any:
    """``make_baseline`` fitted on (N, 2, 86, F) features and labels {0, 1}."""
    return make_baseline(name, seed).fit(summary_vector(train_x), train_y)


def predict_class0(model: Any, features: np.ndarray) -> np.ndarray:
    """P(class 0) of a fitted baseline for (M, 2, 86, F) features, (M,) float64."""
    proba = model.predict_proba(summary_vector(features))
    column = list(model.classes_).index(0)
    return np.asarray(proba[:, column], dtype=np.float64)


def fit_predict_baseline(
    name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Fit on (N, 2, 86, F) features and labels {0, 1}; P(class 0) for the test segments, (M,)."""
    return predict_class0(fit_baseline(name, train_x, train_y, seed), test_x)


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 counts, rows true class (0, 1), columns predicted class (0, 1)."""
    from sklearn.metrics import confusion_matrix

    return np.asarray(confusion_matrix(y_true, y_pred, labels=[0, 1]), dtype=np.int64)


def auc_score(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (scikit-learn's) of ``score`` (N,) for ``positive`` (N,) bool; NaN when only one
    class is present (scikit-learn raises there)."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(score, dtype=np.float64)))


def binary_metrics(
    y_true: np.ndarray, p_positive: np.ndarray, y_pred: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy, F1, recall, precision (class 0 positive) and AUC, each in [0, 1].

    y_true : (N,) int labels in {0, 1}; p_positive : (N,) P(class 0); y_pred : (N,) predicted
    labels (default: ``aggregate.decide``, class 0 where p_positive > 0.5). Computed by
    scikit-learn; precision, recall and F1 are 0 where undefined (``zero_division=0``).
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=np.int64)
    p_positive = np.asarray(p_positive, dtype=np.float64)
    if y_pred is None:
        y_pred = aggregate.decide(p_positive)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=[0], average=None, zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "f1": float(f1[0]),
        "recall": float(recall[0]),
        "precision": float(precision[0]),
        "auc": auc_score(y_true == 0, p_positive),
    }


def mean_std(values: list[float]) -> dict[str, float]:
    """{'mean', 'std'} over folds (population std, NaN folds ignored; NaN if none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(arr.mean()), "std": float(arr.std())}
