"""How segment scores become an encounter's (or a recording's) running probability.

The rule, written down once and used by ``pandapulse predict``, ``/predict``, the live
encounter and the evaluation's encounter-level accuracy: the paper sums the per-frame
probabilities over a segment's 86 frames (eq. 4); an encounter extends that sum over all its
segments' frames. With every segment having 86 frames, P(success) of an encounter is therefore
the mean of its segments' p_success, and its verdict is the first class when that mean > 0.5
(P_s > P_f).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def running_p_success(p_success: Sequence[float] | np.ndarray) -> float | None:
    """Mean of the segments' p_success in [0, 1]; None when there are no segments."""
    values = np.asarray(p_success, dtype=np.float64)
    return float(values.mean()) if values.size else None


def verdict(
    p_success: float | None, class_names: Sequence[str] = ("success", "failure")
) -> str | None:
    """The first class name when p_success > 0.5 (the paper's P_s > P_f), else the second."""
    if p_success is None:
        return None
    return class_names[0] if p_success > 0.5 else class_names[1]
