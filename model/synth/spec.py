"""The numbers of ``SYNTH.md``, named once. Sections refer to that spec.

Values marked ✔ in the spec follow published work (direction of the cue); the rest are its
estimates (EST). Where the spec leaves a number open, the value chosen here says so with
"(choice)" and the reason. Units: Hz, seconds, dB, degrees, metres unless a name says otherwise.
The paper-wide constants (sample rate, channels) live in ``model.constants``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GENERATOR_VERSION: Final = "1.1.0"
"""Bumped whenever the same seed would give different audio or annotations."""

# --- §1 one call -------------------------------------------------------------------------------
MAX_HARMONICS: Final = 60
NYQUIST_FRACTION: Final = 0.45
"""K = min(MAX_HARMONICS, floor(NYQUIST_FRACTION * fs / max f0)): no harmonic above 0.45 fs."""
DB_PER_OCTAVE_PER_POWER: Final = 6.02
"""Harmonic k has amplitude k ** (tilt / 6.02) for a (negative) tilt in dB/octave."""
JITTER_CUTOFF_FRACTION: Final = 0.25
"""Jitter is Gaussian noise low-passed at F0 / 4."""
SHIMMER_CUTOFF_HZ: Final = 20.0
"""Shimmer is slow gain noise (choice: 20 Hz)."""
DEFAULT_JITTER_PCT: Final = (0.5, 2.0)
"""F0 jitter (% of F0) for types the spec gives no figure for (choice)."""
SHIMMER_PCT: Final = (2.0, 8.0)
"""Gain shimmer (% of amplitude, choice)."""
VIBRATO_DEPTH_PCT: Final = (1.0, 4.0)
"""FM depth for the bleat's 8-16 Hz vibrato (% of F0, choice)."""
UNDULATION_HZ: Final = (1.0, 3.0)
"""Rate of the moan's slow F0 undulation."""
JUMPS: Final = (1, 2)
JUMP_SIZE: Final = (0.1, 0.3)
"""The squeal's F0 jumps: how many, and their size in log F0 (either direction)."""
SUBHARMONIC_DB: Final = (-20.0, -6.0)
CHAOS_SPAN: Final = (0.2, 0.7)
"""Chaos (and subharmonic) episodes cover this fraction of the call."""
NLP_FADE_S: Final = 0.02
"""Cross-fade time into and out of a nonlinear episode."""
NOISE_BAND_HZ: Final = (100.0, 16_000.0)
N_FORMANTS: Final = 8
FORMANT_SCATTER: Final = 0.06
"""F_i = (2i - 1) dF / 2 * (1 + N(0, 0.06))."""
FORMANT_BW_BASE_HZ: Final = 60.0
FORMANT_BW_SLOPE: Final = 0.06
ENVELOPE_FLOOR_DB: Final = -30.0
FORMANT_SPACING_MALE_HZ: Final = (760.0, 970.0)
FORMANT_SPACING_FEMALE_HZ: Final = (875.0, 1100.0)
BLEAT_FORMANT_GAIN_DB: Final = {5: 12.0, 6: 6.0}
"""✔ F5 is the most prominent bleat formant."""
HONK_NOTCH_HZ: Final = (1200.0, 2500.0)
HONK_NOTCH_DEPTH_DB: Final = -20.0
HONK_NOTCH_BW_HZ: Final = 250.0
"""(choice) depth and width of the honk's nasal anti-resonance."""
ATTACK_FRACTION: Final = (0.05, 0.2)
"""Raised-cosine attack and release, as a fraction of the call (choice), at most ATTACK_MAX_S."""
ATTACK_MAX_S: Final = 0.08
INDIVIDUAL_F0_SPREAD: Final = 0.15
INDIVIDUAL_AM_SPREAD: Final = 0.20
INDIVIDUAL_TILT_SPREAD_DB: Final = 2.0
LEVEL_SPREAD_DB: Final = 3.0
"""Each call's level varies ±3 dB around its type's level."""
ANNOTATION_TOP_DB: Final = 40.0
"""A call's annotated high frequency is where its harmonics fall 40 dB below the first (choice)."""
CLIP_PROBABILITY: Final = 0.005
"""About 0.5 % of barks and roars are clipped."""
CLIP_OVERDRIVE_DB: Final = (3.0, 12.0)

