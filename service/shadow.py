"""Agreement between the active model and a shadow model over each source's current encounter.

``ShadowBook.add`` is called for every stored segment that carries a shadow score (from the
storage thread, in ``Monitor._store_segment``, so one writer); ``current`` is read from the
event loop for ``/stats``. Each tally is a frozen value replaced whole on every update, so a
reader always sees a consistent one without a lock.

Per segment, each model's verdict is ``model.aggregate.verdict`` of its own P(class 0) for
that segment (first class, second class or ``uncertain`` inside ``encounter.uncertain_band``);
each model's running figure is the encounter rule over the tallied segments, with its own
``class0_share``. A tally covers one source, one encounter and one shadow version: it starts
afresh when either changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from model import aggregate
from service.types import ShadowScore


@dataclass(frozen=True)
class Agreement:
    """What the two models said about one source's segments of one encounter."""

    shadow_version: str
    encounter_id: int | None
    segments: int = 0
    same_verdicts: int = 0
    abs_diff_sum: float = 0.0
    active_sum: float = 0.0
    shadow_sum: float = 0.0
    active_log_odds_sum: float = 0.0
    shadow_log_odds_sum: float = 0.0
    active_share: float | None = None
    shadow_share: float | None = None

    @property
    def share_same(self) -> float | None:
        """Share of segments on which both models gave the same verdict (0..1)."""
        return self.same_verdicts / self.segments if self.segments else None

    @property
    def mean_abs_diff(self) -> float | None:
        """Mean absolute difference of the two models' P(class 0)."""
        return self.abs_diff_sum / self.segments if self.segments else None

    @property
    def active_p_success(self) -> float | None:
        """The active model's running P(class 0) over these segments (the encounter rule)."""
        return aggregate.from_sums(
            self.active_sum, self.active_log_odds_sum, self.segments, self.active_share
        )

    @property
    def shadow_p_success(self) -> float | None:
        """The shadow model's, by the same rule with its own class-0 share."""
        return aggregate.from_sums(
            self.shadow_sum, self.shadow_log_odds_sum, self.segments, self.shadow_share
        )


class ShadowBook:
    """The current ``Agreement`` of every source (see the module docstring)."""

    def __init__(self, class_names: Sequence[str], band: tuple[float, float]) -> None:
        self.class_names = (str(class_names[0]), str(class_names[1]))
        self.band = band
        self._tallies: dict[str, Agreement] = {}

    def verdict(self, p_success: float) -> str | None:
        return aggregate.verdict(p_success, self.class_names, self.band)

    def add(
        self,
        source: str,
        encounter_id: int | None,
        p_active: float,
        shadow: ShadowScore,
        active_share: float | None = None,
    ) -> Agreement:
        """Tally one segment: the active model's P(class 0), scored by a model with
        ``active_share`` (its ``class0_share``), and the shadow's score of it."""
        tally = self._tallies.get(source)
        if (
            tally is None
            or tally.encounter_id != encounter_id
            or tally.shadow_version != shadow.model_version
        ):
            tally = Agreement(shadow.model_version, encounter_id)
        same = self.verdict(p_active) == self.verdict(shadow.p_success)
        tally = replace(
            tally,
            segments=tally.segments + 1,
            same_verdicts=tally.same_verdicts + int(same),
            abs_diff_sum=tally.abs_diff_sum + abs(p_active - shadow.p_success),
            active_sum=tally.active_sum + p_active,
            shadow_sum=tally.shadow_sum + shadow.p_success,
            active_log_odds_sum=tally.active_log_odds_sum + aggregate.log_odds(p_active),
            shadow_log_odds_sum=tally.shadow_log_odds_sum + aggregate.log_odds(shadow.p_success),
            active_share=active_share,
            shadow_share=shadow.class0_share,
        )
        self._tallies[source] = tally
        return tally

    def current(self, shadow_version: str) -> dict[str, Agreement]:
        """Each source's tally for ``shadow_version`` (sources without one are left out)."""
        tallies = dict(self._tallies)
        return {s: t for s, t in tallies.items() if t.shadow_version == shadow_version}
