"""The encounter as a plan: who calls what, when and where, sampled without rendering audio.

Everything random about an encounter except the noise waveforms is drawn here, so the call
annotations (and the calibration oracle) need no audio. ``model.synth.render`` turns a plan
into sound; each call carries its own ``noise_seed`` for that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from model.synth import spec as S
from model.synth.tract import formant_envelope


@dataclass(frozen=True)
class Individual:
    """One animal's fixed voice traits (SYNTH.md §1.7; identity lives in F0 and AM)."""

    name: str
    sex: str
    """'M' or 'F'."""
    f0_factor: float
    """Multiplies every F0 the animal makes (0.85 to 1.15)."""
    formant_spacing_hz: float
    am_rate_factor: float
    tilt_offset_db: float


@dataclass(frozen=True)
class Pair:
    """A male and a female that meet; ``pair_id`` names them in manifests."""

    pair_id: str
    male: Individual
    female: Individual


def sample_individual(rng: np.random.Generator, name: str, sex: str) -> Individual:
    if sex not in ("M", "F"):
        raise ValueError(f"sex must be 'M' or 'F', not {sex!r}")
    spacing = S.FORMANT_SPACING_MALE_HZ if sex == "M" else S.FORMANT_SPACING_FEMALE_HZ
    return Individual(
        name=name,
        sex=sex,
        f0_factor=float(1.0 + rng.uniform(-S.INDIVIDUAL_F0_SPREAD, S.INDIVIDUAL_F0_SPREAD)),
        formant_spacing_hz=float(rng.uniform(*spacing)),
        am_rate_factor=float(1.0 + rng.uniform(-S.INDIVIDUAL_AM_SPREAD, S.INDIVIDUAL_AM_SPREAD)),
        tilt_offset_db=float(
            rng.uniform(-S.INDIVIDUAL_TILT_SPREAD_DB, S.INDIVIDUAL_TILT_SPREAD_DB)
        ),
    )


def sample_pair(seed: int, pair_id: str) -> Pair:
    """The pair ``pair_id`` made from ``seed`` (the same arguments give the same animals)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A12]))
    return Pair(
        pair_id=pair_id,
        male=sample_individual(rng, f"{pair_id}-M", "M"),
        female=sample_individual(rng, f"{pair_id}-F", "F"),
    )


@dataclass(frozen=True)
class Position:
    """Where a caller is relative to the recorder: distance (m) and azimuth (deg, + right)."""

    distance_m: float
    azimuth_deg: float


@dataclass(frozen=True)
class PlannedCall:
    """One call with every parameter its audio needs. Times in s from the recording start."""

    onset_s: float
    offset_s: float
    caller: str
    """The individual's name (``Pair.male.name`` ...) or ``neighbour``."""
    sex: str
    call_type: str
    state: str
    position: Position
    f0_hz: float
    """Median F0 (growl: pulse rate; 0 for chomp and snort)."""
    contour: str
    contour_depth: float
    contour_sign: float
    fm_rate_hz: float
    fm_depth: float
    jitter: float
    """Relative F0 jitter (standard deviation as a fraction of F0)."""
    shimmer: float
    tilt_db: float
    n_harmonics: int
    am_rate_hz: float
    am_depth: float
    am_kind: str
    hnr_db: float
    nlp: str
    """'none', 'subharmonics' or 'chaos'."""
    nlp_start: float
    nlp_span: float
    subharmonic_db: float
    formant_spacing_hz: float
    formant_scatter: tuple[float, ...]
    notch_hz: float
    attack: float
    level_db: float
    clipped_db: float
    """0, or the overdrive (dB) at which the recorder clipped this call."""
    low_hz: float
    high_hz: float
    noise_seed: int
    truncated: bool = False

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s


@dataclass(frozen=True)
class Microphone:
    spaced: bool
    spacing_m: float
    aim_deg: float


@dataclass(frozen=True)
class RoomPlan:
    indoor: bool
    rt60_s: float
    predelay_s: float
    tail_correlation: float
    microphone: Microphone
    background: tuple[str, ...]
    neighbours: bool
    neighbour_level_db: float
    snr_db: float
    hard: bool
    peak_dbfs: float
    self_noise_dbfs: float
    noise_seed: int


