"""``pandapulse train``: train CGANet on a dataset folder, as the paper did by default.

Defaults are the paper's (DESIGN.md): learning rate 0.01, divided by 10 when the validation
accuracy has not improved for 125 epochs, batch 32, 500 epochs, keeping the best-validation
weights. The loss is the cross-entropy of the frame-averaged class probabilities
(``model.network.segment_log_probs``).

Choices the paper leaves open, written down here:

- Optimizer: SGD with Nesterov momentum 0.9 at the paper's 0.01 (``--optimizer adam`` is
  offered; in a 3-epoch trial on synthetic encounters it did about as well at lr 0.001, and
  neither learned without the initialisation below).
- Validation: a share of the training *groups* (encounters, individuals) held out with
  scikit-learn's GroupShuffleSplit, so no encounter is on both sides.
- "Best" is the highest validation accuracy, ties broken by the lower validation loss.
- Optional early stopping (``--patience``, off by default as in the paper).
- Initialisation: the per-frame classifier's weights start ``N_FRAMES`` (86) times PyTorch's
  default. Its input is F_attn = alpha * F_GRU with alpha a softmax over 86 frames (mean weight
  1/86), so with the default initialisation every frame's logits start near zero and the
  gradients reaching the GRU and convolutions are scaled down by ~1/86: in our trials on
  synthetic encounters the loss then sat at the class prior for several epochs with SGD and
  with Adam (lr 0.01 and 0.001), while with this gain it fell from the first epoch. The
  architecture is unchanged; only the starting point differs.

Speed on CPU, keeping the paper's model: the convolutions run in the channels_last (NHWC)
memory format, and where the CPU has native bfloat16 (AVX512-BF16/AMX) the forward pass runs
under bfloat16 autocast with float32 weights and loss (``--precision``). Measured in
BENCHMARKS.md ("Training throughput"): together about 10x faster than plain float32 NCHW here.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import checkpoint
from model import constants as C
from model.classifier import choose_device
from model.data import Dataset, build_dataset, subsample
from model.errors import DataError
from model.network import CGANet, CGANetOutput, segment_log_probs

log = logging.getLogger(__name__)

MOMENTUM = 0.9
"""SGD momentum (Nesterov); the paper names no optimizer."""
VAL_FRACTION = 0.15
"""Share of the groups held out for validation when the caller does not say."""
SPLIT_ATTEMPTS = 50
"""Random group splits tried to find one with both classes on each side."""
EVAL_BATCH = 64
"""Segments per forward pass when scoring (no gradients)."""
OPTIMIZERS = ("sgd", "adam")
CLASSIFIER_INIT_GAIN = float(C.N_FRAMES)
"""Scale of the per-frame classifier's initial weights (undoes alpha's 1/86 mean at the start)."""
PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def run_model(model: CGANet, x: torch.Tensor, dtype: torch.dtype | None) -> CGANetOutput:
    """``model(x)`` under autocast to ``dtype`` when given; outputs always float32."""
    if dtype is None:
        return model(x)
    with torch.autocast(x.device.type, dtype=dtype):
        out = model(x)
    return CGANetOutput(*(t.float() for t in out))


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; the defaults are the paper's where it gives them."""

    epochs: int = C.EPOCHS
    batch_size: int = C.BATCH_SIZE
    lr: float = C.LEARNING_RATE
    lr_decay: float = C.LR_DECAY_FACTOR
    lr_patience: int = C.LR_PATIENCE_EPOCHS
    """Epochs without a better validation accuracy before the learning rate is divided by 10."""
    patience: int | None = None
    """Stop after this many epochs without a better validation result (None: run all epochs)."""
    optimizer: str = "sgd"
    seed: int = 0
    device: str | None = None
    channels_last: bool = True
    """Feed the convolutions NHWC tensors (faster on CPU, see BENCHMARKS.md)."""
    precision: str = "auto"
    """'fp32', 'bf16' (autocast) or 'auto': bf16 on a CPU with native bfloat16, else fp32."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise DataError("epochs and batch size must be positive, and the learning rate > 0")
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"unknown optimizer {self.optimizer!r}: use one of {OPTIMIZERS}")
        if self.precision not in PRECISIONS:
            raise DataError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}")


@dataclass
class TrainResult:
    """What ``fit`` returns: the best-validation model (eval mode, CPU) and the history."""

    model: CGANet
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    segments_seen: int = 0

    @property
    def segments_per_s(self) -> float:
        return self.segments_seen / self.seconds if self.seconds else 0.0


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed torch and ask for deterministic kernels (exactly reproducible on CPU)."""
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:  # cuDNN's GRU has no deterministic mode everywhere; keep it fast on GPU
        torch.backends.cudnn.benchmark = True


