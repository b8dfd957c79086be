"""One call's sound: source (F0 contour, harmonics, nonlinear phenomena, noise, envelope) and
the vocal-tract envelope that ``model.synth.room`` applies to its spectrum (SYNTH.md §1).

Arrays are float64 mono at ``SAMPLE_RATE`` unless a docstring says otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from model.constants import SAMPLE_RATE
from model.synth import spec as S
from model.synth.encounter import PlannedCall
from model.synth.tract import formant_envelope

WAVETABLE_SIZE = 8192
"""Samples per period of the harmonic wavetable; linear interpolation error is below -70 dB."""


def _lowpassed_noise(
    rng: np.random.Generator, n: int, cutoff_hz: float, fs: float = SAMPLE_RATE
) -> np.ndarray:
    """(n,) Gaussian noise band-limited to about ``cutoff_hz``, unit standard deviation.

    Knots at twice the cutoff, linearly interpolated: cheap, and smooth enough for control
    signals (jitter, shimmer, irregular AM).
    """
    step = max(1, int(fs / (2.0 * max(cutoff_hz, 1e-3))))
    knots = rng.standard_normal(n // step + 2)
    x = np.interp(np.arange(n) / step, np.arange(knots.size), knots)
    sd = x.std()
    return x / sd if sd > 0 else x


def band_noise(
    rng: np.random.Generator, n: int, band_hz: tuple[float, float], fs: float = SAMPLE_RATE
) -> np.ndarray:
    """(n,) white noise band-limited to ``band_hz`` (brick wall in the FFT), unit RMS."""
    size = sfft.next_fast_len(n, real=True)
    m = size // 2 + 1
    freqs = np.arange(m) * (fs / size)
    spectrum = rng.standard_normal(m) + 1j * rng.standard_normal(m)
    spectrum[(freqs < band_hz[0]) | (freqs > band_hz[1])] = 0.0
    x = sfft.irfft(spectrum, size)[:n]
    rms = math.sqrt(float(np.mean(x * x)))
    return x / rms if rms > 0 else x


def _wavetable(amplitudes: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """One period (WAVETABLE_SIZE + 1 samples, last = first) of sum_k a_k sin(k theta)."""
    spectrum = np.zeros(WAVETABLE_SIZE // 2 + 1, dtype=complex)
    spectrum[orders] = -0.5j * amplitudes * WAVETABLE_SIZE
    table = sfft.irfft(spectrum, WAVETABLE_SIZE)
    return np.append(table, table[0])


def _lookup(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Read a wavetable at ``phase`` (rad, any range) with linear interpolation."""
    pos = phase * (WAVETABLE_SIZE / (2.0 * math.pi))
    whole = np.floor(pos)
    frac = pos - whole
    i = whole.astype(np.int64) & (WAVETABLE_SIZE - 1)  # the size is a power of two
    return table[i] + frac * np.diff(table)[i]


