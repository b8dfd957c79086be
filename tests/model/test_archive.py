"""``pandapulse predict`` on folders (``model.archive``): a small tree of synthetic and real
recordings with a corrupt file, scored into a results folder. Failures are listed and the run
goes on; a second run skips what is done; CSV and Parquet agree; local worker processes and a
real Dask ``LocalCluster`` with worker processes give the single-process results, file by file;
``--raven`` tables read back with crowsetta; a worker process that dies fails only its file."""

from __future__ import annotations

import csv
import os
import shutil
from collections import defaultdict
from pathlib import Path

import crowsetta
import numpy as np
import pytest
import soundfile as sf
import soxr

from model import archive, raven
from model import constants as C
from model.checkpoint import read_metadata
from model.errors import DataError
from service.cli import main

SR = C.SAMPLE_RATE
REAL_CALL = "real-calls/giant_panda_twittering.mp3"
TOL = 2e-3
"""Probabilities are written to 4 decimals; other thread counts round the float sums a little
differently, so runs agree to a few units of the last digit."""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """rec/ with WAV, FLAC at 48 kHz mono, an upper-case .WAV two folders down, a real MP3
    (a symlink into ../shared, never a copy), a corrupt file, a text file and a hidden folder."""
    from model.synth import generate_encounter

    root = tmp_path_factory.mktemp("archive") / "rec"
    (root / "site-b" / "2026").mkdir(parents=True)
    (root / ".cache").mkdir()
    a = generate_encounter(11, outcome="success", duration_s=10.0).audio
    b = generate_encounter(12, outcome="failure", duration_s=8.0).audio
    c = generate_encounter(13, outcome="success", duration_s=6.0).audio
    sf.write(root / "a.wav", a.T, SR, subtype="PCM_16")
    b48 = soxr.resample(np.ascontiguousarray(b[0]), SR, 48_000)
    sf.write(root / "site-b" / "b.flac", b48, 48_000, format="FLAC", subtype="PCM_16")
    sf.write(root / "site-b" / "2026" / "C.WAV", c.T, SR, subtype="PCM_16")
    (root / "site-b" / "twitter.mp3").symlink_to(shared_data / REAL_CALL)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(200)))
    (root / "notes.txt").write_text("field notes, not audio\n")
    sf.write(root / ".cache" / "hidden.wav", c.T, SR, subtype="PCM_16")
    return root


GOOD = ("a.wav", "site-b/2026/C.WAV", "site-b/b.flac", "site-b/twitter.mp3")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def by_file(out: Path) -> tuple[dict[str, dict[str, str]], dict[str, list[dict[str, str]]]]:
    files = {row["file"]: row for row in read_csv(out / "files.csv")}
    calls: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv(out / "calls.csv"):
        calls[row["file"]].append(row)
    return files, {f: sorted(rows, key=lambda r: float(r["start_s"])) for f, rows in calls.items()}


def predict(*args: str | Path | int) -> int:
    return main(["predict", *map(str, args)])