# chomp and snort (non-vocal)
CHOMP_CLICKS: Final = (2, 8)
CHOMP_CLICK_S: Final = (0.005, 0.015)
CHOMP_BAND_HZ: Final = (500.0, 8000.0)
CHOMP_SPACING_S: Final = (0.12, 0.30)
SNORT_BAND_HZ: Final = (300.0, 4000.0)


@dataclass(frozen=True)
class CallType:
    """One row of SYNTH.md §2. Ranges are (low, high); log-normals are (median, sigma of log).

    ``f0`` None means the call has no F0 of its own (growl: ``pulse_rate``; chomp, snort).
    ``gap_s`` is the silence between calls of a bout; ``rate_per_s`` instead gives the onset
    rate inside a bout (chirp, bark, copulation call).
    """

    name: str
    callers: str
    """'M', 'F' or 'MF' (either animal)."""
    f0: tuple[float, float] | None
    f0_range: tuple[float, float] | None
    contours: tuple[str, ...]
    contour_depth: tuple[float, float]
    """|A| in log f0 units, drawn uniformly."""
    tilt_db: tuple[float, float]
    am_kind: str
    """'none', 'periodic', 'irregular' or 'pulsed'."""
    am_rate: tuple[float, float]
    am_depth: tuple[float, float]
    hnr_db: tuple[float, float]
    p_nlp: float
    nlp_kinds: tuple[str, ...]
    duration: tuple[float, float]
    duration_range: tuple[float, float]
    bout: tuple[int, int]
    gap_s: tuple[float, float] | None
    gap_lognormal: bool
    rate_per_s: tuple[float, float] | None
    level_db: float
    max_harmonics: int = MAX_HARMONICS
    fm: tuple[float, float] | None = None
    """Vibrato rate range (Hz), or None."""
    noise_band_hz: tuple[float, float] = NOISE_BAND_HZ
    vocal: bool = True


def _dur_range(median: float, sigma: float) -> tuple[float, float]:
    """A ±2.5 sigma guard where the spec gives no range (choice)."""
    return (
        round(median * 2.718281828 ** (-2.5 * sigma), 4),
        round(median * 2.718281828 ** (2.5 * sigma), 4),
    )


