"""CGANet checkpoints: safetensors weights with JSON metadata in the same file.

The metadata (under the safetensors header key ``pandapulse``) records the feature
configuration, class names, a model version (a hash of the weights), the training data summary
and metrics. Loading never unpickles, and refuses a feature configuration that differs from
the code's, naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from model import constants as C
from model.errors import CheckpointError
from model.files import replacing
from model.network import CGANet

FORMAT = "pandapulse-cganet/2"
"""Format 2 adds the standardisation and calibration buffers and the attention scale."""
FORMAT_1 = "pandapulse-cganet/1"
"""Read for compatibility: converted on load to an identical-output format-2 network."""
METADATA_KEY = "pandapulse"
DEMO_MODEL = Path(__file__).resolve().parent / "assets" / "demo-model.safetensors"
"""The committed demo checkpoint: what ``pandapulse predict`` and the service use when no model
is named (``make demo-model`` rebuilds it)."""


def weights_version(state: dict[str, torch.Tensor]) -> str:
    """A short, stable hash of the weights (names, shapes and bytes): the model version."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:12]


def save(path: str | Path, model: CGANet, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` and ``metadata`` to ``path`` atomically; returns the full metadata.

    ``metadata`` may hold ``class_names`` (two names, column order of the output), ``data``
    (training data summary) and ``metrics``; the feature configuration and version are added.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(metadata or {})
    class_names = list(meta.get("class_names", C.CLASS_NAMES))
    if len(class_names) != C.N_CLASSES or len(set(class_names)) != C.N_CLASSES:
        raise CheckpointError(
            f"class_names must be {C.N_CLASSES} distinct names, got {class_names}"
        )
    meta.update(
        format=FORMAT,
        class_names=class_names,
        feature_config=C.feature_config(model.n_features),
        model_version=weights_version(state),
    )
    # Readable by all: the service's user is often not the one who trained or installed it.
    with replacing(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata, without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model checkpoint at {path}: train one with `pandapulse train`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {err}") from err
    if raw is None:
        raise CheckpointError(f"{path} has no PandaPulse metadata: it was not saved by PandaPulse")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} has corrupt metadata: {err}") from err
    if meta.get("format") not in (FORMAT, FORMAT_1):
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def _upgrade_format_1(state: dict[str, torch.Tensor], model: CGANet) -> dict[str, torch.Tensor]:
    """A format-1 state as format 2 with the same outputs.

    Format 1 had no standardisation or calibration buffers (identity) and no attention scale:
    its classifier saw alpha * F_GRU where format 2 feeds ATTENTION_SCALE * alpha * F_GRU, so
    dividing the classifier's weights by the scale gives the same logits.
    """
    from model.network import ATTENTION_SCALE

    upgraded = dict(state)
    upgraded["classifier.weight"] = state["classifier.weight"] / ATTENTION_SCALE
    for name, default in model.state_dict().items():
        if name not in upgraded:
            upgraded[name] = default.clone()
    return upgraded


def check_feature_config(meta: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Raise ``CheckpointError`` naming every feature setting that differs from the code's."""
    saved = meta.get("feature_config") or {}
    expected = C.feature_config(int(saved.get("n_features", C.N_MFCC)))
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, code {v!r}"
        for k, v in expected.items()
        if saved.get(k) != v
    ]
    if diffs:
        raise CheckpointError(
            f"{path} was trained with a different feature configuration ({'; '.join(diffs)});"
            " retrain it with this version of PandaPulse"
        )


def load(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[CGANet, dict[str, Any]]:
    """Load a checkpoint saved by ``save``: (model in eval mode on ``device``, metadata)."""
    meta = read_metadata(path)
    check_feature_config(meta, path)
    model = CGANet(n_features=int(meta["feature_config"]["n_features"]))
    try:
        state = load_file(str(path), device="cpu")
        if weights_version(state) != meta.get("model_version"):
            raise CheckpointError(f"{path}: the weights do not match the recorded model version")
        if meta["format"] == FORMAT_1:
            state = _upgrade_format_1(state, model)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError, KeyError) as err:
        raise CheckpointError(f"{path} does not hold CGANet weights: {err}") from err
    return model.to(device).eval(), meta
