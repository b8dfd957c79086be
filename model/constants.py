"""The paper's numbers, named once; everything else is derived from them.

Sources: CGANet paper sections 2.2-3.2 and DESIGN.md's table. Tests pin the derived values.
"""

from __future__ import annotations

from typing import Final

# --- audio -----------------------------------------------------------------------------------
SAMPLE_RATE: Final = 44_100
"""Hz. Everything inside PandaPulse runs at this rate; other rates are resampled on input."""
N_CHANNELS: Final = 2
"""The recordings are dual-track; mono input is duplicated and flagged."""
SEGMENT_SECONDS: Final = 2
"""Every vocalization is cut or padded to this length (s)."""
SEGMENT_SAMPLES: Final = SAMPLE_RATE * SEGMENT_SECONDS
"""88,200 samples per channel per segment."""
NORMALISED_PEAK: Final = 1.0
"""Each segment's largest absolute sample (over both channels) is scaled to this (full scale)."""
MIN_TAIL_SECONDS: Final = 0.5
"""A call's remainder after whole 2-s pieces is kept (padded) only if at least this long (s);
a call shorter than one segment is always kept, however short."""
MIN_TAIL_SAMPLES: Final = int(SAMPLE_RATE * MIN_TAIL_SECONDS)
MIN_INPUT_RATE: Final = 8_000
MAX_INPUT_RATE: Final = 192_000
"""Hz. Input sample rates outside this range are refused."""

# --- MFCC (librosa.feature.mfcc with these settings is the reference) -------------------------
N_FFT: Final = 2048
HOP_LENGTH: Final = 1024
N_MFCC: Final = 40
N_MELS: Final = 128
"""librosa's default mel band count; the paper does not say, so we keep the reference's."""
TOP_DB: Final = 80.0
"""librosa.power_to_db's default dynamic-range floor, relative to the segment's loudest bin."""
AMIN: Final = 1e-10
"""librosa.power_to_db's default power floor."""
N_FRAMES: Final = SEGMENT_SAMPLES // HOP_LENGTH
"""86 frames (librosa's centred STFT gives 1 + 88200 // 1024 = 87; the paper uses the first 86)."""
REFERENCE_FRAMES: Final = 1 + SEGMENT_SAMPLES // HOP_LENGTH
"""87 frames: what librosa's centred STFT returns for one segment."""

# --- the paper's Table 2 "combined" feature ---------------------------------------------------
N_CHROMA: Final = 12
N_CONTRAST_BANDS: Final = 6
"""librosa.feature.spectral_contrast's default gives N_CONTRAST_BANDS + 1 rows."""
COMBINED_FEATURES: Final = N_MFCC + N_CHROMA + 1 + (N_CONTRAST_BANDS + 1) + 1 + 1
"""62 = MFCC 40 + chroma 12 + centroid 1 + contrast 7 + roll-off 1 + zero-crossing rate 1."""

# --- CGANet ----------------------------------------------------------------------------------
CONV_LAYERS: Final = 3
CONV_FILTERS: Final = 128
CONV_KERNEL: Final = 3
POOL_FEATURES: Final = 2
"""Max-pool factor over the feature axis (40 -> 20)."""
DROPOUT: Final = 0.3
GRU_LAYERS: Final = 2
GRU_HIDDEN: Final = 32
CONV_OUT_FEATURES: Final = CONV_FILTERS * (N_MFCC // POOL_FEATURES)
"""2,560: the per-frame width after the conv module (F_conv is (86, 2560))."""
CLASS_NAMES: Final = ("success", "failure")
"""Column order of CGANet's output for panda encounters (P_s first, as in the paper)."""
N_CLASSES: Final = len(CLASS_NAMES)

# --- training and evaluation (paper section 3.1-3.2) -----------------------------------------
LEARNING_RATE: Final = 0.01
LR_DECAY_FACTOR: Final = 0.1
LR_PATIENCE_EPOCHS: Final = 125
"""Epochs of flat validation accuracy before the learning rate is divided by 10."""
BATCH_SIZE: Final = 32
EPOCHS: Final = 500
CV_FOLDS: Final = 5


def feature_config(n_features: int = N_MFCC) -> dict[str, object]:
    """The settings that make features comparable; a checkpoint records them and loading checks.

    ``n_features`` is 40 for MFCC and 62 for the combined feature.
    """
    kind = {N_MFCC: "mfcc", COMBINED_FEATURES: "combined"}.get(n_features)
    if kind is None:
        raise ValueError(f"n_features must be {N_MFCC} (mfcc) or {COMBINED_FEATURES} (combined)")
    return {
        "kind": kind,
        "n_features": n_features,
        "sample_rate": SAMPLE_RATE,
        "channels": N_CHANNELS,
        "segment_samples": SEGMENT_SAMPLES,
        "normalised_peak": NORMALISED_PEAK,
        "n_fft": N_FFT,
        "hop_length": HOP_LENGTH,
        "n_mfcc": N_MFCC,
        "n_mels": N_MELS,
        "top_db": TOP_DB,
        "n_frames": N_FRAMES,
        "window": "hann",
        "center": True,
    }
