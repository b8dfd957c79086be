"""Stored models: checking an uploaded checkpoint, keeping it under the data directory, and
loading a model ready to swap into the live pipeline.

Files live in ``<data_dir>/models/<version>.safetensors`` (``version`` is the checkpoint's
weights hash, ``model.checkpoint.weights_version``); their model cards are rows of the
``models`` table and the roles (active, previous, shadow) rows of ``model_roles``
(``service.storage``). An upload is written to a hidden temporary file in that folder, checked
there, and renamed into place only once every check passed, so a refused upload leaves nothing
behind and never touches a stored model.

The checks (``check_upload``): the file parses as safetensors with PandaPulse metadata; its
feature configuration is this code's and takes the MFCC the live pipeline computes; its class
names are the live model's (the encounter verdicts, alarm and stored figures are defined on
them); the weights load and match the recorded version; and a test inference on a 2-s stereo
segment, on the service's device and precision, gives finite probabilities that sum to 1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from model import checkpoint
from model import constants as C
from model.classifier import Classifier
from model.errors import CheckpointError
from model.files import replacing
from model.preprocessing import normalise_peak
from service.config import InferenceSettings
from service.records import ModelRole, ModelRow
from service.storage import DB_NAME, iso, read_only, utc_now

log = logging.getLogger(__name__)

MODELS_DIR = "models"
SUFFIX = ".safetensors"
MAX_MODEL_MB = 512
"""Largest checkpoint ``POST /api/models`` accepts (MiB); CGANet's is about 3 MiB."""
VERSION_PATTERN = r"^[0-9a-f]{6,64}$"
"""What a model version looks like (a hex prefix of the weights' SHA-256)."""
_VERSION = re.compile(VERSION_PATTERN)


class ModelRejected(Exception):
    """An upload failed a check; the message says which and why (for the 4xx answer)."""


def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / MODELS_DIR


def model_file(data_dir: Path, row: ModelRow) -> Path:
    return Path(data_dir) / row.path


def probe_segment() -> np.ndarray:
    """A (1, 2, 88200) float32 segment shaped like a live one: a falling 2-s chirp with
    harmonics in noise, different on the two channels, peak-normalised as the segmenter does."""
    t = np.arange(C.SEGMENT_SAMPLES, dtype=np.float64) / C.SAMPLE_RATE
    f0 = 900.0 - 250.0 * t
    phase = 2 * np.pi * np.cumsum(f0) / C.SAMPLE_RATE
    call = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * np.hanning(t.size)
    rng = np.random.default_rng(0)
    left = call + 0.05 * rng.standard_normal(t.size)
    right = 0.6 * call + 0.05 * rng.standard_normal(t.size)
    stereo = np.stack([left, right]).astype(np.float32)
    return normalise_peak(stereo)[None]


def load_classifier(path: Path, inference: InferenceSettings) -> Classifier:
    """The checkpoint at ``path`` as the service runs it (device, batch, precision), warmed by
    one test inference so its first live batch pays no set-up cost; raises ``ModelRejected``
    when that inference does not give probabilities."""
    classifier = Classifier.from_checkpoint(
        path, inference.device, max_batch=inference.max_batch, precision=inference.precision
    )
    prediction = classifier.predict(probe_segment())
    p, q = float(prediction.p_success[0]), float(prediction.p_failure[0])
    if not (math.isfinite(p) and math.isfinite(q) and abs(p + q - 1.0) <= 1e-3):
        raise ModelRejected(
            f"a test segment gave P({classifier.class_names[0]}) = {p} and"
            f" P({classifier.class_names[1]}) = {q}: the weights do not give probabilities"
        )
    return classifier


def _card(meta: dict[str, Any]) -> str:
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if k != "history"}
    card = {"data": meta.get("data") or {}, "metrics": metrics, "training": meta.get("training")}
    return json.dumps(card, sort_keys=True, default=str)


def row_for(
    meta: dict[str, Any], *, path: str, origin: str, filename: str, size_bytes: int
) -> ModelRow:
    feature = meta["feature_config"]
    names = list(meta.get("class_names", C.CLASS_NAMES))
    return ModelRow(
        version=str(meta["model_version"]),
        path=path,
        origin=origin,
        filename=filename,
        uploaded_at=iso(utc_now()),
        size_bytes=size_bytes,
        format=str(meta.get("format", "")),
        class_names=(str(names[0]), str(names[1])),
        feature_kind=str(feature.get("kind", "")),
        n_features=int(feature.get("n_features", 0)),
        card=_card(meta),
    )


def _clean(message: str, tmp: Path, filename: str) -> str:
    return message.replace(str(tmp), filename)


