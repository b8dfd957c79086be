"""The README's research commands, chained through the CLI as a researcher runs them:
synth -> train -> evaluate -> predict, on tiny sizes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from model import aggregate, checkpoint
from service.cli import main

METHODS = ("cganet", "svm", "flda")
METRICS = ("accuracy", "f1", "recall", "precision", "auc")


@pytest.mark.slow
def test_synth_train_evaluate_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, model_path, report = tmp_path / "synth", tmp_path / "m.safetensors", tmp_path / "report"
    assert main(["synth", str(data), "--encounters", "6", "--seed", "11", "--duration", "12"]) == 0
    with (data / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["outcome"] for r in rows} == {"success", "failure"}

    assert (
        main(
            ["train", str(data), "--out", str(model_path), "--epochs", "1", "--max-segments", "32"]
        )
        == 0
    )
    meta = checkpoint.read_metadata(model_path)
    assert meta["class_names"] == ["success", "failure"]
    assert meta["data"] and meta["metrics"]

    assert main(["evaluate", str(data), "--out", str(report), "--quick"]) == 0
    result = json.loads((report / "report.json").read_text())
    for mode in ("segment", "encounter"):
        for method in METHODS:
            for metric in METRICS:
                value = result[mode][method][metric]
                assert 0.0 <= value["mean"] <= 1.0 and value["std"] >= 0.0, (mode, method, metric)
    assert (report / "report.md").read_text().count("Table 1") >= 2

    # the held-out test runs through the annotations and through the detector, as /predict cuts
    held_out = tmp_path / "held-out"
    assert (
        main(["evaluate", str(data), "--out", str(held_out), "--checkpoint", str(model_path)]) == 0
    )
    paths = json.loads((held_out / "test.json").read_text())["paths"]
    assert list(paths) == ["annotations", "detector"]
    assert paths["detector"]["segmentation"] == {"detector": 6}

    capsys.readouterr()
    recording = data / rows[0]["recording"]
    assert main(["predict", str(recording), "--model", str(model_path), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)[str(recording)]
    assert scored["model_version"] == meta["model_version"]
    # one epoch on 32 segments is near chance: the verdict must then say "uncertain"
    assert scored["segments"] and scored["verdict"] == aggregate.verdict(scored["p_success"])
    assert scored["uncertain_band"] == list(aggregate.UNCERTAIN_BAND)
