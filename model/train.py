"""``pandapulse train``: train CGANet on a dataset folder.

Two recipes, the same network (``model.network``) and the same loss (the cross-entropy of the
frame-averaged class probabilities, ``segment_log_probs``):

``default`` (issue 9): a recipe that learns on a few hundred segments of individuals the model
never saw, in tens of epochs on a CPU.

- Standardisation as part of the model: per (channel, coefficient) mean and std of the training
  segments, stored as buffers (``CGANet.set_standardisation``), applied by every path.
- AdamW (lr 1e-3, weight decay 1e-2) with a one-cycle schedule: linear warm-up over the first
  10 % of the steps, then cosine decay; gradients clipped to norm 1 (the GRU's recurrent
  gradients can spike on a few loud segments).
- A class-weighted loss (weights inversely proportional to the training class counts), so the
  majority class is not the cheapest answer.
- Augmentation in the feature domain (the feature cache holds MFCCs, not audio): a random
  circular time shift of the 86 frames (short calls are padded by repeating their own audio,
  so a roll is another valid cut), a channel swap (the two animals and microphones have no
  fixed side), and SpecAugment-style masks (one run of frames and one run of coefficients set
  to the training mean). Gain is not augmented: every segment is peak-normalised before its
  features, so a gain change never reaches the model. Background mixing would need the audio,
  which the feature cache does not keep; mixup of features (``--mixup 0.4``) stands in for it
  and is off: on held-out babies it gave 0.695 +- 0.056 segment AUC against 0.723 +- 0.088
  without (3 grouped folds, 400 segments, docs/reports/cries/ablation.md).
- Selection and early stopping on the validation AUC (ties: lower validation loss), with a
  quarter of the training groups held out; accuracy on a few dozen segments rewards the
  majority-class model.
- Afterwards, Platt scaling (temperature and bias, ``model.calibration``) fitted on the
  validation pairs' recordings as the vocalization detector cuts them, the segments `/predict`
  and the live service score (``--calibrate-on detector``, the default where the training
  segments come from annotations); on the validation segments themselves otherwise. The bias
  puts back the class prior the weighted loss took out. On the demo model's held-out encounters,
  calibrating on the detector's cuts instead of the annotated ones took the detector path's ECE
  from 0.085 to 0.050 and the annotated path's from 0.034 to 0.024 (docs/model-card.md).

What each part gave on held-out babies (``docs/reports/cries/ablation.md``; 3 grouped folds, 400
segments, segment AUC): the default 0.723 +- 0.088; selecting on validation accuracy instead of
AUC 0.652 (the clearest effect); without standardisation 0.700; without class weights 0.702;
without augmentation 0.731 (no gain from it there); with mixup 0.695; the paper's optimiser and
schedule at 20 epochs 0.742. All but the selection are within the fold spread; FLDA on the same
folds reached 0.804.

``paper``: the paper's settings, one flag away for reproducing Table 1: SGD with Nesterov
momentum 0.9 at lr 0.01, divided by 10 after 125 epochs of flat validation accuracy, batch 32,
500 epochs, selection on validation accuracy, no class weights, no augmentation, no clipping.
Standardisation and calibration are part of the model and stay on (the paper does not say how
its inputs were scaled; without class weights the calibration bias stays near zero, so the
decision stays close to the paper's P_s > P_f).

Precision: scoring (validation, test, the service) is float32 everywhere. Training runs the
convolutions, and only they, under bfloat16 autocast where the CPU has native bf16
(AVX512-BF16/AMX; ``--precision auto``), fp32 elsewhere: on a CPU without it bf16 runs ATen's
slow fallback kernels (10x slower, BENCHMARKS.md). The GRU, softmaxes and sums stay float32
(``CGANet.forward``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import baselines, calibration, checkpoint
from model import constants as C
from model.classifier import choose_device
from model.data import Dataset, build_dataset, subsample
from model.errors import DataError
from model.network import (
    CGANet,
    CGANetOutput,
    calibrated_probs,
    segment_log_probs,
    segment_logit,
)

log = logging.getLogger(__name__)

MOMENTUM = 0.9
"""SGD momentum (Nesterov) of the paper recipe; the paper names no optimizer."""
SPLIT_ATTEMPTS = 50
"""Random group splits tried to find one with both classes on each side."""
EVAL_BATCH = 64
"""Segments per forward pass when scoring (no gradients)."""
OPTIMIZERS = ("adamw", "sgd")
SELECTIONS = ("auc", "accuracy")
PRECISIONS = ("auto", "fp32", "bf16")
RECIPES = ("default", "paper")
TIME_MASK_FRAMES = 10
"""SpecAugment: at most this many consecutive frames masked per segment."""
FEATURE_MASK_COEFFICIENTS = 6
"""SpecAugment: at most this many consecutive coefficients masked per segment."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The training autocast dtype for ``precision`` on ``device`` (None: plain float32)."""
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
    """Training settings. ``TrainConfig()`` is the default recipe; ``for_recipe('paper')``
    the paper's."""

    recipe: str = "default"
    epochs: int = 40
    batch_size: int = C.BATCH_SIZE
    lr: float = 1e-3
    """Peak learning rate (default recipe) or the constant start (paper)."""
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    warmup: float = 0.1
    """Share of the steps spent warming up (one-cycle schedule; AdamW only)."""
    clip_norm: float | None = 1.0
    class_weighted: bool = True
    augment: bool = True
    mixup: float = 0.0
    """Mixup's Beta(a, a) parameter: each batch is mixed with a shuffled copy of itself, the
    loss with the two labels in the same proportion (0: off; measured no gain, see below)."""
    standardise: bool = True
    """Set the model's input standardisation from the training segments (off: identity)."""
    ema: float | None = None
    """Validate, select and keep an exponential moving average of the weights (and batch-norm
    statistics) with this decay per step, e.g. 0.99; None: the weights themselves."""
    selection: str = "auc"
    """What picks the best epoch on validation: 'auc' (ties: lower loss) or 'accuracy'."""
    lr_decay: float = C.LR_DECAY_FACTOR
    lr_patience: int = C.LR_PATIENCE_EPOCHS
    """Paper recipe: epochs without a better validation result before lr /= 10."""
    patience: int | None = 8
    """Stop after this many epochs without a better validation result (None: run all epochs)."""
    val_fraction: float = 0.25
    """Share of the training groups held out for validation (selection and calibration)."""
    calibrate: bool = True
    seed: int = 0
    device: str | None = None
    channels_last: bool = True
    """Feed the convolutions NHWC tensors (faster on CPU, see BENCHMARKS.md)."""
    precision: str = "auto"
    """Training forward: 'fp32', 'bf16' (conv autocast) or 'auto' (bf16 on native-bf16 CPUs)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise DataError(f"unknown recipe {self.recipe!r}: use one of {RECIPES}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise DataError("epochs and batch size must be positive, and the learning rate > 0")
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"unknown optimizer {self.optimizer!r}: use one of {OPTIMIZERS}")
        if self.selection not in SELECTIONS:
            raise DataError(f"unknown selection {self.selection!r}: use one of {SELECTIONS}")
        if self.precision not in PRECISIONS:
            raise DataError(f"unknown precision {self.precision!r}: use one of {PRECISIONS}")
        if not 0 < self.val_fraction < 1:
            raise DataError(f"the validation fraction must be in (0, 1), got {self.val_fraction}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise DataError(f"the EMA decay must be in (0, 1), got {self.ema}")
        if self.patience is not None and self.patience < 1:
            raise DataError(f"patience must be at least 1 epoch, got {self.patience}")

    @classmethod
    def for_recipe(cls, recipe: str, **overrides: Any) -> TrainConfig:
        """The recipe's settings, with ``overrides`` (None values are ignored)."""
        base = PAPER_RECIPE if recipe == "paper" else {}
        known = {f.name for f in fields(cls)}
        given = {k: v for k, v in overrides.items() if v is not None and k in known}
        return cls(**{"recipe": recipe, **base, **given})


