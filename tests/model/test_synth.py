"""The synthetic encounter generator: determinism, ground truth that matches the audio,
class overlap, Raven tables through crowsetta, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import crowsetta
import numpy as np
import pytest
import soundfile as sf

from model.constants import SAMPLE_RATE
from model.synth import (
    CALL_TYPE_NAMES,
    SynthEncounter,
    annotations_of,
    generate_encounter,
    plan_encounter,
)
from model.synth import spec as S
from model.synth.calls import render_source, vocal_tract
from model.synth.command import plan_jobs, write_dataset, write_recording
from model.synth.encounter import PlannedCall, Position, sample_pair
from model.synth.room import channel_delays, channel_gains, reverberant_gain
from service.cli import main

SHORT_S = 8.0


@pytest.fixture(scope="module")
def short_encounter() -> SynthEncounter:
    return generate_encounter(11, outcome="success", duration_s=SHORT_S)


def test_same_seed_gives_identical_audio_and_calls(short_encounter: SynthEncounter) -> None:
    again = generate_encounter(11, outcome="success", duration_s=SHORT_S)
    assert np.array_equal(again.audio, short_encounter.audio)
    assert again.calls == short_encounter.calls
    assert json.dumps(again.params) == json.dumps(short_encounter.params)


def test_different_seed_gives_different_encounter(short_encounter: SynthEncounter) -> None:
    other = generate_encounter(12, outcome="success", duration_s=SHORT_S)
    assert not np.array_equal(other.audio, short_encounter.audio)
    assert other.calls != short_encounter.calls


def test_audio_format(short_encounter: SynthEncounter) -> None:
    audio = short_encounter.audio
    assert audio.dtype == np.float32
    assert audio.shape == (2, round(SHORT_S * SAMPLE_RATE))
    assert np.isfinite(audio).all()
    peak_db = 20 * math.log10(float(np.max(np.abs(audio))))
    assert S.PEAK_DBFS[0] - 0.1 <= peak_db <= S.PEAK_DBFS[1] + 0.1
    assert not np.array_equal(audio[0], audio[1])  # two different channels


def test_annotation_only_sampling_matches_rendered_calls(short_encounter: SynthEncounter) -> None:
    plan = plan_encounter(11, outcome="success", duration_s=SHORT_S)
    assert annotations_of(plan) == short_encounter.calls


def test_annotations_are_well_formed() -> None:
    for seed in range(60):
        duration = 30.0
        plan = plan_encounter(seed, outcome=S.OUTCOMES[seed % 2], duration_s=duration)
        by_caller: dict[str, float] = {}
        for call in plan.calls:
            assert 0.0 <= call.onset_s < call.offset_s <= duration
            assert 0.0 < call.low_hz < call.high_hz <= SAMPLE_RATE / 2
            assert call.call_type in CALL_TYPE_NAMES
            # one animal never overlaps itself
            assert call.onset_s >= by_caller.get(call.caller, -1.0)
            by_caller[call.caller] = call.offset_s
        assert list(plan.calls) == sorted(plan.calls, key=lambda c: (c.onset_s, c.caller))


def test_calls_are_louder_than_the_background_between_them() -> None:
    """On average the annotated intervals carry clearly more energy than the gaps."""
    margin = round(0.4 * SAMPLE_RATE)  # reverberation tails and formant ringing
    differences = []
    for seed in range(6):
        enc = generate_encounter(100 + seed, outcome=S.OUTCOMES[seed % 2], duration_s=12.0)
        n = enc.audio.shape[1]
        inside = np.zeros(n, dtype=bool)
        near = np.zeros(n, dtype=bool)
        for c in enc.calls:
            a, b = round(c.onset_s * SAMPLE_RATE), round(c.offset_s * SAMPLE_RATE)
            inside[a:b] = True
            near[max(0, a - margin) : b + margin] = True
        gaps = ~near
        if inside.sum() < SAMPLE_RATE // 4 or gaps.sum() < SAMPLE_RATE // 2:
            continue
        power = enc.audio.astype(np.float64) ** 2
        differences.append(10 * math.log10(power[:, inside].mean() / power[:, gaps].mean()))
    assert len(differences) >= 3
    assert float(np.mean(differences)) > 6.0


def test_class_overlap_rate_and_direction() -> None:
    n = 400
    stats = {o: {"atypical": 0, "copulation": 0, "aggressive": 0} for o in S.OUTCOMES}
    for i in range(n):
        outcome = S.OUTCOMES[i % 2]
        plan = plan_encounter(10_000 + i, outcome=outcome)
        types = [c.call_type for c in plan.calls]
        copulation = types.count("copulation")
        if outcome == "failure" and not plan.atypical:
            assert copulation == 0  # a typical failure never reaches mounting
        stats[outcome]["atypical"] += plan.atypical
        stats[outcome]["copulation"] += copulation
        stats[outcome]["aggressive"] += sum(t in ("bark", "roar", "growl") for t in types)
    atypical = (stats["success"]["atypical"] + stats["failure"]["atypical"]) / n
    assert 0.04 <= atypical <= 0.12  # h = 0.08, binomial sd 0.014
    assert stats["success"]["copulation"] > 3 * stats["failure"]["copulation"]
    assert stats["failure"]["aggressive"] > 3 * stats["success"]["aggressive"]


def test_atypical_encounters_follow_the_mixed_occupancy() -> None:
    plans = [plan_encounter(s, outcome="failure", atypical_rate=1.0) for s in range(40)]
    assert all(p.atypical and p.receptivity == S.ATYPICAL_RHO for p in plans)
    assert any("copulation" in (c.call_type for c in p.calls) for p in plans)
    assert all(not p.atypical for p in (plan_encounter(s, outcome="success", atypical_rate=0.0)
                                        for s in range(20)))  # fmt: skip


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        plan_encounter(1, outcome="maybe")
    with pytest.raises(ValueError, match="duration"):
        plan_encounter(1, outcome="success", duration_s=0.0)


def test_raven_table_reads_back_through_crowsetta(
    short_encounter: SynthEncounter, tmp_path: Path
) -> None:
    names = write_recording(short_encounter, tmp_path, "SYNTH_test")
    raven = crowsetta.formats.by_name("raven").from_file(
        tmp_path / names["annotation"], annot_col="Annotation"
    )
    boxes = raven.to_annot().bboxes
    assert len(boxes) == len(short_encounter.calls) > 0
    for box, call in zip(boxes, short_encounter.calls, strict=True):
        assert box.onset == pytest.approx(call.onset_s, abs=1e-5)
        assert box.offset == pytest.approx(call.offset_s, abs=1e-5)
        assert box.low_freq < box.high_freq
        assert box.label == call.call_type


def test_cli_end_to_end(tmp_path: Path) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        code = main(["synth", str(out), "--encounters", "2", "--seed", "5", "--duration", "4"])
        assert code == 0
    a, b = outs
    with open(a / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["outcome"] for r in rows] == ["success", "failure"]
    assert {"recording", "encounter", "pair", "outcome"} <= set(rows[0])
    assert "synthetic" in (a / "README.md").read_text().lower()
    for row in rows:
        assert row["recording"].startswith("SYNTH_")
        info = sf.info(a / row["recording"])
        assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 2, 4 * SAMPLE_RATE)
        with sf.SoundFile(a / row["recording"]) as f:
            assert "synthetic giant panda" in f.comment.lower()
            assert S.GENERATOR_VERSION in f.comment
        sidecar = json.loads((a / row["sidecar"]).read_text())
        assert sidecar["synthetic"] is True
        assert len(sidecar["calls"]) == int(row["n_calls"])
        for name in (row["recording"], row["annotation"], row["sidecar"]):
            assert (a / name).read_bytes() == (b / name).read_bytes()


def test_cli_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path), "--encounters", "0", "--seed", "1"]) == 2
    assert "--encounters" in capsys.readouterr().err


def test_pairs_recur_and_meet_with_both_outcomes(tmp_path: Path) -> None:
    jobs = plan_jobs(tmp_path, 12, 3, 30.0, S.ATYPICAL_RATE)
    pairs: dict[str, set[str]] = {}
    for job in jobs:
        pairs.setdefault(job.pair.pair_id, set()).add(job.outcome)
    assert len(pairs) == 4
    assert all(outcomes == set(S.OUTCOMES) for outcomes in pairs.values())
    assert sample_pair(9, "x") == sample_pair(9, "x") != sample_pair(10, "x")


# --- the physics of single parts ------------------------------------------------------------


def _first_call(call_type: str, *, nlp: str | None = None) -> PlannedCall:
    for seed in range(200):
        for call in plan_encounter(seed, outcome="success").calls:
            if call.call_type == call_type and (nlp is None or call.nlp == nlp):
                return call
    raise AssertionError(f"no {call_type} in 200 encounters")


def test_microphone_pair_geometry() -> None:
    mic = plan_encounter(1, outcome="success", duration_s=1.0).room.microphone
    left, right = channel_gains(60.0, mic)
    assert right > left  # a source on the right is louder in the right cardioid
    delay_left, delay_right = channel_delays(60.0, mic)
    assert delay_left > 0.0 == delay_right  # and reaches the right capsule first
    assert max(channel_delays(70.0, mic)) <= S.SPACED_MAX_ITD_S
    assert reverberant_gain(2.0, indoor=False) < reverberant_gain(15.0, indoor=True)


def test_bleat_envelope_makes_f5_most_prominent() -> None:
    bleat = _first_call("bleat_m")
    freqs = np.arange(0.0, 16_000.0, 5.0)
    env = vocal_tract(freqs, bleat)
    f5 = 4.5 * bleat.formant_spacing_hz * (1 + bleat.formant_scatter[4])
    assert freqs[np.argmax(env)] == pytest.approx(f5, rel=0.03)


def test_call_source_is_band_limited_and_follows_f0() -> None:
    chirp = _first_call("chirp", nlp="none")
    x = render_source(chirp)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    # the strongest component is the fundamental, near the chirp's median F0
    assert freqs[np.argmax(spectrum)] == pytest.approx(chirp.f0_hz, rel=0.35)
    # nothing above the noise band's top: no aliasing
    assert spectrum[freqs > S.NOISE_BAND_HZ[1] + 500].sum() < 1e-6 * spectrum.sum()


def test_positions_are_recorded_per_call() -> None:
    plan = plan_encounter(2, outcome="success")
    for call in plan.calls:
        assert isinstance(call.position, Position)
        assert S.DISTANCE_M[0] <= call.position.distance_m <= S.DISTANCE_M[1]
        assert S.AZIMUTH_DEG[0] <= call.position.azimuth_deg <= S.AZIMUTH_DEG[1]


def test_workers_do_not_change_the_output(tmp_path: Path) -> None:
    for workers, out in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        write_dataset(out, 2, seed=8, duration_s=3.0, workers=workers)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