@dataclass(frozen=True)
class EncounterPlan:
    """Everything sampled about one encounter (JSON-able through ``to_dict``)."""

    seed: int
    outcome: str
    atypical: bool
    receptivity: float
    duration_s: float
    pair: Pair
    states: tuple[tuple[str, float, float], ...]
    """(state, start s, end s) in time order."""
    calls: tuple[PlannedCall, ...]
    """The focal pair's calls, sorted by onset: the ground truth."""
    neighbour_calls: tuple[PlannedCall, ...]
    room: RoomPlan
    quiet_spells: bool
    atypical_rate: float
    generator_version: str = field(default=S.GENERATOR_VERSION)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["states"] = [list(s) for s in self.states]
        return out


# --- sampling helpers ----------------------------------------------------------------------------


def _lognormal(rng: np.random.Generator, median_sigma: tuple[float, float]) -> float:
    median, sigma = median_sigma
    return float(median * math.exp(sigma * rng.standard_normal()))


def _clip(x: float, bounds: tuple[float, float] | None) -> float:
    return x if bounds is None else min(max(x, bounds[0]), bounds[1])


def _mean_bout(key: str) -> float:
    """Mean calls per bout for a rate-table row (chomp and snort share one row).

    The receptivity cue on chirp counts is left out on purpose: fertile females make more
    chirps per bout at the same bout rate, so chirps per second grow x (1 + 0.5 rho).
    """
    lo, hi = S.CHOMP.bout if key == "chomp_snort" else S.CALL_TYPES[key].bout
    return (lo + hi) / 2


def _bout_size(rng: np.random.Generator, ct: S.CallType, rho: float) -> int:
    n = int(rng.integers(ct.bout[0], ct.bout[1] + 1))
    if ct.name == "chirp":
        n = max(1, round(n * (1.0 + S.CHIRP_COUNT_CUE * rho)))
    return n


def _gap(rng: np.random.Generator, ct: S.CallType, duration: float) -> float:
    """Time from one call's onset to the next one's inside a bout (s)."""
    if ct.rate_per_s is not None:
        return max(1.0 / rng.uniform(*ct.rate_per_s), duration + S.MIN_OWN_GAP_S)
    assert ct.gap_s is not None
    gap = _lognormal(rng, ct.gap_s) if ct.gap_lognormal else float(rng.uniform(*ct.gap_s))
    return duration + gap


def _harmonic_count(max_f0: float, limit: int) -> int:
    from model.constants import SAMPLE_RATE

    return int(max(1, min(limit, math.floor(S.NYQUIST_FRACTION * SAMPLE_RATE / max_f0))))