def group_split(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train index, validation index): whole groups held out, both classes on both sides.

    Falls back to a stratified split over segments (with a warning) when there are too few
    groups to hold any out with both classes present on each side.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    if not 0 < fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1, got {fraction}")
    n_classes = len(np.unique(labels))
    if len(np.unique(groups)) >= 2:
        for attempt in range(SPLIT_ATTEMPTS):
            splitter = GroupShuffleSplit(
                n_splits=1, test_size=fraction, random_state=seed + attempt
            )
            tr, va = next(splitter.split(labels, labels, groups))
            if len(np.unique(labels[tr])) == n_classes and len(np.unique(labels[va])) == n_classes:
                return tr, va
    log.warning("too few groups for a grouped validation split: splitting segments instead")
    splitter2 = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    tr, va = next(splitter2.split(labels, labels))
    return tr, va


def forward_all(
    model: CGANet, features: np.ndarray, device: torch.device, dtype: torch.dtype | None = None
) -> CGANetOutput:
    """Eval-mode outputs for (N, 2, 86, F) features, float32 on the CPU."""
    model.eval()
    device = torch.device(device)
    outs: list[CGANetOutput] = []
    with torch.inference_mode():
        for i in range(0, len(features), EVAL_BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(features[i : i + EVAL_BATCH])).to(device)
            outs.append(CGANetOutput(*(t.float().cpu() for t in run_model(model, batch, dtype))))
    if not outs:
        raise DataError("no segments to score")
    return CGANetOutput(*(torch.cat(parts) for parts in zip(*outs, strict=True)))


def _evaluate(
    model: CGANet,
    features: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, float]:
    out = forward_all(model, features, device, dtype)
    logp = segment_log_probs(out)
    target = torch.from_numpy(labels)
    loss = nn.functional.nll_loss(logp, target).item()
    acc = (logp.argmax(dim=1) == target).float().mean().item()
    return {"loss": loss, "accuracy": acc}