PAPER_RECIPE: dict[str, Any] = {
    "recipe": "paper",
    "epochs": C.EPOCHS,
    "lr": C.LEARNING_RATE,
    "optimizer": "sgd",
    "weight_decay": 0.0,
    "clip_norm": None,
    "class_weighted": False,
    "augment": False,
    "mixup": 0.0,
    "selection": "accuracy",
    "patience": None,
    "val_fraction": 0.15,
}
"""The paper's settings (DESIGN.md table) where they differ from the default recipe."""


@dataclass
class TrainResult:
    """What ``fit`` returns: the best-validation model (eval mode, CPU, calibrated) and history."""

    model: CGANet
    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    segments_seen: int = 0
    calibration: dict[str, Any] = field(default_factory=dict)

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


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """(2,) loss weights inversely proportional to the class counts (mean weight per segment 1)."""
    counts = np.bincount(labels, minlength=C.N_CLASSES).astype(np.float64)
    if (counts == 0).any():
        raise DataError(f"training needs segments of both classes, got counts {counts.tolist()}")
    return torch.tensor(len(labels) / (C.N_CLASSES * counts), dtype=torch.float32)


def augment(x: torch.Tensor, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Augmented copy of a (B, 2, 86, F) feature batch (see the module doc).

    fill : (1, 2, 1, F) the value masks write (the training mean: zero after standardisation)
    """
    b, _, t, f = x.shape
    shift = torch.randint(0, t, (b, 1), generator=gen)
    frames = (torch.arange(t).unsqueeze(0) + shift) % t  # (B, 86)
    x = torch.gather(x, 2, frames[:, None, :, None].expand(x.shape))
    swap = torch.rand(b, generator=gen) < 0.5
    x = torch.where(swap[:, None, None, None], x.flip(1), x)
    t_len = torch.randint(0, TIME_MASK_FRAMES + 1, (b, 1), generator=gen)
    t_0 = (torch.rand(b, 1, generator=gen) * (t - t_len + 1)).long()
    f_len = torch.randint(0, FEATURE_MASK_COEFFICIENTS + 1, (b, 1), generator=gen)
    f_0 = (torch.rand(b, 1, generator=gen) * (f - f_len + 1)).long()
    t_idx, f_idx = torch.arange(t).unsqueeze(0), torch.arange(f).unsqueeze(0)
    t_mask = (t_idx >= t_0) & (t_idx < t_0 + t_len)  # (B, 86)
    f_mask = (f_idx >= f_0) & (f_idx < f_0 + f_len)  # (B, F)
    mask = t_mask[:, None, :, None] | f_mask[:, None, None, :]
    return torch.where(mask, fill.expand_as(x), x)


def evaluate_scores(
    model: CGANet,
    features: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    weights: torch.Tensor | None = None,
) -> dict[str, float]:
    """Validation figures in float32 (the service's numerics): loss, accuracy, AUC (0.5 when
    the validation segments hold one class only)."""
    out = forward_all(model, features, device)
    logp = segment_log_probs(out)
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    loss = nn.functional.nll_loss(logp, target, weight=weights).item()
    acc = (logp.argmax(dim=1) == target).float().mean().item()
    auc = baselines.auc_score(target.numpy() == 0, segment_logit(out.totals).numpy())
    return {"loss": loss, "accuracy": acc, "auc": 0.5 if math.isnan(auc) else auc}


def _better(new: dict[str, float], best: dict[str, float], selection: str) -> bool:
    if new[selection] != best[selection]:
        return new[selection] > best[selection]
    return new["loss"] < best["loss"]


class _Trainer:
    """One ``fit``: model, optimiser, schedule and the per-epoch steps, named."""

    def __init__(self, train_x: np.ndarray, train_y: np.ndarray, config: TrainConfig) -> None:
        self.config = config
        self.device = choose_device(config.device)
        seed_everything(config.seed, self.device)
        self.dtype = autocast_dtype(config.precision, self.device)
        self.x = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
        self.y = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
        self.gen = torch.Generator().manual_seed(config.seed)
        self.memory_format = (
            torch.channels_last if config.channels_last else torch.contiguous_format
        )
        model = CGANet(n_features=int(train_x.shape[-1]))
        if config.standardise:
            model.set_standardisation(self.x)
        self.fill = model.input_mean.detach().clone()
        """(1, 2, 1, F) on the CPU: what augmentation masks write (the training mean)."""
        self.rng = np.random.default_rng(config.seed)
        self.model = model.to(self.device).to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.weights = class_weights(train_y).to(self.device) if config.class_weighted else None
        self.n_batches = math.ceil(len(self.x) / config.batch_size)
        self.opt, self.sched = self._optimiser()
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if config.ema is not None:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model,
                multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema),
                use_buffers=True,
            )

    @property
    def scored(self) -> CGANet:
        """The network validation scores and selection keeps: the EMA when on."""
        return self.model if self.ema is None else self.ema.module  # type: ignore[return-value]

    def _optimiser(self) -> tuple[torch.optim.Optimizer, Any]:
        c, params = self.config, self.model.parameters()
        if c.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=c.lr, momentum=MOMENTUM, nesterov=True, weight_decay=c.weight_decay
            )
            # divided when the selection figure (the paper: validation accuracy) is flat
            return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=c.lr_decay, patience=c.lr_patience
            )
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=c.lr,
            total_steps=max(2, c.epochs * self.n_batches),
            pct_start=c.warmup,
            anneal_strategy="cos",
        )
        return opt, sched

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training segments in a random order: (loss, accuracy, segments)."""
        c, model = self.config, self.model
        model.train()
        order = torch.randperm(len(self.x), generator=self.gen)
        loss_sum, correct, seen = 0.0, 0, 0
        for b in range(self.n_batches):
            idx = order[b * c.batch_size : (b + 1) * c.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single segment
                continue
            x, y = self.x[idx], self.y[idx]
            if c.augment:
                x = augment(x, self.fill, self.gen)
            lam, y_mix = 1.0, y
            if c.mixup > 0:
                lam = float(self.rng.beta(c.mixup, c.mixup))
                partner = torch.randperm(len(idx), generator=self.gen)
                x, y_mix = lam * x + (1 - lam) * x[partner], y[partner]
            # indexing returns a plain tensor: re-apply the memory format (3x faster here)
            x = x.to(self.device).contiguous(memory_format=self.memory_format)
            y, y_mix = y.to(self.device), y_mix.to(self.device)
            logp = segment_log_probs(run_model(model, x, self.dtype))
            loss = nn.functional.nll_loss(logp, y, weight=self.weights)
            if c.mixup > 0:
                loss = lam * loss + (1 - lam) * nn.functional.nll_loss(
                    logp, y_mix, weight=self.weights
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if c.clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), c.clip_norm)
            self.opt.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            if isinstance(self.sched, torch.optim.lr_scheduler.OneCycleLR):
                self.sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logp.argmax(dim=1) == y).sum().item())
            seen += len(idx)
        return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "seen": seen}

    def end_epoch(self, val: dict[str, float]) -> None:
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(val[self.config.selection])


