"""The public generator: one seed -> one synthetic encounter (plan + audio)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.synth import spec as S
from model.synth.encounter import EncounterPlan, Pair, PlannedCall, plan_encounter
from model.synth.room import render


@dataclass(frozen=True)
class SynthCall:
    """One annotated call of the focal pair. Times in s from the recording start, band in Hz."""

    onset_s: float
    offset_s: float
    caller: str
    """The animal's name: ``<pair>-M`` or ``<pair>-F``."""
    call_type: str
    """One of ``model.synth.CALL_TYPE_NAMES`` (bleat_m, bleat_f, chirp, ..., chomp, snort)."""
    low_hz: float
    high_hz: float


@dataclass(frozen=True)
class SynthEncounter:
    """A synthetic giant panda breeding encounter.

    Attributes
    ----------
    audio : np.ndarray, shape (2, round(duration_s * 44100)), float32, peak -6 to -1 dBFS
    calls : tuple of SynthCall, sorted by onset (the ground truth)
    outcome : 'success' or 'failure' (the label; atypical encounters keep their label)
    params : dict, JSON-able: every sampled parameter and call, and the mixing levels
    seed : int, the seed that reproduces it
    """

    audio: np.ndarray
    calls: tuple[SynthCall, ...]
    outcome: str
    params: dict[str, Any]
    seed: int


def annotations_of(plan: EncounterPlan) -> tuple[SynthCall, ...]:
    """The plan's focal calls as annotations (no audio needed)."""
    return tuple(_annotation(c) for c in plan.calls)


def _annotation(call: PlannedCall) -> SynthCall:
    return SynthCall(
        onset_s=call.onset_s,
        offset_s=call.offset_s,
        caller=call.caller,
        call_type=call.call_type,
        low_hz=call.low_hz,
        high_hz=call.high_hz,
    )


def encounter_from_plan(plan: EncounterPlan) -> SynthEncounter:
    """Render a plan (see ``plan_encounter``) into a ``SynthEncounter``."""
    audio, levels = render(plan)
    params = plan.to_dict()
    params["mix"] = levels
    return SynthEncounter(
        audio=audio,
        calls=annotations_of(plan),
        outcome=plan.outcome,
        params=params,
        seed=plan.seed,
    )


def generate_encounter(
    seed: int,
    *,
    outcome: str,
    duration_s: float = 30.0,
    quiet_spells: bool = False,
    pair: Pair | None = None,
    atypical_rate: float = S.ATYPICAL_RATE,
) -> SynthEncounter:
    """Generate one synthetic encounter; the same arguments give identical audio and calls.

    Parameters
    ----------
    seed : int >= 0
    outcome : 'success' or 'failure'
    duration_s : length of the recording (s); 30 for datasets, minutes for the live demo
    quiet_spells : alternate calling periods (20-60 s) with quiet spells (15-45 s), for the
        live demo; the background goes on throughout
    pair : the two animals (``sample_pair``); by default drawn from ``seed``
    atypical_rate : h, the share of class-overlap encounters (SYNTH.md §3, default 0.08)

    Cost on the 2-core development box: about 0.45 s of CPU per 30-s encounter; longer ones
    grow about linearly (a 5-min live-demo encounter: about 7 s of CPU and 1.3 GB peak memory),
    so a live source should generate a few minutes at a time.
    """
    plan = plan_encounter(
        seed,
        outcome=outcome,
        duration_s=duration_s,
        quiet_spells=quiet_spells,
        pair=pair,
        atypical_rate=atypical_rate,
    )
    return encounter_from_plan(plan)
