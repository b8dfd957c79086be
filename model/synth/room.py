"""Two channels in a room (SYNTH.md §4): placement, reverberation, background, mixing.

All audio here is float64 (2, n) or (n,) at ``SAMPLE_RATE`` until the final float32 output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import signal

from model.constants import N_CHANNELS, SAMPLE_RATE
from model.synth import spec as S
from model.synth.calls import band_noise, render_source, vocal_tract
from model.synth.encounter import EncounterPlan, Microphone, PlannedCall, RoomPlan

NOISE_FIR = 8192
"""Taps of the background's noise-shaping filters (5.4 Hz resolution)."""
MAINS_HZ = 50
MAINS_HARMONICS = 6
CALL_PAD = 1024
"""Samples of silence around a call before its FFT, so formant ringing and delays do not wrap."""


@dataclass
class Tracks:
    """Sum of calls as heard: ``direct`` (2, n) at the microphones, ``excitation`` (n,) the
    same sounds weighted by each call's reverberant gain, which drives the room's tails."""

    direct: np.ndarray
    excitation: np.ndarray


def _db(x: float) -> float:
    return 10.0 ** (x / 20.0)


def reverberant_gain(distance_m: float, indoor: bool) -> float:
    """g such that a unit-energy tail sits at the spec's direct-to-reverberant ratio."""
    base = S.DRR_INDOOR_DB if indoor else S.DRR_OUTDOOR_DB
    drr = min(max(base + S.DRR_PER_M_DB * distance_m, S.DRR_LIMITS_DB[0]), S.DRR_LIMITS_DB[1])
    return _db(-drr)


def channel_gains(azimuth_deg: float, mic: Microphone) -> tuple[float, float]:
    """Cardioid gains (left aimed at -phi, right at +phi)."""
    theta, phi = math.radians(azimuth_deg), math.radians(mic.aim_deg)
    return 0.5 * (1.0 + math.cos(theta + phi)), 0.5 * (1.0 + math.cos(theta - phi))


def channel_delays(azimuth_deg: float, mic: Microphone) -> tuple[float, float]:
    """Arrival delays (s) at left and right: the far microphone hears the source later."""
    itd = mic.spacing_m * math.sin(math.radians(azimuth_deg)) / S.SPEED_OF_SOUND
    return max(0.0, itd), max(0.0, -itd)


def place_calls(calls: tuple[PlannedCall, ...], room: RoomPlan, n: int) -> Tracks:
    """Render each call, filter it by its vocal tract, distance and direction, and sum."""
    direct = np.zeros((N_CHANNELS, n), dtype=np.float32)
    excitation = np.zeros(n, dtype=np.float32)
    for call in calls:
        source = render_source(call)
        size = sfft.next_fast_len(source.size + 2 * CALL_PAD, real=True)
        padded = np.zeros(size)
        padded[CALL_PAD : CALL_PAD + source.size] = source
        spectrum = sfft.rfft(padded)
        freqs = np.arange(spectrum.size) * (SAMPLE_RATE / size)
        r = call.position.distance_m
        spectrum *= vocal_tract(freqs, call)
        power = (2.0 * float(np.sum(np.abs(spectrum) ** 2))) / size / source.size
        cutoff = S.LOWPASS_BASE_HZ - S.LOWPASS_PER_M_HZ * r
        spectrum *= (_db(call.level_db) / r / math.sqrt(max(power, 1e-30))) / (
            1.0 + 1j * freqs / cutoff
        )
        start = round(call.onset_s * SAMPLE_RATE) - CALL_PAD
        lo, hi = max(start, 0), min(start + size, n)
        if hi <= lo:
            continue
        gains = channel_gains(call.position.azimuth_deg, room.microphone)
        delays = channel_delays(call.position.azimuth_deg, room.microphone)
        # left, right (gain and fractional delay as a phase ramp) and the reverb's drive,
        # in one single-precision inverse FFT
        views = np.empty((N_CHANNELS + 1, spectrum.size), dtype=np.complex64)
        for ch in range(N_CHANNELS):
            views[ch] = spectrum * (gains[ch] * np.exp(-2j * math.pi * freqs * delays[ch]))
        views[N_CHANNELS] = spectrum * reverberant_gain(r, room.indoor)
        out = sfft.irfft(views, size, axis=1)[:, lo - start : hi - start]
        direct[:, lo:hi] += out[:N_CHANNELS]
        excitation[lo:hi] += out[N_CHANNELS]
    return Tracks(direct=direct, excitation=excitation)