BLEAT_M = CallType(
    name="bleat_m", callers="M", f0=(230.0, 0.25), f0_range=(140.0, 420.0),
    contours=("arch", "flat"), contour_depth=(0.0, 0.1398), tilt_db=(-5.0, -3.0),
    am_kind="periodic", am_rate=(8.0, 16.0), am_depth=(0.3, 0.8), hnr_db=(6.0, 18.0),
    p_nlp=0.15, nlp_kinds=("subharmonics", "chaos"), duration=(1.0, 0.4),
    duration_range=(0.3, 3.0), bout=(1, 8), gap_s=(0.7, 0.4), gap_lognormal=True,
    rate_per_s=None, level_db=0.0, fm=(8.0, 16.0),
)  # fmt: skip
BLEAT_F = CallType(
    name="bleat_f", callers="F", f0=(290.0, 0.25), f0_range=(170.0, 500.0),
    contours=("arch", "flat"), contour_depth=(0.0, 0.1398), tilt_db=(-5.0, -3.0),
    am_kind="periodic", am_rate=(8.0, 16.0), am_depth=(0.27, 0.72), hnr_db=(6.0, 18.0),
    p_nlp=0.15, nlp_kinds=("subharmonics", "chaos"), duration=(0.9, 0.4),
    duration_range=(0.3, 3.0), bout=(1, 6), gap_s=(0.7, 0.4), gap_lognormal=True,
    rate_per_s=None, level_db=0.0, fm=(8.0, 16.0),
)  # fmt: skip
CHIRP = CallType(
    name="chirp", callers="F", f0=(1000.0, 0.25), f0_range=(600.0, 1800.0),
    contours=("arch",), contour_depth=(0.1, 0.2231), tilt_db=(-12.0, -12.0),
    am_kind="none", am_rate=(0.0, 0.0), am_depth=(0.0, 0.0), hnr_db=(15.0, 25.0),
    p_nlp=0.05, nlp_kinds=("subharmonics", "chaos"), duration=(0.25, 0.35),
    duration_range=_dur_range(0.25, 0.35), bout=(2, 10), gap_s=None, gap_lognormal=False,
    rate_per_s=(1.0, 4.0), level_db=-4.0, max_harmonics=12,
)  # fmt: skip
MOAN = CallType(
    name="moan", callers="MF", f0=(170.0, 0.3), f0_range=(90.0, 320.0),
    contours=("fall", "undulating"), contour_depth=(0.1, 0.3), tilt_db=(-9.0, -9.0),
    am_kind="periodic", am_rate=(2.0, 5.0), am_depth=(0.05, 0.2), hnr_db=(5.0, 15.0),
    p_nlp=0.3, nlp_kinds=("subharmonics", "chaos"), duration=(1.6, 0.4),
    duration_range=(0.6, 4.0), bout=(1, 3), gap_s=(1.0, 4.0), gap_lognormal=False,
    rate_per_s=None, level_db=-6.0,
)  # fmt: skip
HONK = CallType(
    name="honk", callers="M", f0=(300.0, 0.25), f0_range=None,
    contours=("flat", "fall"), contour_depth=(0.05, 0.15), tilt_db=(-9.0, -9.0),
    am_kind="none", am_rate=(0.0, 0.0), am_depth=(0.0, 0.0), hnr_db=(8.0, 15.0),
    p_nlp=0.1, nlp_kinds=("subharmonics", "chaos"), duration=(0.22, 0.3),
    duration_range=_dur_range(0.22, 0.3), bout=(1, 4), gap_s=(0.3, 1.0), gap_lognormal=False,
    rate_per_s=None, level_db=-6.0,
)  # fmt: skip
GROWL = CallType(
    name="growl", callers="MF", f0=None, f0_range=None,
    contours=("flat",), contour_depth=(0.0, 0.1), tilt_db=(-6.0, -6.0),
    am_kind="pulsed", am_rate=(15.0, 40.0), am_depth=(0.6, 0.9), hnr_db=(0.0, 6.0),
    p_nlp=0.5, nlp_kinds=("chaos",), duration=(1.2, 0.5),
    duration_range=_dur_range(1.2, 0.5), bout=(1, 3), gap_s=(0.3, 1.0), gap_lognormal=False,
    rate_per_s=None, level_db=-3.0, noise_band_hz=(250.0, 1500.0),
)  # fmt: skip
BARK = CallType(
    name="bark", callers="MF", f0=(450.0, 0.3), f0_range=None,
    contours=("fall",), contour_depth=(0.1, 0.3), tilt_db=(-4.0, -4.0),
    am_kind="none", am_rate=(0.0, 0.0), am_depth=(0.0, 0.0), hnr_db=(-2.0, 6.0),
    p_nlp=0.6, nlp_kinds=("chaos",), duration=(0.12, 0.35),
    duration_range=_dur_range(0.12, 0.35), bout=(1, 5), gap_s=None, gap_lognormal=False,
    rate_per_s=(2.0, 5.0), level_db=6.0,
)  # fmt: skip
ROAR = CallType(
    name="roar", callers="MF", f0=(260.0, 0.3), f0_range=None,
    contours=("arch",), contour_depth=(0.05, 0.25), tilt_db=(-4.0, -4.0),
    am_kind="irregular", am_rate=(5.0, 15.0), am_depth=(0.2, 0.5), hnr_db=(-3.0, 5.0),
    p_nlp=0.7, nlp_kinds=("chaos",), duration=(0.9, 0.4),
    duration_range=_dur_range(0.9, 0.4), bout=(1, 3), gap_s=(0.5, 1.5), gap_lognormal=False,
    rate_per_s=None, level_db=8.0,
)  # fmt: skip
SQUEAL = CallType(
    name="squeal", callers="MF", f0=(1100.0, 0.3), f0_range=(600.0, 2200.0),
    contours=("rise_jumps",), contour_depth=(0.1, 0.3), tilt_db=(-8.0, -8.0),
    am_kind="none", am_rate=(0.0, 0.0), am_depth=(0.0, 0.0), hnr_db=(3.0, 12.0),
    p_nlp=0.5, nlp_kinds=("subharmonics", "chaos"), duration=(0.5, 0.5),
    duration_range=_dur_range(0.5, 0.5), bout=(1, 4), gap_s=(0.2, 0.8), gap_lognormal=False,
    rate_per_s=None, level_db=2.0,
)  # fmt: skip
# Copulation calls: the spec gives their rhythm (0.5-1.5 per s) but no bout size; 1-4 (choice)
# keeps bouts short, so most mounting states carry at least one call.
COPULATION = CallType(
    name="copulation", callers="M", f0=(230.0 * 0.95, 0.25), f0_range=(140.0 * 0.95, 420.0 * 0.95),
    contours=("flat",), contour_depth=(0.0, 0.0), tilt_db=(-10.0, -10.0),
    am_kind="periodic", am_rate=(8.0, 16.0), am_depth=(0.2, 0.4), hnr_db=(4.0, 12.0),
    p_nlp=0.0, nlp_kinds=(), duration=(0.6, 0.3),
    duration_range=_dur_range(0.6, 0.3), bout=(1, 4), gap_s=None, gap_lognormal=False,
    rate_per_s=(0.5, 1.5), level_db=-12.0,
)  # fmt: skip
CHOMP = CallType(
    name="chomp", callers="MF", f0=None, f0_range=None, contours=("flat",),
    contour_depth=(0.0, 0.0), tilt_db=(0.0, 0.0), am_kind="none", am_rate=(0.0, 0.0),
    am_depth=(0.0, 0.0), hnr_db=(0.0, 0.0), p_nlp=0.0, nlp_kinds=(), duration=(0.0, 0.0),
    duration_range=(0.0, 0.0), bout=(1, 2), gap_s=(0.3, 1.0), gap_lognormal=False,
    rate_per_s=None, level_db=-10.0, noise_band_hz=CHOMP_BAND_HZ, vocal=False,
)  # fmt: skip
SNORT = CallType(
    name="snort", callers="MF", f0=None, f0_range=None, contours=("flat",),
    contour_depth=(0.0, 0.0), tilt_db=(0.0, 0.0), am_kind="none", am_rate=(0.0, 0.0),
    am_depth=(0.0, 0.0), hnr_db=(0.0, 0.0), p_nlp=0.0, nlp_kinds=(), duration=(0.25, 0.3),
    duration_range=_dur_range(0.25, 0.3), bout=(1, 2), gap_s=(0.3, 1.0), gap_lognormal=False,
    rate_per_s=None, level_db=-8.0, noise_band_hz=SNORT_BAND_HZ, vocal=False,
)  # fmt: skip