def check_upload(
    tmp: Path,
    filename: str,
    live_class_names: Sequence[str],
    inference: InferenceSettings,
) -> tuple[dict[str, Any], Classifier]:
    """Every check of the module docstring on the uploaded file ``tmp`` (named ``filename`` by
    its sender); returns its metadata and the loaded, warmed model, or raises
    ``ModelRejected``."""
    try:
        meta = checkpoint.read_metadata(tmp)
        checkpoint.check_feature_config(meta, filename)
    except CheckpointError as err:
        raise ModelRejected(_clean(str(err), tmp, filename)) from err
    version = str(meta.get("model_version", ""))
    if not _VERSION.fullmatch(version):
        raise ModelRejected(f"{filename} records no valid model version ({version!r})")
    n_features = int(meta["feature_config"].get("n_features", 0))
    if n_features != C.N_MFCC:
        raise ModelRejected(
            f"{filename} takes {meta['feature_config'].get('kind')} features ({n_features} per"
            f" frame); the live pipeline computes {C.N_MFCC} MFCC per frame"
        )
    names = list(meta.get("class_names", C.CLASS_NAMES))
    if names != list(live_class_names):
        raise ModelRejected(
            f"{filename} has classes {names}, the live model {list(live_class_names)}: the"
            " encounter verdicts, the alarm and the stored figures are defined on the live"
            " model's classes, so a swap must keep them"
        )
    try:
        classifier = load_classifier(tmp, inference)
    except CheckpointError as err:
        raise ModelRejected(_clean(str(err), tmp, filename)) from err
    except (RuntimeError, ValueError) as err:
        raise ModelRejected(f"{filename}: a test inference failed: {err}") from err
    return meta, classifier


@contextlib.contextmanager
def upload_file(data_dir: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A hidden temporary file in the models folder (same file system as the stored models,
    so storing is a rename); removed on leaving unless it was renamed away."""
    folder = models_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".tmp")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, path
    finally:
        path.unlink(missing_ok=True)


def store_file(data_dir: Path, tmp: Path, version: str) -> tuple[str, int]:
    """Move the checked upload into place; (path relative to ``data_dir``, size in bytes).
    An existing file of that version is left as it is (same version, same weights)."""
    rel = Path(MODELS_DIR) / f"{version}{SUFFIX}"
    target = Path(data_dir) / rel
    if not target.exists():
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return str(rel), target.stat().st_size


def copy_config_model(data_dir: Path, source: Path) -> ModelRow:
    """The configured checkpoint (``inference.model``) copied into the models folder, so it
    can be activated again after another model replaced it (row not yet recorded)."""
    meta = checkpoint.read_metadata(source)
    version = str(meta["model_version"])
    rel = Path(MODELS_DIR) / f"{version}{SUFFIX}"
    target = Path(data_dir) / rel
    if not target.exists():
        with replacing(target) as tmp:
            shutil.copyfile(source, tmp)
    return row_for(
        meta,
        path=str(rel),
        origin="config",
        filename=source.name,
        size_bytes=target.stat().st_size,
    )


def read_roles(data_dir: Path) -> dict[ModelRole, str]:
    """The persisted roles, read before the service opens its storage (read-only; {} when
    there is no database or it predates the models table)."""
    db = Path(data_dir) / DB_NAME
    if not db.is_file():
        return {}
    try:
        rows = read_only(db, "SELECT role, version FROM model_roles")
    except sqlite3.Error as err:
        log.debug("no model roles in %s: %s", db, err)
        return {}
    return {role: version for role, version in rows}


def read_models(data_dir: Path) -> list[ModelRow]:
    """The stored models' rows, read-only (``pandapulse doctor``; [] without a database or
    before the models table)."""
    db = Path(data_dir) / DB_NAME
    if not db.is_file():
        return []
    try:
        rows = read_only(db, "SELECT * FROM models ORDER BY uploaded_at, version")
    except sqlite3.Error as err:
        log.debug("no stored models in %s: %s", db, err)
        return []
    out = []
    for row in rows:
        names = json.loads(row["class_names"])
        out.append(ModelRow(**{**dict(row), "class_names": (str(names[0]), str(names[1]))}))
    return out


@dataclass(frozen=True)
class StartupModels:
    """Which stored models ``Runtime.start`` runs, as ``choose_startup`` decided."""

    active: Path
    """The checkpoint to run: a stored one activated through the API, else ``inference.model``."""
    shadow: Path | None
    previous: str | None
    reset: bool
    """The persisted roles are stale (``inference.model`` changed since): clear them."""


def choose_startup(data_dir: Path, configured: Path) -> StartupModels:
    """A model activated through the API stays active across restarts, unless
    ``inference.model`` names a different checkpoint than when it was activated (then the
    operator's newer choice wins). A persisted shadow resumes; a missing file is logged and
    skipped."""
    roles = read_roles(data_dir)
    if not roles:
        return StartupModels(configured, None, None, False)
    try:
        configured_version = str(checkpoint.read_metadata(configured).get("model_version"))
    except CheckpointError:
        configured_version = ""
    active = roles.get("active")
    if active is not None and roles.get("config") not in (None, configured_version):
        log.warning(
            "inference.model (%s, version %s) changed since model %s was activated through the"
            " API: running the configured model",
            configured.name,
            configured_version,
            active,
        )
        return StartupModels(configured, None, None, True)
    folder = models_dir(data_dir)
    chosen = configured
    if active is not None:
        path = folder / f"{active}{SUFFIX}"
        if path.is_file():
            chosen = path
            log.info("model %s stays active (activated through the API)", active)
        else:
            log.error("active model %s is missing (%s): running inference.model", active, path)
    shadow = None
    if roles.get("shadow") is not None:
        path = folder / f"{roles['shadow']}{SUFFIX}"
        if path.is_file():
            shadow = path
        else:
            log.error("shadow model %s is missing (%s): no shadow runs", roles["shadow"], path)
    return StartupModels(chosen, shadow, roles.get("previous"), False)