def sample_call(
    rng: np.random.Generator,
    ct: S.CallType,
    who: Individual,
    *,
    onset_s: float,
    state: str,
    position: Position,
    rho: float,
    caller: str | None = None,
) -> PlannedCall:
    """Draw every parameter of one call of type ``ct`` by ``who`` (SYNTH.md §1-2)."""
    chirp = ct.name == "chirp"
    bleat = ct.name.startswith("bleat")
    # duration
    if ct.name == "chomp":
        clicks = int(rng.integers(S.CHOMP_CLICKS[0], S.CHOMP_CLICKS[1] + 1))
        spacing = float(rng.uniform(*S.CHOMP_SPACING_S))
        duration = (clicks - 1) * spacing + S.CHOMP_CLICK_S[1]
        f0 = 0.0
        extra_f0 = float(clicks)  # stored in f0_hz for chomps: the click count
        fm_rate = spacing  # and the click spacing
    else:
        duration = _clip(_lognormal(rng, ct.duration), ct.duration_range)
        extra_f0 = 0.0
        fm_rate = 0.0
    if bleat:
        duration *= 1.0 + S.BLEAT_DURATION_CUE * rho
    if chirp:
        duration *= 1.0 + S.CHIRP_DURATION_CUE * rho
    # source
    if ct.f0 is not None:
        f0 = _clip(_lognormal(rng, ct.f0), ct.f0_range) * who.f0_factor
        if bleat:
            f0 *= 1.0 + S.BLEAT_F0_CUE * rho
    elif ct.name == "growl":
        f0 = float(rng.uniform(*ct.am_rate))
    elif ct.name != "chomp":
        f0 = 0.0
    contour = str(rng.choice(ct.contours))
    depth = float(rng.uniform(*ct.contour_depth)) if contour != "flat" else 0.0
    # a bleat's arch may bow either way (±15 %); chirps and roars rise then fall
    sign = float(rng.choice((-1.0, 1.0))) if bleat else 1.0
    fm_depth = 0.0
    if ct.fm is not None:
        fm_rate = float(rng.uniform(*ct.fm))
        fm_depth = float(rng.uniform(*S.VIBRATO_DEPTH_PCT)) / 100.0
    if contour == "undulating":
        fm_rate = float(rng.uniform(*S.UNDULATION_HZ))
    if chirp:
        lo = tuple(a + (b - a) * rho for a, b in zip(*S.CHIRP_JITTER_PCT, strict=True))
        jitter = float(rng.uniform(lo[0], lo[1])) / 100.0
    else:
        jitter = float(rng.uniform(*S.DEFAULT_JITTER_PCT)) / 100.0
    shimmer = float(rng.uniform(*S.SHIMMER_PCT)) / 100.0
    tilt = float(rng.uniform(*ct.tilt_db)) + who.tilt_offset_db
    # the contour's largest excursion bounds K (no aliasing); jumps add up to 30 %
    excursion = math.exp(depth) * (1.0 + fm_depth) * (1.0 + 4 * jitter)
    if contour == "rise_jumps":
        excursion *= 1.3
    max_f0 = max(f0, 1.0) * excursion
    n_harm = _harmonic_count(max_f0, ct.max_harmonics) if ct.vocal else 0
    # amplitude modulation
    am_kind = ct.am_kind
    am_rate = float(rng.uniform(*ct.am_rate)) * who.am_rate_factor if am_kind != "none" else 0.0
    if ct.name == "growl":
        am_rate = f0
    am_depth = float(rng.uniform(*ct.am_depth)) if am_kind != "none" else 0.0
    hnr = float(rng.uniform(*ct.hnr_db))
    if chirp:
        hnr += S.CHIRP_HNR_CUE_DB * rho
    # nonlinear phenomena
    nlp = "none"
    if ct.nlp_kinds and rng.random() < ct.p_nlp:
        nlp = str(rng.choice(ct.nlp_kinds))
    span = float(rng.uniform(*S.CHAOS_SPAN))
    start = float(rng.uniform(0.0, 1.0 - span))
    sub_db = float(rng.uniform(*S.SUBHARMONIC_DB))
    scatter = tuple(float(x) for x in rng.normal(0.0, S.FORMANT_SCATTER, S.N_FORMANTS))
    notch = float(rng.uniform(*S.HONK_NOTCH_HZ)) if ct.name == "honk" else 0.0
    attack = float(rng.uniform(*S.ATTACK_FRACTION))
    level = ct.level_db + float(rng.uniform(-S.LEVEL_SPREAD_DB, S.LEVEL_SPREAD_DB))
    clipped = 0.0
    if ct.name in ("bark", "roar") and rng.random() < S.CLIP_PROBABILITY:
        clipped = float(rng.uniform(*S.CLIP_OVERDRIVE_DB))

    def envelope(freqs: np.ndarray) -> np.ndarray:
        return formant_envelope(
            freqs, call_type=ct.name, spacing_hz=who.formant_spacing_hz, scatter=scatter,
            notch_hz=notch,
        )  # fmt: skip

    low, high = _band(ct, f0, depth, fm_depth, tilt, n_harm, nlp, envelope)
    return PlannedCall(
        onset_s=float(onset_s),
        offset_s=float(onset_s + duration),
        caller=caller or who.name,
        sex=who.sex,
        call_type=ct.name,
        state=state,
        position=position,
        f0_hz=f0 if ct.name != "chomp" else extra_f0,
        contour=contour,
        contour_depth=depth,
        contour_sign=sign,
        fm_rate_hz=fm_rate,
        fm_depth=fm_depth,
        jitter=jitter,
        shimmer=shimmer,
        tilt_db=tilt,
        n_harmonics=n_harm,
        am_rate_hz=am_rate,
        am_depth=am_depth,
        am_kind=am_kind,
        hnr_db=hnr,
        nlp=nlp,
        nlp_start=start,
        nlp_span=span,
        subharmonic_db=sub_db,
        formant_spacing_hz=who.formant_spacing_hz,
        formant_scatter=scatter,
        notch_hz=notch,
        attack=attack,
        level_db=level,
        clipped_db=clipped,
        low_hz=low,
        high_hz=high,
        noise_seed=int(rng.integers(0, 2**63 - 1)),
    )


