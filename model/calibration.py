"""Calibration of CGANet's segment probability: Platt scaling, ECE, reliability diagram.

The frame-averaged probabilities CGANet is trained on are not calibrated: a model trained on a
few hundred segments is often far too sure, and the class-weighted loss of the default recipe
trains it as if both classes were equally common. Platt scaling of the segment logit fits a
temperature T > 0 and a bias b on the validation segments,
p(class 0) = sigmoid(log(P_s / P_f) / T + b), minimising their log loss: T undoes the
over-confidence, b puts back the class prior that the weighted loss took out. Both are stored
in the checkpoint (``CGANet.temperature``, ``CGANet.calibration_bias``).

Measured on the demo model's held-out synthetic encounters (docs/model-card.md): with the
temperature alone the decision stayed at the balanced prior's P_s > P_f, and recall of the
majority class fell to 48 %; the bias is what lets the calibrated p decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOG_T_BOUNDS = (-3.0, 3.0)
"""ln T is kept in this range: T from 0.05 (sharpen) to 20 (soften)."""
BIAS_BOUNDS = (-5.0, 5.0)
"""The bias b is kept in this range (logit units: priors from 1:150 to 150:1)."""
ECE_BINS = 10
"""Equal-width probability bins of the expected calibration error and reliability diagram."""


def _nll(logit: np.ndarray, positive: np.ndarray, temperature: float, bias: float = 0.0) -> float:
    z = logit / temperature + bias
    # log(1 + exp(-z)) for positives, log(1 + exp(z)) for negatives, computed stably
    signed = np.where(positive, z, -z)
    return float(np.mean(np.logaddexp(0.0, -signed)))


def _check(logit: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logit = np.asarray(logit, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if logit.shape != positive.shape or logit.ndim != 1 or len(logit) == 0:
        raise ValueError(
            f"calibration needs two (N,) arrays with N > 0, got {logit.shape}, {positive.shape}"
        )
    return logit, positive


def fit_temperature(logit: np.ndarray, positive: np.ndarray) -> float:
    """T minimising the log loss of sigmoid(logit / T) (no bias).

    logit : (N,) float, log(P_s / P_f) per validation segment
    positive : (N,) bool, True where the segment is class 0
    """
    from scipy.optimize import minimize_scalar

    logit, positive = _check(logit, positive)
    found = minimize_scalar(
        lambda log_t: _nll(logit, positive, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
    )
    return float(np.exp(found.x))


def fit_platt(logit: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """(T, b) minimising the log loss of sigmoid(logit / T + b), within the bounds above."""
    from scipy.optimize import minimize

    logit, positive = _check(logit, positive)
    start = np.array([np.log(fit_temperature(logit, positive)), 0.0])
    found = minimize(
        lambda v: _nll(logit, positive, float(np.exp(v[0])), float(v[1])),
        start,
        method="L-BFGS-B",
        bounds=[LOG_T_BOUNDS, BIAS_BOUNDS],
    )
    return float(np.exp(found.x[0])), float(found.x[1])


@dataclass(frozen=True)
class Reliability:
    """Reliability diagram of p(class 0) in ``ECE_BINS`` equal-width bins (empty bins left out).

    mean_p : (K,) mean predicted p(class 0) per bin
    observed : (K,) share of class 0 per bin
    count : (K,) segments per bin
    ece : expected calibration error: sum over bins of count/N * |observed - mean_p|
    """

    mean_p: np.ndarray
    observed: np.ndarray
    count: np.ndarray
    ece: float


def reliability(p_positive: np.ndarray, positive: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """Reliability diagram and expected calibration error of p_positive (N,) against positive (N,)."""
    p = np.asarray(p_positive, dtype=np.float64)
    y = np.asarray(positive, dtype=np.float64)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    keep = count > 0
    mean_p = np.bincount(which, weights=p, minlength=bins)[keep] / count[keep]
    observed = np.bincount(which, weights=y, minlength=bins)[keep] / count[keep]
    ece = float(np.sum(count[keep] / max(len(p), 1) * np.abs(observed - mean_p)))
    return Reliability(mean_p, observed, count[keep], ece)
