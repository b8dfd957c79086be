"""CGANet: convolution -> bidirectional GRU -> attention -> per-frame softmax (DESIGN.md table).

Choices the paper leaves open, written down here:

- The attention layer acts along time, as the Keras ``attention_3d_block`` idiom does: for each
  of the 32 GRU features a fully connected layer maps the 86 frame values to 86 scores, softmax
  over frames gives alpha (B, 86, 32), and F_attn = alpha * F_GRU. The per-frame weight the
  paper plots (Fig. 3) is alpha averaged over the 32 features.
- The per-frame classifier is one fully connected layer 32 -> 2 with softmax.
- Dropout (0.3) sits after the max-pool, as in the paper; the conv input is the two audio
  channels, with frames as height and coefficients as width.
- F_attn = 86 * alpha * F_GRU (``ATTENTION_SCALE``): alpha is a softmax over 86 frames, so its
  mean weight is 1/86 and without the constant every frame's classifier input starts ~86 times
  smaller than F_GRU; the logits then hardly depend on the sound, the gradients reaching the GRU
  and convolutions shrink by the same factor, and the quickest way down the loss is the class
  prior. A constant factor leaves the paper's architecture (and its P_s > P_f rule) unchanged.
  An earlier recipe multiplied the classifier's *initial weights* by 86 instead, which under SGD
  made those weights learn thousands of times slower than the bias (issue 9).

Two sets of buffers travel with the weights (so training, ``/predict``, the live service and
the CUDA path apply them identically):

- ``input_mean`` / ``input_std``, (1, 2, 1, F): per (channel, coefficient) standardisation
  statistics of the training set (MFCC c0 is in the hundreds, the others near zero). Identity
  (0 and 1) until ``set_standardisation`` is called.
- ``temperature`` and ``calibration_bias``, (): Platt scaling of the segment probability,
  fitted on validation after training (``model.calibration``):
  p(class 0) = sigmoid(log(P_s / P_f) / T + b). With b = 0 the decision is the paper's
  (P_s > P_f exactly when p > 0.5); b restores the class prior a class-weighted loss removed.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from model import constants as C

ATTENTION_SCALE = float(C.N_FRAMES)
"""F_attn = ATTENTION_SCALE * alpha * F_GRU: makes alpha's mean weight 1 (see the module doc)."""
MIN_STD = 1e-3
"""Floor of the standardisation's standard deviation (a constant coefficient stays finite)."""
LOG_EPS = 1e-8
"""Added to probabilities before the log (a frame share of exactly 0 stays finite)."""


class CGANetOutput(NamedTuple):
    """CGANet's outputs for a batch of B segments.

    frame_probs : (B, 86, 2) per-frame softmax over (success, failure)
    totals : (B, 2) the frame sums (P_s, P_f), each in [0, 86]
    attention : (B, 86) attention weight per frame (mean over the 32 features)
    embedding : (B, 32) F_attn summed over frames: the learned feature (Fig. 4)
    probs : (B, 2) calibrated segment probabilities (class 0, class 1); they sum to 1
    """

    frame_probs: torch.Tensor
    totals: torch.Tensor
    attention: torch.Tensor
    embedding: torch.Tensor
    probs: torch.Tensor