def _band(
    ct: S.CallType,
    f0: float,
    depth: float,
    fm_depth: float,
    tilt: float,
    n_harm: int,
    nlp: str,
    envelope: Callable[[np.ndarray], np.ndarray],
) -> tuple[float, float]:
    """The annotated band (Hz): from just below the lowest F0 (or subharmonic) to the highest
    harmonic within ANNOTATION_TOP_DB of the strongest after tilt and formants; noise-like
    calls (chaos, growl noise) reach as far as their noise is within that range."""
    if not ct.vocal:
        return ct.noise_band_hz
    top = f0 * math.exp(depth) * (1.0 + fm_depth)
    lowest = f0 * math.exp(-depth) * (1.0 - fm_depth)
    if nlp == "subharmonics":
        lowest /= 2.0
    k = np.arange(1, max(n_harm, 1) + 1)
    level = tilt * np.log2(k) + 20.0 * np.log10(envelope(k * top))
    highest = top * float(k[level >= level.max() - S.ANNOTATION_TOP_DB].max())
    if nlp == "chaos" or ct.name == "growl":
        grid = np.linspace(*ct.noise_band_hz, 400)
        noise = 20.0 * np.log10(envelope(grid))
        highest = max(highest, float(grid[noise >= noise.max() - S.ANNOTATION_TOP_DB].max()))
    low = round(max(20.0, 0.9 * lowest), 1)
    high = round(min(S.NOISE_BAND_HZ[1], max(highest, low * 2.0)), 1)
    return low, high


# --- the encounter -----------------------------------------------------------------------------


def _occupancy(outcome: str, atypical: bool) -> np.ndarray:
    pi = np.array(S.OCCUPANCY[outcome], dtype=float)
    if atypical:
        pi = (np.array(S.OCCUPANCY["success"]) + np.array(S.OCCUPANCY["failure"])) / 2.0
    return pi / pi.sum()


def _active_periods(
    rng: np.random.Generator, duration_s: float, quiet_spells: bool
) -> list[tuple[float, float]]:
    if not quiet_spells:
        return [(0.0, duration_s)]
    periods = []
    t = 0.0
    while t < duration_s:
        end = min(duration_s, t + float(rng.uniform(*S.QUIET_ACTIVE_S)))
        periods.append((t, end))
        t = end + float(rng.uniform(*S.QUIET_SPELL_S))
    return periods


def _state_sequence(
    rng: np.random.Generator, pi: np.ndarray, periods: list[tuple[float, float]]
) -> list[tuple[str, float, float]]:
    out = []
    for start, end in periods:
        t = start
        while t < end:
            state = S.STATES[int(rng.choice(len(S.STATES), p=pi))]
            stop = min(end, t + float(rng.exponential(S.STATE_MEAN_S)))
            out.append((state, t, stop))
            t = stop
    return out


def _caller(rng: np.random.Generator, ct: S.CallType, pair: Pair) -> Individual:
    if ct.callers == "M":
        return pair.male
    if ct.callers == "F":
        return pair.female
    return pair.male if rng.random() < 0.5 else pair.female


def _type_for_rate(rng: np.random.Generator, key: str) -> S.CallType:
    if key == "chomp_snort":
        return S.CHOMP if rng.random() < 0.5 else S.SNORT
    return S.CALL_TYPES[key]


def _rate(key: str, state_index: int, rho: float) -> float:
    rate = S.CALL_RATES[key][state_index]
    if key.startswith("bleat"):
        rate *= 1.0 + S.BLEAT_RATE_CUE * rho
    return rate


Bout = tuple[float, float, str, S.CallType, Individual, bool]
"""A bout: onset (s), end of its state (s), state, call type, caller, is a reply."""


