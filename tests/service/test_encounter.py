"""Encounters: running probability, verdict threshold, auto open on a call, close on silence."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from model import aggregate
from model import constants as C
from service.encounter import EncounterBook, EncounterRules
from service.types import ClockTick
from tests.service.conftest import drain, scored

RULES = EncounterRules(
    auto=True, silence_close_samples=10 * C.SAMPLE_RATE, min_segments_for_verdict=3
)


def test_running_probability_and_verdict_threshold() -> None:
    book = EncounterBook(RULES)
    enc = book.track(1, "north", auto=False)
    assert enc.running_p_success is None and enc.verdict(3) is None
    values = [0.9, 0.2, 0.4]
    for i, p in enumerate(values[:2]):
        enc.add(p, (i + 1) * C.SEGMENT_SAMPLES)
        assert enc.verdict(3) is None  # not enough segments yet
    enc.add(values[2], 3 * C.SEGMENT_SAMPLES)
    assert enc.running_p_success == pytest.approx(aggregate.running_p_success(values))
    assert enc.verdict(3) == "uncertain"  # mean 0.5: within the default band 0.4-0.6
    assert enc.verdict(3, band=(0.5, 0.5)) == "failure"  # the paper's rule: 0.5 is not > 0.5
    assert enc.running_p(1) == pytest.approx(0.5) and enc.running_p(0) == pytest.approx(0.5)
    enc.add(1.0, 4 * C.SEGMENT_SAMPLES)
    assert enc.verdict(3) == "success" and enc.running_p(1) == pytest.approx(0.375)


def test_running_probability_removes_the_scoring_models_training_share() -> None:
    book = EncounterBook(RULES, class0_share=0.62)
    enc = book.track(1, "north", auto=False, p_success=[0.8, 0.3])
    assert enc.running_p_success == aggregate.running_p_success([0.8, 0.3], 0.62)
    enc.add(0.55, C.SEGMENT_SAMPLES, 0.62)
    # mean 0.55 (success by the mean) but below the training share: the calls lean to failure
    assert enc.running_p_success == pytest.approx(
        aggregate.running_p_success([0.8, 0.3, 0.55], 0.62)
    )
    assert enc.verdict(3, band=(0.5, 0.5)) == "failure"
    # a model without a recorded share (an older checkpoint) scores by the mean
    enc.add(0.55, 2 * C.SEGMENT_SAMPLES, None)
    assert enc.running_p_success == pytest.approx(0.55)


def test_silence_closes_only_automatic_encounters() -> None:
    book = EncounterBook(RULES)
    auto = book.track(1, "north", auto=True)
    manual = book.track(2, "south", auto=False)
    auto.add(0.5, 100)
    manual.add(0.5, 100)
    assert book.silent("north", 100 + RULES.silence_close_samples - 1) is None
    assert book.silent("north", 100 + RULES.silence_close_samples) is auto
    assert book.silent("south", 10**9) is None
    assert book.needs_auto_open("east") and not book.needs_auto_open("north")


def test_monitor_auto_open_and_silence_close(monitor_factory: Any) -> None:
    monitor, hub = monitor_factory(encounter={"silence_close_s": 10, "min_segments_for_verdict": 2})
    for t, p in [(1.0, 0.8), (3.0, 0.6), (5.0, 0.7)]:
        monitor.on_segment(scored("north", t, p))
    drain(monitor)
    started = hub.of_type("encounter")
    assert [m.action for m in started] == ["started", "updated"]  # verdict appears at 2 segments
    enc_id = started[0].encounter.id
    assert started[0].encounter.auto is True and started[0].encounter.enclosure == "North yard"
    segs = hub.of_type("segment")
    assert [s.encounter_id for s in segs] == [enc_id] * 3
    assert segs[-1].running_p_success == pytest.approx(0.7, abs=1e-4)

    # Clock ticks advance the sample clock: 10 s after the last segment's end, it closes.
    monitor.on_clock(ClockTick("north", int(8.0 * C.SAMPLE_RATE)))
    drain(monitor)
    assert hub.of_type("encounter")[-1].action == "updated"
    monitor.on_clock(ClockTick("north", int(17.5 * C.SAMPLE_RATE)))
    drain(monitor)
    last = hub.of_type("encounter")[-1]
    assert last.action == "stopped" and last.encounter.ended_at is not None
    assert last.encounter.n_segments == 3 and last.encounter.verdict == "success"

    # The next call opens a new encounter.
    monitor.on_segment(scored("north", 30.0, 0.1))
    drain(monitor)
    newest = hub.of_type("encounter")[-1]
    assert newest.action == "started" and newest.encounter.id != enc_id


def test_silence_gap_between_segments_splits_encounters(monitor_factory: Any) -> None:
    monitor, hub = monitor_factory(encounter={"silence_close_s": 10})
    monitor.on_segment(scored("north", 0.0, 0.5))
    monitor.on_segment(scored("north", 40.0, 0.5))  # no clock ticks in between
    drain(monitor)
    actions = [m.action for m in hub.of_type("encounter")]
    assert actions == ["started", "stopped", "started"]
    a, b = (s.encounter_id for s in hub.of_type("segment"))
    assert a != b


def test_keeper_encounter_replaces_auto_and_ignores_silence(monitor_factory: Any) -> None:
    monitor, hub = monitor_factory(encounter={"silence_close_s": 5})
    monitor.on_segment(scored("north", 0.0, 0.5))
    drain(monitor)
    auto_id = hub.of_type("encounter")[0].encounter.id
    row = asyncio.run(monitor.start_encounter("north", pair="Mei x Da", keeper="Li"))
    assert row.auto is False and row.pair == "Mei x Da"
    assert [(m.action, m.encounter.id) for m in hub.of_type("encounter")] == [
        ("started", auto_id),
        ("stopped", auto_id),
        ("started", row.id),
    ]
    monitor.on_segment(scored("north", 3.0, 0.5))
    monitor.on_segment(scored("north", 100.0, 0.5))  # long silence: a keeper's encounter stays
    drain(monitor)
    assert {s.encounter_id for s in hub.of_type("segment")[1:]} == {row.id}
    stopped = asyncio.run(monitor.stop_encounter(row.id))
    assert stopped is not None and stopped.ended_at is not None and stopped.n_segments == 2


def test_no_auto_encounters_when_disabled(monitor_factory: Any) -> None:
    monitor, hub = monitor_factory(encounter={"auto": False})
    monitor.on_segment(scored("north", 0.0, 0.5))
    drain(monitor)
    assert hub.of_type("encounter") == []
    (seg,) = hub.of_type("segment")
    assert seg.encounter_id is None and seg.running_p_success is None


def test_open_keeper_encounter_survives_restart(monitor_factory: Any) -> None:
    monitor, _ = monitor_factory()
    row = asyncio.run(monitor.start_encounter("north"))
    monitor.on_segment(scored("north", 0.0, 0.2))
    drain(monitor)
    monitor.stop()
    again, hub = monitor_factory()
    again.on_segment(scored("north", 0.0, 0.6))
    drain(again)
    (seg,) = hub.of_type("segment")
    assert seg.encounter_id == row.id and seg.running_p_success == pytest.approx(0.4, abs=1e-4)


def test_monitor_scores_encounters_by_the_rule_of_the_model_that_scored_them(
    monitor_factory: Any,
) -> None:
    rules = {"min_segments_for_verdict": 3, "uncertain_band": (0.45, 0.55)}
    monitor, hub = monitor_factory(class0_share=0.62, encounter=rules)
    row = asyncio.run(monitor.start_encounter("north"))
    for t, p in [(0.0, 0.8), (2.0, 0.3), (4.0, 0.55)]:
        monitor.on_segment(scored("north", t, p, class0_share=0.62))
    drain(monitor)
    expected = aggregate.running_series([0.8, 0.3, 0.55], 0.62)
    running = [s.running_p_success for s in hub.of_type("segment")]
    assert running == pytest.approx(expected.tolist(), abs=1e-4)
    stored = asyncio.run(monitor.encounter(row.id))
    assert stored is not None and stored.encounter.p_success == pytest.approx(expected[-1])
    # 0.440 by the calls' evidence, where the mean (0.55) would have said success
    assert stored.encounter.verdict == "failure"
    monitor.stop()
    # after a restart the open encounter is reloaded with the live model's share
    again, hub = monitor_factory(class0_share=0.62)
    again.on_segment(scored("north", 6.0, 0.6, class0_share=0.62))
    drain(again)
    (seg,) = hub.of_type("segment")
    assert seg.running_p_success == pytest.approx(
        aggregate.running_p_success([0.8, 0.3, 0.55, 0.6], 0.62), abs=1e-4
    )
