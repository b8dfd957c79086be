"""Batched CGANet inference on raw segments or features, on CUDA when present."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import checkpoint
from model import constants as C
from model.features import mfcc
from model.network import CGANet


def choose_device(requested: str | None = None) -> torch.device:
    """``requested`` ('cpu', 'cuda', 'cuda:1', ...) or CUDA when available, else CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} asked for, but CUDA is not available here")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Prediction:
    """Results for B segments (NumPy, float32).

    p_success, p_failure : (B,) frame-averaged probabilities (P_s / 86, P_f / 86); they sum to 1
    frame_probs : (B, 86, 2)
    attention : (B, 86) per-frame attention weight
    embedding : (B, 32) CGANet's learned feature
    """

    p_success: np.ndarray
    p_failure: np.ndarray
    frame_probs: np.ndarray
    attention: np.ndarray
    embedding: np.ndarray

    def __len__(self) -> int:
        return len(self.p_success)


class Classifier:
    """CGANet ready for inference: batch norm folded, eval mode, on one device."""

    def __init__(
        self,
        network: CGANet,
        metadata: dict[str, Any] | None = None,
        *,
        device: str | torch.device | None = None,
        max_batch: int = 64,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else choose_device(device)
        self.metadata = dict(metadata or {})
        names = self.metadata.get("class_names", C.CLASS_NAMES)
        self.class_names: tuple[str, str] = (str(names[0]), str(names[1]))
        self.version: str = str(self.metadata.get("model_version", "untracked"))
        self.max_batch = max_batch
        self.network = network.fused().to(self.device).eval()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | None = None, **kwargs: Any
    ) -> Classifier:
        network, meta = checkpoint.load(path)
        return cls(network, meta, device=device, **kwargs)

    @property
    def n_features(self) -> int:
        return self.network.n_features

    def predict(self, segments: np.ndarray) -> Prediction:
        """segments: (B, 2, 88200) float32 peak-normalised audio -> ``Prediction``."""
        segments = np.asarray(segments)
        if segments.ndim != 3 or segments.shape[1:] != (C.N_CHANNELS, C.SEGMENT_SAMPLES):
            raise ValueError(
                f"predict expects (B, {C.N_CHANNELS}, {C.SEGMENT_SAMPLES}) segments, got {segments.shape}"
            )
        if self.n_features != C.N_MFCC:
            raise ValueError("this checkpoint takes combined features: call predict_features")
        return self._run(segments, raw=True)

    def predict_features(self, features: np.ndarray | torch.Tensor) -> Prediction:
        """features: (B, 2, 86, n_features) float32 -> ``Prediction``."""
        shape = tuple(features.shape)
        if len(shape) != 4 or shape[1:] != (C.N_CHANNELS, C.N_FRAMES, self.n_features):
            raise ValueError(
                f"predict_features expects (B, {C.N_CHANNELS}, {C.N_FRAMES}, {self.n_features}),"
                f" got {shape}"
            )
        return self._run(features, raw=False)

    def _run(self, batch: np.ndarray | torch.Tensor, *, raw: bool) -> Prediction:
        outputs = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.max_batch):
                chunk = torch.as_tensor(batch[i : i + self.max_batch], dtype=torch.float32)
                chunk = chunk.to(self.device, non_blocking=True)
                out = self.network(mfcc(chunk) if raw else chunk)
                outputs.append([t.float().cpu() for t in out])
        if not outputs:
            empty = np.zeros((0,), np.float32)
            return Prediction(
                empty,
                empty,
                np.zeros((0, C.N_FRAMES, C.N_CLASSES), np.float32),
                np.zeros((0, C.N_FRAMES), np.float32),
                np.zeros((0, C.GRU_HIDDEN), np.float32),
            )
        frame_probs, totals, attention, embedding = (
            torch.cat(t).numpy() for t in zip(*outputs, strict=True)
        )
        share = totals / C.N_FRAMES
        return Prediction(
            p_success=share[:, 0],
            p_failure=share[:, 1],
            frame_probs=frame_probs,
            attention=attention,
            embedding=embedding,
        )