def calibrate(
    model: CGANet, val_x: np.ndarray, val_y: np.ndarray, cut: str = "validation"
) -> dict[str, Any]:
    """Fit and set the model's Platt calibration on (val_x, val_y), segments of held-out groups
    cut as ``cut`` says; returns T, b, the ECE of the model's probabilities before (as they
    were: uncalibrated after training) and after, and class 0's share of these segments, the
    prior the calibrated probabilities carry (``model.aggregate``)."""
    out = forward_all(model, val_x, torch.device("cpu"))
    logit = segment_logit(out.totals).numpy().astype(np.float64)
    positive = np.asarray(val_y) == 0
    before = calibration.reliability(out.probs[:, 0].numpy(), positive).ece
    temperature, bias = calibration.fit_platt(logit, positive)
    model.set_temperature(temperature, bias)
    calibrated = calibrated_probs(out.totals, temperature, bias)[:, 0].numpy()
    after = calibration.reliability(calibrated, positive).ece
    return {
        "temperature": temperature,
        "bias": bias,
        "val_ece_before": before,
        "val_ece_after": after,
        "cut": cut,
        "segments": len(positive),
        "class0_share": float(np.mean(positive)),
    }


def fit(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    calibration_set: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> TrainResult:
    """Train a CGANet on (N, 2, 86, F) float32 features with (N,) int64 labels in {0, 1}.

    Returns the weights of the best validation epoch (``config.selection``), calibrated when
    ``config.calibrate`` on ``calibration_set`` (features, labels, how they were cut) if given,
    else on the validation segments.
    """
    from tqdm.auto import tqdm

    if len(train_x) == 0 or len(val_x) == 0:
        raise DataError("training needs segments on both the training and the validation side")
    trainer = _Trainer(train_x, train_y, config)
    val_y = np.asarray(val_y, dtype=np.int64)
    result = TrainResult(
        model=trainer.model, best_epoch=0, best={"auc": -1.0, "accuracy": -1.0, "loss": math.inf}
    )
    best_state = copy.deepcopy(trainer.scored.state_dict())
    since_best = 0
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), disable=not config.progress, unit="epoch")
    for epoch in bar:
        train = trainer.train_epoch()
        result.segments_seen += int(train["seen"])
        val = evaluate_scores(trainer.scored, val_x, val_y, trainer.device, trainer.weights)
        row = {
            "epoch": float(epoch),
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            **{f"val_{k}": v for k, v in val.items()},
            "lr": float(trainer.opt.param_groups[0]["lr"]),
        }
        result.history.append(row)
        bar.set_postfix(loss=f"{train['loss']:.3f}", val_auc=f"{val['auc']:.3f}")
        log.info(
            "epoch %d/%d: train loss %.4f acc %.3f; validation loss %.4f acc %.3f AUC %.3f",
            epoch,
            config.epochs,
            train["loss"],
            train["accuracy"],
            val["loss"],
            val["accuracy"],
            val["auc"],
        )
        if on_epoch is not None:
            on_epoch(row)
        if _better(val, result.best, config.selection):
            result.best, result.best_epoch = dict(val), epoch
            best_state = copy.deepcopy(trainer.scored.state_dict())
            since_best = 0
        else:
            since_best += 1
        trainer.end_epoch(val)
        if config.patience is not None and since_best >= config.patience:
            result.stopped_early = True
            log.info("early stop after epoch %d (best epoch %d)", epoch, result.best_epoch)
            break
    bar.close()
    result.seconds = time.perf_counter() - start
    model = trainer.scored
    model.load_state_dict(best_state)
    result.model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    if config.calibrate:
        cal_x, cal_y, cut = calibration_set or (val_x, val_y, "validation")
        result.calibration = calibrate(result.model, cal_x, cal_y, cut)
    return result


