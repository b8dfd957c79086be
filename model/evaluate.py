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
This module runs the protocol; the results are typed in ``model.results``, drawn by
``model.figures`` and written by ``model.report`` (which also writes ``score_checkpoint``'s
held-out report).

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
import shutil
import time
import zipfile
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model import aggregate, baselines, calibration
from model import constants as C
from model.classifier import Classifier, choose_device
from model.data import Dataset, build_dataset, subsample
from model.errors import DataError
from model.figures import plot_attention, plot_confusions, plot_reliability, plot_roc, plot_tsne
from model.files import replacing
from model.report import cv_markdown, held_out_markdown, machine_info, write_report
from model.results import (
    ABLATION,
    METHOD_LABELS,
    METHODS,
    PAPER,
    FoldOutput,
    HeldOutRow,
    MeanStd,
    MethodSummary,
    summarise,
)
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
QUICK = {"folds": 2, "epochs": 1, "max_segments": 48}
"""``--quick``: a smoke run of every step (tests)."""
TSNE_MAX_POINTS = 600


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

    def __init__(self, folder: Path, settings: dict[str, Any], *data: Dataset) -> None:
        self.folder = folder
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        for dataset in data:  # the MFCC segments, and the combined ones for Table 2
            digest.update(np.ascontiguousarray(dataset.features).tobytes())
            digest.update(np.ascontiguousarray(dataset.labels).tobytes())
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
    units: np.ndarray,
    labels: np.ndarray,
    p_positive: np.ndarray,
    class_names: tuple[str, str],
    prior: float | None = None,
) -> float:
    """Share of units whose verdict by the encounter rule (``aggregate.running_p_success``,
    with ``prior`` the training segments' class-0 share; None: the mean rule) matches their
    label."""
    correct = []
    for unit in np.unique(units):
        mask = units == unit
        p = aggregate.running_p_success(p_positive[mask], prior)
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
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.calibration.items()},
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
            enc = unit_accuracy(units[test], y[test], p, mfcc.class_names, _share(y[train]))
            log.info("  %s: %s, encounter-level accuracy %.3f", method, _fmt_metrics(metrics), enc)
            out = FoldOutput(test, p, metrics, enc, attention, embedding, info)
            if store is not None:
                store.save(mode, k, method, out)
            results[method].append(out)
    return results


def _share(labels: np.ndarray) -> float | None:
    """The class-0 share of training labels, the encounter rule's prior (None if one class)."""
    share = float(np.mean(labels == 0))
    return share if 0.0 < share < 1.0 else None


def _fmt_metrics(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in m.items())


# --- figures -----------------------------------------------------------------------------------


# --- report ----------------------------------------------------------------------------------------


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
        "encounter_rule": "mean log-odds less the training folds' class-0 share's",
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
    store = FoldStore(
        out_dir / FOLDS_DIR, report["settings"], mfcc, *([] if combined is None else [combined])
    )
    outputs: dict[str, dict[str, list[FoldOutput]]] = {}
    summaries: dict[str, dict[str, MethodSummary]] = {}
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
        summaries[mode] = summarise(outputs[mode])
        report[mode] = {method: summary.to_json() for method, summary in summaries[mode].items()}
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
    write_report(out_dir, "report", report, cv_markdown(report, summaries))
    store.remove()
    return report