def _bouts(
    rng: np.random.Generator,
    states: list[tuple[str, float, float]],
    pair: Pair,
    rho: float,
) -> list[Bout]:
    """Bouts with replies, sorted by onset."""
    bouts: list[Bout] = []
    keys = list(S.CALL_RATES)
    for state, start, end in states:
        si = S.STATES.index(state)
        for key in keys:
            rate = _rate(key, si, rho) / _mean_bout(key)
            if rate <= 0.0:
                continue
            n = int(rng.poisson(rate * (end - start)))
            for onset in np.sort(rng.uniform(start, end, n)):
                ct = _type_for_rate(rng, key)
                bouts.append((float(onset), end, state, ct, _caller(rng, ct, pair), False))
    bouts.sort(key=lambda b: b[0])
    # replies: the other animal answers with a call its sex makes, weighted by the state's rates
    replies = []
    for onset, end, state, _ct, who, _reply in bouts:
        si = S.STATES.index(state)
        if rng.random() >= S.REPLY_PROBABILITY[si]:
            continue
        other = pair.female if who is pair.male else pair.male
        options = [
            k
            for k in keys
            if k != "chomp_snort"
            and S.CALL_TYPES[k].callers in ("MF", other.sex)
            and S.CALL_RATES[k][si] > 0
        ]
        if not options:
            continue
        weights = np.array([S.CALL_RATES[k][si] for k in options])
        key = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        delay = float(rng.uniform(*S.REPLY_DELAY_S))
        replies.append((onset + delay, end + delay, state, S.CALL_TYPES[key], other, True))
    bouts.extend(replies)
    bouts.sort(key=lambda b: b[0])
    return bouts


def _move(rng: np.random.Generator, pos: Position) -> Position:
    az = pos.azimuth_deg + float(rng.uniform(-S.MAX_MOVE_DEG, S.MAX_MOVE_DEG))
    return Position(pos.distance_m, float(np.clip(az, *S.AZIMUTH_DEG)))


def _sample_position(rng: np.random.Generator, distance: tuple[float, float]) -> Position:
    return Position(float(rng.uniform(*distance)), float(rng.uniform(*S.AZIMUTH_DEG)))


def _expand(
    rng: np.random.Generator,
    bouts: list[Bout],
    pair: Pair,
    rho: float,
    duration_s: float,
) -> list[PlannedCall]:
    positions = {
        pair.male.name: _sample_position(rng, S.DISTANCE_M),
        pair.female.name: _sample_position(rng, S.DISTANCE_M),
    }
    last_offset = {pair.male.name: -1.0, pair.female.name: -1.0}
    calls = []
    for onset, end, state, ct, who, reply in bouts:
        positions[who.name] = _move(rng, positions[who.name])
        t = onset
        size = _bout_size(rng, ct, rho)
        for k in range(S.REPLY_CALLS if reply and S.REPLY_CALLS else size):
            t = max(t, last_offset[who.name] + S.MIN_OWN_GAP_S)
            # a bout belongs to its state: it stops when the interaction changes
            if t >= duration_s - S.MIN_OWN_GAP_S or (k > 0 and t >= end and S.BOUTS_END_WITH_STATE):
                break
            call = sample_call(
                rng, ct, who, onset_s=t, state=state, position=positions[who.name], rho=rho
            )
            if call.offset_s > duration_s:
                call = _truncate(call, duration_s)
            calls.append(call)
            last_offset[who.name] = call.offset_s
            t = t + _gap(rng, ct, call.duration_s)
    calls.sort(key=lambda c: (c.onset_s, c.caller))
    return calls


def _truncate(call: PlannedCall, end_s: float) -> PlannedCall:
    from dataclasses import replace

    return replace(call, offset_s=float(end_s), truncated=True)


def _neighbour_calls(
    rng: np.random.Generator, duration_s: float, enabled: bool
) -> list[PlannedCall]:
    """Bleats and chirps of pandas in other enclosures: heard, never annotated."""
    if not enabled:
        return []
    neighbour = sample_individual(rng, "neighbour", "F" if rng.random() < 0.5 else "M")
    position = _sample_position(rng, S.NEIGHBOUR_DISTANCE_M)
    rate = float(rng.uniform(*S.NEIGHBOUR_RATE_PER_S))
    calls = []
    t = float(rng.exponential(1.0 / rate))
    while t < duration_s:
        bleat = S.BLEAT_M if neighbour.sex == "M" else S.BLEAT_F
        ct = bleat if rng.random() < S.NEIGHBOUR_BLEAT_SHARE else S.CHIRP
        rho = float(rng.random())
        call = sample_call(
            rng, ct, neighbour, onset_s=t, state="NEIGHBOUR", position=position, rho=rho,
            caller="neighbour",
        )  # fmt: skip
        if call.offset_s <= duration_s:
            calls.append(call)
        t = call.offset_s + float(rng.exponential(1.0 / rate))
    return calls