def split_counts(groups: np.ndarray, tr: np.ndarray, va: np.ndarray) -> dict[str, int]:
    """Segments and groups on each side of a train/validation split, as checkpoints record it
    (``data.split``; ``pandapulse calibrate`` redraws the split and compares)."""
    return {
        "train_segments": len(tr),
        "val_segments": len(va),
        "train_groups": len(set(groups[tr].tolist())),
        "val_groups": len(set(groups[va].tolist())),
    }


def train_dataset(
    dataset: Dataset,
    config: TrainConfig,
    recut: Callable[[list[str]], Dataset] | None = None,
) -> tuple[TrainResult, dict[str, Any]]:
    """Grouped train/validation split of ``dataset`` and ``fit``: (result, split summary).

    ``recut``: given the validation recordings, their segments as the service cuts them (the
    detector); the calibration is then fitted on those where ``dataset`` was cut from
    annotations and they hold both classes.
    """
    tr, va = group_split(dataset.labels, dataset.groups, config.val_fraction, config.seed)
    calibration_set = None
    if (
        config.calibrate
        and recut is not None
        and "annotations" in dataset.summary.get("segmentation", {})
    ):
        cut = recut(sorted(set(dataset.recordings[va].tolist())))
        if len(np.unique(cut.labels)) == 2:
            calibration_set = (cut.features, cut.labels, "detector")
        else:
            log.warning(
                "the detector's cuts of the validation recordings hold one class:"
                " calibrating on the validation segments"
            )
    split = {
        **split_counts(dataset.groups, tr, va),
        "val_fraction": config.val_fraction,
        "grouped": not set(dataset.groups[tr].tolist()) & set(dataset.groups[va].tolist()),
    }
    result = fit(
        dataset.features[tr],
        dataset.labels[tr],
        dataset.features[va],
        dataset.labels[va],
        config,
        calibration_set=calibration_set,
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
    """Options shared by ``train`` and ``evaluate``; recipe settings default to the recipe's."""
    paper, default = TrainConfig.for_recipe("paper"), TrainConfig()

    def both(name: str) -> str:
        return f"default recipe {getattr(default, name)}, paper {getattr(paper, name)}"

    parser.add_argument(
        "data_dir", type=Path, metavar="DATA_DIR", help="dataset folder with manifest.csv"
    )
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default="default",
        help="default: a recipe that learns in tens of epochs (model/train.py); paper: the"
        " paper's settings (SGD 0.01, 500 epochs, selection on accuracy)",
    )
    parser.add_argument("--epochs", type=int, default=None, help=both("epochs"))
    parser.add_argument("--batch-size", type=int, default=None, help=both("batch_size"))
    parser.add_argument("--lr", type=float, default=None, help=both("lr"))
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=both("optimizer"))
    parser.add_argument(
        "--lr-patience",
        type=int,
        default=None,
        help="SGD: epochs of flat validation before lr /= 10 (paper: 125)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early stopping: epochs without a better validation result (" + both("patience") + ")",
    )
    parser.add_argument("--selection", choices=SELECTIONS, default=None, help=both("selection"))
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of groups held out: " + both("val_fraction"),
    )
    parser.add_argument("--no-augment", action="store_true", help="no augmentation")
    parser.add_argument("--no-class-weights", action="store_true", help="an unweighted loss")
    parser.add_argument(
        "--mixup", type=float, default=None, help="mixup Beta(a, a); 0: off (" + both("mixup") + ")"
    )
    parser.add_argument(
        "--no-standardise", action="store_true", help="no input standardisation (ablation only)"
    )
    parser.add_argument(
        "--ema", type=float, default=None, help="keep an EMA of the weights with this decay"
    )
    parser.add_argument(
        "--no-calibration", action="store_true", help="keep temperature 1 (no calibration)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-segments", type=int, default=None, help="random subsample of the segments"
    )
    parser.add_argument("--group-col", default=None, help="manifest group column (default: found)")
    parser.add_argument("--label-col", default=None, help="manifest label column (default: found)")
    parser.add_argument(
        "--classes",
        default=None,
        help="the two class names in output order, A,B (needed when the labels are not panda"
        " outcomes and their order is ambiguous, e.g. 1,0)",
    )
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
        help="training convolutions in bf16 autocast or fp32 (default auto: bf16 on CPUs with"
        " native bfloat16); scoring is always fp32",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="CHECKPOINT", help="where to save (.safetensors)"
    )
    parser.add_argument(
        "--feature", choices=("mfcc", "combined"), default="mfcc", help="default: %(default)s"
    )
    parser.add_argument(
        "--ignore-annotations",
        action="store_true",
        help="cut every recording with the vocalization detector, as /predict and the live"
        " service do, even where annotations exist (train on the segments the service scores)",
    )
    parser.add_argument(
        "--calibrate-on",
        choices=("detector", "validation"),
        default="detector",
        help="fit the calibration on the validation recordings cut by the vocalization detector,"
        " as the service cuts them (default; where the training segments come from annotations),"
        " or on the validation segments themselves",
    )


