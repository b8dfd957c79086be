"""The vocal-tract envelope (SYNTH.md §1.5), shared by the renderer and the annotations."""

from __future__ import annotations

import numpy as np

from model.synth import spec as S


def formant_envelope(
    freqs: np.ndarray,
    *,
    call_type: str,
    spacing_hz: float,
    scatter: tuple[float, ...],
    notch_hz: float = 0.0,
) -> np.ndarray:
    """Additive formant envelope (linear amplitude) at ``freqs`` (Hz); same shape as ``freqs``.

    A floor at ENVELOPE_FLOOR_DB plus one Lorentzian peak per formant
    F_i = (2i - 1) spacing / 2 (1 + scatter_i), bandwidth 60 + 0.06 F_i. Applied to a spectrum
    as a gain, so F5 keeps its level (a truncated resonator cascade would lose ~34 dB there).
    Bleats boost F5 and F6; a honk has a nasal notch at ``notch_hz``.
    """
    env = np.full(np.shape(freqs), 10.0 ** (S.ENVELOPE_FLOOR_DB / 20.0))
    bleat = call_type.startswith("bleat")
    for i in range(1, S.N_FORMANTS + 1):
        centre = (2 * i - 1) * spacing_hz / 2.0 * (1.0 + scatter[i - 1])
        half_bw = (S.FORMANT_BW_BASE_HZ + S.FORMANT_BW_SLOPE * centre) / 2.0
        gain = 10.0 ** (S.BLEAT_FORMANT_GAIN_DB.get(i, 0.0) / 20.0) if bleat else 1.0
        env = env + gain / (1.0 + ((freqs - centre) / half_bw) ** 2)
    if notch_hz > 0:
        depth = 1.0 - 10.0 ** (S.HONK_NOTCH_DEPTH_DB / 20.0)
        env = env * (1.0 - depth / (1.0 + ((freqs - notch_hz) / (S.HONK_NOTCH_BW_HZ / 2.0)) ** 2))
    return env
