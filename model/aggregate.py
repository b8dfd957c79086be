"""How segment scores become an encounter's (or a recording's) running probability.

The rule, written down once and used by ``pandapulse predict``, ``/predict``, the live
encounter and the evaluation's encounter-level accuracy (``running_p_success``):

- Each segment's calibrated P(success) (``model.calibration``) carries the share of success
  among the segments its calibration was fitted on, its prior. When one class calls more often
  (on the synthetic generator a successful pair calls 28 times per 30 s, a failing one 18),
  that share is above one half, and an encounter of the other class averages above 0.5 on calls
  that say nothing.
- So an encounter is scored by its calls' evidence alone: the mean of its segments' log-odds
  of success, less the log-odds of that share (``class0_share``, read from the checkpoint by
  ``checkpoint_share``), turned back into a probability. Both classes are then equally likely
  before the first call. The verdict is the first class when that probability > 0.5
  (P_s > P_f, ``decide``).
- Checkpoints from before the calibration recorded its share use their training segments'
  share; one that records neither is scored by the earlier rule, the mean of the segments'
  P(success) (the paper's frame sum, eq. 4, extended over the encounter).

``bench/synth_calibration.py`` measures both rules with a perfect call-type recogniser, and the
held-out reports (``docs/reports/synthetic/test.md``) with the models.

Between a lower and an upper bound (``UNCERTAIN_BAND``, configurable) the verdict is
``uncertain``: a model near chance must never print a bold verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, overload

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


LOGIT_CLIP = 1e-6
"""Segment probabilities are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before their log-odds."""


def running_p_success(
    p_success: Sequence[float] | np.ndarray, prior: float | None = None
) -> float | None:
    """The encounter rule (module docstring) over the segments' P(class 0): their mean log-odds
    less the log-odds of ``prior`` (the share of class 0 among the training segments), as a
    probability; the mean of P(class 0) when ``prior`` is None; None without segments."""
    series = running_series(p_success, prior)
    return float(series[-1]) if series.size else None


def running_series(
    p_success: Sequence[float] | np.ndarray, prior: float | None = None
) -> np.ndarray:
    """``running_p_success`` after each of the segments in turn (float64, one per segment)."""
    values = np.asarray(p_success, dtype=np.float64)
    n = np.arange(1, values.size + 1)
    if prior is None:
        return np.cumsum(values) / n
    return np.asarray(_without_prior(np.cumsum(_logit(values)) / n, prior))


def check_share(prior: float) -> float:
    """``prior`` as a float; ValueError unless 0 < prior < 1."""
    if not 0.0 < prior < 1.0:
        raise ValueError(
            f"the class-0 share of the training segments must be in (0, 1), got {prior}"
        )
    return float(prior)


def class0_share(summary: Mapping[str, Any]) -> float | None:
    """The share of class 0 among a dataset summary's segments (``Dataset.summary``, which a
    checkpoint keeps as its ``data``); None when the summary does not say."""
    counts = summary.get("segments_per_class") or {}
    names = summary.get("class_names") or list(counts)
    total = sum(counts.values())
    if not names or not total or names[0] not in counts or not 0 < counts[names[0]] < total:
        return None
    return float(counts[names[0]] / total)


def checkpoint_share(metadata: Mapping[str, Any]) -> float | None:
    """The encounter rule's prior for a checkpoint's calibrated probabilities: class 0's share of
    the segments its calibration was fitted on (``metrics.calibration.class0_share``), else of its
    training segments (``data``, checkpoints from before the calibration recorded it); None when
    neither is recorded."""
    fitted = ((metadata.get("metrics") or {}).get("calibration") or {}).get("class0_share")
    if isinstance(fitted, (int, float)) and 0.0 < fitted < 1.0:
        return float(fitted)
    return class0_share(metadata.get("data") or {})


def log_odds(p: float) -> float:
    """One segment's log-odds of class 0, clipped as the encounter rule clips them."""
    q = min(max(float(p), LOGIT_CLIP), 1.0 - LOGIT_CLIP)
    return math.log(q / (1.0 - q))


def from_sums(p_sum: float, log_odds_sum: float, n: int, prior: float | None) -> float | None:
    """``running_p_success`` of ``n`` segments from running sums of their p_success and their
    ``log_odds``, for callers that keep sums instead of every score; None when n is 0."""
    if n <= 0:
        return None
    if prior is None:
        return p_sum / n
    return float(_without_prior(np.asarray(log_odds_sum / n), prior))


def _without_prior(mean_log_odds: np.ndarray, prior: float) -> np.ndarray:
    """The probability whose log-odds are ``mean_log_odds`` less the log-odds of ``prior``."""
    return np.asarray(1.0 / (1.0 + np.exp(log_odds(check_share(prior)) - mean_log_odds)))


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.asarray(np.log(clipped / (1 - clipped)))


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
