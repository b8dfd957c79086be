"""``pandapulse evaluate``: the paper's protocol on any dataset folder, with a written report.

K-fold cross validation (5 by default) of CGANet against SVM and FLDA on the same folds, in
two split modes reported side by side:

- ``encounter`` (the default): folds grouped by the manifest's group column
  (scikit-learn's StratifiedGroupKFold), so no encounter has segments in both train and test;
  CGANet's validation share is held out by group too.
- ``segment``: the paper's split, stratified at random over segments (StratifiedKFold), which
  lets segments of one encounter land on both sides.

Per fold and method: accuracy, F1, recall, precision and AUC (class 0 positive), reported as
mean +- std over folds (Table 1); CGANet on MFCC against CGANet on the 62-dimension combined
feature (Table 2); encounter-level accuracy, each test group's segments aggregated with the
service's rule (``model.aggregate``). When a group holds both labels (e.g. one baby crying in
pain and in discomfort), the unit aggregated is the recording instead, and the report says so.

Outputs in REPORT_DIR: ``report.md``, ``report.json`` and PNG figures (ROC curves, confusion
matrices, Fig. 3 mean attention per frame, Fig. 4 t-SNE of raw MFCC vs CGANet's embedding).

A long run (the paper's 500 epochs) can be interrupted: each method's result on each fold is
kept in ``REPORT_DIR/.folds/`` as soon as it is known, and the same command run again takes
those back instead of training again, as long as the data, the folds and the settings are the
same (``FoldStore``). The folder is removed once the report is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import aggregate, baselines, calibration, hardware
from model import constants as C
from model.classifier import Classifier, choose_device
from model.data import Dataset, build_dataset, subsample
from model.errors import DataError
from model.files import replacing
from model.train import (
    TrainConfig,
    add_common_arguments,
    autocast_dtype,
    config_from_args,
    fit,
    group_split,
    parse_classes,
    set_threads,
)

log = logging.getLogger(__name__)

SPLIT_MODES = ("encounter", "segment")
METHODS = ("cganet", "svm", "flda")
ABLATION = "cganet_combined"
METHOD_LABELS = {
    "cganet": "CGANet (MFCC)",
    "svm": "SVM (MFCC)",
    "flda": "FLDA (MFCC)",
    ABLATION: "CGANet (combined 62-dim)",
}
QUICK = {"folds": 2, "epochs": 1, "max_segments": 48}
"""``--quick``: a smoke run of every step (tests)."""
TSNE_MAX_POINTS = 600
TSNE_PCA_DIM = 50
"""Raw MFCC (6,880 values per segment) is reduced with PCA to this many before t-SNE."""
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


FOLDS_DIR = ".folds"
"""Inside REPORT_DIR: the results of finished folds while a run is in progress."""


class FoldStore:
    """Finished folds of an evaluation on disk, so an interrupted run resumes where it stopped.

    One ``.npz`` per (split mode, fold, method), written (through ``model.files.replacing``)
    as soon as the method has scored the fold. Each is keyed by a hash of everything its
    result depends on: the settings, the segments' features and labels, the fold's test
    segments and the method. A file whose key differs (the data or a setting changed) is
    ignored and overwritten, never reused.
    """

    def __init__(self, folder: Path, settings: dict[str, Any], data: Dataset) -> None:
        self.folder = folder
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        digest.update(np.ascontiguousarray(data.features).tobytes())
        digest.update(np.ascontiguousarray(data.labels).tobytes())
        self._base = digest.hexdigest()
        self.resumed = 0

    def _key(self, mode: str, fold: int, method: str, test: np.ndarray) -> str:
        digest = hashlib.sha256(f"{self._base}/{mode}/{fold}/{method}".encode())
        digest.update(np.ascontiguousarray(test, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def _path(self, mode: str, fold: int, method: str) -> Path:
        return self.folder / f"{mode}-{fold}-{method}.npz"

    def load(self, mode: str, fold: int, method: str, test: np.ndarray) -> FoldOutput | None:
        """The stored result of this fold and method, or None (none, or for other settings)."""
        path = self._path(mode, fold, method)
        try:
            with np.load(path) as npz:
                if str(npz["key"]) != self._key(mode, fold, method, test):
                    return None
                info = json.loads(str(npz["info"]))
                out = FoldOutput(
                    test=npz["test"],
                    p_positive=npz["p_positive"],
                    metrics=info.pop("_metrics"),
                    encounter_accuracy=float(info.pop("_encounter_accuracy")),
                    attention=npz.get("attention"),
                    embedding=npz.get("embedding"),
                    info=info,
                )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # cut short
            log.warning("ignoring unreadable fold result %s: %s", path, err)
            return None
        self.resumed += 1
        return out

    def save(self, mode: str, fold: int, method: str, out: FoldOutput) -> None:
        info = {
            **out.info,
            "_metrics": out.metrics,
            "_encounter_accuracy": out.encounter_accuracy,
        }
        arrays: dict[str, Any] = {
            "key": np.array(self._key(mode, fold, method, out.test)),
            "info": np.array(json.dumps(info, default=_plain)),
            "test": out.test,
            "p_positive": out.p_positive,
        }
        if out.attention is not None:
            arrays["attention"] = out.attention
        if out.embedding is not None:
            arrays["embedding"] = out.embedding
        with replacing(self._path(mode, fold, method)) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _plain(value: Any) -> Any:
    """JSON for NumPy scalars (``json.dumps``'s ``default``)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def make_folds(
    mode: str, labels: np.ndarray, groups: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train index, test index) per fold, for split mode 'segment' or 'encounter'."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if k < 2:
        raise DataError(f"cross validation needs at least 2 folds, got {k}")
    if mode == "segment":
        if np.bincount(labels).min() < k:
            raise DataError(f"{k} folds need at least {k} segments of each class")
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(labels, labels))
    if mode == "encounter":
        n_groups = len(np.unique(groups))
        if n_groups < k:
            raise DataError(
                f"{k} grouped folds need at least {k} groups; the data has {n_groups}: use --folds"
            )
        return list(
            StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(labels, labels, groups)
        )
    raise DataError(f"unknown split mode {mode!r}: use {', '.join(SPLIT_MODES)}")


