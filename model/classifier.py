"""Batched CGANet inference on raw segments or features, on CUDA when present.

The inference path (measured in bench/model_bench.py, figures in BENCHMARKS.md): batch norm
folded into the convolutions, conv weights and inputs in channels_last (oneDNN's fast layout on
CPU, cuDNN's on GPU), ``torch.inference_mode``. Optional and off by default: ``torch.compile``
(env ``PANDAPULSE_COMPILE=1`` or ``compile=True``) and autocast to a lower precision.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import checkpoint
from model import constants as C
from model.errors import SettingError
from model.features import mfcc
from model.network import CGANet, CGANetOutput

COMPILE_ENV = "PANDAPULSE_COMPILE"
"""Environment switch for ``torch.compile`` of the inference network: 1/true/on or 0/false/off."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_AUTOCAST_DTYPES = {"cpu": (torch.bfloat16,), "cuda": (torch.float16, torch.bfloat16)}


def compile_requested(explicit: bool | None = None) -> bool:
    """``explicit`` when given, else the ``PANDAPULSE_COMPILE`` environment switch (default off)."""
    if explicit is not None:
        return explicit
    value = os.environ.get(COMPILE_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError(f"{COMPILE_ENV}={value!r}: use 1/true/on or 0/false/off")


def inference_network(network: CGANet, device: torch.device) -> CGANet:
    """An eval-mode copy of ``network`` on ``device``: batch norm folded, conv weights in
    channels_last. Outputs equal ``network.eval()``'s within float32 rounding (tests pin 1e-5)."""
    model = network.fused().to(device).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
    return model


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

    p_success, p_failure : (B,) calibrated segment probabilities of class 0 and class 1
        (``CGANetOutput.probs``: Platt scaling of log(P_s / P_f)); they sum to 1
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
    """CGANet ready for inference: batch norm folded, channels_last, eval mode, on one device.

    Thread safety: calls are serialised by a lock, so one inference worker thread (or several)
    may share an instance; the torch thread pool is process-wide and is set only when
    ``num_threads`` is given.

    Parameters
    ----------
    compile : bool or None
        ``torch.compile`` (inductor, dynamic batch size) the network. None reads
        ``PANDAPULSE_COMPILE`` (default off). When on, the constructor compiles up front for
        batch 1 and for dynamic batch sizes (warming up with 1, 2 and 3, so no batch size
        recompiles later) and records the seconds it took in ``compile_seconds``.
    num_threads : int or None
        ``torch.set_num_threads`` for CPU inference; None leaves torch's setting alone.
    autocast : torch.dtype or None
        Run under ``torch.autocast`` in this dtype (CPU: bfloat16; CUDA: float16 or bfloat16).
        Off by default: float32 is the reference the tests and the paper's numbers use.
    """

    def __init__(
        self,
        network: CGANet,
        metadata: dict[str, Any] | None = None,
        *,
        device: str | torch.device | None = None,
        max_batch: int = 64,
        compile: bool | None = None,
        num_threads: int | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else choose_device(device)
        self.metadata = dict(metadata or {})
        names = self.metadata.get("class_names", C.CLASS_NAMES)
        self.class_names: tuple[str, str] = (str(names[0]), str(names[1]))
        self.version: str = str(self.metadata.get("model_version", "untracked"))
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        if autocast is not None and autocast not in _AUTOCAST_DTYPES.get(self.device.type, ()):
            raise ValueError(
                f"autocast {autocast} is not supported on {self.device.type}; supported:"
                f" {_AUTOCAST_DTYPES.get(self.device.type, ())} or None"
            )
        self.autocast = autocast
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        self.network = inference_network(network, self.device)
        self._lock = threading.Lock()
        self._forward: Callable[[torch.Tensor], CGANetOutput] = self.network
        self.compiled = compile_requested(compile)
        self.compile_seconds = 0.0
        if self.compiled:
            self._compile()

    def _compile(self) -> None:
        """Compile and warm up the graphs (batch 1 and dynamic batch); time it."""
        start = time.perf_counter()
        self._forward = torch.compile(self.network, dynamic=True)
        probe = torch.zeros(3, C.N_CHANNELS, C.N_FRAMES, self.n_features, device=self.device)
        with torch.inference_mode(), self._precision():
            # Batch 1 is always specialised; the graph resumed after the GRU (a graph break)
            # turns dynamic only at its second batch size: 1, 2, 3 cover every size after.
            for size in (1, 2, 3):
                self._forward(probe[:size].contiguous(memory_format=torch.channels_last))
        self.compile_seconds = time.perf_counter() - start

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast when asked; inductor's freezing when compiled.

        Freezing lets inductor pre-pack the conv weights (never changed after construction)
        for oneDNN; it must be on for every call, or the changed config forces a recompile.
        """
        stack = contextlib.ExitStack()
        if self.autocast is not None:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self.autocast))
        if self.compiled:
            import torch._inductor.config as inductor_config  # only when compiling: slow import

            stack.enter_context(inductor_config.patch(freezing=True))
        return stack

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
        with self._lock, torch.inference_mode():
            for i in range(0, len(batch), self.max_batch):
                chunk = torch.as_tensor(batch[i : i + self.max_batch], dtype=torch.float32)
                chunk = chunk.to(self.device, non_blocking=True)
                features = (mfcc(chunk) if raw else chunk).contiguous(
                    memory_format=torch.channels_last
                )
                with self._precision():
                    out = self._forward(features)
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
        out = CGANetOutput(*(torch.cat(t) for t in zip(*outputs, strict=True)))
        probs = out.probs.numpy()
        return Prediction(
            p_success=probs[:, 0],
            p_failure=probs[:, 1],
            frame_probs=out.frame_probs.numpy(),
            attention=out.attention.numpy(),
            embedding=out.embedding.numpy(),
        )
