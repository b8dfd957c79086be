"""Synthetic giant panda breeding encounters (``../shared/SYNTH.md``): a generator, its files
and the ``pandapulse synth`` command.

Python API (stable; the live service's synthetic source uses it)::

    from model.synth import generate_encounter
    enc = generate_encounter(7, outcome="success", duration_s=30.0)
    enc.audio        # (2, 1323000) float32 at 44.1 kHz
    enc.calls        # tuple of SynthCall(onset_s, offset_s, caller, call_type, low_hz, high_hz)

``plan_encounter`` samples the same calls without rendering audio (fast; used for calibration).
"""

from __future__ import annotations

from model.synth.command import add_arguments, run, write_dataset
from model.synth.encounter import EncounterPlan, Individual, Pair, plan_encounter, sample_pair
from model.synth.generate import (
    SynthCall,
    SynthEncounter,
    annotations_of,
    encounter_from_plan,
    generate_encounter,
)
from model.synth.spec import ATYPICAL_RATE, CALL_TYPES, GENERATOR_VERSION

CALL_TYPE_NAMES: tuple[str, ...] = tuple(CALL_TYPES)

__all__ = [
    "ATYPICAL_RATE",
    "CALL_TYPE_NAMES",
    "GENERATOR_VERSION",
    "EncounterPlan",
    "Individual",
    "Pair",
    "SynthCall",
    "SynthEncounter",
    "add_arguments",
    "annotations_of",
    "encounter_from_plan",
    "generate_encounter",
    "plan_encounter",
    "run",
    "sample_pair",
    "write_dataset",
]
