"""Encounters: which segments belong together, and their running success probability.

An encounter is one meeting of a pair in one enclosure (one source). Keepers start and stop
them through the API; with ``encounter.auto`` on, the first call after silence opens one
automatically and ``silence_close_s`` of silence (measured on the source's sample clock, so
replays behave like live audio) closes it again. An encounter a keeper started is closed only
by a keeper.

The running probability is ``model.aggregate.running_p_success`` over the encounter's segments
(their evidence: mean log-odds of success less those of the ``class0_share`` of the model
that scored the latest segment; the mean P(success) for a model that does not record its
share); the verdict (``model.aggregate.verdict``) is withheld until
``min_segments_for_verdict`` segments.

This module holds no I/O: ``EncounterBook`` is the in-memory state of the open encounters,
owned by the monitor's worker thread (``service.monitor``), which stores what it decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from model import aggregate


@dataclass
class OpenEncounter:
    """An encounter in progress (mutable; owned by one thread).

    ``last_sample`` is the end sample index of its latest segment (None before any), the
    reference for closing on silence. ``class0_share`` is the encounter rule's prior: the
    share of class 0 among the training segments of the model that scored the latest segment
    (None: the mean rule).
    """

    id: int
    source: str
    auto: bool
    class_names: tuple[str, str] = ("success", "failure")
    p_success: list[float] = field(default_factory=list)
    last_sample: int | None = None
    class0_share: float | None = None

    @property
    def n_segments(self) -> int:
        return len(self.p_success)

    @property
    def running_p_success(self) -> float | None:
        return aggregate.running_p_success(self.p_success, self.class0_share)

    def running_p(self, column: int) -> float | None:
        """The running probability of class ``column`` (0 or 1); None before any segment."""
        p = self.running_p_success
        return None if p is None else (p if column == 0 else 1.0 - p)

    def verdict(
        self, min_segments: int, band: tuple[float, float] = aggregate.UNCERTAIN_BAND
    ) -> str | None:
        """The verdict (``uncertain`` within ``band``), or None until ``min_segments``
        segments were scored."""
        if self.n_segments < min_segments:
            return None
        return aggregate.verdict(self.running_p_success, self.class_names, band)

    def add(self, p_success: float, end_sample: int, class0_share: float | None = None) -> None:
        """Add a segment's P(class 0), scored by a model with ``class0_share``."""
        self.p_success.append(float(p_success))
        self.last_sample = end_sample
        self.class0_share = class0_share


@dataclass(frozen=True)
class EncounterRules:
    """The ``encounter`` settings this module needs, in samples where it helps."""

    auto: bool
    silence_close_samples: int
    min_segments_for_verdict: int
    uncertain_band: tuple[float, float] = aggregate.UNCERTAIN_BAND


class EncounterBook:
    """The open encounter of each source (at most one per source)."""

    def __init__(
        self,
        rules: EncounterRules,
        class_names: Sequence[str] = ("success", "failure"),
        class0_share: float | None = None,
    ) -> None:
        self.rules = rules
        self.class_names: tuple[str, str] = (class_names[0], class_names[1])
        self.class0_share = class0_share
        """The live model's at start: the prior of encounters reloaded after a restart."""
        self.reset()

    def reset(self) -> None:
        self._open: dict[str, OpenEncounter] = {}

    def get(self, source: str) -> OpenEncounter | None:
        return self._open.get(source)

    def by_id(self, encounter_id: int) -> OpenEncounter | None:
        return next((e for e in self._open.values() if e.id == encounter_id), None)

    def all(self) -> list[OpenEncounter]:
        return list(self._open.values())

    def track(
        self, encounter_id: int, source: str, *, auto: bool, p_success: Sequence[float] = ()
    ) -> OpenEncounter:
        """Start tracking an encounter that was just stored (or reloaded after a restart)."""
        enc = OpenEncounter(
            encounter_id,
            source,
            auto,
            self.class_names,
            [float(p) for p in p_success],
            class0_share=self.class0_share,
        )
        self._open[source] = enc
        return enc

    def forget(self, source: str) -> OpenEncounter | None:
        """Stop tracking ``source``'s encounter (it was stopped); returns it."""
        return self._open.pop(source, None)

    def silent(self, source: str, now_sample: int) -> OpenEncounter | None:
        """The source's automatic encounter if silence since its last segment reached
        ``silence_close_samples`` at ``now_sample``; the caller closes it."""
        enc = self._open.get(source)
        if enc is None or not enc.auto or enc.last_sample is None:
            return None
        if now_sample - enc.last_sample >= self.rules.silence_close_samples:
            return enc
        return None

    def needs_auto_open(self, source: str) -> bool:
        """True when a segment of ``source`` arrives with no encounter open and auto is on."""
        return self.rules.auto and source not in self._open