def room_tails(room: RoomPlan, rng: np.random.Generator) -> np.ndarray:
    """(2, m) reverberation tails (without the direct delta), unit energy per channel,
    correlated ``room.tail_correlation`` between channels, after the pre-delay."""
    pre = round(room.predelay_s * SAMPLE_RATE)
    m = round(room.rt60_s * SAMPLE_RATE)
    a, b = rng.standard_normal((2, m))
    c = room.tail_correlation
    decay = np.exp(-S.DECAY_60DB * np.arange(m) / (room.rt60_s * SAMPLE_RATE))
    tails = np.zeros((N_CHANNELS, pre + m))
    tails[0, pre:] = a * decay
    tails[1, pre:] = (c * a + math.sqrt(1.0 - c * c) * b) * decay
    return tails / np.sqrt(np.sum(tails * tails, axis=1, keepdims=True))


def reverberate(excitation: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """(2, n) float32 reverberant sound: the (n,) excitation convolved with each channel's
    (2, m) tail, truncated to n.

    Overlap-add FFT convolution in single precision: the tail sits 8 dB or more below the
    direct sound, far above float32 rounding, and time and memory stay linear in n.
    """
    n = excitation.size
    wet = signal.oaconvolve(
        excitation.astype(np.float32)[None, :], tails.astype(np.float32), mode="full", axes=1
    )
    return wet[:, :n]


def interval_power(audio: np.ndarray, calls: tuple[PlannedCall, ...]) -> float:
    """Mean power of (2, n) audio over the union of the calls' intervals (0 if none)."""
    total, count, covered = 0.0, 0, 0
    for call in sorted(calls, key=lambda c: c.onset_s):  # merge overlaps: count each sample once
        a = max(round(call.onset_s * SAMPLE_RATE), covered)
        b = min(round(call.offset_s * SAMPLE_RATE), audio.shape[1])
        if b > a:
            piece = audio[:, a:b].astype(np.float64)
            total += float(np.einsum("ij,ij->", piece, piece))
            count += piece.size
            covered = b
    return total / count if count else 0.0


def floor_power(audio: np.ndarray) -> float:
    """Median power of SNR_FRAME_S frames of (2, n) audio: a level that ignores door slams."""
    frame = round(S.SNR_FRAME_S * SAMPLE_RATE)
    usable = audio.shape[1] // frame * frame
    if usable == 0:
        return float(np.mean(audio**2))
    frames = (audio[:, :usable] ** 2).reshape(N_CHANNELS, -1, frame).mean(axis=(0, 2))
    return float(np.median(frames))


# --- background ------------------------------------------------------------------------------


def _shaping_filters(amplitude: np.ndarray) -> np.ndarray:
    """(3, NOISE_FIR) linear-phase FIRs with magnitude ``amplitude`` (on the NOISE_FIR grid):
    the whole band, the part below DECORRELATION_HZ and the part above."""
    freqs = np.arange(amplitude.size) * (SAMPLE_RATE / NOISE_FIR)
    below = (freqs < S.DECORRELATION_HZ).astype(float)
    window = np.hanning(NOISE_FIR)
    firs = [
        np.roll(sfft.irfft(amplitude * part, NOISE_FIR), NOISE_FIR // 2) * window
        for part in (np.ones_like(below), below, 1.0 - below)
    ]
    return np.stack(firs).astype(np.float32)


def _diffuse(rng: np.random.Generator, n: int, amplitude: np.ndarray) -> np.ndarray:
    """(2, n) float32 Gaussian noise with spectral magnitude ``amplitude`` (NOISE_FIR // 2 + 1
    bins), identical in both channels below DECORRELATION_HZ and independent above; unit power.

    White noise through short FIRs (overlap-add) keeps memory and time linear in n.
    """
    firs = _shaping_filters(amplitude)
    white = rng.standard_normal((2, n + NOISE_FIR - 1), dtype=np.float32)
    shaped = signal.oaconvolve(white[[0, 0, 1]], firs, mode="valid", axes=1)
    shaped[1] += shaped[2]
    x = shaped[:2]
    p = sum(float(np.dot(ch, ch)) for ch in x) / x.size
    if p > 0:
        x *= np.float32(1.0 / math.sqrt(p))
    return x


def _slow_envelope(rng: np.random.Generator, n: int, rate_hz: float, depth: float) -> np.ndarray:
    """(n,) positive gain wandering at about ``rate_hz``: 1 - depth .. 1 + depth-ish."""
    knots = rng.standard_normal(max(2, int(n / SAMPLE_RATE * rate_hz * 2) + 2))
    x = np.interp(np.linspace(0, knots.size - 1, n), np.arange(knots.size), knots)
    return np.exp(depth * x)


def _place_event(out: np.ndarray, event: np.ndarray, start: int, rng: np.random.Generator) -> None:
    """Add a mono event to (2, n) ``out`` at ``start`` with a random level difference."""
    n = out.shape[1]
    stop = min(n, start + event.size)
    if stop <= start:
        return
    tilt = float(rng.uniform(-6.0, 6.0))
    out[0, start:stop] += event[: stop - start] * _db(-tilt / 2)
    out[1, start:stop] += event[: stop - start] * _db(tilt / 2)


def _door(rng: np.random.Generator) -> np.ndarray:
    """A door slam or a bucket: low thump plus a metallic ring, 0.2-1 s."""
    m = round(float(rng.uniform(0.2, 1.0)) * SAMPLE_RATE)
    t = np.arange(m) / SAMPLE_RATE
    thump = np.sin(2 * math.pi * rng.uniform(50, 150) * t) * np.exp(-t / rng.uniform(0.03, 0.1))
    ring = np.zeros(m)
    for _ in range(int(rng.integers(3, 7))):
        ring += np.sin(2 * math.pi * rng.uniform(400, 4000) * t + rng.uniform(0, 6.3)) * np.exp(
            -t / rng.uniform(0.05, 0.4)
        )
    click = band_noise(rng, m, (200.0, 10_000.0)) * np.exp(-t / 0.01)
    x = thump + float(rng.uniform(0.0, 0.5)) * ring + click
    return x / max(float(np.max(np.abs(x))), 1e-12)


def _bird(rng: np.random.Generator) -> np.ndarray:
    """A short trill of frequency sweeps within BIRD_BAND_HZ."""
    notes = int(rng.integers(1, 8))
    note = round(float(rng.uniform(0.04, 0.15)) * SAMPLE_RATE)
    gap = round(float(rng.uniform(0.03, 0.1)) * SAMPLE_RATE)
    out = np.zeros(notes * (note + gap))
    t = np.arange(note) / SAMPLE_RATE
    f_lo, f_hi = sorted(rng.uniform(*S.BIRD_BAND_HZ, size=2))
    sweep = f_hi + (f_lo - f_hi) * t / t[-1]
    tone = np.sin(2 * math.pi * np.cumsum(sweep) / SAMPLE_RATE) * np.sin(math.pi * t / t[-1])
    for i in range(notes):
        out[i * (note + gap) : i * (note + gap) + note] = tone
    return out


def _clicks(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Bamboo chewing: clicks 0.5-8 kHz every 0.15-0.4 s."""
    m = max(2, round(seconds * SAMPLE_RATE))
    noise = band_noise(rng, m, S.CHOMP_BAND_HZ)
    gate = np.zeros(m)
    t = 0.0
    while t < seconds:
        i = round(t * SAMPLE_RATE)
        k = np.arange(min(m - i, round(0.012 * SAMPLE_RATE)))
        gate[i : i + k.size] = np.exp(-k / 100.0) * rng.uniform(0.3, 1.0)
        t += float(rng.uniform(0.15, 0.4))
    return noise * gate


def _events(rng: np.random.Generator, n: int, per_min: tuple[float, float]) -> np.ndarray:
    """Event onsets (samples) as a Poisson process with a rate drawn from ``per_min``."""
    rate = float(rng.uniform(*per_min)) / 60.0 / SAMPLE_RATE
    k = int(rng.poisson(rate * n))
    return np.sort(rng.integers(0, max(n, 1), k))


def background(room: RoomPlan, n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """(2, n) background at an arbitrary level: a room-tone floor plus ``room.background``.

    Returns the audio and a description of each source (for the sidecar).
    """
    freqs = np.maximum(np.arange(NOISE_FIR // 2 + 1) * (SAMPLE_RATE / NOISE_FIR), 1.0)
    pink = 1.0 / np.sqrt(freqs)
    brown = 1.0 / freqs
    highpass = 1.0 / np.sqrt(1.0 + (20.0 / freqs) ** 4)
    # stationary sources share one noise draw: independent Gaussian noises add in power
    power = (pink * highpass) ** 2 / np.mean((pink * highpass) ** 2)
    notes = ["room tone (pink)"]
    kinds = set(room.background)
    if "ventilation" in kinds:
        vent = (brown + 0.3 * pink) * highpass
        power += _db(float(rng.uniform(0, 10))) ** 2 * vent**2 / np.mean(vent**2)
        notes.append("ventilation")
    if "rain" in kinds:
        rain = pink / np.sqrt(1.0 + (500.0 / freqs) ** 2)
        power += _db(float(rng.uniform(0, 10))) ** 2 * rain**2 / np.mean(rain**2)
        notes.append("rain")
    if "traffic" in kinds:
        rumble = brown / np.sqrt(1.0 + (freqs / 400.0) ** 2) * highpass
        power += _db(float(rng.uniform(0, 10))) ** 2 * rumble**2 / np.mean(rumble**2)
        notes.append("traffic")
    out = _diffuse(rng, n, np.sqrt(power))
    floor = 1.0
    t = np.arange(n) / SAMPLE_RATE
    if "ventilation" in kinds:
        # mains harmonics: one 50-Hz period (882 samples) repeated
        period = np.arange(SAMPLE_RATE // MAINS_HZ) / SAMPLE_RATE
        cycle = sum(
            np.sin(2 * math.pi * MAINS_HZ * h * period + rng.uniform(0, 6.3)) / h
            for h in range(1, MAINS_HARMONICS + 1)
        )
        hum = np.tile(cycle, n // period.size + 1)[:n]
        fan = float(rng.uniform(80.0, 300.0))
        hum += np.sin(2 * math.pi * fan * t + 0.002 * np.cumsum(rng.standard_normal(n)))
        out += hum * _db(float(rng.uniform(-12.0, -3.0))) / math.sqrt(float(np.mean(hum**2)))
    if "wind" in kinds:
        gusts = _diffuse(rng, n, brown * highpass / np.sqrt(1.0 + (freqs / 300.0) ** 2))
        out += gusts * _slow_envelope(rng, n, 0.3, 0.8) * _db(float(rng.uniform(0, 10)))
        notes.append("wind")
    if "babble" in kinds:
        # several talkers: speech-shaped noise (300-3400 Hz) with a softened syllabic rhythm
        speech = pink / (1.0 + (300.0 / freqs) ** 4) / (1.0 + (freqs / 3400.0) ** 4)
        voices = _diffuse(rng, n, speech)
        syllables = _slow_envelope(rng, n, 4.0, 0.5)
        out += voices * syllables * _db(float(rng.uniform(-5.0, 5.0)))
        notes.append("speech babble")
    if "doors" in kinds:
        for start in _events(rng, n, S.DOOR_RATE_PER_MIN):
            level = _db(float(rng.uniform(*S.DOOR_LEVEL_DB))) * math.sqrt(floor)
            _place_event(out, _door(rng) * level, int(start), rng)
        notes.append("doors and buckets")
    if "birds" in kinds:
        for start in _events(rng, n, (5.0, 30.0)):
            _place_event(out, _bird(rng) * _db(float(rng.uniform(0.0, 15.0))), int(start), rng)
        notes.append("birds")
    if "chewing" in kinds:
        for start in _events(rng, n, (1.0, 4.0)):
            bout = _clicks(rng, float(rng.uniform(2.0, 10.0))) * _db(float(rng.uniform(0, 15)))
            _place_event(out, bout, int(start), rng)
        notes.append("bamboo chewing")
    if "traffic" in kinds and rng.random() < 0.5:
        for start in _events(rng, n, (20.0, 60.0)):
            _place_event(out, _door(rng)[: SAMPLE_RATE // 5] * 3.0, int(start), rng)
        notes.append("building work")
    return out, notes


# --- the whole recording -----------------------------------------------------------------------


def render(plan: EncounterPlan) -> tuple[np.ndarray, dict[str, object]]:
    """The encounter's stereo recording and the levels measured while mixing it.

    Returns
    -------
    audio : np.ndarray, shape (2, round(duration * SAMPLE_RATE)), float32, peak at
        ``plan.room.peak_dbfs``
    mix : dict of the measured levels (JSON-able)
    """
    room = plan.room
    n = round(plan.duration_s * SAMPLE_RATE)
    rng = np.random.default_rng(room.noise_seed)
    focal = place_calls(plan.calls, room, n)
    direct, excitation = focal.direct, focal.excitation
    call_power = interval_power(direct, plan.calls)
    neighbour_gain = 0.0
    if plan.neighbour_calls:
        others = place_calls(plan.neighbour_calls, room, n)
        other_power = interval_power(others.direct, plan.neighbour_calls)
        if other_power > 0 and call_power > 0:
            neighbour_gain = math.sqrt(call_power / other_power) * _db(room.neighbour_level_db)
            direct += neighbour_gain * others.direct
            excitation += neighbour_gain * others.excitation
    wet = direct + reverberate(excitation, room_tails(room, rng))
    call_power = interval_power(wet, plan.calls)
    bg, sources = background(room, n, rng)
    if call_power > 0:
        bg *= math.sqrt(call_power / floor_power(bg) * 10.0 ** (-room.snr_db / 10.0))
    else:  # no calls at all: the background alone, at an ordinary level
        bg *= 1e-3 / math.sqrt(floor_power(bg))
    mix = wet + bg
    clipped = []
    for call in plan.calls:
        if call.clipped_db > 0:
            a, b = round(call.onset_s * SAMPLE_RATE), round(call.offset_s * SAMPLE_RATE)
            limit = float(np.max(np.abs(mix[:, a:b]))) * _db(-call.clipped_db)
            np.clip(mix[:, a:b], -limit, limit, out=mix[:, a:b])
            clipped.append(call.onset_s)
    mix *= _db(room.peak_dbfs) / max(float(np.max(np.abs(mix))), 1e-30)
    mix += rng.standard_normal(mix.shape, dtype=np.float32) * np.float32(_db(room.self_noise_dbfs))
    levels = {
        "call_power_db": 10.0 * math.log10(max(call_power, 1e-30)),
        "neighbour_gain": neighbour_gain,
        "background_sources": sources,
        "clipped_call_onsets_s": clipped,
    }
    return mix.astype(np.float32), levels