def fit(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a CGANet on (N, 2, 86, F) float32 features with (N,) int64 labels in {0, 1}.

    Returns the weights of the epoch with the best validation accuracy (ties: lower loss).
    """
    from tqdm.auto import tqdm

    if len(train_x) == 0 or len(val_x) == 0:
        raise DataError("training needs segments on both the training and the validation side")
    device = choose_device(config.device)
    seed_everything(config.seed, device)
    dtype = autocast_dtype(config.precision, device)
    model = CGANet(n_features=int(train_x.shape[-1]))
    with torch.no_grad():
        model.classifier.weight.mul_(CLASSIFIER_INIT_GAIN)
    model = model.to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=MOMENTUM, nesterov=True)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=config.lr_decay, patience=config.lr_patience
    )
    x_all = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
    gen = torch.Generator().manual_seed(config.seed)
    result = TrainResult(model=model, best_epoch=0, best={"accuracy": -1.0, "loss": math.inf})
    best_state = copy.deepcopy(model.state_dict())
    since_best = 0
    start = time.perf_counter()
    n_batches = math.ceil(len(x_all) / config.batch_size)
    bar = tqdm(
        total=config.epochs * n_batches,
        disable=not config.progress,
        unit="batch",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = torch.randperm(len(x_all), generator=gen)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(n_batches):
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on a single segment
                    continue
                x = x_all[idx].to(device).contiguous(memory_format=memory_format)
                y = y_all[idx].to(device)
                logp = segment_log_probs(run_model(model, x, dtype))
                loss = nn.functional.nll_loss(logp, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item() * len(idx)
                correct += int((logp.argmax(dim=1) == y).sum().item())
                seen += len(idx)
                bar.update(1)
                bar.set_postfix(
                    epoch=epoch, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}"
                )
            result.segments_seen += seen
            val = _evaluate(model, val_x, np.asarray(val_y, dtype=np.int64), device, dtype)
            row = {
                "epoch": float(epoch),
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "lr": float(opt.param_groups[0]["lr"]),
            }
            result.history.append(row)
            bar.set_postfix(
                epoch=epoch,
                loss=f"{row['train_loss']:.3f}",
                acc=f"{row['train_accuracy']:.3f}",
                val_acc=f"{val['accuracy']:.3f}",
            )
            log.info(
                "epoch %d/%d: train loss %.4f acc %.3f, validation loss %.4f acc %.3f, lr %g",
                epoch,
                config.epochs,
                row["train_loss"],
                row["train_accuracy"],
                row["val_loss"],
                row["val_accuracy"],
                row["lr"],
            )
            if on_epoch is not None:
                on_epoch(row)
            better = val["accuracy"] > result.best["accuracy"] or (
                val["accuracy"] == result.best["accuracy"] and val["loss"] < result.best["loss"]
            )
            if better:
                result.best = dict(val)
                result.best_epoch = epoch
                best_state = copy.deepcopy(model.state_dict())
                since_best = 0
            else:
                since_best += 1
            sched.step(val["accuracy"])
            if config.patience is not None and since_best >= config.patience:
                result.stopped_early = True
                log.info("early stop after epoch %d (best epoch %d)", epoch, result.best_epoch)
                break
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    result.model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    return result


def train_dataset(
    dataset: Dataset, config: TrainConfig, *, val_fraction: float = VAL_FRACTION
) -> tuple[TrainResult, dict[str, Any]]:
    """Grouped train/validation split of ``dataset`` and ``fit``: (result, split summary)."""
    tr, va = group_split(dataset.labels, dataset.groups, val_fraction, config.seed)
    split = {
        "train_segments": len(tr),
        "val_segments": len(va),
        "train_groups": len(set(dataset.groups[tr].tolist())),
        "val_groups": len(set(dataset.groups[va].tolist())),
        "val_fraction": val_fraction,
        "grouped": not set(dataset.groups[tr].tolist()) & set(dataset.groups[va].tolist()),
    }
    result = fit(
        dataset.features[tr], dataset.labels[tr], dataset.features[va], dataset.labels[va], config
    )
    return result, split


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads (default: the cores this process may use)."""
    if threads is None:
        threads = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    torch.set_num_threads(max(1, threads))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``evaluate``."""
    parser.add_argument(
        "data_dir", type=Path, metavar="DATA_DIR", help="dataset folder with manifest.csv"
    )
    parser.add_argument(
        "--batch-size", type=int, default=C.BATCH_SIZE, help="default: %(default)s (paper)"
    )
    parser.add_argument(
        "--lr", type=float, default=C.LEARNING_RATE, help="default: %(default)s (paper)"
    )
    parser.add_argument(
        "--lr-patience",
        type=int,
        default=C.LR_PATIENCE_EPOCHS,
        help="epochs of flat validation accuracy before lr /= 10 (default: %(default)s, paper)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early stopping: epochs without a better validation result",
    )
    parser.add_argument(
        "--optimizer", choices=OPTIMIZERS, default="sgd", help="default: %(default)s"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--val-fraction", type=float, default=VAL_FRACTION, help="share of groups held out"
    )
    parser.add_argument(
        "--max-segments", type=int, default=None, help="random subsample of the segments"
    )
    parser.add_argument("--group-col", default=None, help="manifest group column (default: found)")
    parser.add_argument("--label-col", default=None, help="manifest label column (default: found)")
    parser.add_argument("--classes", default=None, help="the two class names, in output order: A,B")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="feature cache (default: DATA_DIR/.pandapulse-cache)",
    )
    parser.add_argument(
        "--no-detector",
        action="store_true",
        help="recordings without annotations: tile whole files instead of using the vocalization detector",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: all usable cores)"
    )
    parser.add_argument(
        "--no-channels-last",
        action="store_true",
        help="plain NCHW tensors instead of channels_last",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="bf16 autocast or fp32 (default auto: bf16 on CPUs with native bfloat16)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="CHECKPOINT", help="where to save (.safetensors)"
    )
    parser.add_argument("--epochs", type=int, default=C.EPOCHS, help="default: %(default)s (paper)")
    parser.add_argument(
        "--feature", choices=("mfcc", "combined"), default="mfcc", help="default: %(default)s"
    )


def config_from_args(args: argparse.Namespace, epochs: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_patience=args.lr_patience,
        patience=args.patience,
        optimizer=args.optimizer,
        seed=args.seed,
        device=args.device,
        channels_last=not args.no_channels_last,
        precision=args.precision,
        progress=not args.no_progress,
    )


def parse_classes(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",")]


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    config = config_from_args(args, args.epochs)
    dataset = build_dataset(
        args.data_dir,
        feature=args.feature,
        group_col=args.group_col,
        label_col=args.label_col,
        classes=parse_classes(args.classes),
        cache_dir=args.cache_dir,
        use_detector=not args.no_detector,
    )
    dataset = subsample(dataset, args.max_segments, seed=args.seed)
    for item in dataset.skipped:
        print(f"skipped {item}")
    result, split = train_dataset(dataset, config, val_fraction=args.val_fraction)
    settings = {k: v for k, v in asdict(config).items() if k != "progress"}
    device = choose_device(config.device)
    meta = checkpoint.save(
        args.out,
        result.model,
        {
            "class_names": list(dataset.class_names),
            "data": {**dataset.summary, "split": split},
            "metrics": {
                "best_epoch": result.best_epoch,
                "val_accuracy": result.best["accuracy"],
                "val_loss": result.best["loss"],
                "epochs_run": len(result.history),
                "stopped_early": result.stopped_early,
                "train_seconds": round(result.seconds, 1),
                "segments_per_s": round(result.segments_per_s, 2),
                "history": result.history,
            },
            "training": {
                **settings,
                "device": str(device),
                "autocast": str(autocast_dtype(config.precision, device)),
                "loss": "cross-entropy on frame-averaged probabilities",
            },
        },
    )
    print(
        f"saved {args.out} (model {meta['model_version']}): best epoch {result.best_epoch}/"
        f"{len(result.history)}, validation accuracy {result.best['accuracy']:.3f}, loss"
        f" {result.best['loss']:.3f}; {len(dataset)} segments, classes {list(dataset.class_names)},"
        f" {result.seconds:.0f} s on {device}"
    )
    return 0