class _SummedBiGRU(nn.Module):
    """One bidirectional GRU layer whose forward and backward outputs are summed (eq. 1)."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gru = nn.GRU(n_in, hidden, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)  # (B, T, 2 * hidden)
        return out[..., : self.hidden] + out[..., self.hidden :]


class CGANet(nn.Module):
    """CGANet for (B, 2, 86, n_features) inputs; n_features is 40 (MFCC) or 62 (combined)."""

    def __init__(self, n_features: int = C.N_MFCC, *, n_classes: int = C.N_CLASSES) -> None:
        super().__init__()
        self.n_features = n_features
        layers: list[nn.Module] = []
        n_in = C.N_CHANNELS
        for _ in range(C.CONV_LAYERS):
            layers += [
                nn.Conv2d(n_in, C.CONV_FILTERS, C.CONV_KERNEL, padding=C.CONV_KERNEL // 2),
                nn.BatchNorm2d(C.CONV_FILTERS),
                nn.ReLU(inplace=True),
            ]
            n_in = C.CONV_FILTERS
        self.conv = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(kernel_size=(1, C.POOL_FEATURES))
        self.dropout = nn.Dropout(C.DROPOUT)
        width = C.CONV_FILTERS * (n_features // C.POOL_FEATURES)
        self.gru = nn.Sequential(
            _SummedBiGRU(width, C.GRU_HIDDEN),
            *[_SummedBiGRU(C.GRU_HIDDEN, C.GRU_HIDDEN) for _ in range(C.GRU_LAYERS - 1)],
        )
        self.attention = nn.Linear(C.N_FRAMES, C.N_FRAMES)
        self.classifier = nn.Linear(C.GRU_HIDDEN, n_classes)
        stats_shape = (1, C.N_CHANNELS, 1, n_features)
        self.register_buffer("input_mean", torch.zeros(stats_shape))
        self.register_buffer("input_std", torch.ones(stats_shape))
        self.register_buffer("temperature", torch.tensor(1.0))
        self.register_buffer("calibration_bias", torch.tensor(0.0))

    input_mean: torch.Tensor
    input_std: torch.Tensor
    temperature: torch.Tensor
    calibration_bias: torch.Tensor

    @torch.no_grad()
    def set_standardisation(self, features: torch.Tensor) -> None:
        """Set ``input_mean``/``input_std`` from (N, 2, 86, F) training features (per channel
        and coefficient, over segments and frames)."""
        if features.ndim != 4 or features.shape[1:] != (C.N_CHANNELS, C.N_FRAMES, self.n_features):
            raise ValueError(
                f"standardisation needs (N, {C.N_CHANNELS}, {C.N_FRAMES}, {self.n_features})"
                f" features, got {tuple(features.shape)}"
            )
        x = features.double()
        self.input_mean.copy_(x.mean(dim=(0, 2), keepdim=True).float())
        self.input_std.copy_(x.std(dim=(0, 2), keepdim=True).clamp_min(MIN_STD).float())

    @torch.no_grad()
    def set_temperature(self, temperature: float, bias: float = 0.0) -> None:
        """Set the calibration: p(class 0) = sigmoid(log(P_s / P_f) / temperature + bias)."""
        if not temperature > 0 or not torch.isfinite(torch.tensor(temperature)):
            raise ValueError(f"the temperature must be a positive number, got {temperature}")
        if not torch.isfinite(torch.tensor(bias)):
            raise ValueError(f"the calibration bias must be finite, got {bias}")
        self.temperature.fill_(float(temperature))
        self.calibration_bias.fill_(float(bias))

    def forward(self, features: torch.Tensor) -> CGANetOutput:
        """features: (B, 2, 86, n_features) float32, unstandardised -> ``CGANetOutput``.

        Under CPU/CUDA autocast only the convolutions run in reduced precision: the GRU, the
        softmaxes and the sums over frames are float32, so scores do not come in bf16 steps.
        """
        if features.ndim != 4 or tuple(features.shape[1:]) != (
            C.N_CHANNELS,
            C.N_FRAMES,
            self.n_features,
        ):
            raise ValueError(
                f"CGANet expects (B, {C.N_CHANNELS}, {C.N_FRAMES}, {self.n_features}) features,"
                f" got {tuple(features.shape)}"
            )
        x = (features - self.input_mean) / self.input_std
        x = self.pool(self.conv(x))  # (B, 128, 86, n_features / 2)
        x = self.dropout(x)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, 86, 128 * n_features / 2) = F_conv
        with torch.autocast(x.device.type, enabled=False):
            f_gru = self.gru(x.float())  # (B, 86, 32)
            alpha = torch.softmax(self.attention(f_gru.transpose(1, 2)), dim=-1).transpose(1, 2)
            f_attn = ATTENTION_SCALE * alpha * f_gru
            frame_probs = torch.softmax(self.classifier(f_attn), dim=-1)  # (B, 86, 2)
            totals = frame_probs.sum(dim=1)
            return CGANetOutput(
                frame_probs=frame_probs,
                totals=totals,
                attention=alpha.mean(dim=-1),
                embedding=f_attn.sum(dim=1),
                probs=calibrated_probs(totals, self.temperature, self.calibration_bias),
            )

    def fused(self) -> CGANet:
        """An eval-mode copy with each BatchNorm folded into its convolution (inference only)."""
        model = copy.deepcopy(self).eval()
        layers = list(model.conv)
        fused: list[nn.Module] = []
        for i in range(0, len(layers), 3):
            conv, bn, relu = layers[i : i + 3]
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            fused += [fuse_conv_bn_eval(conv, bn), relu]
        model.conv = nn.Sequential(*fused)
        return model


def decide(totals: torch.Tensor) -> torch.Tensor:
    """The paper's rule: class 0 (success) where P_s > P_f. totals (B, 2) -> (B,) bool."""
    return totals[..., 0] > totals[..., 1]


def segment_log_probs(output: CGANetOutput) -> torch.Tensor:
    """log of the frame-averaged class probabilities, (B, 2): what the cross-entropy trains."""
    return torch.log(output.totals / C.N_FRAMES + LOG_EPS)


def segment_logit(totals: torch.Tensor) -> torch.Tensor:
    """log(P_s / P_f) per segment: totals (B, 2) -> (B,); positive exactly when P_s > P_f."""
    logp = torch.log(totals / C.N_FRAMES + LOG_EPS)
    return logp[..., 0] - logp[..., 1]


def calibrated_probs(
    totals: torch.Tensor, temperature: torch.Tensor | float, bias: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """(B, 2) calibrated probabilities from the frame sums: sigmoid(logit / T + b) for class 0."""
    p0 = torch.sigmoid(segment_logit(totals) / temperature + bias)
    return torch.stack([p0, 1.0 - p0], dim=-1)
