from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model import checkpoint
from model import constants as C
from model.errors import CheckpointError
from model.network import CGANet


def trained_like() -> CGANet:
    torch.manual_seed(3)
    return CGANet().eval()


def test_round_trip_keeps_weights_outputs_and_metadata(tmp_path: Path) -> None:
    model = trained_like()
    path = tmp_path / "m.safetensors"
    meta = checkpoint.save(path, model, {"metrics": {"accuracy": 0.9}, "data": {"segments": 10}})
    loaded, read = checkpoint.load(path)
    x = torch.randn(2, 2, C.N_FRAMES, C.N_MFCC)
    assert torch.equal(model(x).totals, loaded(x).totals)
    assert read == meta
    assert read["class_names"] == list(C.CLASS_NAMES)
    assert read["feature_config"] == C.feature_config()
    assert read["metrics"] == {"accuracy": 0.9}
    assert len(read["model_version"]) == 12


def test_model_version_is_a_hash_of_the_weights(tmp_path: Path) -> None:
    a = checkpoint.save(tmp_path / "a.safetensors", trained_like())
    b = checkpoint.save(tmp_path / "b.safetensors", trained_like(), {"metrics": {"x": 1}})
    torch.manual_seed(4)
    c = checkpoint.save(tmp_path / "c.safetensors", CGANet())
    assert a["model_version"] == b["model_version"] != c["model_version"]


def test_custom_class_names_are_recorded(tmp_path: Path) -> None:
    meta = checkpoint.save(
        tmp_path / "m.safetensors", trained_like(), {"class_names": ["pain", "discomfort"]}
    )
    assert (
        checkpoint.read_metadata(tmp_path / "m.safetensors")["class_names"] == meta["class_names"]
    )
    with pytest.raises(CheckpointError, match="distinct"):
        checkpoint.save(tmp_path / "x.safetensors", trained_like(), {"class_names": ["a", "a"]})


def rewrite_metadata(path: Path, change: dict) -> None:
    meta = checkpoint.read_metadata(path)
    meta.update(change)
    state = {k: v.contiguous() for k, v in CGANet().state_dict().items()}
    save_file(state, str(path), metadata={checkpoint.METADATA_KEY: json.dumps(meta)})


def test_a_different_feature_configuration_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, trained_like())
    config = dict(C.feature_config(), hop_length=512, n_mels=64)
    rewrite_metadata(path, {"feature_config": config})
    with pytest.raises(CheckpointError, match=r"hop_length: checkpoint 512, code 1024.*n_mels"):
        checkpoint.load(path)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    checkpoint.save(path, trained_like())
    rewrite_metadata(path, {})  # new random weights under the old version
    with pytest.raises(CheckpointError, match="model version"):
        checkpoint.load(path)


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no model checkpoint"):
        checkpoint.load(tmp_path / "missing.safetensors")
    pickle_like = tmp_path / "evil.safetensors"
    pickle_like.write_bytes(b"\x80\x04\x95 not a safetensors file")
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        checkpoint.load(pickle_like)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="no PandaPulse metadata"):
        checkpoint.load(foreign)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "m.safetensors"
    checkpoint.save(path, trained_like())
    checkpoint.save(path, trained_like())
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]
    # Not mkstemp's private 0600: the service's user must be able to read it.
    assert path.stat().st_mode & 0o777 == 0o644