def score_checkpoint(
    checkpoint_path: Path,
    data_dir: Path,
    out_dir: Path,
    *,
    build_kwargs: dict[str, Any],
    device: str | None,
    baselines_from: Path | None = None,
) -> dict[str, Any]:
    """Score a trained checkpoint on a held-out dataset folder, through the annotations and
    through the detector path: metrics, calibration, figures, ``test.md`` / ``test.json``.

    ``baselines_from``: a training folder (normally the checkpoint's own); SVM and FLDA are fitted
    on all its segments and scored on the same held-out segments, each a row beside CGANet's.
    """

    started = time.perf_counter()
    classifier = Classifier.from_checkpoint(checkpoint_path, device=device)
    meta = classifier.metadata
    class_names = tuple(meta["class_names"])
    kind = str(meta["feature_config"]["kind"])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, HeldOutRow] = {}
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
    fitted: dict[str, Any] = {}
    baseline_prior: float | None = None
    if baselines_from is not None:
        train = build_dataset(
            baselines_from,
            feature=kind,  # type: ignore[arg-type]
            classes=class_names,
            **build_kwargs,
        )
        for method in METHODS[1:]:
            log.info("fitting %s on %d segments of %s", method, len(train), baselines_from)
            fitted[method] = baselines.fit_baseline(method, train.features, train.labels)
        baseline_prior = aggregate.class0_share(train.summary)
    checkpoint_prior = aggregate.checkpoint_share(meta)

    def held_out_row(
        method: str, path: str, data: Dataset, p: np.ndarray, prior: float | None
    ) -> HeldOutRow:
        units, unit_name = aggregation_units(data)
        return HeldOutRow(
            segmentation=path,
            segments=len(data),
            units=len(np.unique(units)),
            aggregation_unit=unit_name,
            metrics=baselines.binary_metrics(data.labels, p),  # predictions by aggregate.decide
            ece=calibration.reliability(p, data.labels == 0).ece,
            encounter_accuracy=unit_accuracy(units, data.labels, p, data.class_names, prior),
            found=data.summary["segmentation"],
            method=method,
            prior=prior,
            encounter_accuracy_mean_rule=None
            if prior is None
            else unit_accuracy(units, data.labels, p, data.class_names),
        )

    baseline_rows: dict[str, dict[str, HeldOutRow]] = {method: {} for method in fitted}
    for path, data in datasets.items():
        scored = classifier.predict_features(data.features)  # the service's inference path
        p = scored.p_success.astype(np.float64)
        rows[path] = held_out_row("cganet", path, data, p, checkpoint_prior)
        for method, model in fitted.items():
            p_base = baselines.predict_class0(model, data.features)
            baseline_rows[method][path] = held_out_row(method, path, data, p_base, baseline_prior)
        curves[path] = (p, data.labels == 0)
        fold = FoldOutput(
            np.arange(len(data)),
            p,
            rows[path].metrics,
            rows[path].encounter_accuracy,
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
        "test": {"cganet": next(iter(rows.values())).to_json()},
        "paths": {path: row.to_json() for path, row in rows.items()},
        "baselines": {
            method: {path: row.to_json() for path, row in by_path.items()}
            for method, by_path in baseline_rows.items()
        },
        "baselines_from": None if baselines_from is None else str(baselines_from),
        "machine": machine_info(),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    all_rows = [*rows.values(), *(row for by in baseline_rows.values() for row in by.values())]
    lines = held_out_markdown(
        checkpoint_path.name, meta.get("model_version"), data_dir, data, all_rows, baselines_from
    )
    write_report(out_dir, "test", report, lines)
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
        "--baselines-from",
        type=Path,
        default=None,
        metavar="TRAIN_DIR",
        help="with --checkpoint: fit SVM and FLDA on all segments of this folder (the"
        " checkpoint's training data) and score them on the same held-out segments",
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
    if args.baselines_from is not None and args.checkpoint is None:
        raise DataError(
            "--baselines-from fits baselines for a held-out test: give --checkpoint too"
        )
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
            baselines_from=args.baselines_from,
        )
        scored = [("cganet", test["paths"]), *test["baselines"].items()]
        for method, path, row in ((m, p, r) for m, by in scored for p, r in by.items()):
            print(
                f"{METHOD_LABELS[method]:14s} {path:11s} "
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
                    + "  ".join(
                        f"{m} {MeanStd(e[m]['mean'], e[m]['std']).pct()}" for m in baselines.METRICS
                    )
                )
    print(f"report written to {args.out / 'report.md'} ({report['wall_time_s'] / 60:.1f} min)")
    return 0
