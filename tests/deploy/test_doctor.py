"""``pandapulse doctor``: reports each check as OK or PROBLEM with a fix, exits non-zero on problems.

The checks run against real things: real checkpoints (the suite's untrained one and broken
files), real directories, a real SQLite file, torch's real CUDA state. Capture from a real
sound card is covered in tests/reliability with PulseAudio.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from service import doctor
from service.storage import DB_NAME

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **sections: Any) -> Path:
    data: dict[str, Any] = {"storage": {"data_dir": str(tmp_path / "data")}}
    for name, values in sections.items():
        data[name] = data.get(name, {}) | values
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def diagnose(
    config_path: Path | None, capsys: pytest.CaptureFixture[str], **extra: Any
) -> tuple[int, dict[str, Any]]:
    args = argparse.Namespace(
        config=config_path, seconds=1.0, no_capture=True, min_free_mb=doctor.MIN_FREE_MB, json=True
    )
    for key, value in extra.items():
        setattr(args, key, value)
    rc = doctor.run(args)
    report = json.loads(capsys.readouterr().out)
    return rc, report


def calibrated_checkpoint(
    folder: Path, class_names: tuple[str, str] = ("success", "failure"), cut: str | None = None
) -> Path:
    """A seeded checkpoint whose temperature and metadata say it was calibrated (as
    ``pandapulse train`` saves one), with the given class names."""
    from model import checkpoint
    from model.network import CGANet

    torch.manual_seed(5)
    net = CGANet()
    net.set_temperature(1.4)
    path = folder / f"calibrated-{'-'.join(class_names)}.safetensors"
    calibration: dict[str, Any] = {
        "temperature": 1.4,
        "val_ece_before": 0.12,
        "val_ece_after": 0.04,
    }
    if cut is not None:
        calibration["cut"] = cut
    checkpoint.save(
        path, net, {"class_names": list(class_names), "metrics": {"calibration": calibration}}
    )
    return path


@pytest.fixture
def good_model(tmp_path: Path) -> Path:
    """A calibrated checkpoint of panda outcomes: the model checks all pass with it."""
    return calibrated_checkpoint(tmp_path)


def finding(report: dict[str, Any], check: str) -> dict[str, Any]:
    matches = [f for f in report["findings"] if f["check"] == check]
    assert len(matches) == 1, report
    return matches[0]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.upper().startswith("PANDAPULSE__"):
            monkeypatch.delenv(key)


def test_all_ok_with_a_good_setup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path = calibrated_checkpoint(tmp_path)
    rc, report = diagnose(config(tmp_path, inference={"model": str(model_path)}), capsys)
    assert rc == 0 and report["ok"] is True, report
    checks = [f["check"] for f in report["findings"]]
    assert checks[:4] == ["config", "audio devices", "audio capture", "gpu"]
    assert {"model", "data directory", "api access"} <= set(checks)
    assert all(f["ok"] and not f["fix"] for f in report["findings"])
    model = finding(report, "model")["detail"]
    assert "mfcc features (40)" in model and "44100 Hz" in model
    assert "T = 1.40" in finding(report, "calibration")["detail"]
    assert "P(failure)" in finding(report, "alarm")["detail"]
    # The precision the service will run on this CPU (bf16 only with native bfloat16).
    from model.classifier import choose_precision
    from model.hardware import cpu_flags

    expected = choose_precision("cpu", cpu_flags())
    assert f"run in {expected}" in finding(report, "precision")["detail"]


def test_the_calibration_says_which_segments_it_was_fitted_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for cut, wording in (("detector", "as the detector cuts them"), (None, "on validation (")):
        path = str(calibrated_checkpoint(tmp_path / str(cut), cut=cut))
        rc, report = diagnose(config(tmp_path / str(cut), inference={"model": path}), capsys)
        detail = finding(report, "calibration")["detail"]
        assert rc == 0 and wording in detail and "T = 1.40" in detail


def test_a_fixed_precision_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path = calibrated_checkpoint(tmp_path)
    settings = config(tmp_path, inference={"model": str(model_path), "precision": "fp32"})
    rc, report = diagnose(settings, capsys)
    detail = finding(report, "precision")["detail"]
    assert rc == 0 and "precision fp32: the convolutions run in fp32" in detail


def test_an_uncalibrated_model_is_named(
    tmp_path: Path, untrained_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, report = diagnose(config(tmp_path, inference={"model": str(untrained_checkpoint)}), capsys)
    calibration = finding(report, "calibration")
    assert rc == 1 and not calibration["ok"] and "retrain" in calibration["fix"]


def test_the_alarm_of_a_model_that_is_not_about_pandas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(calibrated_checkpoint(tmp_path, ("discomfort", "pain")))
    rc, report = diagnose(config(tmp_path, inference={"model": path}), capsys)
    alarm = finding(report, "alarm")
    assert rc == 1 and not alarm["ok"] and "no failure alarm" in alarm["detail"]
    assert "alerts.alarm_class" in alarm["fix"]
    rc, report = diagnose(
        config(tmp_path, inference={"model": path}, alerts={"alarm_class": "pain"}), capsys
    )
    assert rc == 0 and finding(report, "alarm")["detail"].endswith("P(pain)")
    rc, report = diagnose(
        config(tmp_path, inference={"model": path}, alerts={"alarm_class": "failure"}), capsys
    )
    assert rc == 1 and "not a class of the model" in finding(report, "alarm")["detail"]


def test_missing_model_is_a_problem_with_a_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, report = diagnose(
        config(tmp_path, inference={"model": str(tmp_path / "none.safetensors")}), capsys
    )
    assert rc == 1 and report["ok"] is False
    model = finding(report, "model")
    assert not model["ok"] and "no model checkpoint" in model["detail"]
    assert "Installing a trained model" in model["fix"]


def test_foreign_feature_configuration_is_named(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(good_model), framework="pt") as handle:
        meta = json.loads(handle.metadata()["pandapulse"])
    meta["feature_config"]["n_fft"] = 1024
    other = tmp_path / "other.safetensors"
    save_file(load_file(str(good_model)), str(other), metadata={"pandapulse": json.dumps(meta)})
    rc, report = diagnose(config(tmp_path, inference={"model": str(other)}), capsys)
    model = finding(report, "model")
    assert rc == 1 and not model["ok"]
    assert "n_fft: checkpoint 1024, code 2048" in model["detail"]


def test_garbage_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    rc, report = diagnose(config(tmp_path, inference={"model": str(bad)}), capsys)
    assert rc == 1 and "not a safetensors checkpoint" in finding(report, "model")["detail"]


def test_invalid_config_is_reported_and_other_checks_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "alerts:\n  failure_threshold: 0.5\n  clear_threshold: 0.9\nserver:\n  colour: red\n"
    )
    rc, report = diagnose(path, capsys)
    cfg = finding(report, "config")
    assert rc == 1 and not cfg["ok"]
    assert "server.colour" in cfg["detail"] and "clear_threshold" in cfg["detail"]
    assert "pandapulse.example.yaml" in cfg["fix"]
    assert finding(report, "gpu")["ok"]  # checks that need no config still ran


def test_data_dir_that_is_a_file(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data directory should be")
    cfg = config(
        tmp_path,
        inference={"model": str(good_model)},
        storage={"data_dir": str(blocker / "data")},
    )
    rc, report = diagnose(cfg, capsys)
    data = finding(report, "data directory")
    assert rc == 1 and not data["ok"] and "is not a directory" in data["detail"]


def test_too_little_free_space(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, inference={"model": str(good_model)})
    rc, report = diagnose(cfg, capsys, min_free_mb=1e12)
    data = finding(report, "data directory")
    assert rc == 1 and not data["ok"] and "MiB free" in data["detail"]
    assert "keep_days" in data["fix"]


def test_damaged_database_is_found(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = data_dir / DB_NAME
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5000)])
    con.commit()
    con.close()
    cfg = config(tmp_path, inference={"model": str(good_model)})
    rc, report = diagnose(cfg, capsys)
    assert rc == 0 and finding(report, f"database {DB_NAME}")["ok"]
    raw = bytearray(db.read_bytes())
    raw[4096 : 2 * 4096] = b"\xff" * 4096  # scribble over the table root page
    db.write_bytes(bytes(raw))
    rc, report = diagnose(cfg, capsys)
    found = finding(report, f"database {DB_NAME}")
    assert rc == 1 and not found["ok"] and "restore the last backup" in found["fix"]


def test_open_api_on_the_network_without_token(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, inference={"model": str(good_model)}, server={"host": "0.0.0.0"})
    rc, report = diagnose(cfg, capsys)
    access = finding(report, "api access")
    assert rc == 1 and not access["ok"] and "PANDAPULSE__SERVER__TOKEN" in access["fix"]
    cfg = config(
        tmp_path,
        inference={"model": str(good_model)},
        server={"host": "0.0.0.0", "token": "s3cret-enough"},
    )
    rc, report = diagnose(cfg, capsys)
    assert rc == 0 and finding(report, "api access")["ok"]
    assert "s3cret-enough" not in json.dumps(report)


def test_gpu_check_follows_the_configured_device(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, inference={"model": str(good_model), "device": "cuda"})
    rc, report = diagnose(cfg, capsys)
    gpu = finding(report, "gpu")
    if torch.cuda.is_available():
        assert gpu["ok"] and "GiB free" in gpu["detail"]
    else:
        assert rc == 1 and not gpu["ok"] and "inference.device is 'cuda'" in gpu["detail"]
        assert gpu["fix"]


def test_missing_sound_device_is_a_problem(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(
        tmp_path,
        inference={"model": str(good_model)},
    )
    data = yaml.safe_load(cfg.read_text())
    data["sources"] = [{"id": "enc-a", "kind": "sounddevice", "device": "No Such Card 9000"}]
    cfg.write_text(yaml.safe_dump(data))
    rc, report = diagnose(cfg, capsys)
    capture = finding(report, "audio capture (enc-a)")
    assert rc == 1 and not capture["ok"]
    assert "No Such Card 9000" in capture["detail"] and capture["fix"]


def test_text_output_and_exit_status_through_the_cli(tmp_path: Path) -> None:
    """The registered command, as an operator runs it: text, a fix line per problem, rc 1."""
    cfg = config(tmp_path, inference={"model": str(tmp_path / "missing.safetensors")})
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "doctor", "--config", str(cfg), "--no-capture"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    problem = [i for i, line in enumerate(lines) if line.startswith("PROBLEM")]
    assert problem and all(lines[i + 1].strip().startswith("fix: ") for i in problem)
    assert any(line.startswith("OK ") and "config:" in line for line in lines)
    assert lines[-1] == f"{len(problem)} problem(s) found"


@pytest.mark.pulse
def test_capture_through_pulseaudio_reports_level_and_stalls(
    tmp_path: Path, good_model: Path, capsys: pytest.CaptureFixture[str], pulse: Any
) -> None:
    """The real capture path (PortAudio -> ALSA pulse -> PulseAudio null sink monitor): with a
    tone playing the doctor captures and reports its level; with nothing playing the ALSA
    plugin hands out zeros, which the doctor reports as digital silence (a muted input)."""
    from tests.reliability.conftest import tone_file

    cfg = config(tmp_path, inference={"model": str(good_model)})
    data = yaml.safe_load(cfg.read_text())
    data["sources"] = [{"id": "enc-a", "kind": "sounddevice", "device": "pulse"}]
    cfg.write_text(yaml.safe_dump(data))

    rc, report = diagnose(cfg, capsys, no_capture=False)
    silent = finding(report, "audio capture (enc-a)")
    assert rc == 1 and not silent["ok"] and "digital silence" in silent["detail"], silent
    assert "unmute" in silent["fix"]

    player = pulse.play(tone_file(tmp_path / "tone.wav", 30.0, level=0.25), wait=False)
    try:
        rc, report = diagnose(cfg, capsys, no_capture=False)
    finally:
        player.kill()
        player.wait()
    capture = finding(report, "audio capture (enc-a)")
    assert rc == 0 and capture["ok"], report
    # A 0.25-amplitude tone peaks at 20*log10(0.25) = -12.0 dBFS.
    peak = float(capture["detail"].split("peak ")[1].split(" dBFS")[0])
    assert -13.0 < peak < -11.0, capture["detail"]
    listing = [n["detail"] for n in report["notes"] if n["check"] == "audio devices"]
    assert any("pulse" in line for line in listing)
