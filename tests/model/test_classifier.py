from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model import aggregate, checkpoint
from model import constants as C
from model.classifier import Classifier, choose_device
from model.features import mfcc
from service.cli import main


def segments(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, C.N_CHANNELS, C.SEGMENT_SAMPLES)) * 0.2).astype(np.float32)


def test_predict_shapes_probabilities_and_batching(untrained_checkpoint: Path) -> None:
    clf = Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=2)
    pred = clf.predict(segments(5))
    assert len(pred) == 5
    assert np.allclose(pred.p_success + pred.p_failure, 1.0, atol=1e-5)
    assert pred.frame_probs.shape == (5, C.N_FRAMES, 2)
    assert pred.attention.shape == (5, C.N_FRAMES)
    one_by_one = np.concatenate([clf.predict(segments(5)[i : i + 1]).p_success for i in range(5)])
    assert np.allclose(one_by_one, pred.p_success, atol=1e-5)


def test_raw_and_feature_paths_agree(untrained_checkpoint: Path) -> None:
    clf = Classifier.from_checkpoint(untrained_checkpoint, device="cpu")
    audio = segments(3)
    feats = mfcc(torch.from_numpy(audio))
    assert np.allclose(
        clf.predict(audio).p_success, clf.predict_features(feats).p_success, atol=1e-5
    )


def test_empty_batch_and_bad_shapes(untrained_checkpoint: Path) -> None:
    clf = Classifier.from_checkpoint(untrained_checkpoint, device="cpu")
    assert len(clf.predict(np.zeros((0, 2, C.SEGMENT_SAMPLES), np.float32))) == 0
    with pytest.raises(ValueError, match="88200"):
        clf.predict(np.zeros((1, 2, 100), np.float32))
    with pytest.raises(ValueError, match="86, 40"):
        clf.predict_features(np.zeros((1, 2, 86, 62), np.float32))


def test_device_choice() -> None:
    assert choose_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            choose_device("cuda")


def test_predict_cli_json(
    untrained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "call.wav"
    t = np.arange(5 * C.SAMPLE_RATE) / C.SAMPLE_RATE
    call = np.where((t > 1) & (t < 3), np.sin(2 * np.pi * 400 * t), 0.0) + 0.001 * np.sin(
        2 * np.pi * 50 * t
    )
    sf.write(wav, np.stack([call, 0.5 * call], 1), C.SAMPLE_RATE)
    # the same weights, recorded as trained on 62 % success segments: the rule takes that out
    network, _ = checkpoint.load(untrained_checkpoint)
    data = {
        "class_names": ["success", "failure"],
        "segments_per_class": {"success": 62, "failure": 38},
    }
    with_share = tmp_path / "m.safetensors"
    checkpoint.save(with_share, network, {"data": data})
    for model, share in ((untrained_checkpoint, None), (with_share, 0.62)):
        assert main(["predict", str(wav), "--model", str(model), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)[str(wav)]
        assert result["verdict"] in ("success", "failure", "uncertain")
        assert result["segments"], "no segment scored"
        assert result["class0_share"] == share
        ps = [s["p_success"] for s in result["segments"]]
        for seg in result["segments"]:
            assert set(seg) == {"start_s", "end_s", "p_success", "p_failure", "running_p_success"}
            assert 0 <= seg["start_s"] < seg["end_s"] <= 5.0
        assert result["p_success"] == pytest.approx(
            aggregate.running_p_success(ps, share), abs=1e-3
        )
        assert result["segments"][-1]["running_p_success"] == result["p_success"]


def test_predict_cli_table_and_missing_checkpoint(
    untrained_checkpoint: Path,
    shared_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mp3 = shared_data / "real-calls" / "giant_panda_twittering.mp3"
    assert main(["predict", str(mp3), "--model", str(untrained_checkpoint)]) == 0
    assert "verdict" in capsys.readouterr().out
    assert main(["predict", str(mp3), "--model", str(tmp_path / "none.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "no trained checkpoint" in err and "never predicts with untrained weights" in err
