"""Calibration of CGANet's segment probability: temperature scaling, ECE, reliability diagram.

The frame-averaged probabilities CGANet is trained on are not calibrated: a model trained on a
few hundred segments is often far too sure, or (at the class prior) not sure enough. Temperature
scaling (Guo et al., 2017) fits one number T > 0 on the validation segments,
p(class 0) = sigmoid(log(P_s / P_f) / T), minimising their log loss. One parameter cannot
overfit a small validation set the way Platt's two can, and it never changes a decision:
P_s > P_f exactly when p > 0.5. T is stored in the checkpoint (``CGANet.temperature``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOG_T_BOUNDS = (-3.0, 3.0)
"""ln T is searched in this range: T from 0.05 (sharpen) to 20 (soften)."""
ECE_BINS = 10
"""Equal-width probability bins of the expected calibration error and reliability diagram."""


def _nll(logit: np.ndarray, positive: np.ndarray, temperature: float) -> float:
    z = logit / temperature
    # log(1 + exp(-z)) for positives, log(1 + exp(z)) for negatives, computed stably
    signed = np.where(positive, z, -z)
    return float(np.mean(np.logaddexp(0.0, -signed)))


def fit_temperature(logit: np.ndarray, positive: np.ndarray) -> float:
    """T minimising the log loss of sigmoid(logit / T).

    logit : (N,) float, log(P_s / P_f) per validation segment
    positive : (N,) bool, True where the segment is class 0
    """
    from scipy.optimize import minimize_scalar

    logit = np.asarray(logit, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if logit.shape != positive.shape or logit.ndim != 1 or len(logit) == 0:
        raise ValueError(
            f"fit_temperature needs two (N,) arrays with N > 0, got {logit.shape}, {positive.shape}"
        )
    found = minimize_scalar(
        lambda log_t: _nll(logit, positive, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
    )
    return float(np.exp(found.x))


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