CALL_TYPES: Final = {
    c.name: c
    for c in (
        BLEAT_M,
        BLEAT_F,
        CHIRP,
        MOAN,
        HONK,
        GROWL,
        BARK,
        ROAR,
        SQUEAL,
        COPULATION,
        CHOMP,
        SNORT,
    )
}
"""Every call type, by the name used in annotations."""

# Cues of the female's receptivity rho (1 success, 0 failure, 0.5 atypical); direction ✔.
BLEAT_DURATION_CUE: Final = 0.25
BLEAT_F0_CUE: Final = 0.08
BLEAT_RATE_CUE: Final = 1.0
"""Bleat rate x (1 + rho): up to x 2."""
CHIRP_DURATION_CUE: Final = 0.2
CHIRP_JITTER_PCT: Final = ((1.0, 2.0), (2.0, 5.0))
"""Chirp jitter range at rho = 0 and at rho = 1 (interpolated between)."""
CHIRP_HNR_CUE_DB: Final = -5.0
CHIRP_COUNT_CUE: Final = 0.5
"""Chirps per bout x (1 + 0.5 rho)."""

# --- §2 levels are in CallType.level_db; §3 the encounter --------------------------------------
STATES: Final = ("AFF", "AMB", "AGG", "COP", "QUI")
STATE_MEAN_S: Final = 3.0
OCCUPANCY: Final = {
    "success": (0.55, 0.10, 0.03, 0.27, 0.05),
    "failure": (0.10, 0.30, 0.42, 0.0, 0.18),
}
ATYPICAL_RATE: Final = 0.08
"""h: probability that an encounter mixes both classes' occupancies (class overlap)."""
ATYPICAL_RHO: Final = 0.5
OUTCOMES: Final = ("success", "failure")

