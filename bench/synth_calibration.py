"""Calibrate the synthetic generator against SYNTH.md §3: the "oracle" accuracy.

Samples encounters' call annotations only (no audio: ``plan_encounter``), describes each clip
by its per-type call counts and total call durations, and cross-validates a logistic
regression. SYNTH.md measured 97.5 % (h = 0), 93.5 % (h = 0.08, the default) and 91.1 %
(h = 0.15); a release is right when the default lands within 92-96 %.

It also measures the ceiling of a model that scores one call at a time, as CGANet does: each
call scored by the success share of its call type among the training folds' calls (a perfect
call-type recogniser, calibrated like the demo model), giving the segment AUC such a model
reaches and its encounter accuracy under the earlier rule (mean probability > 0.5) and under
the service's rule (``model.aggregate``), which removes the calls' class prior (mean log-odds
above the log-odds of the training calls' success share: successful encounters call more, so a
failure's calls can average above 0.5). Calls longer than one segment count once here.

    .venv/bin/python bench/synth_calibration.py [--encounters 600] [--duration 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Iterator

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model import aggregate
from model.hardware import cpu_model
from model.synth import CALL_TYPE_NAMES, GENERATOR_VERSION, EncounterPlan, plan_encounter
from model.synth.spec import OUTCOMES

SPEC_ORACLE = {0.0: 0.975, 0.08: 0.935, 0.15: 0.911}
"""SYNTH.md §3's measured oracle accuracies by class-overlap rate h."""
FOLDS = 5


def sampled_plans(
    n: int, *, duration_s: float, seed: int, atypical_rate: float
) -> Iterator[tuple[str, EncounterPlan]]:
    """(outcome, call plan) of n encounters, outcomes alternating, reproducible per seed."""
    for i in range(n):
        outcome = OUTCOMES[i % 2]
        yield outcome, plan_encounter(
            seed * 1_000_003 + i, outcome=outcome, duration_s=duration_s,
            atypical_rate=atypical_rate,
        )  # fmt: skip


def clip_features(
    n: int, *, duration_s: float, seed: int, atypical_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2 * types) counts and total durations per call type, and (n,) labels (1 success)."""
    index = {name: i for i, name in enumerate(CALL_TYPE_NAMES)}
    x = np.zeros((n, 2 * len(index)))
    y = np.zeros(n, dtype=int)
    plans = sampled_plans(n, duration_s=duration_s, seed=seed, atypical_rate=atypical_rate)
    for i, (outcome, plan) in enumerate(plans):
        for call in plan.calls:
            k = index[call.call_type]
            x[i, k] += 1
            x[i, len(index) + k] += call.offset_s - call.onset_s
        y[i] = int(outcome == "success")
    return x, y


def call_type_ceiling(
    n: int, *, duration_s: float, seed: int, atypical_rate: float
) -> tuple[float, float, float]:
    """(segment AUC, encounter accuracy by the mean rule, and by the prior-corrected rule) of
    scoring every call by its type's success share on the other folds' encounters."""
    types: list[str] = []
    encounter: list[int] = []
    success = np.zeros(n, dtype=bool)
    plans = sampled_plans(n, duration_s=duration_s, seed=seed, atypical_rate=atypical_rate)
    for i, (outcome, plan) in enumerate(plans):
        types += [call.call_type for call in plan.calls]
        encounter += [i] * len(plan.calls)
        success[i] = outcome == "success"
    call_type, enc = np.array(types), np.array(encounter)
    call_success = success[enc]
    score = np.zeros(len(enc))
    prior = np.zeros(len(enc))
    for train, test in KFold(FOLDS, shuffle=True, random_state=seed).split(np.arange(n)):
        in_train = np.isin(enc, train)
        prior[np.isin(enc, test)] = call_success[in_train].mean()
        for t in np.unique(call_type):
            seen = in_train & (call_type == t)
            share = (call_success[seen].sum() + 1) / (seen.sum() + 2)  # Laplace: unseen types 0.5
            score[np.isin(enc, test) & (call_type == t)] = share
    called = np.unique(enc)
    truth = np.where(success[called], 0, 1)
    mean_p = np.array([aggregate.running_p_success(score[enc == i]) for i in called])
    # an encounter's calls are all in one test fold, so they share its training prior
    removed = np.array(
        [aggregate.running_p_success(score[enc == i], prior[enc == i][0]) for i in called]
    )
    by_mean = float(np.mean(aggregate.decide(mean_p) == truth))
    by_evidence = float(np.mean(aggregate.decide(removed) == truth))
    return float(roc_auc_score(call_success, score)), by_mean, by_evidence


def oracle_accuracy(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    scores = cross_val_score(model, x, y, cv=folds, scoring="accuracy")
    return float(scores.mean()), float(scores.std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encounters", type=int, default=600)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"generator {GENERATOR_VERSION}; {cpu_model()}, "
          f"Python {platform.python_version()}")  # fmt: skip
    print(f"{args.encounters} encounters of {args.duration:g} s per h; "
          f"logistic regression, {FOLDS}-fold CV")  # fmt: skip
    for h, target in SPEC_ORACLE.items():
        started = time.perf_counter()
        x, y = clip_features(
            args.encounters, duration_s=args.duration, seed=args.seed, atypical_rate=h
        )
        mean, std = oracle_accuracy(x, y, args.seed)
        calls = x[:, : len(CALL_TYPE_NAMES)].sum(axis=1)
        print(
            f"h = {h:.2f}: oracle accuracy {100 * mean:.1f} +- {100 * std:.1f} %"
            f" (SYNTH.md {100 * target:.1f} %); calls per clip {calls.mean():.1f}"
            f" (success {calls[y == 1].mean():.1f}, failure {calls[y == 0].mean():.1f});"
            f" sampled in {time.perf_counter() - started:.1f} s"
        )
        auc, by_mean, by_evidence = call_type_ceiling(
            args.encounters, duration_s=args.duration, seed=args.seed, atypical_rate=h
        )
        print(
            f"          scoring each call by its type alone: segment AUC {100 * auc:.1f} %,"
            f" encounter accuracy {100 * by_mean:.1f} % (mean P(success) > 0.5),"
            f" {100 * by_evidence:.1f} % (the service's rule: prior-corrected mean log-odds > 0)"
        )


if __name__ == "__main__":
    main()
