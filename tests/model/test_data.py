"""Dataset building: annotations through crowsetta, bad rows reported and skipped, the cache."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model import constants as C
from model import data as D
from model.errors import DataError

SR = C.SAMPLE_RATE
RAVEN_HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\n"


def write_wav(path: Path, seconds: float, *, freq: float = 440.0, seed: int = 0) -> None:
    """A stereo 44.1 kHz tone in noise, different in each channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    left = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    right = 0.2 * np.sin(2 * np.pi * 1.5 * freq * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), SR)


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> None:
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_folder(folder: Path, n: int = 4, seconds: float = 4.5) -> Path:
    """n whole-file recordings alternating success/failure, two per encounter."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"rec{i:02d}.wav"
        write_wav(folder / name, seconds, freq=300.0 + 150 * (i % 2), seed=i)
        rows.append(
            {"recording": name, "encounter": f"e{i // 2}", "outcome": ("success", "failure")[i % 2]}
        )
    write_manifest(folder, rows)
    return folder


def test_raven_table_through_crowsetta_gives_the_right_segments(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", 5.0)
    (tmp_path / "a.Table.1.selections.txt").write_text(
        RAVEN_HEADER
        + "1\tSpectrogram 1\t1\t0.5\t1.25\t100.0\t5000.0\tbleat\n"
        + "2\tSpectrogram 1\t1\t1.5\t4.25\t100.0\t5000.0\tmoan\n"  # 2.75 s: one whole piece + 0.75 s tail
        + "3\tSpectrogram 1\t1\t3.0\t2.0\t100.0\t5000.0\tchirp\n"  # ends before it starts
        + "4\tSpectrogram 1\t1\t4.5\t6.0\t100.0\t5000.0\tbark\n"  # past the end of the 5-s file
    )
    write_manifest(tmp_path, [{"recording": "a.wav", "encounter": "e1", "outcome": "success"}])
    ds = D.build_dataset(tmp_path, use_detector=False)
    assert ds.starts.tolist() == [int(0.5 * SR), int(1.5 * SR), int(1.5 * SR) + C.SEGMENT_SAMPLES]
    assert ds.ends.tolist() == [int(1.25 * SR), int(3.5 * SR), int(4.25 * SR)]
    assert ds.call_types.tolist() == ["bleat", "moan", "moan"]
    assert ds.features.shape == (3, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)
    assert ds.summary["segmentation"] == {"annotations": 1}
    reasons = {s.item.split(" row ")[1].split(" ")[0]: s.reason for s in ds.skipped}
    assert "ends before it starts" in reasons["3"]
    assert "past the end" in reasons["4"]
    assert len(ds.summary["skipped"]) == 2


def test_audacity_label_track_through_crowsetta(tmp_path: Path) -> None:
    write_wav(tmp_path / "b.wav", 3.0)
    (tmp_path / "b.txt").write_text("0.25\t0.75\tchirp\n1.0\t2.9\tbleat\n2.5\t2.4\toops\n")
    write_manifest(tmp_path, [{"recording": "b.wav", "pair": "p1", "label": "failure"}])
    ds = D.build_dataset(tmp_path, use_detector=False)
    assert ds.starts.tolist() == [int(0.25 * SR), int(1.0 * SR)]
    assert ds.ends.tolist() == [int(0.75 * SR), int(2.9 * SR)]
    assert ds.call_types.tolist() == ["chirp", "bleat"]
    assert ds.groups.tolist() == ["p1", "p1"]
    assert [s.reason for s in ds.skipped] == ["ends before it starts"]
    assert ds.summary["columns"] == {"recording": "recording", "group": "pair", "label": "label"}


def test_bad_manifest_rows_are_reported_and_the_build_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_folder(tmp_path, n=2)
    write_manifest(
        tmp_path,
        [
            {"recording": "rec00.wav", "encounter": "e0", "outcome": "success"},
            {"recording": "rec01.wav", "encounter": "e1", "outcome": "failure"},
            {"recording": "missing.wav", "encounter": "e2", "outcome": "failure"},
            {"recording": "rec01.wav", "encounter": "e3", "outcome": ""},
            {"recording": "rec00.wav", "encounter": "e4", "outcome": "maybe"},
        ],
    )
    (tmp_path / "rec00.txt").write_text("not\ta label track\n")  # unreadable annotations
    with caplog.at_level("WARNING"):
        ds = D.build_dataset(tmp_path, use_detector=False)
    reasons = " | ".join(str(s) for s in ds.skipped)
    assert "missing.wav not found" in reasons
    assert "missing label" in reasons
    assert "unknown label 'maybe'" in reasons
    assert "cannot read rec00.txt as aud-seq" in reasons
    assert set(ds.recordings.tolist()) == {"rec01.wav"}
    assert ds.class_names == ("success", "failure")
    assert "missing.wav" in caplog.text


def test_class_names_come_from_the_data(tmp_path: Path) -> None:
    make_folder(tmp_path, n=2)
    write_manifest(
        tmp_path,
        [
            {"recording": "rec00.wav", "baby": "b1", "label": "pain"},
            {"recording": "rec01.wav", "baby": "b1", "label": "discomfort"},
        ],
    )
    ds = D.build_dataset(tmp_path, use_detector=False)
    assert ds.class_names == ("discomfort", "pain")  # sorted without 'success'
    assert ds.labels.tolist() == [1, 1, 1, 0, 0, 0]  # 4.5 s: two whole segments + a 0.5-s tail
    assert ds.summary["segmentation"] == {"tiling": 2}
    assert ds.summary["detector"] is None
    with pytest.raises(DataError, match="two-class"):
        write_manifest(
            tmp_path,
            [
                {"recording": "rec00.wav", "baby": "b1", "label": "a"},
                {"recording": "rec01.wav", "baby": "b1", "label": "b"},
                {"recording": "rec01.wav", "baby": "b2", "label": "c"},
            ],
        )
        D.build_dataset(tmp_path, use_detector=False)


def test_named_columns_and_clear_errors(tmp_path: Path) -> None:
    make_folder(tmp_path, n=2)
    with pytest.raises(DataError, match="no group column 'nope'"):
        D.build_dataset(tmp_path, group_col="nope")
    with pytest.raises(DataError, match=r"has no manifest\.csv"):
        (tmp_path / "empty").mkdir()
        D.build_dataset(tmp_path / "empty")
    ds = D.build_dataset(tmp_path, group_col="outcome", label_col="outcome", use_detector=False)
    assert sorted(set(ds.groups.tolist())) == ["failure", "success"]


def test_second_build_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path, n=3)
    cache = tmp_path / "cache"
    first = D.build_dataset(tmp_path, cache_dir=cache, use_detector=False)
    assert first.summary["cache"]["misses"] == 3 and first.summary["cache"]["hits"] == 0

    def no_compute(*_args: object, **_kw: object) -> np.ndarray:
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(D, "compute_features", no_compute)
    second = D.build_dataset(tmp_path, cache_dir=cache, use_detector=False)
    assert second.summary["cache"]["hits"] == 3 and second.summary["cache"]["misses"] == 0
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.starts, second.starts)
    monkeypatch.undo()
    # a changed recording (new content hash) is recomputed, the others still hit
    write_wav(tmp_path / "rec01.wav", 4.5, freq=1000.0, seed=9)
    third = D.build_dataset(tmp_path, cache_dir=cache, use_detector=False)
    assert third.summary["cache"] == {"dir": str(cache), "hits": 2, "misses": 1}


def test_combined_features_and_the_detector(tmp_path: Path) -> None:
    make_folder(tmp_path, n=2, seconds=2.5)
    comb = D.build_dataset(tmp_path, feature="combined", use_detector=False)
    assert comb.features.shape[1:] == (C.N_CHANNELS, C.N_FRAMES, C.COMBINED_FEATURES)
    mf = D.build_dataset(tmp_path, feature="mfcc", use_detector=False)
    np.testing.assert_allclose(comb.features[..., : C.N_MFCC], mf.features, atol=1e-3)


def test_without_annotations_the_detector_finds_the_call(tmp_path: Path) -> None:
    detector, source = D.find_detector()
    assert detector is not None, "model.detect should be found"
    rng = np.random.default_rng(0)
    audio = 0.001 * rng.standard_normal((2, 6 * SR))
    t = np.arange(SR) / SR
    audio[:, 3 * SR : 4 * SR] += 0.5 * np.sin(2 * np.pi * 600 * t)  # one 1-s call at 3 s
    sf.write(tmp_path / "c.wav", audio.T.astype(np.float32), SR)
    write_manifest(tmp_path, [{"recording": "c.wav", "encounter": "e", "outcome": "success"}])
    ds = D.build_dataset(tmp_path)
    assert ds.summary["segmentation"] == {"detector": 1}
    assert ds.summary["detector"] == "model.detect.detect_calls" and source
    assert len(ds) == 1
    assert abs(ds.starts[0] - 3 * SR) < 0.1 * SR and abs(ds.ends[0] - 4 * SR) < 0.3 * SR


def test_subsample_is_seeded(tmp_path: Path) -> None:
    ds = D.build_dataset(make_folder(tmp_path, n=4), use_detector=False)
    a, b = D.subsample(ds, 5, seed=3), D.subsample(ds, 5, seed=3)
    assert len(a) == 5 and a.starts.tolist() == b.starts.tolist()
    assert a.summary["subsampled"] == {"from": len(ds), "to": 5, "seed": 3}
    assert D.subsample(ds, None) is ds


def test_a_table_of_model_scores_beside_a_recording_is_not_read_as_annotations(
    tmp_path: Path,
) -> None:
    """``pandapulse predict --raven`` writes ``rec.wav.selections.txt`` beside the audio; a
    later ``train`` on the folder must not take the model's own verdicts for annotations."""
    from model.data import annotation_files
    from model.raven import PREDICTION_MARK, Selection, write_table

    recording = tmp_path / "rec.wav"
    recording.write_bytes(b"")
    scored = Selection(0.5, 1.5, 0.0, 11025.0, "failure", extra={PREDICTION_MARK: "v1"})
    write_table(tmp_path / "rec.wav.selections.txt", [scored], annotation_column="Verdict")
    assert annotation_files(recording) == ("", [])
    # a person's table beside it is still found, the scores' table still left out
    person = write_table(
        tmp_path / "rec.Table.1.selections.txt", [Selection(0.5, 1.5, 0.0, 11025.0, "bleat")]
    )
    assert annotation_files(recording) == ("raven", [person])