def _contour(call: PlannedCall, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """log(f0(t) / F0): contour shape, vibrato and jitter."""
    u = t / max(call.duration_s, 1e-9)
    a = call.contour_depth * call.contour_sign
    if call.contour == "arch":
        shape = a * (np.sin(math.pi * u) - 0.5)
    elif call.contour == "fall":
        shape = a * (0.5 - u)
    elif call.contour in ("rise", "rise_jumps"):
        shape = a * (u - 0.5)
    elif call.contour == "undulating":
        shape = 0.5 * a * np.sin(2.0 * math.pi * call.fm_rate_hz * t)
    else:
        shape = np.zeros_like(t)
    if call.contour == "rise_jumps":
        for _ in range(int(rng.integers(S.JUMPS[0], S.JUMPS[1] + 1))):
            size = float(rng.uniform(*S.JUMP_SIZE)) * float(rng.choice((-1.0, 1.0)))
            shape = shape + size * (u >= rng.uniform(0.2, 0.8))
    if call.fm_depth > 0:
        shape = shape + call.fm_depth * np.sin(
            2.0 * math.pi * call.fm_rate_hz * t + rng.uniform(0, 2 * math.pi)
        )
    cutoff = S.JITTER_CUTOFF_FRACTION * call.f0_hz
    return shape + call.jitter * _lowpassed_noise(rng, t.size, cutoff)


def _episode(call: PlannedCall, n: int) -> np.ndarray:
    """(n,) weight in [0, 1]: 1 inside the call's nonlinear episode, raised-cosine fades."""
    start = int(call.nlp_start * n)
    stop = int((call.nlp_start + call.nlp_span) * n)
    w = np.zeros(n)
    w[start:stop] = 1.0
    fade = min(int(S.NLP_FADE_S * SAMPLE_RATE), max(1, (stop - start) // 4))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, fade))
    w[start : start + fade] = ramp[: max(0, min(fade, n - start))]
    end = max(stop - fade, 0)
    w[end:stop] = ramp[::-1][: stop - end]
    return w


def _onoff(call: PlannedCall, n: int) -> np.ndarray:
    """(n,) raised-cosine attack and release."""
    a = max(1, min(int(call.attack * n), int(S.ATTACK_MAX_S * SAMPLE_RATE), n // 2))
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, a))
    env[:a] = ramp
    env[n - a :] = ramp[::-1]
    return env


def _modulation(
    call: PlannedCall, t: np.ndarray, phase: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(n,) amplitude modulation 1 - depth * m(t), m in [0, 1]."""
    if call.am_kind == "periodic":
        m = 0.5 - 0.5 * np.cos(2.0 * math.pi * call.am_rate_hz * t)
    elif call.am_kind == "pulsed":  # growl: one pulse per period of its pulse-rate phase
        m = 0.5 - 0.5 * np.cos(phase)
    elif call.am_kind == "irregular":
        m = 0.5 + 0.5 * np.tanh(_lowpassed_noise(rng, t.size, call.am_rate_hz))
    else:
        return np.ones_like(t)
    return 1.0 - call.am_depth * m


def render_source(call: PlannedCall) -> np.ndarray:
    """The call's glottal source with noise and envelope, before the vocal tract.

    Returns
    -------
    np.ndarray, shape (round(duration * SAMPLE_RATE),), float64, RMS about 1
    """
    rng = np.random.default_rng(call.noise_seed)
    n = max(2, round(call.duration_s * SAMPLE_RATE))
    ct = S.CALL_TYPES[call.call_type]
    if call.call_type == "chomp":
        return _chomp(call, n, rng)
    t = np.arange(n) / SAMPLE_RATE
    if call.call_type == "snort":
        x = band_noise(rng, n, ct.noise_band_hz)
        x *= 1.0 - 0.3 * (0.5 + 0.5 * np.tanh(_lowpassed_noise(rng, n, 30.0)))
        return x * _onoff(call, n)
    log_f0 = _contour(call, t, rng)
    f0 = call.f0_hz * np.exp(log_f0)
    phase = (2.0 * math.pi / SAMPLE_RATE) * np.cumsum(f0) + rng.uniform(0, 2 * math.pi)
    orders = np.arange(1, call.n_harmonics + 1)
    amps = orders ** (call.tilt_db / S.DB_PER_OCTAVE_PER_POWER)
    harmonic = _lookup(_wavetable(amps, orders), phase)
    harmonic /= math.sqrt(0.5 * float(np.sum(amps * amps)))
    if call.nlp != "none":
        w = _episode(call, n)
        if call.nlp == "subharmonics":
            half = np.arange(1, 2 * call.n_harmonics, 2)
            sub_amps = (half / 2.0) ** (call.tilt_db / S.DB_PER_OCTAVE_PER_POWER)
            sub = _lookup(_wavetable(sub_amps, half), phase / 2.0)
            sub /= math.sqrt(0.5 * float(np.sum(sub_amps * sub_amps)))
            harmonic = harmonic + w * (10.0 ** (call.subharmonic_db / 20.0)) * sub
        else:  # chaos: the harmonic source gives way to noise, shaped later by the formants
            harmonic = harmonic * (1.0 - w) + w * band_noise(rng, n, ct.noise_band_hz)
    noise = band_noise(rng, n, ct.noise_band_hz) * 10.0 ** (-call.hnr_db / 20.0)
    shimmer = 1.0 + call.shimmer * _lowpassed_noise(rng, n, S.SHIMMER_CUTOFF_HZ)
    gain = _onoff(call, n) * _modulation(call, t, phase, rng) * shimmer
    return (harmonic + noise) * gain


def _chomp(call: PlannedCall, n: int, rng: np.random.Generator) -> np.ndarray:
    """Broadband clicks: ``f0_hz`` holds the click count and ``fm_rate_hz`` their spacing (s)."""
    noise = band_noise(rng, n, S.CHOMP_BAND_HZ)
    gate = np.zeros(n)
    for i in range(int(call.f0_hz)):
        start = int(i * call.fm_rate_hz * SAMPLE_RATE)
        length = int(rng.uniform(*S.CHOMP_CLICK_S) * SAMPLE_RATE)
        stop = min(n, start + length)
        if stop > start:
            k = np.arange(stop - start)
            gate[start:stop] = np.exp(-k / (0.25 * length)) * float(rng.uniform(0.5, 1.0))
    return noise * gate * math.sqrt(n / max(float(np.sum(gate * gate)), 1e-12)) * 0.3


def vocal_tract(freqs: np.ndarray, call: PlannedCall) -> np.ndarray:
    """The call's formant envelope (linear gain) at ``freqs`` (Hz); 1 for chomp and snort."""
    if not S.CALL_TYPES[call.call_type].vocal:
        return np.ones_like(freqs)
    return formant_envelope(
        freqs,
        call_type=call.call_type,
        spacing_hz=call.formant_spacing_hz,
        scatter=call.formant_scatter,
        notch_hz=call.notch_hz,
    )
