"""Training: a smoke run whose loss goes down, determinism on CPU, the grouped split, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint
from model import constants as C
from model.errors import DataError
from model.train import TrainConfig, autocast_dtype, fit, group_split
from service.cli import main
from tests.model.test_data import make_folder


def separable(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2, 86, 40) float32 features whose class shows in the first 10 coefficients."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.standard_normal((n, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)).astype(np.float32)
    x[y == 1, :, :, :10] += 1.5
    return x, y.astype(np.int64)


def test_two_epochs_on_tiny_data_lower_the_loss() -> None:
    x, y = separable(32)
    vx, vy = separable(8, seed=1)
    config = TrainConfig(epochs=2, batch_size=8, seed=0, device="cpu", progress=False)
    result = fit(x, y, vx, vy, config)
    first, last = result.history[0], result.history[-1]
    assert len(result.history) == 2
    assert last["train_loss"] < first["train_loss"]
    assert result.best_epoch in (1, 2)
    assert result.segments_seen == 2 * 32
    assert not result.model.training and next(result.model.parameters()).device.type == "cpu"


def test_same_seed_same_weights_on_cpu() -> None:
    x, y = separable(16)
    config = TrainConfig(epochs=1, batch_size=8, seed=7, device="cpu", progress=False)
    a = fit(x, y, x[:4], y[:4], config).model.state_dict()
    b = fit(x, y, x[:4], y[:4], config).model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_validation_split_keeps_groups_apart() -> None:
    groups = np.repeat([f"e{i}" for i in range(10)], 5)
    labels = np.repeat(np.arange(10) % 2, 5)
    tr, va = group_split(labels, groups, 0.2, seed=0)
    assert not set(groups[tr]) & set(groups[va])
    assert set(labels[va]) == {0, 1} and len(tr) + len(va) == 50
    with pytest.raises(DataError, match="between 0 and 1"):
        group_split(labels, groups, 1.5, seed=0)


def test_paper_recipe_is_one_flag_away() -> None:
    config = TrainConfig.for_recipe("paper")
    assert (config.lr, config.batch_size, config.epochs, config.lr_patience) == (0.01, 32, 500, 125)
    assert config.lr_decay == 0.1 and config.patience is None and config.optimizer == "sgd"
    assert (config.selection, config.class_weighted, config.augment) == ("accuracy", False, False)
    default = TrainConfig()
    assert (default.recipe, default.optimizer, default.selection) == ("default", "adamw", "auc")
    assert default.class_weighted and default.augment and default.patience is not None
    assert TrainConfig.for_recipe("paper", epochs=3, lr=None).epochs == 3
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(DataError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")


def test_cli_trains_and_saves_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_folder(tmp_path / "data", n=6, seconds=2.0)
    out = tmp_path / "model.safetensors"
    rc = main(
        [
            "train",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--no-progress",
            "--val-fraction",
            "0.34",
            "--no-detector",
        ]
    )
    assert rc == 0
    _model, meta = checkpoint.load(out)
    assert meta["class_names"] == ["success", "failure"]
    assert meta["metrics"]["epochs_run"] == 1 and 0 <= meta["metrics"]["val_accuracy"] <= 1
    assert meta["data"]["segments"] == 6 and meta["data"]["split"]["grouped"]
    assert meta["training"]["recipe"] == "default" and meta["training"]["optimizer"] == "adamw"
    assert meta["metrics"]["calibration"]["temperature"] > 0
    assert "saved" in capsys.readouterr().out
    paper = tmp_path / "paper.safetensors"
    args = ["train", str(data), "--out", str(paper), "--recipe", "paper", "--epochs", "1"]
    assert main([*args, "--no-progress", "--val-fraction", "0.34", "--no-detector"]) == 0
    _model, meta = checkpoint.load(paper)
    assert meta["training"]["lr"] == C.LEARNING_RATE and meta["training"]["optimizer"] == "sgd"
    assert main(["train", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_training_and_calibration_on_the_detectors_cuts_where_annotations_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "synth"
    assert main(["synth", str(data), "--encounters", "4", "--seed", "3", "--duration", "8"]) == 0
    common = ["--epochs", "1", "--batch-size", "8", "--no-progress", "--val-fraction", "0.5"]
    annotated, detected = tmp_path / "annotated.safetensors", tmp_path / "detected.safetensors"
    assert main(["train", str(data), "--out", str(annotated), *common]) == 0
    assert main(["train", str(data), "--out", str(detected), *common, "--ignore-annotations"]) == 0
    plain = tmp_path / "plain.safetensors"
    on_validation_args = ["--out", str(plain), *common, "--calibrate-on", "validation"]
    assert main(["train", str(data), *on_validation_args]) == 0
    by_annotations = checkpoint.read_metadata(annotated)
    by_detector = checkpoint.read_metadata(detected)
    assert by_annotations["data"]["segmentation"] == {"annotations": 4}
    assert by_detector["data"]["segmentation"] == {"detector": 4}
    assert by_detector["data"]["segments"] > 0 and by_detector["data"]["split"]["grouped"]
    # trained on annotated calls, calibrated on the validation recordings as the detector cuts
    # them: the same segments the detector-trained model was validated on
    calibration = by_annotations["metrics"]["calibration"]
    assert calibration["cut"] == "detector"
    assert calibration["segments"] == by_detector["data"]["split"]["val_segments"]
    assert by_detector["metrics"]["calibration"]["cut"] == "validation"
    on_validation = checkpoint.read_metadata(plain)["metrics"]["calibration"]
    assert on_validation["cut"] == "validation"
    assert on_validation["segments"] == by_annotations["data"]["split"]["val_segments"]

    # `pandapulse calibrate` refits the validation-calibrated model on the detector's cuts: the
    # same weights and the same cuts give exactly the model trained with the default
    refitted = tmp_path / "refitted.safetensors"
    assert main(["calibrate", str(plain), "--out", str(refitted)]) == 0
    again = checkpoint.read_metadata(refitted)
    assert again["model_version"] == by_annotations["model_version"]
    refit = again["metrics"]["calibration"]
    assert {k: v for k, v in refit.items() if k != "val_ece_before"} == {
        k: v for k, v in calibration.items() if k != "val_ece_before"
    }
    # "before" is the ECE of the probabilities as they were: here the validation calibration's
    assert refit["val_ece_before"] != calibration["val_ece_before"]
    assert (
        again["metrics"]["recalibrated"]["from_model"]
        == checkpoint.read_metadata(plain)["model_version"]
    )
    assert again["metrics"]["recalibrated"]["previous"] == on_validation
    assert "calibrated on the detector's" in capsys.readouterr().out
    # refused: a model whose validation segments already are the detector's cuts, and a folder
    # that no longer gives the recorded split
    assert main(["calibrate", str(detected), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "already are the detector's cuts" in capsys.readouterr().err
    other = tmp_path / "other"
    assert main(["synth", str(other), "--encounters", "6", "--seed", "3", "--duration", "8"]) == 0
    moved = ["--data-dir", str(other), "--out", str(tmp_path / "y.safetensors")]
    assert main(["calibrate", str(plain), *moved]) == 2
    assert "no longer gives the training split" in capsys.readouterr().err
    gone = ["--data-dir", str(tmp_path / "gone"), "--out", str(tmp_path / "z.safetensors")]
    assert main(["calibrate", str(plain), *gone]) == 2
    assert "give it with --data-dir" in capsys.readouterr().err
    assert not any((tmp_path / f"{name}.safetensors").exists() for name in "xyz")
