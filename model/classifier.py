"""Batched CGANet inference on raw segments or features, on CUDA when present.

The inference path (measured in bench/model_bench.py, figures in BENCHMARKS.md): batch norm
folded into the convolutions, conv weights and inputs in channels_last (oneDNN's fast layout on
CPU, cuDNN's on GPU), ``torch.inference_mode``. Optional and off by default: ``torch.compile``
(env ``PANDAPULSE_COMPILE=1`` or ``compile=True``).

Precision (``precision=``; the library's default is fp32, the service's ``inference.precision``
is 'auto'). 'auto' is ``choose_precision(device type, CPU flags)``, a rule measured by
``bench/precision_bench.py`` on the demo model's held-out set (983 annotated and 553 detector
segments of 40 unseen synthetic encounters; BENCHMARKS.md, "Reduced precision") against the bar
"at most 0.5 % of segments change decision and AUC moves at most 0.005":

- CPU with native bfloat16 (``avx512_bf16`` or ``amx_bf16``): **bf16**, autocast of the
  convolutions (``CGANet.forward`` keeps the GRU, softmaxes and sums in float32). On Zen 4
  (AMD EPYC, avx512_bf16, 29 Nov 2026): 0 of 1536 decisions flipped, largest change of
  P(success) 0.0009, AUC change under 0.0001 (0.7276 and 0.6843 unchanged), no encounter
  verdict changed; 2.03x the fp32 segments/s at batch 32 (145 vs 71) and 1.53x at batch 1.
- Any other CPU: **fp32**. Without bfloat16 in hardware autocast runs through fallback kernels
  (10x slower than fp32 on an AVX2-only EPYC); not a speed-up anywhere there.
- CUDA: **fp32**. On an NVIDIA H200 (4 Dec 2026, ``bench/gpu_bench.py``) bf16 and fp16 autocast
  both met the bar (no decision flipped; largest change of P(success) 0.0011 and 0.0001) but
  were slower than fp32 (0.89x and 0.88x the segments/s at batch 32): the model is too small
  to be bound by arithmetic there. 'bf16' stays there to opt into.
- **int8** (dynamic quantisation of the GRU and linear layers, CPU) is opt-in only. It met the
  bar (1 of 983 decisions flipped, largest change of P(success) 0.010, AUC change 0.0001) but
  was not faster (0.97x at batch 32, 0.93x at batch 1): those layers are 4 % of CGANet's FLOPs,
  the fp32 convolutions the rest. ``torch.ao.quantization`` is deprecated besides.

The figures are the demo model's; measure another checkpoint (``--model``) before relying on
'auto' for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import aggregate, checkpoint
from model import constants as C
from model.errors import SettingError
from model.features import mfcc
from model.hardware import cpu_flags
from model.network import CGANet, CGANetOutput

log = logging.getLogger(__name__)

COMPILE_ENV = "PANDAPULSE_COMPILE"
"""Environment switch for ``torch.compile`` of the inference network: 1/true/on or 0/false/off."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_AUTOCAST_DTYPES = {"cpu": (torch.bfloat16,), "cuda": (torch.float16, torch.bfloat16)}
PRECISIONS = ("auto", "fp32", "bf16", "int8")
"""``Classifier(precision=...)``: 'fp32'; 'bf16' (autocast: the convolutions in bfloat16);
'int8' (dynamic quantisation of the GRU and linear layers, CPU only); 'auto' (``choose_precision``)."""
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (``/proc/cpuinfo``) of bfloat16 arithmetic in hardware. Without one, oneDNN and ATen
run bf16 through conversions or reference kernels: 10x slower than fp32 on an AVX2-only EPYC."""


def native_bf16(flags: Iterable[str]) -> bool:
    """Whether a CPU with these feature flags computes in bfloat16 natively."""
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


def choose_precision(device_type: str, flags: Iterable[str]) -> str:
    """The precision ``precision="auto"`` runs on ``device_type`` ('cpu', 'cuda') for a CPU with
    feature ``flags``: a pure function, so a test can simulate any CPU.

    bf16 on CPUs with native bfloat16 (``NATIVE_BF16_FLAGS``), fp32 on every other CPU and on
    CUDA (where reduced precision measured slower). The figures behind the rule are in the module
    docstring; int8 is never chosen automatically.
    """
    if device_type == "cpu" and native_bf16(flags):
        return "bf16"
    return "fp32"


def resolve_precision(precision: str, device_type: str, flags: Iterable[str] | None = None) -> str:
    """``precision`` checked for ``device_type``, with 'auto' replaced by its choice
    (``choose_precision`` with ``flags``, by default this machine's ``cpu_flags()``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return choose_precision(device_type, cpu_flags() if flags is None else flags)
    if precision == "int8" and device_type != "cpu":
        raise ValueError(
            f"precision 'int8' (dynamic quantisation) runs on CPU only, not {device_type}"
        )
    return precision


def quantize_int8(network: CGANet) -> CGANet:
    """``network`` with its GRU and linear layers dynamically quantised to int8, in place
    (weights int8 per tensor, activations quantised per batch; the convolutions stay fp32)."""
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(network, {torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return network


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
    precision : str or None
        One of ``PRECISIONS``: 'fp32', 'bf16' (autocast; only the convolutions run in
        bfloat16), 'int8' (CPU: GRU and linear layers dynamically quantised) or 'auto'
        (``choose_precision`` for this device and CPU). None: fp32, or ``autocast`` when given.
        The library's default is fp32, the reference the tests, evaluations and the paper's
        numbers use; the service asks for 'auto' (``inference.precision``). The precision run
        is in ``precision`` after construction.
    autocast : torch.dtype or None
        The older spelling: run under ``torch.autocast`` in this dtype (CPU: bfloat16; CUDA:
        float16 or bfloat16). Not together with ``precision``.
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
        precision: str | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else choose_device(device)
        self.metadata = dict(metadata or {})
        names = self.metadata.get("class_names", C.CLASS_NAMES)
        self.class_names: tuple[str, str] = (str(names[0]), str(names[1]))
        self.version: str = str(self.metadata.get("model_version", "untracked"))
        self.class0_share: float | None = aggregate.checkpoint_share(self.metadata)
        """Class 0's share of the segments the calibration was fitted on (older checkpoints: of
        the training segments), the encounter rule's prior (``model.aggregate``); None when the
        checkpoint records neither."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        if autocast is not None and autocast not in _AUTOCAST_DTYPES.get(self.device.type, ()):
            raise ValueError(
                f"autocast {autocast} is not supported on {self.device.type}; supported:"
                f" {_AUTOCAST_DTYPES.get(self.device.type, ())} or None"
            )
        if precision is not None and autocast is not None:
            raise ValueError("give precision or autocast, not both")
        if autocast is not None:
            self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast]
        else:
            self.precision = resolve_precision(precision or "fp32", self.device.type)
            autocast = torch.bfloat16 if self.precision == "bf16" else None
            if precision == "auto":
                log.info("precision auto on %s: %s", self.device.type, self.precision)
        if self.precision == "bf16" and self.device.type == "cpu" and not native_bf16(cpu_flags()):
            log.warning(
                "bf16 on a CPU without native bfloat16 (%s): expect it slower than fp32",
                "/".join(sorted(NATIVE_BF16_FLAGS)),
            )
        self.autocast = autocast
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        self.compiled = compile_requested(compile)
        if self.compiled and self.precision == "int8":
            raise ValueError("precision 'int8' cannot be compiled: leave compile off")
        self.network = inference_network(network, self.device)
        if self.precision == "int8":
            quantize_int8(self.network)
        self._lock = threading.Lock()
        self._forward: Callable[[torch.Tensor], CGANetOutput] = self.network
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