def _room(rng: np.random.Generator) -> RoomPlan:
    indoor = bool(rng.random() < S.INDOOR_PROBABILITY)
    spaced = bool(rng.random() < S.SPACED_PAIR_PROBABILITY)
    mic = Microphone(
        spaced=spaced,
        spacing_m=float(rng.uniform(*(S.SPACED_SPACING_M if spaced else S.COINCIDENT_SPACING_M))),
        aim_deg=float(rng.uniform(*S.CARDIOID_AIM_DEG)),
    )
    column = 0 if indoor else 1
    kinds = [k for k, p in S.BACKGROUND_KINDS.items() if rng.random() < p[column]]
    if not kinds:
        kinds = ["ventilation" if indoor else "wind"]
    if len(kinds) > S.BACKGROUND_SOURCES[1]:
        keep = rng.choice(len(kinds), S.BACKGROUND_SOURCES[1], replace=False)
        kinds = [kinds[i] for i in sorted(keep)]
    hard = bool(rng.random() < S.HARD_PROBABILITY)
    return RoomPlan(
        indoor=indoor,
        rt60_s=float(rng.uniform(*(S.RT60_INDOOR_S if indoor else S.RT60_OUTDOOR_S))),
        predelay_s=float(rng.uniform(*S.PREDELAY_S)),
        tail_correlation=float(rng.uniform(*S.TAIL_CORRELATION)),
        microphone=mic,
        background=tuple(kinds),
        neighbours=bool(rng.random() < S.NEIGHBOUR_PROBABILITY),
        neighbour_level_db=float(rng.uniform(*S.NEIGHBOUR_LEVEL_DB)),
        snr_db=float(rng.uniform(*(S.HARD_SNR_DB if hard else S.SNR_DB))),
        hard=hard,
        peak_dbfs=float(rng.uniform(*S.PEAK_DBFS)),
        self_noise_dbfs=float(rng.uniform(*S.SELF_NOISE_DBFS)),
        noise_seed=int(rng.integers(0, 2**63 - 1)),
    )


def plan_encounter(
    seed: int,
    *,
    outcome: str,
    duration_s: float = 30.0,
    quiet_spells: bool = False,
    pair: Pair | None = None,
    atypical_rate: float = S.ATYPICAL_RATE,
) -> EncounterPlan:
    """Sample one encounter's calls, positions and room (no audio; fast).

    Parameters
    ----------
    seed : int, >= 0; the same arguments always give the same plan
    outcome : 'success' or 'failure' (the label)
    duration_s : recording length (s), > 0
    quiet_spells : alternate calling periods with quiet spells (live demo)
    pair : the animals; by default a pair drawn from ``seed``
    atypical_rate : h, the probability of a class-overlap encounter (SYNTH.md §3)
    """
    if outcome not in S.OUTCOMES:
        raise ValueError(f"outcome must be one of {S.OUTCOMES}, not {outcome!r}")
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number of seconds, not {duration_s}")
    if not 0.0 <= atypical_rate <= 1.0:
        raise ValueError(f"atypical_rate must be within [0, 1], not {atypical_rate}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed}")
    if pair is None:
        pair = sample_pair(seed, f"P{seed}")
    rng_states, rng_calls, rng_room = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0x5EED]).spawn(3)
    )
    atypical = bool(rng_states.random() < atypical_rate)
    rho = S.ATYPICAL_RHO if atypical else (1.0 if outcome == "success" else 0.0)
    periods = _active_periods(rng_states, duration_s, quiet_spells)
    states = _state_sequence(rng_states, _occupancy(outcome, atypical), periods)
    bouts = _bouts(rng_states, states, pair, rho)
    calls = _expand(rng_calls, bouts, pair, rho, duration_s)
    room = _room(rng_room)
    neighbours = _neighbour_calls(rng_room, duration_s, room.neighbours)
    return EncounterPlan(
        seed=seed,
        outcome=outcome,
        atypical=atypical,
        receptivity=rho,
        duration_s=float(duration_s),
        pair=pair,
        states=tuple(states),
        calls=tuple(calls),
        neighbour_calls=tuple(neighbours),
        room=room,
        quiet_spells=quiet_spells,
        atypical_rate=atypical_rate,
    )