def config_from_args(args: argparse.Namespace, epochs: int | None = None) -> TrainConfig:
    """The recipe's ``TrainConfig`` with the options given on the command line."""
    return TrainConfig.for_recipe(
        args.recipe,
        epochs=epochs if epochs is not None else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        lr_patience=args.lr_patience,
        patience=args.patience,
        selection=args.selection,
        val_fraction=args.val_fraction,
        augment=False if args.no_augment else None,
        class_weighted=False if args.no_class_weights else None,
        mixup=args.mixup,
        standardise=False if args.no_standardise else None,
        ema=args.ema,
        calibrate=False if args.no_calibration else None,
        seed=args.seed,
        device=args.device,
        channels_last=not args.no_channels_last,
        precision=args.precision,
        progress=not args.no_progress,
    )


def parse_classes(text: str | None) -> str | None:
    """``--classes`` as given; ``model.classes.parse_classes`` reads it with the manifest."""
    return text


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
        use_annotations=not args.ignore_annotations,
    )
    dataset = subsample(dataset, args.max_segments, seed=args.seed)
    for item in dataset.skipped:
        print(f"skipped {item}")

    def detector_cuts(recordings: list[str]) -> Dataset:
        return build_dataset(
            args.data_dir,
            feature=args.feature,
            group_col=args.group_col,
            label_col=args.label_col,
            classes=dataset.class_names,
            cache_dir=args.cache_dir,
            use_annotations=False,
            only=recordings,
        )

    by_detector = args.calibrate_on == "detector" and not args.no_detector
    result, split = train_dataset(dataset, config, detector_cuts if by_detector else None)
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
                "val_auc": result.best["auc"],
                "calibration": result.calibration,
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
                "loss": "cross-entropy on frame-averaged probabilities"
                + (", class-weighted" if config.class_weighted else ""),
            },
        },
    )
    print(
        f"saved {args.out} (model {meta['model_version']}): best epoch {result.best_epoch}/"
        f"{len(result.history)}, validation AUC {result.best['auc']:.3f}, accuracy"
        f" {result.best['accuracy']:.3f}, loss {result.best['loss']:.3f}, temperature"
        f" {result.calibration.get('temperature', 1.0):.2f}; {len(dataset)} segments, classes {list(dataset.class_names)},"
        f" {result.seconds:.0f} s on {device}"
    )
    return 0