@pytest.fixture(scope="module")
def single(
    tree: Path, untrained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference: one process, fp32, into its own results folder."""
    out = tmp_path_factory.mktemp("single") / "results"
    rc = predict(
        tree, "--model", untrained_checkpoint, "--out", out, "--workers", 1, "--precision", "fp32"
    )
    assert rc == 0
    return out


def settings(model: Path) -> archive.Settings:
    return archive.Settings(model=str(model), precision="fp32", torch_threads=1)


def test_find_recordings_patterns_hidden_and_case(tree: Path) -> None:
    found = [
        os.path.relpath(t.path, tree)
        for t in archive.find_recordings([tree], archive.AUDIO_PATTERNS)
    ]
    assert found == sorted([*GOOD, "broken.wav"])  # no notes.txt, nothing from .cache
    assert [
        os.path.relpath(t.path, tree) for t in archive.find_recordings([tree], ["site-b/*.wav"])
    ] == ["site-b/2026/C.WAV"]
    assert [os.path.relpath(t.path, tree) for t in archive.find_recordings([tree], ["*.FLAC"])] == [
        "site-b/b.flac"
    ]
    # A file named directly is taken whatever its name; each file once.
    named = archive.find_recordings([tree / "notes.txt", tree, tree / "a.wav"], ["a.wav"])
    assert [os.path.basename(t.path) for t in named] == ["a.wav", "notes.txt"]
    with pytest.raises(DataError, match="no such file or folder"):
        archive.find_recordings([tree / "missing"], archive.AUDIO_PATTERNS)


def test_folder_run_scores_every_file_and_lists_the_failure(
    tree: Path, single: Path, untrained_checkpoint: Path
) -> None:
    files, calls = by_file(single)
    version = read_metadata(untrained_checkpoint)["model_version"]
    assert set(files) == {str(tree / g) for g in (*GOOD, "broken.wav")}
    broken = files[str(tree / "broken.wav")]
    assert broken["status"] == "failed" and "cannot decode" in broken["error"]
    assert broken["n_calls"] == "" and broken["p_success"] == ""
    for good in GOOD:
        row = files[str(tree / good)]
        assert row["status"] == "ok" and row["error"] == "", row
        assert row["model_version"] == version
        st = os.stat(tree / good)
        assert (row["size"], row["mtime_ns"]) == (str(st.st_size), str(st.st_mtime_ns))
        rows = calls.get(str(tree / good), [])
        assert int(row["n_calls"]) == len(rows)
        if rows:  # the recording's P(success) is the mean of its segments'
            mean = np.mean([float(r["p_success"]) for r in rows])
            assert float(row["p_success"]) == pytest.approx(mean, abs=1e-3)
            assert row["verdict"] in ("success", "failure", "uncertain")
        for r in rows:
            assert 0 <= float(r["start_s"]) < float(r["end_s"]) <= float(row["duration_s"])
            assert float(r["p_success"]) + float(r["p_failure"]) == pytest.approx(1, abs=2e-4)
            assert r["model_version"] == version
    assert files[str(tree / "site-b/b.flac")]["source_rate"] == "48000"
    assert files[str(tree / "site-b/b.flac")]["mono"] == "true"
    assert sum(len(v) for v in calls.values()) >= 6


def test_csv_and_parquet_agree(single: Path) -> None:
    import pyarrow.parquet as pq

    def text(value: object) -> str:  # as the CSV spells it
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    for name, columns in (("calls", archive.CALL_COLUMNS), ("files", archive.FILE_COLUMNS)):
        table = pq.read_table(single / f"{name}.parquet")
        assert tuple(table.column_names) == columns
        assert table.schema.field("file").type == "string"
        rows = [{k: text(v) for k, v in row.items()} for row in table.to_pylist()]
        assert rows == read_csv(single / f"{name}.csv")
        assert len(rows) >= 5
    files = pq.read_table(single / "files.parquet")
    assert str(files.schema.field("p_success").type) == "double"
    assert str(files.schema.field("mono").type) == "bool"


def test_second_run_skips_done_files_and_rescores_changed_ones(
    tree: Path,
    single: Path,
    untrained_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "results"
    shutil.copytree(single, out)
    before_files, before_calls = by_file(out)
    args = (
        tree,
        "--model",
        untrained_checkpoint,
        "--out",
        out,
        "--workers",
        1,
        "--precision",
        "fp32",
        "--json",
    )
    capsys.readouterr()
    assert predict(*args) == 0
    captured = capsys.readouterr()
    assert '"skipped": 4' in captured.out and '"scored": 0' in captured.out
    # the corrupt file is tried again, fails again, and is named on stderr
    assert f"{tree / 'broken.wav'}: cannot decode" in captured.err
    after_files, after_calls = by_file(out)
    assert after_calls == before_calls
    assert {f: r["status"] for f, r in after_files.items()} == {
        f: r["status"] for f, r in before_files.items()
    }
    # A changed file (new mtime) is scored again; an interrupted run's leftovers (calls without
    # their file's row) are dropped: no file has its calls twice.
    changed = tree / "a.wav"
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        rows = read_csv(out / "files.csv")
        with (out / "files.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, archive.FILE_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(r for r in rows if not r["file"].endswith("C.WAV"))
        assert predict(*args) == 0
        captured = capsys.readouterr()
        assert '"skipped": 2' in captured.out and '"scored": 2' in captured.out
        files, calls = by_file(out)
        assert files[str(changed)]["mtime_ns"] == str(st.st_mtime_ns + 1_000_000_000)
        assert sum(1 for r in read_csv(out / "files.csv")) == 5
        assert calls == before_calls
    finally:
        os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))


def compare(reference: Path, other: Path) -> None:
    ref_files, ref_calls = by_file(reference)
    files, calls = by_file(other)
    assert set(files) == set(ref_files)
    for file, ref in ref_files.items():
        row = files[file]
        for key in ("status", "n_calls", "duration_s", "source_rate", "mono", "size", "mtime_ns"):
            assert row[key] == ref[key], (file, key)
        if ref["p_success"]:
            assert float(row["p_success"]) == pytest.approx(float(ref["p_success"]), abs=TOL)
        assert len(calls.get(file, [])) == len(ref_calls.get(file, []))
        for got, want in zip(calls.get(file, []), ref_calls.get(file, []), strict=True):
            assert (got["start_s"], got["end_s"]) == (want["start_s"], want["end_s"])
            assert float(got["p_success"]) == pytest.approx(float(want["p_success"]), abs=TOL)


def test_worker_processes_and_a_dask_cluster_match_the_single_process_run(
    tree: Path, single: Path, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    version = read_metadata(untrained_checkpoint)["model_version"]
    local = archive.run_archive(
        [tree], tmp_path / "local", settings(untrained_checkpoint), model_version=version, workers=2
    )
    assert (local.scored, len(local.failed)) == (4, 1)
    compare(single, tmp_path / "local")
    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        assert len(cluster.workers) == 2
        on_dask = archive.run_archive(
            [tree], tmp_path / "dask", settings(untrained_checkpoint), model_version=version,
            scheduler=cluster.scheduler_address,
        )  # fmt: skip
    assert (on_dask.scored, len(on_dask.failed)) == (4, 1)
    assert "cannot decode" in on_dask.failed[0][1]
    compare(single, tmp_path / "dask")


def test_raven_tables_beside_each_file_read_back_with_crowsetta(
    tree: Path,
    single: Path,
    untrained_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "results"
    foreign = tree / "site-b" / "b.flac.selections.txt"  # a researcher's own table: kept
    foreign.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\n")
    try:
        rc = predict(
            tree, "--model", untrained_checkpoint, "--out", out, "--workers", 1,
            "--precision", "fp32", "--raven",
        )  # fmt: skip
        assert rc == 0
        files, calls = by_file(out)
        assert foreign.read_text().startswith("Selection\tView\tChannel\tBegin")
        for good in GOOD:
            path = str(tree / good)
            expected = Path(path + ".selections.txt")
            if good == "site-b/b.flac":
                expected = out / "raven" / (path.lstrip("/") + ".selections.txt")
            assert files[path]["raven"] == str(expected)
            assert raven.header(expected)[:7] == list(raven.STANDARD_COLUMNS)
            rows = calls.get(path, [])
            if not rows:  # a header alone: crowsetta reads no empty table
                assert len(expected.read_text().splitlines()) == 1
                continue
            table = crowsetta.formats.bbox.Raven.from_file(expected, annot_col="Verdict")
            boxes = table.to_bbox()
            assert [(b.onset, b.offset, b.label) for b in boxes] == [
                (float(r["start_s"]), float(r["end_s"]), r["verdict"]) for r in rows
            ]
            high = min(int(files[path]["source_rate"]), SR) / 2
            assert {(b.low_freq, b.high_freq) for b in boxes} == {(0.0, high)}
            assert list(table.df["P(success)"]) == [float(r["p_success"]) for r in rows]
            assert set(table.df["PandaPulse model"]) == {files[path]["model_version"]}
        assert files[str(tree / "broken.wav")]["raven"] == ""
        assert not Path(str(tree / "broken.wav") + ".selections.txt").exists()
        # A second run with --raven writes the tables of done files that lack one, from
        # calls.csv, without scoring them again: the same table.
        table = Path(str(tree / "a.wav") + ".selections.txt")
        before = table.read_text()
        table.unlink()
        capsys.readouterr()
        rc = predict(
            tree, "--model", untrained_checkpoint, "--out", out, "--workers", 1,
            "--precision", "fp32", "--raven", "--json",
        )  # fmt: skip
        assert rc == 0
        assert '"skipped": 4' in capsys.readouterr().out
        assert table.read_text() == before
        assert by_file(out)[0][str(tree / "a.wav")]["raven"] == str(table)
    finally:
        foreign.unlink()
        for table in tree.rglob("*.selections.txt"):
            table.unlink()


def test_a_single_file_with_raven(tree: Path, untrained_checkpoint: Path) -> None:
    target = tree / "a.wav"
    try:
        assert predict(target, "--model", untrained_checkpoint, "--raven") == 0
        assert raven.header(str(target) + ".selections.txt")[:7] == list(raven.STANDARD_COLUMNS)
    finally:
        Path(str(target) + ".selections.txt").unlink(missing_ok=True)


def _dies_on_b(path: str, settings: archive.Settings) -> archive.FileResult:
    """Scores like ``score_file`` but kills its worker process on b.flac (a decoder crash)."""
    if path.endswith("b.flac"):
        os._exit(9)
    return archive.FileResult(file=path, status=archive.OK, duration_s=1.0)


def test_a_dead_worker_fails_its_file_only(tree: Path, untrained_checkpoint: Path) -> None:
    paths = [t.path for t in archive.find_recordings([tree], archive.AUDIO_PATTERNS)]
    results = list(archive.score_local(paths, settings(untrained_checkpoint), 2, _dies_on_b))
    assert sorted(r.file for r in results) == sorted(paths)
    failed = [r for r in results if not r.ok]
    assert [r.file for r in failed] == [str(tree / "site-b" / "b.flac")]
    assert "worker process" in failed[0].error


def test_exit_status_and_bad_arguments(
    tree: Path, untrained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    shutil.copy(tree / "broken.wav", only_broken / "x.wav")
    model = ("--model", untrained_checkpoint)
    assert predict(only_broken, *model, "--out", tmp_path / "o1", "--workers", 1) == 1
    assert "x.wav: cannot decode" in capsys.readouterr().err
    # nothing to score, a missing folder, both schedulers: bad arguments
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict(empty, *model, "--out", tmp_path / "o2") == 2
    assert "no recordings matching" in capsys.readouterr().err
    assert predict(tmp_path / "nope", *model, "--out", tmp_path / "o3") == 2
    assert predict(tree, *model, "--workers", 2, "--scheduler", "tcp://127.0.0.1:1") == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        predict(tree, *model, "--workers", 0)
    assert exit_info.value.code == 2
    # a results folder of another model is refused, its results untouched
    out = tmp_path / "o4"
    out.mkdir()
    (out / "files.csv").write_text(
        ",".join(archive.FILE_COLUMNS) + "\n" + "/x.wav,1,1,1.0,false,44100,0,,,ok,,othermodel,\n"
    )
    before = (out / "files.csv").read_text()
    assert predict(tree, *model, "--out", out, "--workers", 1) == 2
    assert "othermodel" in capsys.readouterr().err
    assert (out / "files.csv").read_text() == before


def test_write_table_checks_its_input(tmp_path: Path) -> None:
    sel = raven.Selection(0.5, 1.0, 0.0, 22050.0, "success", {"Score": 0.5})
    with pytest.raises(ValueError, match=r"\.txt"):
        raven.write_table(tmp_path / "t.csv", [sel])
    with pytest.raises(ValueError, match="same extra columns"):
        raven.write_table(tmp_path / "t.selections.txt", [sel, raven.Selection(1, 2, 0, 1, "x")])
    with pytest.raises(ValueError, match="begin <= end"):
        raven.write_table(tmp_path / "t.selections.txt", [raven.Selection(2, 1, 0, 1, "x")])
    path = raven.write_table(tmp_path / "t.selections.txt", [sel], annotation_column="Label")
    back = crowsetta.formats.bbox.Raven.from_file(path, annot_col="Label").to_bbox()
    assert [(b.onset, b.offset, b.high_freq, b.label) for b in back] == [
        (0.5, 1.0, 22050.0, "success")
    ]


def test_default_workers_follow_cores_memory_and_device() -> None:
    cores = len(os.sched_getaffinity(0))
    assert 1 <= archive.default_workers() <= cores
    assert archive.default_workers("cuda") == 1
