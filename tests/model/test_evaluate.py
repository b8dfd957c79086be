"""Evaluation: metric code against scikit-learn, folds, encounter aggregation, the quick report."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn import metrics as skm

from model import baselines
from model import evaluate as evaluate_module
from model.evaluate import FOLDS_DIR, FoldOutput, FoldStore, make_folds, unit_accuracy
from service.cli import main
from tests.model.test_data import make_folder

# fixed predictions: labels (0 = positive class), P(class 0) with ties and a threshold hit
Y = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0])
P = np.array([0.9, 0.8, 0.4, 0.3, 0.6, 0.1, 0.5, 0.5, 0.7, 0.2, 0.7, 0.55])


def test_binary_metrics_match_scikit_learn() -> None:
    got = baselines.binary_metrics(Y, P)
    pred = np.where(P > 0.5, 0, 1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(Y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(Y, pred, pos_label=0))
    assert got["recall"] == pytest.approx(skm.recall_score(Y, pred, pos_label=0))
    assert got["f1"] == pytest.approx(skm.f1_score(Y, pred, pos_label=0))
    assert got["auc"] == pytest.approx(skm.roc_auc_score(Y == 0, P))
    np.testing.assert_array_equal(
        baselines.confusion(Y, pred), skm.confusion_matrix(Y, pred, labels=[0, 1])
    )


def test_metric_edge_cases_match_scikit_learn() -> None:
    y = np.array([1, 1, 0, 0])
    never_positive = np.array([0.1, 0.2, 0.3, 0.4])
    got = baselines.binary_metrics(y, never_positive)
    pred = np.ones(4, dtype=int)
    assert got["precision"] == skm.precision_score(y, pred, pos_label=0, zero_division=0) == 0
    assert got["f1"] == skm.f1_score(y, pred, pos_label=0, zero_division=0) == 0
    assert got["auc"] == pytest.approx(skm.roc_auc_score(y == 0, never_positive))
    assert np.isnan(baselines.binary_metrics(np.zeros(3, int), np.ones(3))["auc"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        p = np.round(rng.random(40), 1)  # many ties
        if len(set(y)) == 2:
            assert baselines.auc_score(y == 0, p) == pytest.approx(skm.roc_auc_score(y == 0, p))
    assert baselines.mean_std([0.5, 0.7, float("nan")]) == pytest.approx({"mean": 0.6, "std": 0.1})


def test_encounter_folds_never_share_a_group() -> None:
    groups = np.repeat([f"e{i}" for i in range(12)], 4)
    labels = np.repeat(np.arange(12) % 2, 4)
    folds = make_folds("encounter", labels, groups, 3, seed=0)
    assert len(folds) == 3
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen.tolist()) == list(range(48))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    seg = make_folds("segment", labels, groups, 3, seed=0)
    assert any(set(groups[tr]) & set(groups[te]) for tr, te in seg)  # the paper's leaky split


def test_encounter_accuracy_uses_the_service_rule() -> None:
    units = np.array(["a", "a", "a", "b", "b", "c"])
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array(
        [0.9, 0.2, 0.6, 0.4, 0.7, 0.5]
    )  # a: mean .57 -> success; b: .55 -> success (wrong); c: .5 -> failure
    assert unit_accuracy(units, labels, p, ("success", "failure")) == pytest.approx(2 / 3)


def test_baselines_learn_a_separable_problem() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 2, 86, 40)).astype(np.float32)
    y = np.arange(60) % 2
    x[y == 0, :, :, :5] += 1.0
    assert baselines.summary_vector(x).shape == (60, 160)
    for name in baselines.BASELINES:
        p = baselines.fit_predict_baseline(name, x[:40], y[:40], x[40:])
        assert baselines.binary_metrics(y[40:], p)["accuracy"] >= 0.9, name


def quick_evaluate(data: Path, out: Path, *extra: str) -> list[str]:
    """``pandapulse evaluate --quick`` arguments for a 12-recording folder made at ``data``."""
    make_folder(data, n=12, seconds=2.0)
    return [
        "evaluate",
        str(data),
        "--out",
        str(out),
        "--quick",
        "--no-progress",
        "--no-detector",
        "--batch-size",
        "8",
        *extra,
    ]


@pytest.mark.slow
def test_quick_evaluation_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    rc = main(quick_evaluate(tmp_path / "data", out))
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    for mode in ("segment", "encounter"):
        for method in ("cganet", "svm", "flda", "cganet_combined"):
            for metric in ("accuracy", "f1", "recall", "precision", "auc"):
                entry = report[mode][method][metric]
                assert set(entry) == {"mean", "std"}
        assert len(report[mode]["cganet"]["folds"]) == 2
    assert report["settings"]["epochs"] == 1 and report["segments_used"] == 12
    for name in (
        "roc_segment",
        "roc_encounter",
        "confusion_segment",
        "confusion_encounter",
        "attention",
        "tsne",
    ):
        assert (out / f"{name}.png").stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "Table 1" in text and "Table 2" in text and "| 500 |" in text


def test_checkpoint_scored_on_a_held_out_folder(tmp_path: Path, untrained_checkpoint: Path) -> None:
    data = make_folder(tmp_path / "data", n=4, seconds=2.0)
    out = tmp_path / "test"
    args = [
        "evaluate",
        str(data),
        "--out",
        str(out),
        "--checkpoint",
        str(untrained_checkpoint),
        "--no-detector",
    ]
    assert main(args) == 0
    report = json.loads((out / "test.json").read_text())
    got = report["test"]["cganet"]
    assert {"accuracy", "f1", "recall", "precision", "auc", "encounter_accuracy", "ece"} <= set(got)
    assert report["dataset"]["segments"] == 4 and got["aggregation_unit"] == "recording"
    assert list(report["paths"]) == ["tiling"]  # no annotations: one row, named by its cut
    assert 0 <= got["ece"] <= 1
    assert (out / "roc_test.png").is_file() and (out / "reliability_test.png").is_file()
    assert "Held-out test" in (out / "test.md").read_text()


def test_held_out_test_takes_out_the_share_the_checkpoint_was_calibrated_on(
    tmp_path: Path,
) -> None:
    from model import checkpoint
    from model.network import CGANet

    data = make_folder(tmp_path / "data", n=4, seconds=2.0)
    trained_on = {
        "class_names": ["success", "failure"],
        "segments_per_class": {"success": 3, "failure": 1},
    }
    path = tmp_path / "m.safetensors"
    calibration = {"temperature": 1.0, "class0_share": 0.52, "cut": "detector"}
    checkpoint.save(path, CGANet(), {"data": trained_on, "metrics": {"calibration": calibration}})
    out = tmp_path / "test"
    args = ["evaluate", str(data), "--out", str(out), "--checkpoint", str(path), "--no-detector"]
    assert main(args) == 0
    got = json.loads((out / "test.json").read_text())["test"]["cganet"]
    assert got["class0_share"] == 0.52  # the calibration set's, not the training segments' 0.75
    assert "CGANet (MFCC) 0.520" in (out / "test.md").read_text()


def test_held_out_test_scores_baselines_fitted_on_the_training_folder(
    tmp_path: Path, untrained_checkpoint: Path
) -> None:
    train = make_folder(tmp_path / "train", n=12, seconds=2.0)  # tones: 300 Hz success, 450 failure
    held_out = make_folder(tmp_path / "held-out", n=4, seconds=2.0)
    out = tmp_path / "test"
    args = ["evaluate", str(held_out), "--out", str(out), "--checkpoint", str(untrained_checkpoint)]
    assert main([*args, "--no-detector", "--baselines-from", str(train)]) == 0
    report = json.loads((out / "test.json").read_text())
    assert report["baselines_from"] == str(train)
    assert set(report["baselines"]) == {"svm", "flda"}
    for method, by_path in report["baselines"].items():
        assert list(by_path) == list(report["paths"]) == ["tiling"], method
        assert by_path["tiling"]["segments"] == report["dataset"]["segments"] == 4
        assert by_path["tiling"]["auc"] == 1.0, method  # the tones separate the classes
    text = (out / "test.md").read_text()
    assert "| SVM (MFCC) | tiling | 4 |" in text and "| FLDA (MFCC) | tiling | 4 |" in text
    assert f"fitted on all segments of `{train}`" in text
    # the training folder is balanced, so removing its class share changes nothing for them
    svm = report["baselines"]["svm"]["tiling"]
    assert svm["class0_share"] == 0.5
    assert svm["encounter_accuracy_mean_rule"] == svm["encounter_accuracy"]
    assert "accuracy, mean rule |" in text and "SVM (MFCC) 0.500" in text


def test_encounter_accuracy_counts_verdicts_by_the_encounter_rule() -> None:
    # a failure whose calls average 0.55 reads as success by the mean, as failure once the
    # training segments' success share (0.62) is taken out
    failure = np.array([0.8, 0.3, 0.55])
    units = np.array(["a", "a", "a"])
    labels = np.array([1, 1, 1])
    names = ("success", "failure")
    assert unit_accuracy(units, labels, failure, names) == 0.0
    assert unit_accuracy(units, labels, failure, names, prior=0.62) == 1.0


def test_baselines_from_without_a_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_folder(tmp_path / "data", n=4, seconds=2.0)
    args = ["evaluate", str(data), "--out", str(tmp_path / "out"), "--baselines-from", str(data)]
    assert main(args) == 2
    assert "give --checkpoint too" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _store(folder: Path, settings: dict[str, object], labels: list[int]) -> FoldStore:
    data = SimpleNamespace(
        features=np.arange(len(labels) * 8, dtype=np.float32).reshape(len(labels), 8),
        labels=np.array(labels, dtype=np.int64),
    )
    return FoldStore(folder, settings, data)  # type: ignore[arg-type]


def test_a_fold_result_is_reused_only_for_the_same_data_settings_and_fold(tmp_path: Path) -> None:
    folder = tmp_path / ".folds"
    test = np.array([1, 3])
    out = FoldOutput(
        test=test,
        p_positive=np.array([0.25, 0.75]),
        metrics={"accuracy": 0.5, "auc": float("nan")},
        encounter_accuracy=0.5,
        attention=np.full((2, 86), 1 / 86, dtype=np.float32),
        embedding=None,
        info={"best_epoch": np.int64(3), "stopped_early": np.bool_(True)},
    )
    _store(folder, {"seed": 0}, [0, 1, 0, 1]).save("encounter", 1, "cganet", out)

    same = _store(folder, {"seed": 0}, [0, 1, 0, 1]).load("encounter", 1, "cganet", test)
    assert same is not None
    np.testing.assert_array_equal(same.p_positive, out.p_positive)
    np.testing.assert_array_equal(same.attention, out.attention)
    assert same.embedding is None and np.isnan(same.metrics["auc"])
    assert same.info == {"best_epoch": 3, "stopped_early": True}
    for store, args in (
        (_store(folder, {"seed": 1}, [0, 1, 0, 1]), ("encounter", 1, "cganet", test)),
        (_store(folder, {"seed": 0}, [1, 1, 0, 1]), ("encounter", 1, "cganet", test)),
        (_store(folder, {"seed": 0}, [0, 1, 0, 1]), ("encounter", 1, "cganet", np.array([0, 3]))),
        (_store(folder, {"seed": 0}, [0, 1, 0, 1]), ("encounter", 2, "cganet", test)),
        (_store(folder, {"seed": 0}, [0, 1, 0, 1]), ("segment", 1, "cganet", test)),
    ):
        assert store.load(*args) is None, args
    # a file cut short (the run killed while writing it) is ignored, not an error
    path = folder / "encounter-1-cganet.npz"
    path.write_bytes(path.read_bytes()[:100])
    assert _store(folder, {"seed": 0}, [0, 1, 0, 1]).load("encounter", 1, "cganet", test) is None


@pytest.mark.slow
def test_an_interrupted_evaluation_resumes_from_its_finished_folds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    args = quick_evaluate(tmp_path / "data", out, "--split-modes", "encounter", "--no-ablation")
    real = evaluate_module._cganet_fold
    trained: list[int] = []

    def stopped_in_fold_2(*a: object, **k: object) -> object:
        trained.append(1)
        if len(trained) == 2:
            raise KeyboardInterrupt  # the keeper's Ctrl-C, or a time limit, in fold 2
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate_module, "_cganet_fold", stopped_in_fold_2)
    assert main(args) == 130
    assert not (out / "report.json").exists()
    kept = sorted(p.name for p in (out / FOLDS_DIR).iterdir())
    assert kept == ["encounter-1-cganet.npz", "encounter-1-flda.npz", "encounter-1-svm.npz"]
    with np.load(out / FOLDS_DIR / "encounter-1-cganet.npz") as npz:
        fold_1 = json.loads(str(npz["info"]))

    trained.clear()
    monkeypatch.setattr(
        evaluate_module, "_cganet_fold", lambda *a, **k: (trained.append(1), real(*a, **k))[1]
    )
    assert main(args) == 0
    assert len(trained) == 1  # fold 2 only
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_fold_results"] == 3
    first = report["encounter"]["cganet"]["folds"][0]
    assert first["train_seconds"] == fold_1["train_seconds"]
    assert first["accuracy"] == fold_1["_metrics"]["accuracy"]
    assert len(report["encounter"]["cganet"]["folds"]) == 2
    assert not (out / FOLDS_DIR).exists()
    assert (
        "3 fold results taken over from an interrupted earlier run"
        in (out / "report.md").read_text()
    )
