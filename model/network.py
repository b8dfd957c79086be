"""CGANet: convolution -> bidirectional GRU -> attention -> per-frame softmax (DESIGN.md table).

Choices the paper leaves open, written down here:

- The attention layer acts along time, as the Keras ``attention_3d_block`` idiom does: for each
  of the 32 GRU features a fully connected layer maps the 86 frame values to 86 scores, softmax
  over frames gives alpha (B, 86, 32), and F_attn = alpha * F_GRU. The per-frame weight the
  paper plots (Fig. 3) is alpha averaged over the 32 features.
- The per-frame classifier is one fully connected layer 32 -> 2 with softmax.
- Dropout (0.3) sits after the max-pool, as in the paper; the conv input is the two audio
  channels, with frames as height and coefficients as width.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from model import constants as C


class CGANetOutput(NamedTuple):
    """CGANet's outputs for a batch of B segments.

    frame_probs : (B, 86, 2) per-frame softmax over (success, failure)
    totals : (B, 2) the frame sums (P_s, P_f), each in [0, 86]
    attention : (B, 86) attention weight per frame (mean over the 32 features)
    embedding : (B, 32) F_attn summed over frames: the learned feature (Fig. 4)
    """

    frame_probs: torch.Tensor
    totals: torch.Tensor
    attention: torch.Tensor
    embedding: torch.Tensor


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

    def forward(self, features: torch.Tensor) -> CGANetOutput:
        """features: (B, 2, 86, n_features) float32 -> ``CGANetOutput``."""
        x = self.pool(self.conv(features))  # (B, 128, 86, n_features / 2)
        x = self.dropout(x)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, 86, 128 * n_features / 2) = F_conv
        f_gru = self.gru(x)  # (B, 86, 32)
        alpha = torch.softmax(self.attention(f_gru.transpose(1, 2)), dim=-1).transpose(1, 2)
        f_attn = alpha * f_gru
        frame_probs = torch.softmax(self.classifier(f_attn), dim=-1)  # (B, 86, 2)
        return CGANetOutput(
            frame_probs=frame_probs,
            totals=frame_probs.sum(dim=1),
            attention=alpha.mean(dim=-1),
            embedding=f_attn.sum(dim=1),
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
    return torch.log(output.totals / C.N_FRAMES + 1e-8)
