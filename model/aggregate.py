"""How segment scores become an encounter's (or a recording's) running probability.

The rule, written down once and used by ``pandapulse predict``, ``/predict``, the live
encounter and the evaluation's encounter-level accuracy: the paper sums the per-frame
probabilities over a segment's 86 frames (eq. 4); an encounter extends that sum over all its
segments' frames. With every segment having 86 frames, P(success) of an encounter is therefore
the mean of its segments' p_success (each calibrated, ``model.calibration``), and its verdict is
the first class when that mean > 0.5 (P_s > P_f, ``decide``).

Between a lower and an upper bound (``UNCERTAIN_BAND``, configurable) the verdict is
``uncertain``: a model near chance must never print a bold verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np

THRESHOLD = 0.5
"""Class 0 wins when its probability is above this; at exactly 0.5 class 1 does (P_s > P_f)."""


@overload
def decide(p_class0: float) -> int: ...
@overload
def decide(p_class0: np.ndarray) -> np.ndarray: ...
def decide(p_class0: float | np.ndarray) -> int | np.ndarray:
    """The predicted column, 0 or 1, for P(class 0): the paper's P_s > P_f, the one rule that
    every verdict, prediction and metric in PandaPulse decides by. Arrays give int arrays."""
    if isinstance(p_class0, np.ndarray):
        return np.where(p_class0 > THRESHOLD, 0, 1)
    return 0 if p_class0 > THRESHOLD else 1


def running_p_success(p_success: Sequence[float] | np.ndarray) -> float | None:
    """Mean of the segments' p_success in [0, 1]; None when there are no segments."""
    values = np.asarray(p_success, dtype=np.float64)
    return float(values.mean()) if values.size else None


def prior_removed_p_success(p_success: Sequence[float] | np.ndarray, prior: float) -> float | None:
    """An alternative rule, measured by the held-out reports and not used by the service: the
    segments' mean log-odds of class 0 less the log-odds of ``prior``, the share of class 0 among
    the training segments, as a probability; None without segments.

    Calibrated segment probabilities carry that share: when one class calls more, its share of
    segments is above one half and an encounter of the other class can average above 0.5. Taking
    it out scores the encounter by its calls' evidence alone (``bench/synth_calibration.py``).
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(
            f"the class-0 share of the training segments must be in (0, 1), got {prior}"
        )
    values = np.clip(np.asarray(p_success, dtype=np.float64), 1e-6, 1 - 1e-6)
    if not values.size:
        return None
    evidence = np.mean(np.log(values / (1 - values))) - np.log(prior / (1 - prior))
    return float(1.0 / (1.0 + np.exp(-evidence)))


UNCERTAIN = "uncertain"
"""The verdict inside the uncertain band."""
UNCERTAIN_BAND = (0.4, 0.6)
"""Default (lower, upper) bounds of P(class 0) within which the verdict is ``uncertain``."""


def check_band(band: tuple[float, float]) -> tuple[float, float]:
    """``band`` as (lower, upper) floats; ValueError unless 0 <= lower <= 0.5 <= upper <= 1."""
    low, high = (float(b) for b in band)
    if not 0.0 <= low <= THRESHOLD <= high <= 1.0:
        raise ValueError(
            f"the uncertain band must satisfy 0 <= lower <= 0.5 <= upper <= 1, got {low}-{high}"
        )
    return low, high


def verdict(
    p_success: float | None,
    class_names: Sequence[str] = ("success", "failure"),
    band: tuple[float, float] = UNCERTAIN_BAND,
) -> str | None:
    """``uncertain`` when lower <= p_success <= upper (lower < upper); else the first class name when
    ``decide`` picks it (p_success > 0.5, the paper's P_s > P_f), the second otherwise; None
    without segments."""
    if p_success is None:
        return None
    low, high = check_band(band)
    if low < high and low <= p_success <= high:  # a zero-width band is the paper's rule
        return UNCERTAIN
    return class_names[decide(p_success)]