CALL_RATES: Final = {
    # calls per second in AFF, AMB, AGG, COP, QUI (both animals together)
    "bleat_m": (0.35, 0.15, 0.03, 0.10, 0.03),
    "bleat_f": (0.08, 0.04, 0.01, 0.05, 0.01),
    "chirp": (0.30, 0.08, 0.01, 0.20, 0.02),
    "moan": (0.02, 0.17, 0.08, 0.03, 0.02),
    "honk": (0.02, 0.05, 0.02, 0.0, 0.03),
    "growl": (0.01, 0.05, 0.12, 0.01, 0.005),
    "bark": (0.01, 0.04, 0.18, 0.005, 0.005),
    "roar": (0.005, 0.02, 0.15, 0.0, 0.0),
    "squeal": (0.01, 0.03, 0.08, 0.06, 0.0),
    "chomp_snort": (0.005, 0.04, 0.08, 0.0, 0.01),
    "copulation": (0.0, 0.0, 0.0, 0.60, 0.0),
}
REPLY_PROBABILITY: Final = (0.4, 0.2, 0.2, 0.2, 0.1)
"""Per state: the other animal answers a bout (AFF about 0.4 from the spec; the rest choice)."""
BOUTS_END_WITH_STATE: Final = False
"""(choice) A bout's later calls are dropped once its interaction state has ended."""
REPLY_CALLS: Final = 1
"""(choice) A reply is this many calls (0: a whole bout of the replying type)."""
REPLY_DELAY_S: Final = (0.2, 1.5)
MIN_OWN_GAP_S: Final = 0.05
"""One animal's calls never overlap: a call is pushed to at least this long after its last."""
QUIET_ACTIVE_S: Final = (20.0, 60.0)
QUIET_SPELL_S: Final = (15.0, 45.0)
"""Live-demo mode: calling periods and quiet spells alternate with these lengths (choice)."""

# --- §4 room -----------------------------------------------------------------------------------
SPEED_OF_SOUND: Final = 343.0
DISTANCE_M: Final = (2.0, 15.0)
AZIMUTH_DEG: Final = (-70.0, 70.0)
MAX_MOVE_DEG: Final = 20.0
COINCIDENT_SPACING_M: Final = (0.02, 0.20)
SPACED_PAIR_PROBABILITY: Final = 0.2
SPACED_MAX_ITD_S: Final = 1.7e-3
SPACED_SPACING_M: Final = (0.30, SPACED_MAX_ITD_S * SPEED_OF_SOUND)
CARDIOID_AIM_DEG: Final = (45.0, 55.0)
LOWPASS_BASE_HZ: Final = 16_000.0
LOWPASS_PER_M_HZ: Final = 500.0
PREDELAY_S: Final = (0.003, 0.020)
TAIL_CORRELATION: Final = (0.2, 0.6)
INDOOR_PROBABILITY: Final = 0.4
RT60_INDOOR_S: Final = (0.6, 1.8)
RT60_OUTDOOR_S: Final = (0.1, 0.4)
DRR_OUTDOOR_DB: Final = 10.0
DRR_INDOOR_DB: Final = 4.0
DRR_PER_M_DB: Final = -0.8
DRR_LIMITS_DB: Final = (-8.0, 12.0)
DECAY_60DB: Final = 6.91
"""ln(1000): exp(-6.91 t / RT60) falls 60 dB at RT60."""
DECORRELATION_HZ: Final = 200.0
"""Background is common to both channels below this frequency and independent above."""
BACKGROUND_SOURCES: Final = (1, 4)
NEIGHBOUR_PROBABILITY: Final = 0.6
"""(choice) neighbouring pandas are heard in this share of recordings, whatever the class."""
NEIGHBOUR_LEVEL_DB: Final = (-25.0, -10.0)
NEIGHBOUR_RATE_PER_S: Final = (0.03, 0.15)
NEIGHBOUR_BLEAT_SHARE: Final = 0.6
"""(choice) the rest of a neighbour's calls are chirps."""
NEIGHBOUR_DISTANCE_M: Final = (15.0, 40.0)
SELF_NOISE_DBFS: Final = (-75.0, -65.0)
DOOR_RATE_PER_MIN: Final = (1.0, 6.0)
DOOR_LEVEL_DB: Final = (20.0, 40.0)
BIRD_BAND_HZ: Final = (2000.0, 8000.0)
SNR_DB: Final = (0.0, 25.0)
HARD_PROBABILITY: Final = 0.15
HARD_SNR_DB: Final = (-5.0, 5.0)
PEAK_DBFS: Final = (-6.0, -1.0)
SNR_FRAME_S: Final = 0.05
"""The background's level for the SNR is the median power of frames this long (robust to doors)."""
BACKGROUND_KINDS: Final = {
    # kind: (probability indoors, probability outdoors); the spec fixes babble 0.3 and
    # traffic/building work 0.1; the rest are choices.
    "ventilation": (0.9, 0.2),
    "babble": (0.3, 0.3),
    "doors": (0.5, 0.3),
    "rain": (0.0, 0.3),
    "wind": (0.0, 0.5),
    "birds": (0.0, 0.6),
    "chewing": (0.3, 0.3),
    "traffic": (0.1, 0.1),
}