def aggregation_units(dataset: Dataset) -> tuple[np.ndarray, str]:
    """Per segment, the unit the encounter-level accuracy aggregates over, and its name."""
    labels_per_group: dict[str, set[int]] = {}
    for g, y in zip(dataset.groups.tolist(), dataset.labels.tolist(), strict=True):
        labels_per_group.setdefault(g, set()).add(y)
    if all(len(v) == 1 for v in labels_per_group.values()):
        return dataset.groups, "group"
    return dataset.recordings, "recording"


def unit_accuracy(
    units: np.ndarray, labels: np.ndarray, p_positive: np.ndarray, class_names: tuple[str, str]
) -> float:
    """Share of units whose aggregated verdict (``model.aggregate``) matches their label."""
    correct = []
    for unit in np.unique(units):
        mask = units == unit
        p = aggregate.running_p_success(p_positive[mask])
        truth = class_names[int(np.bincount(labels[mask]).argmax())]
        # the paper's decision (a zero-width band): accuracy counts decisions, not abstentions
        correct.append(aggregate.verdict(p, class_names, band=(0.5, 0.5)) == truth)
    return float(np.mean(correct)) if correct else float("nan")


def _cganet_fold(
    dataset: Dataset,
    train: np.ndarray,
    test: np.ndarray,
    config: TrainConfig,
    val_fraction: float,
    grouped: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Train on ``train`` (validation held out inside it), score ``test``.

    Returns (P(class 0) (M,), predicted labels (M,), attention (M, 86), embedding (M, 32), info).
    """
    from sklearn.model_selection import StratifiedShuffleSplit

    y = dataset.labels
    if grouped:
        tr_rel, va_rel = group_split(y[train], dataset.groups[train], val_fraction, config.seed)
    else:
        n_val = max(len(np.unique(y[train])), round(val_fraction * len(train)))
        sss = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=config.seed)
        tr_rel, va_rel = next(sss.split(y[train], y[train]))
    tr, va = train[tr_rel], train[va_rel]
    result = fit(dataset.features[tr], y[tr], dataset.features[va], y[va], config)
    # scored by the service's own inference path (Classifier: folded batch norm, channels_last,
    # float32, calibrated probability), so the report's figures are what /predict would give
    scored = Classifier(result.model, device=config.device).predict_features(dataset.features[test])
    pred = aggregate.decide(scored.p_success)  # the calibrated probability decides
    info = {
        "train_segments": len(tr),
        "val_segments": len(va),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best["accuracy"],
        "best_val_auc": result.best["auc"],
        **{k: round(v, 4) for k, v in result.calibration.items()},
        "stopped_early": result.stopped_early,
        "train_seconds": round(result.seconds, 1),
        "segments_per_s": round(result.segments_per_s, 2),
    }
    p_success = scored.p_success.astype(np.float64)
    return p_success, pred, scored.attention, scored.embedding, info


def run_split_mode(
    mode: str,
    mfcc: Dataset,
    combined: Dataset | None,
    folds: list[tuple[np.ndarray, np.ndarray]],
    config: TrainConfig,
    val_fraction: float,
    store: FoldStore | None = None,
) -> dict[str, list[FoldOutput]]:
    """Every method on the same folds: {method: [FoldOutput per fold]}; with ``store``, folds
    it holds are taken from it and new ones are added to it."""
    units, _ = aggregation_units(mfcc)
    y = mfcc.labels
    results: dict[str, list[FoldOutput]] = {
        m: [] for m in (*METHODS, *([ABLATION] if combined is not None else []))
    }
    for k, (train, test) in enumerate(folds, start=1):
        log.info(
            "%s split, fold %d/%d: %d train, %d test segments",
            mode,
            k,
            len(folds),
            len(train),
            len(test),
        )
        fold_config = replace(config, seed=config.seed + k)
        for method in results:
            kept = None if store is None else store.load(mode, k, method, test)
            if kept is not None:
                log.info("  %s: resumed from %s", method, store.folder if store else "")
                results[method].append(kept)
                continue
            start = time.perf_counter()
            attention = embedding = None
            info: dict[str, Any] = {}
            if method in ("cganet", ABLATION):
                data = mfcc if method == "cganet" else combined
                assert data is not None
                p, pred, attention, embedding, info = _cganet_fold(
                    data, train, test, fold_config, val_fraction, grouped=mode == "encounter"
                )
            else:
                p = baselines.fit_predict_baseline(
                    method,
                    mfcc.features[train],
                    y[train],
                    mfcc.features[test],
                    seed=fold_config.seed,
                )
                pred = aggregate.decide(p)
            info["seconds"] = round(time.perf_counter() - start, 1)
            metrics = baselines.binary_metrics(y[test], p, pred)
            metrics["ece"] = calibration.reliability(p, y[test] == 0).ece
            enc = unit_accuracy(units[test], y[test], p, mfcc.class_names)
            log.info("  %s: %s, encounter-level accuracy %.3f", method, _fmt_metrics(metrics), enc)
            out = FoldOutput(test, p, metrics, enc, attention, embedding, info)
            if store is not None:
                store.save(mode, k, method, out)
            results[method].append(out)
    return results


def _fmt_metrics(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in m.items())


def summarise(results: dict[str, list[FoldOutput]]) -> dict[str, dict[str, Any]]:
    """{method: {metric: {'mean', 'std'}, 'encounter_accuracy': {...}, 'folds': [...]}}."""
    out: dict[str, dict[str, Any]] = {}
    for method, folds in results.items():
        entry: dict[str, Any] = {
            m: baselines.mean_std([f.metrics[m] for f in folds]) for m in baselines.METRICS
        }
        entry["encounter_accuracy"] = baselines.mean_std([f.encounter_accuracy for f in folds])
        entry["ece"] = baselines.mean_std([f.metrics["ece"] for f in folds])
        entry["folds"] = [
            {**f.metrics, "encounter_accuracy": f.encounter_accuracy, **f.info} for f in folds
        ]
        out[method] = entry
    return out


# --- figures -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    results: dict[str, list[FoldOutput]], labels: np.ndarray, title: str, path: Path
) -> None:
    """ROC curves of every method, out-of-fold predictions pooled over folds."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, folds in results.items():
        idx = np.concatenate([f.test for f in folds])
        p = np.concatenate([f.p_positive for f in folds])
        positive = labels[idx] == 0
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, p)
        auc = baselines.mean_std([f.metrics["auc"] for f in folds])
        ax.plot(
            fpr,
            tpr,
            label=f"{METHOD_LABELS[method]}: AUC {100 * auc['mean']:.1f} ± {100 * auc['std']:.1f} %",
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusions(
    results: dict[str, list[FoldOutput]],
    labels: np.ndarray,
    class_names: tuple[str, str],
    title: str,
    path: Path,
) -> None:
    """Confusion matrices (counts pooled over folds) per method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.2), squeeze=False)
    for ax, (method, folds) in zip(axes[0], results.items(), strict=True):
        idx = np.concatenate([f.test for f in folds])
        # CGANet's P_s > P_f, and the baselines' most probable class
        pred = aggregate.decide(np.concatenate([f.p_positive for f in folds]))
        cm = baselines.confusion(labels[idx], pred)
        ax.imshow(cm, cmap="Blues")
        for i in range(2):
            for j in range(2):
                dark = cm[i, j] > cm.max() / 2
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                )
        ax.set_xticks([0, 1], [f"pred {n}" for n in class_names], fontsize=7)
        ax.set_yticks([0, 1], [f"true {n}" for n in class_names], fontsize=7)
        ax.set_title(METHOD_LABELS[method], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_attention(
    folds: list[FoldOutput], labels: np.ndarray, class_names: tuple[str, str], path: Path
) -> None:
    """Fig. 3: mean attention weight per frame, by true class (test segments, all folds)."""
    plt = _pyplot()
    idx = np.concatenate([f.test for f in folds])
    att = np.concatenate([f.attention for f in folds if f.attention is not None])
    frames_s = (np.arange(C.N_FRAMES) * C.HOP_LENGTH) / C.SAMPLE_RATE
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for cls, name in enumerate(class_names):
        sel = att[labels[idx] == cls]
        if len(sel) == 0:
            continue
        mean, sem = sel.mean(axis=0), sel.std(axis=0) / math.sqrt(len(sel))
        ax.plot(frames_s, mean, label=f"{name} (n={len(sel)})")
        ax.fill_between(frames_s, mean - sem, mean + sem, alpha=0.25)
    ax.axhline(1 / C.N_FRAMES, color="grey", linestyle=":", linewidth=1, label="uniform (1/86)")
    ax.set(
        xlabel="time in segment (s)",
        ylabel="mean attention weight",
        title="Mean attention per frame (CGANet, test segments)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tsne(
    raw: np.ndarray,
    embedding: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, str],
    seed: int,
    path: Path,
) -> None:
    """Fig. 4: 2-D t-SNE of raw MFCC (PCA first) and of CGANet's learned embedding."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    plt = _pyplot()
    n = len(labels)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    flat = StandardScaler().fit_transform(raw.reshape(n, -1))
    flat = PCA(n_components=min(TSNE_PCA_DIM, n, flat.shape[1]), random_state=seed).fit_transform(
        flat
    )
    panels = {
        "raw MFCC (PCA 50, then t-SNE)": flat,
        "CGANet embedding (F_attn summed over frames)": StandardScaler().fit_transform(embedding),
    }
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, (title, x) in zip(axes, panels.items(), strict=True):
        xy = TSNE(
            n_components=2, perplexity=perplexity, random_state=seed, init="pca"
        ).fit_transform(x)
        for cls, name in enumerate(class_names):
            sel = labels == cls
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.7, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- report ----------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": hardware.cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _pct(entry: dict[str, float]) -> str:
    if not math.isfinite(entry["mean"]):
        return "n/a"
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    s = report["settings"]
    d = report["dataset"]
    names = report["class_names"]
    lines = [
        f"# Evaluation: {report['title']}",
        "",
        f"Generated by `pandapulse evaluate` on {report['generated']} in {report['wall_time_s'] / 60:.1f} min wall time"
        + (
            f" ({report['resumed_fold_results']} fold results taken over from an interrupted"
            " earlier run, whose time is not counted; each fold's own time is in the rows"
            " below)."
            if report.get("resumed_fold_results")
            else "."
        ),
        "",
        "## Data",
        "",
        f"- Folder `{d['data_dir']}`: {d['recordings']} recordings, {d['groups']} groups (column"
        f" `{d['columns']['group']}`), label column `{d['columns']['label']}`, classes"
        f" {names[0]} (positive, class 0) and {names[1]}.",
        f"- Segmentation: {d['segmentation']} (annotations > detector > whole-file tiling).",
        f"- Segments used: {report['segments_used']} of {report['segments_total']}"
        f" ({report['segments_per_class']})"
        + (
            f", a random subsample (seed {s['seed']})"
            if report["segments_used"] < report["segments_total"]
            else ""
        )
        + ".",
        f"- Skipped while building: {len(d['skipped'])}"
        + (
            " — " + "; ".join(f"{x['item']}: {x['reason']}" for x in d["skipped"][:10])
            if d["skipped"]
            else ""
        )
        + ("; ..." if len(d["skipped"]) > 10 else ""),
        f"- Encounter-level accuracy aggregates each test {report['aggregation_unit']}'s segments"
        " with the service's rule (mean P(class 0) > 0.5).",
        "",
        "## Settings against the paper's",
        "",
        "| setting | this run | paper |",
        "|---|---|---|",
        f"| folds | {s['folds']} | {PAPER['folds']} |",
        f"| epochs (max) | {s['epochs']} | {PAPER['epochs']} |",
        f"| early stopping | {('patience ' + str(s['patience']) + ' epochs') if s['patience'] else 'none'} | {PAPER['early_stopping']} |",
        f"| batch size | {s['batch_size']} | {PAPER['batch_size']} |",
        f"| recipe | `{s['recipe']}` (model/train.py) | the paper's |",
        f"| learning rate | {s['lr']} ({s['optimizer']}"
        + (
            f", /10 after {s['lr_patience']} flat epochs"
            if s["optimizer"] == "sgd"
            else ", one-cycle: warm-up, cosine decay"
        )
        + f") | {PAPER['lr']}, {PAPER['lr_schedule']} |",
        f"| loss, augmentation, selection | {'class-weighted' if s['class_weighted'] else 'unweighted'}; {'time shift, channel swap, masks' if s['augment'] else 'none'}; best validation {s['selection']} | unweighted; none; best validation accuracy |",
        f"| validation (inside each training fold) | {s['val_fraction']:.0%} held out (by group in encounter mode) | not stated |",
        f"| segments | {report['segments_used']} | not stated |",
        f"| precision | training convolutions {('in ' + s['autocast'] + ' autocast') if s['autocast'] else 'float32'}, channels_last={s['channels_last']}; scoring float32 | not stated |",
        f"| split | {', '.join(s['split_modes'])} | {PAPER['split']} |",
        "",
        f"Baselines get {baselines.BASELINE_DIM_NOTE}; SVM: RBF, C = {baselines.SVM_C}, Platt"
        " probabilities; FLDA: LinearDiscriminantAnalysis; both after standardisation on the training fold.",
        "Metrics: class 0 is positive; mean ± std (population) over folds, in %.",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores"
        f" ({report['machine']['torch_threads']} torch threads), torch {report['machine']['torch']}"
        f"{', GPU ' + report['machine']['gpu'] if 'gpu' in report['machine'] else ''};"
        f" load average at the end {report['machine'].get('load_average_at_end')} (shared machine).",
        "",
    ]
    for mode in s["split_modes"]:
        res = report[mode]
        lines += [
            f"## Table 1 — `{mode}` split ({'grouped by ' + d['columns']['group'] if mode == 'encounter' else 'random over segments, stratified'})",
            "",
            "| method | accuracy | F1 | recall | precision | AUC | encounter-level accuracy | ECE |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method in METHODS:
            e = res[method]
            lines.append(
                f"| {METHOD_LABELS[method]} | "
                + " | ".join(_pct(e[m]) for m in baselines.METRICS)
                + f" | {_pct(e['encounter_accuracy'])}"
                + f" | {e['ece']['mean']:.3f} ± {e['ece']['std']:.3f} |"
            )
        lines.append("")
        if ABLATION in res:
            lines += [
                f"Table 2 — feature ablation, `{mode}` split (CGANet):",
                "",
                "| feature | accuracy | F1 | recall | precision | AUC |",
                "|---|---|---|---|---|---|",
            ]
            for method, label in (("cganet", "MFCC (40)"), (ABLATION, "combined (62)")):
                lines.append(
                    f"| {label} | "
                    + " | ".join(_pct(res[method][m]) for m in baselines.METRICS)
                    + " |"
                )
            lines.append("")
        cg = res["cganet"]["folds"]
        lines += [
            "CGANet per fold: "
            + "; ".join(
                f"fold {i}: best epoch {f['best_epoch']}/{f['epochs_run']}, {f['train_seconds']:.0f} s,"
                f" {f['segments_per_s']:.1f} segments/s"
                for i, f in enumerate(cg, start=1)
            )
            + ".",
            "",
            f"![ROC {mode}](roc_{mode}.png)",
            "",
            f"![confusion {mode}](confusion_{mode}.png)",
            "",
        ]
    lines += [
        "## Paper's reported results (Table 1, random split over segments, real panda data)",
        "",
        "CGANet 89.9 ± 9.1 % accuracy, AUC 96.7 ± 4.4 %; SVM 84.5 ± 15.7 %; FLDA 79.5 ± 17.9 %.",
        "",
        f"## Fig. 3 — mean attention per frame (`{report['figure_mode']}` split, test segments of all folds)",
        "",
        "![attention](attention.png)",
        "",
        f"## Fig. 4 — t-SNE of raw MFCC vs CGANet's embedding (`{report['figure_mode']}` split, fold 1's test segments, fold 1's model)",
        "",
        "![t-SNE](tsne.png)",
        "",
        f"## Calibration — reliability of the out-of-fold probabilities (`{report['figure_mode']}` split)",
        "",
        "ECE: expected calibration error of p(class 0) over 10 equal-width bins, per fold in the"
        " tables above, pooled over folds here. CGANet's probability is Platt-scaled (temperature and bias) on"
        " each fold's validation groups; the SVM's is Platt-scaled; FLDA's is its own.",
        "",
        "![reliability](reliability.png)",
        "",
    ]
    path.write_text("\n".join(lines))


def align_combined(mfcc: Dataset, data_dir: Path, build_kwargs: dict[str, Any]) -> Dataset:
    """The same segments as ``mfcc`` with the 62-dim combined feature (only their recordings built)."""
    built = build_dataset(
        data_dir, feature="combined", only=sorted(set(mfcc.recordings.tolist())), **build_kwargs
    )
    where = {
        key: i
        for i, key in enumerate(
            zip(built.recordings.tolist(), built.starts.tolist(), built.ends.tolist(), strict=True)
        )
    }
    keys = zip(mfcc.recordings.tolist(), mfcc.starts.tolist(), mfcc.ends.tolist(), strict=True)
    try:
        index = [where[key] for key in keys]
    except KeyError as err:
        raise DataError(
            f"the combined-feature build lacks segment {err}: clear the feature cache"
        ) from err
    return mfcc.with_features(built.features[index])


def evaluate(
    data_dir: Path,
    out_dir: Path,
    *,
    config: TrainConfig,
    folds: int,
    split_modes: list[str],
    max_segments: int | None,
    val_fraction: float,
    ablation: list[str],
    build_kwargs: dict[str, Any],
    title: str | None = None,
) -> dict[str, Any]:
    """Run the protocol and write the report; returns the report dict (as in report.json)."""
    started = time.perf_counter()
    for mode in (*split_modes, *ablation):
        if mode not in SPLIT_MODES:
            raise DataError(f"unknown split mode {mode!r}: use {', '.join(SPLIT_MODES)}")
    full = build_dataset(data_dir, feature="mfcc", **build_kwargs)
    mfcc = subsample(full, max_segments, seed=config.seed)
    combined = None
    if set(ablation) & set(split_modes):
        combined = align_combined(mfcc, data_dir, build_kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, unit_name = aggregation_units(mfcc)
    device = choose_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    report: dict[str, Any] = {
        "title": title or data_dir.name,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "class_names": list(mfcc.class_names),
        "positive_class": mfcc.class_names[0],
        "dataset": full.summary,
        "segments_total": len(full),
        "segments_used": len(mfcc),
        "segments_per_class": mfcc.class_counts(),
        "aggregation_unit": unit_name,
        "baseline_input": baselines.BASELINE_DIM_NOTE,
        "settings": {
            **{k: v for k, v in asdict(config).items() if k != "progress"},
            "device": str(device),
            "autocast": None if dtype is None else str(dtype).replace("torch.", ""),
            "folds": folds,
            "split_modes": split_modes,
            "max_segments": max_segments,
            "val_fraction": val_fraction,
            "ablation": ablation,
        },
        "paper": PAPER,
    }
    store = FoldStore(out_dir / FOLDS_DIR, report["settings"], mfcc)
    outputs: dict[str, dict[str, list[FoldOutput]]] = {}
    for mode in split_modes:
        fold_idx = make_folds(mode, mfcc.labels, mfcc.groups, folds, config.seed)
        outputs[mode] = run_split_mode(
            mode,
            mfcc,
            combined if mode in ablation else None,
            fold_idx,
            config,
            val_fraction,
            store,
        )
        report[mode] = summarise(outputs[mode])
        label = f"{mode} split"
        plot_roc(
            outputs[mode],
            mfcc.labels,
            f"ROC, {label} ({folds}-fold CV)",
            out_dir / f"roc_{mode}.png",
        )
        plot_confusions(
            outputs[mode],
            mfcc.labels,
            mfcc.class_names,
            f"Confusion matrices, {label}",
            out_dir / f"confusion_{mode}.png",
        )
    figure_mode = "encounter" if "encounter" in outputs else split_modes[0]
    cg = outputs[figure_mode]["cganet"]
    plot_attention(cg, mfcc.labels, mfcc.class_names, out_dir / "attention.png")
    pooled = {
        METHOD_LABELS[m]: (
            np.concatenate([f.p_positive for f in folds]),
            mfcc.labels[np.concatenate([f.test for f in folds])] == 0,
        )
        for m, folds in outputs[figure_mode].items()
        if m in METHODS
    }
    plot_reliability(pooled, f"Reliability, {figure_mode} split", out_dir / "reliability.png")
    first = cg[0]
    assert first.embedding is not None
    pick = np.arange(len(first.test))
    if len(pick) > TSNE_MAX_POINTS:
        pick = np.sort(
            np.random.default_rng(config.seed).choice(len(pick), TSNE_MAX_POINTS, replace=False)
        )
    plot_tsne(
        mfcc.features[first.test[pick]],
        first.embedding[pick],
        mfcc.labels[first.test[pick]],
        mfcc.class_names,
        config.seed,
        out_dir / "tsne.png",
    )
    report["figure_mode"] = figure_mode
    report["figures"] = sorted(p.name for p in out_dir.glob("*.png"))
    report["machine"] = machine_info()
    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    report["resumed_fold_results"] = store.resumed
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    write_markdown(report, out_dir / "report.md")
    store.remove()
    return report


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path
) -> None:
    """Reliability diagram: observed share of class 0 against the mean predicted p(class 0) per
    bin, one line per {label: (p_positive, positive)}, with each line's ECE in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    for label, (p, positive) in curves.items():
        rel = calibration.reliability(p, positive)
        ax.plot(rel.mean_p, rel.observed, marker="o", label=f"{label}: ECE {rel.ece:.3f}")
    ax.set(
        xlabel="mean predicted p(class 0) in bin",
        ylabel="observed share of class 0",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SEGMENTATIONS = {
    "annotations": "segments cut at the annotated calls (as training cuts them)",
    "detector": "segments cut by the energy detector, annotations ignored (as /predict and the"
    " live service cut them)",
    "tiling": "whole files tiled into 2-s segments (--no-detector)",
}


def score_checkpoint(
    checkpoint_path: Path,
    data_dir: Path,
    out_dir: Path,
    *,
    build_kwargs: dict[str, Any],
    device: str | None,
) -> dict[str, Any]:
    """Score a trained checkpoint on a held-out dataset folder, through the annotations and
    through the detector path: metrics, calibration, figures, ``test.md`` / ``test.json``."""

    started = time.perf_counter()
    classifier = Classifier.from_checkpoint(checkpoint_path, device=device)
    meta = classifier.metadata
    class_names = tuple(meta["class_names"])
    kind = str(meta["feature_config"]["kind"])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    first: tuple[Dataset, FoldOutput] | None = None
    unannotated = "detector" if build_kwargs.get("use_detector", True) else "tiling"

    def build(use_annotations: bool) -> Dataset:
        return build_dataset(
            data_dir,
            feature=kind,  # type: ignore[arg-type]
            classes=class_names,
            use_annotations=use_annotations,
            **build_kwargs,
        )

    annotated = build(True)
    if "annotations" in annotated.summary["segmentation"]:
        datasets = {"annotations": annotated, unannotated: build(False)}
    else:  # nothing annotated: that build already is the detector (or tiling) row
        datasets = {unannotated: annotated}
    for path, data in datasets.items():
        scored = classifier.predict_features(data.features)  # the service's inference path
        p = scored.p_success.astype(np.float64)
        metrics = baselines.binary_metrics(data.labels, p)  # predictions by aggregate.decide
        units, unit_name = aggregation_units(data)
        enc = unit_accuracy(units, data.labels, p, data.class_names)
        ece = calibration.reliability(p, data.labels == 0).ece
        rows[path] = {
            **metrics,
            "encounter_accuracy": enc,
            "ece": ece,
            "segments": len(data),
            "units": len(np.unique(units)),
            "aggregation_unit": unit_name,
            "segmentation": data.summary["segmentation"],
        }
        curves[path] = (p, data.labels == 0)
        fold = FoldOutput(
            np.arange(len(data)),
            p,
            metrics,
            enc,
            scored.attention,
            scored.embedding,
        )
        if first is None:
            first = (data, fold)
    assert first is not None
    data, fold = first
    plot_roc(
        {"cganet": [fold]},
        data.labels,
        f"ROC, {checkpoint_path.name} on {data_dir.name}",
        out_dir / "roc_test.png",
    )
    plot_confusions(
        {"cganet": [fold]},
        data.labels,
        data.class_names,
        "Confusion matrix, held-out test",
        out_dir / "confusion_test.png",
    )
    plot_attention([fold], data.labels, data.class_names, out_dir / "attention_test.png")
    plot_reliability(curves, "Reliability, held-out test", out_dir / "reliability_test.png")
    report = {
        "checkpoint": str(checkpoint_path),
        "model_version": meta.get("model_version"),
        "class_names": list(data.class_names),
        "dataset": data.summary,
        "test": {"cganet": rows[next(iter(rows))]},
        "paths": rows,
        "machine": machine_info(),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / "test.json").write_text(json.dumps(report, indent=2) + "\n")
    unit = rows[next(iter(rows))]["aggregation_unit"]
    lines = [
        f"# Held-out test: `{checkpoint_path.name}` (model {meta.get('model_version')}) on `{data_dir}`",
        "",
        f"{data.summary['recordings']} recordings in {data.summary['groups']} groups"
        f" ({data.summary['recordings_per_class']}); none of them was seen in training."
        " Probabilities are the checkpoint's calibrated ones; ECE is the expected calibration"
        " error over 10 equal-width bins.",
        "",
        f"| segmentation | segments | accuracy | F1 | recall | precision | AUC | ECE | {unit}-level accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path, row in rows.items():
        lines.append(
            f"| {path} | {row['segments']} | "
            + " | ".join(f"{100 * row[m]:.1f}" for m in baselines.METRICS)
            + f" | {row['ece']:.3f} | {100 * row['encounter_accuracy']:.1f} ({row['units']}) |"
        )
    lines += [
        "",
        *(f"- {path}: {SEGMENTATIONS[path]}" for path in rows),
        "",
        f"Class 0 ({data.class_names[0]}) is positive; percentages. Figures below are for the"
        f" first row ({next(iter(rows))}).",
        "",
        "![ROC](roc_test.png)",
        "",
        "![reliability](reliability_test.png)",
        "",
        "![confusion](confusion_test.png)",
        "",
        "![attention](attention_test.png)",
        "",
    ]
    (out_dir / "test.md").write_text("\n".join(lines))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="REPORT_DIR", help="where to write the report"
    )
    parser.add_argument(
        "--folds", type=int, default=C.CV_FOLDS, help="default: %(default)s (paper)"
    )
    parser.add_argument(
        "--split-modes",
        default=",".join(SPLIT_MODES),
        help="comma-separated: encounter (grouped, the default mode), segment (the paper's); default: both",
    )
    parser.add_argument(
        "--no-ablation", action="store_true", help="skip Table 2 (CGANet on the combined feature)"
    )
    parser.add_argument(
        "--ablation-modes",
        default=None,
        help="split modes that get Table 2 (default: every split mode evaluated)",
    )
    parser.add_argument("--title", default=None, help="report title (default: the folder name)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="instead of cross validation, score this trained checkpoint on DATA_DIR (a held-out"
        " test set) and write test.md / test.json",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['folds']} folds, {QUICK['epochs']} epoch, at most {QUICK['max_segments']} segments",
    )


def _modes(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.checkpoint is not None:
        test = score_checkpoint(
            args.checkpoint,
            args.data_dir,
            args.out,
            build_kwargs={
                "group_col": args.group_col,
                "label_col": args.label_col,
                "cache_dir": args.cache_dir,
                "use_detector": not args.no_detector,
            },
            device=args.device,
        )
        for path, row in test["paths"].items():
            print(
                f"{path:11s} "
                + "  ".join(
                    f"{m} {100 * row[m]:.1f}" for m in (*baselines.METRICS, "encounter_accuracy")
                )
                + f"  ECE {row['ece']:.3f}"
            )
        print(f"report written to {args.out / 'test.md'}")
        return 0
    folds, epochs, max_segments = args.folds, args.epochs, args.max_segments
    if args.quick:
        folds, epochs = QUICK["folds"], QUICK["epochs"]
        max_segments = min(max_segments or QUICK["max_segments"], QUICK["max_segments"])
    config = config_from_args(args, epochs)
    report = evaluate(
        args.data_dir,
        args.out,
        config=config,
        folds=folds,
        split_modes=_modes(args.split_modes),
        max_segments=max_segments,
        val_fraction=config.val_fraction,
        ablation=[] if args.no_ablation else _modes(args.ablation_modes or args.split_modes),
        build_kwargs={
            "group_col": args.group_col,
            "label_col": args.label_col,
            "classes": parse_classes(args.classes),
            "cache_dir": args.cache_dir,
            "use_detector": not args.no_detector,
        },
        title=args.title,
    )
    for mode in report["settings"]["split_modes"]:
        for method in (*METHODS, ABLATION):
            if method in report[mode]:
                e = report[mode][method]
                print(
                    f"{mode:9s} {METHOD_LABELS[method]:26s} "
                    + "  ".join(f"{m} {_pct(e[m])}" for m in baselines.METRICS)
                )
    print(f"report written to {args.out / 'report.md'} ({report['wall_time_s'] / 60:.1f} min)")
    return 0
