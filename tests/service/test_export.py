"""Whole-encounter audio and the dataset export: live encounters on the synthetic source, their
outcomes recorded through the API, exported with the CLI, trained on with the CLI; the Raven
and Audacity downloads; retention of encounter audio; a crash's unfinished FLAC repaired."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml
from fastapi.testclient import TestClient

from model import checkpoint
from model import constants as C
from model.data import build_dataset, read_annotations
from service.api import create_app
from service.cli import main as cli
from service.config import load_settings
from service.encounter_audio import EncounterAudio, repair_flac
from service.storage import Storage
from service.types import AudioBlock
from tests.service.conftest import drain, scored

TOKEN = "export-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SR = C.SAMPLE_RATE
REPO = Path(__file__).resolve().parents[2]


def _config(root: Path, model: Path, **storage: Any) -> dict[str, Any]:
    return {
        "server": {"token": TOKEN},
        "sources": [
            # real time: what a sound card delivers (a lossless source would run far ahead of
            # inference, and a keeper's encounter would get segments cut before it started)
            {"id": "north", "enclosure": "North yard", "kind": "synthetic", "seed": 5},
        ],
        "inference": {"model": str(model), "device": "cpu", "max_batch": 16},
        "encounter": {"auto": False, "min_segments_for_verdict": 2},
        "storage": {"data_dir": str(root / "data"), **storage},
    }


def _wait_segments(client: TestClient, eid: int, n: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        enc = client.get(f"/api/encounters/{eid}", headers=AUTH).json()
        if enc["n_segments"] >= n:
            return
        assert time.monotonic() < deadline, f"encounter {eid} has {enc['n_segments']} segments"
        time.sleep(0.2)


def _encounter(client: TestClient, outcome: str | None, n: int = 3, **extra: Any) -> int:
    made = client.post(
        "/api/encounters",
        headers=AUTH,
        json={"source": "north", "pair": "Mei x Da", "keeper": "Li"},
    )
    assert made.status_code == 201, made.text
    eid = int(made.json()["id"])
    _wait_segments(client, eid, n)
    assert client.post(f"/api/encounters/{eid}/stop", headers=AUTH).status_code == 200
    if outcome is not None:
        r = client.put(
            f"/api/encounters/{eid}/outcome", headers=AUTH, json={"outcome": outcome, **extra}
        )
        assert r.status_code == 200, r.text
    return eid


@pytest.fixture(scope="module")
def season(tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint: Path) -> dict[str, Any]:
    """Three live encounters (success, failure, none recorded) on a running service, with its
    Raven/Audacity/zip answers taken before it stops."""
    root = tmp_path_factory.mktemp("season")
    config = _config(root, untrained_checkpoint)
    (root / "pandapulse.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    got: dict[str, Any] = {"root": root, "config": root / "pandapulse.yaml"}
    with TestClient(create_app(load_settings(environ={}, overrides=config))) as client:
        got["success"] = _encounter(client, "success", copulation_observed=True)
        got["failure"] = _encounter(client, "failure", copulation_observed=False)
        got["none"] = _encounter(client, None, n=1)
        eid = got["success"]
        got["detail"] = client.get(f"/api/encounters/{eid}", headers=AUTH).json()
        got["raven"] = client.get(f"/api/encounters/{eid}/calls.raven.txt", headers=AUTH)
        got["audacity"] = client.get(f"/api/encounters/{eid}/calls.audacity.txt", headers=AUTH)
        got["zip"] = client.get("/api/encounters/dataset.zip", headers=AUTH)
        got["one_zip"] = client.get(f"/api/encounters/{got['none']}/dataset.zip", headers=AUTH)
        got["refused"] = client.get("/api/encounters/dataset.zip")
        got["bad_since"] = client.get(
            "/api/encounters/dataset.zip", headers=AUTH, params={"since": "last spring"}
        )
        got["clips"] = {
            s["id"]: client.get(s["clip_url"], headers=AUTH).content
            for s in got["detail"]["segments"]
        }
    return got


def _manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_export_with_the_cli_then_train_on_it(season: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    assert cli(["export-dataset", str(out), "--config", str(season["config"])]) == 0
    rows = _manifest(out)
    by_encounter = {int(r["encounter"]): r for r in rows}
    assert set(by_encounter) == {season["success"], season["failure"]}
    ok = by_encounter[season["success"]]
    assert ok["outcome"] == "success" and ok["copulation_observed"] == "yes"
    assert ok["pair"] == "Mei x Da" and ok["keeper"] == "Li" and ok["enclosure"] == "North yard"
    assert by_encounter[season["failure"]]["copulation_observed"] == "no"
    skipped = list(csv.DictReader(io.StringIO((out / "skipped.csv").read_text())))
    assert [int(s["encounter"]) for s in skipped] == [season["none"]]
    assert "no outcome" in skipped[0]["reason"]

    # The audio is the encounter's as captured, sample-exact against the stored clips.
    info = sf.info(str(out / ok["recording"]))
    assert (info.samplerate, info.channels, info.format) == (SR, 2, "FLAC")
    assert info.frames == pytest.approx(float(ok["audio_seconds"]) * SR, abs=SR / 1000)
    audio, _ = sf.read(str(out / ok["recording"]), dtype="float32", always_2d=True)
    table = read_annotations("raven", out / ok["annotation"])
    assert len(table) == int(ok["calls"]) == season["detail"]["n_segments"]
    segments = {s["id"]: s for s in season["detail"]["segments"]}
    header = (out / ok["annotation"]).read_text().splitlines()[0].split("\t")
    assert {"P(success)", "Model version", "Segment"} <= set(header)
    for (begin, end, label), line in zip(
        table, (out / ok["annotation"]).read_text().splitlines()[1:], strict=True
    ):
        seg_id = int(dict(zip(header, line.split("\t"), strict=True))["Segment"])
        clip, _ = sf.read(io.BytesIO(season["clips"][seg_id]), dtype="float32", always_2d=True)
        piece = audio[round(begin * SR) : round(begin * SR) + len(clip)]
        assert label == "call" and end - begin == pytest.approx(len(clip) / SR, abs=1e-5)
        np.testing.assert_array_equal(piece, clip)
        assert segments[seg_id]["p_success"] == pytest.approx(
            float(dict(zip(header, line.split("\t"), strict=True))["P(success)"]), abs=1e-4
        )

    # Exporting again into the same folder refreshes it; a foreign folder is refused.
    assert cli(["export-dataset", str(out), "--config", str(season["config"])]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli(["export-dataset", str(foreign), "--config", str(season["config"])]) == 2
    assert (foreign / "notes.txt").read_text() == "mine"

    # train reads the folder unchanged: the stored segments, labelled by the outcomes.
    ckpt = tmp_path / "retrained.safetensors"
    code = cli(
        [
            "train",
            str(out),
            "--out",
            str(ckpt),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--no-progress",
            "--threads",
            "1",
            "--no-calibration",
        ]
    )
    assert code == 0 and ckpt.is_file()
    meta = checkpoint.read_metadata(ckpt)
    assert meta["class_names"] == ["success", "failure"]
    assert meta["data"]["segmentation"] == {"annotations": 2}
    assert meta["data"]["segments"] == sum(int(r["calls"]) for r in rows)
    # evaluate reads it too: the new model scored on the folder (annotations and detector).
    report = tmp_path / "report"
    args = ["--checkpoint", str(ckpt), "--out", str(report), "--threads", "1", "--no-progress"]
    code = cli(["evaluate", str(out), *args])
    assert code == 0 and (report / "test.json").is_file()


def test_all_includes_unlabelled_and_since_filters(season: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "all"
    assert cli(["export-dataset", str(out), "--all", "--config", str(season["config"])]) == 0
    rows = _manifest(out)
    assert {int(r["encounter"]) for r in rows} == {
        season["success"],
        season["failure"],
        season["none"],
    }
    assert next(r for r in rows if int(r["encounter"]) == season["none"])["outcome"] == ""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    empty = tmp_path / "empty"
    code = cli(
        ["export-dataset", str(empty), "--since", tomorrow, "--config", str(season["config"])]
    )
    assert code == 1 and _manifest(empty) == []


def test_history_downloads(season: dict[str, Any], tmp_path: Path) -> None:
    raven, audacity = season["raven"], season["audacity"]
    (part,) = season["detail"]["audio"]  # the History view says what is kept
    assert part["state"] == "kept" and part["seconds"] > 0 and part["file"].endswith(".flac")
    assert raven.status_code == 200 and audacity.status_code == 200
    n = season["detail"]["n_segments"]
    (tmp_path / "calls.Table.1.selections.txt").write_text(raven.text)
    selections = read_annotations("raven", tmp_path / "calls.Table.1.selections.txt")
    assert len(selections) == n and all(label == "call" for _, _, label in selections)
    assert "Audio file" in raven.text.splitlines()[0]
    (tmp_path / "labels.txt").write_text(audacity.text)
    labels = read_annotations("aud-seq", tmp_path / "labels.txt")
    assert [t for a, b, _ in labels for t in (a, b)] == pytest.approx(
        [t for a, b, _ in selections for t in (a, b)], abs=1e-5
    )
    assert season["refused"].status_code == 401
    assert season["bad_since"].status_code == 422

    # The History view's zip is the CLI's folder; train's reader takes it as it is.
    for key, expected in (
        ("zip", {season["success"], season["failure"]}),
        ("one_zip", {season["none"]}),
    ):
        answer = season[key]
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
        folder = tmp_path / key
        with zipfile.ZipFile(io.BytesIO(answer.content)) as zf:
            zf.extractall(folder)
        (root,) = list(folder.iterdir())
        assert {int(r["encounter"]) for r in _manifest(root)} == expected
        assert json.loads((root / "export.json").read_text())["recordings"] == len(expected)
    (root,) = list((tmp_path / "zip").iterdir())
    data = build_dataset(root, use_detector=False)
    assert data.class_names == ("success", "failure") and len(data) >= 6


# --- storage-level behaviour (no service) -------------------------------------------------------


def _blocks(source: str, seconds: float, *, start: int = 0, seed: int = 0) -> list[AudioBlock]:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    audio = (0.1 * rng.standard_normal((2, n))).astype(np.float32)
    return [AudioBlock(source, start + i, audio[:, i : i + 1024], 0.0) for i in range(0, n, 1024)]


def _clock(_source: str, sample: int) -> datetime:
    return datetime(2026, 3, 1, 8, 0, tzinfo=UTC) + timedelta(seconds=sample / SR)


def _recorder(storage: Storage, **kwargs: Any) -> EncounterAudio:
    """A recorder whose drains run at once on this thread (the storage thread stand-in)."""

    def offer(job: Any) -> bool:
        job(storage)
        return True

    audio = EncounterAudio(kwargs.pop("offer", offer), _clock, preroll_s=0, **kwargs)
    audio.add_source("north")
    return audio


def test_gaps_and_dropped_blocks_keep_the_file_aligned(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    enc = storage.create_encounter(source="north")
    stalled = [True]  # the storage thread is busy: drains are refused, the hand-off fills
    refused: list[Any] = []

    def offer(job: Any) -> bool:
        if stalled[0]:
            refused.append(job)
            return False
        job(storage)
        return True

    audio = _recorder(storage, offer=offer, handoff_s=0.1)
    audio.begin(storage, enc.id, "north", None)
    blocks = _blocks("north", 1.0)
    for block in blocks:
        audio.tap(block)
    assert refused and audio.dropped_blocks > 0
    kept = len(blocks) - audio.dropped_blocks
    stalled[0] = False
    audio.drain(storage, "north")  # the storage thread catches up
    later = _blocks("north", 0.5, start=blocks[-1].end + SR, seed=1)  # and a 1-s outage
    for block in later:
        audio.tap(block)
    audio.end(storage, enc.id)
    (part,) = storage.audio_parts_of(enc.id)
    data, _ = sf.read(str(storage.data_dir / part.path), dtype="float32", always_2d=True)
    assert part.frames == len(data) == later[-1].end and audio.dropped_blocks == len(blocks) - kept
    assert part.gap_samples == later[0].start - kept * 1024
    first = np.concatenate([b.audio for b in blocks[:kept]], axis=1).T
    np.testing.assert_allclose(data[: kept * 1024], first, atol=2**-23)
    assert not data[kept * 1024 : later[0].start].any()  # what is missing is silence
    want = np.concatenate([b.audio for b in later], axis=1).T
    np.testing.assert_allclose(data[later[0].start :], want, atol=2**-23)
    storage.close()


def test_a_write_error_keeps_what_was_written_and_stops_that_encounter(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    enc = storage.create_encounter(source="north")
    audio = _recorder(storage)
    audio.begin(storage, enc.id, "north", None)
    first = _blocks("north", 1.0)
    loud = AudioBlock("north", first[-1].end, np.full((2, 1024), 1.5, np.float32), 0.0)
    for block in [*first, loud]:
        audio.tap(block)
    audio.drain(storage, "north")
    assert loud.audio.max() == 1.5  # clipped in the file, not in the pipeline's block
    audio._writers[enc.id].file.close()  # the file goes away under the writer (a failing disk)
    for block in _blocks("north", 1.0, start=loud.end):
        audio.tap(block)
    assert audio.write_errors == 1 and not audio._writers
    audio.end(storage, enc.id)
    (part,) = storage.audio_parts_of(enc.id)
    data, _ = sf.read(str(storage.data_dir / part.path), dtype="float32", always_2d=True)
    assert part.finished_at is not None and part.frames == len(data) == loud.end
    assert data[first[-1].end :].min() == 1.0 - 2**-23  # full scale in 24 bits
    storage.close()


def test_retention_removes_encounter_audio(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    audio = _recorder(storage)
    ids = []
    for k in range(3):
        enc = storage.create_encounter(source="north")
        audio.begin(storage, enc.id, "north", None)
        for block in _blocks("north", 2.0, start=k * 10 * SR, seed=k):
            audio.tap(block)
        audio.end(storage, enc.id)
        storage.stop_encounter(enc.id)
        ids.append(enc.id)
    clip = storage.add_segment(
        encounter_id=ids[0],
        source="north",
        start_sample=0,
        end_sample=SR,
        wall_time=_clock("north", 0),
        p_success=0.5,
        p_failure=0.5,
        attention=np.zeros(C.N_FRAMES, np.float32),
        levels_db=(-30.0, -30.0),
        model_version="test",
        audio=_blocks("north", 1.0)[0].audio,
    )
    sizes = [storage.audio_parts_of(i)[0].size_bytes for i in ids]
    assert all(sizes) and storage.encounter_audio_bytes() == sum(sizes)
    # Over the disk budget: the oldest audio goes first (before any clip), its row says so.
    budget = sum(sizes) + storage.clips_bytes() - 1
    removed = storage.apply_retention(keep_days=30, max_disk_bytes=budget)
    assert removed.audio_files == 1 and removed.clips == 0 and removed.encounters == 0
    first = storage.audio_parts_of(ids[0])[0]
    assert first.removed_at is not None and not (tmp_path / first.path).exists()
    assert all((tmp_path / storage.audio_parts_of(i)[0].path).is_file() for i in ids[1:])
    assert storage.clip_file(clip.id) is not None
    # By age: the encounters go, with their segments, clips and audio.
    later = datetime.now(UTC) + timedelta(days=31)
    removed = storage.apply_retention(keep_days=30, max_disk_bytes=10**12, now=later)
    assert removed.encounters == 3 and removed.audio_files == 2 and removed.clips == 1
    assert storage.encounter_audio_bytes() == 0
    assert not any(storage.encounter_audio_dir.rglob("*"))
    storage.close()


CRASH = """
import os, sys
import numpy as np
from service.storage import Storage
from tests.service.test_export import _blocks, _recorder
storage = Storage(sys.argv[1])
enc = storage.create_encounter(source="north")
audio = _recorder(storage)
audio.begin(storage, enc.id, "north", None)
for block in _blocks("north", 3.0):
    audio.tap(block)
audio.drain(storage, "north")
os._exit(0)  # a crash: the FLAC is never finalised
"""


def test_a_crash_leaves_a_file_that_start_up_repairs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH), str(tmp_path)], cwd=REPO, check=True
    )
    storage = Storage(tmp_path)
    (part,) = storage.unfinished_audio_parts()
    with pytest.raises((sf.LibsndfileError, RuntimeError, ValueError, MemoryError)):
        sf.read(str(tmp_path / part.path))  # unreadable as it is: no length in its header
    done = _recorder(storage).recover(storage)
    assert len(done) == 1 and "recovered" in done[0]
    (fixed,) = storage.audio_parts_of(part.encounter_id)
    assert fixed.repaired and fixed.finished_at is not None
    data, _ = sf.read(str(tmp_path / fixed.path), dtype="float32", always_2d=True)
    written = np.concatenate([b.audio for b in _blocks("north", 3.0)], axis=1).T
    # Everything but the last FLAC frame (4096 samples) survives, bit for bit (24-bit).
    assert len(written) - 4096 <= len(data) == fixed.frames <= len(written)
    np.testing.assert_allclose(data, written[: len(data)], atol=2**-23)
    storage.close()


def test_repair_of_nothing_readable_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.flac"
    path.write_bytes(b"fLaC")
    assert repair_flac(path) == (0, 0) and not path.exists()


def test_audio_off_and_the_export_says_what_is_missing(
    tmp_path: Path, untrained_checkpoint: Path
) -> None:
    config = _config(tmp_path, untrained_checkpoint, keep_encounter_audio=False)
    with TestClient(create_app(load_settings(environ={}, overrides=config))) as client:
        eid = _encounter(client, "success", n=1)
        assert client.get(f"/api/encounters/{eid}", headers=AUTH).json()["audio"] == []
    storage = Storage(tmp_path / "data")
    assert storage.audio_parts_of(eid) == []
    storage.close()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert cli(["export-dataset", str(tmp_path / "out"), "--config", str(tmp_path / "c.yaml")]) == 1
    skipped = list(csv.DictReader((tmp_path / "out" / "skipped.csv").open()))
    assert [int(s["encounter"]) for s in skipped] == [eid]
    assert "not kept" in skipped[0]["reason"]


def test_doctor_says_how_many_hours_of_audio_fit(tmp_path: Path) -> None:
    from service.doctor import MIN_AUDIO_HOURS, check_encounter_audio

    def finding(**storage: Any) -> Any:
        settings = load_settings(
            environ={}, overrides={"storage": {"data_dir": str(tmp_path), **storage}}
        )
        (only,) = list(check_encounter_audio(settings.storage))
        return only

    # A budget larger than the disk: the disk fills before retention starts.
    beyond = finding(max_disk_mb=2**40)
    assert not beyond.ok and "max_disk_mb" in beyond.fix
    # A budget that holds too few hours.
    short = finding(max_disk_mb=MIN_AUDIO_HOURS * 100)
    assert not short.ok and "keep_encounter_audio" in short.fix
    off = finding(keep_encounter_audio=False)
    assert off.ok and "not kept" in off.detail


def test_an_automatic_encounter_keeps_audio_from_its_first_segment(monitor_factory: Any) -> None:
    """The detector opens an encounter once its first segment is scored, seconds after the
    call began: the pre-roll puts that call's audio at the start of the file."""
    monitor, _hub = monitor_factory(encounter={"auto": True})
    blocks = _blocks("north", 6.0)
    for block in blocks[: len(blocks) // 2]:  # 3 s of audio, no encounter yet
        monitor.audio.tap(block)
    monitor.on_segment(scored("north", 1.0, 0.7))  # a call at 1 s, scored now
    drain(monitor)
    for block in blocks[len(blocks) // 2 :]:
        monitor.audio.tap(block)
    monitor.stop()  # closes the automatic encounter: its file is finalised
    storage = Storage(monitor.settings.storage.data_dir)
    (enc,) = storage.all_encounters()
    (part,) = storage.audio_parts_of(enc.id)
    assert part.start_sample <= SR < part.start_sample + 1024  # the block holding 1.0 s
    assert part.start_sample + part.frames == blocks[-1].end and part.gap_samples == 0
    data, _ = sf.read(str(storage.data_dir / part.path), dtype="float32", always_2d=True)
    want = np.concatenate([b.audio for b in blocks], axis=1).T[part.start_sample :]
    np.testing.assert_allclose(data, want, atol=2**-23)
    storage.close()


@pytest.mark.parametrize("lossless", [True, False])
def test_a_lossless_source_waits_for_the_disk_a_live_one_drops(
    tmp_path: Path, lossless: bool
) -> None:
    from service.storage_thread import StorageThread

    store = StorageThread(lambda: Storage(tmp_path))
    store.start()
    slow: list[float] = []

    def offer(job: Any) -> bool:  # a slow disk: each drain takes a while
        return store.offer(lambda s: (time.sleep(0.02), slow.append(1), job(s)))

    audio = EncounterAudio(offer, _clock, preroll_s=0, handoff_s=0.05)  # 4 blocks of room
    audio.add_source("north", lossless=lossless)
    enc = store.run(lambda s: s.create_encounter(source="north")).result()
    store.run(lambda s: audio.begin(s, enc.id, "north", None)).result()
    blocks = _blocks("north", 2.0)
    for block in blocks:
        audio.tap(block)
    store.run(lambda s: audio.end(s, enc.id)).result()
    (part,) = store.run(lambda s: s.audio_parts_of(enc.id)).result()
    store.stop()
    assert slow
    if lossless:  # every block, in order
        assert audio.dropped_blocks == 0 and part.gap_samples == 0
        assert part.frames == blocks[-1].end
    else:  # the audio thread never waited: what did not fit was dropped, and counted
        assert audio.dropped_blocks > 0 and part.frames < blocks[-1].end


def test_offer_never_waits(tmp_path: Path) -> None:
    import threading

    from service.storage_thread import StorageThread

    store = StorageThread(lambda: Storage(tmp_path), slots=1)
    assert store.offer(lambda s: None) is False  # not started
    store.start()
    release = threading.Event()
    busy = store.run(lambda s: release.wait(10))
    assert store.offer(lambda s: None) is False  # every slot taken: refused at once
    release.set()
    busy.result(timeout=10)
    ran = threading.Event()
    # The slot comes back in the finished job's callback, which may run just after result().
    deadline = time.monotonic() + 10
    while not store.offer(lambda s: ran.set()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ran.wait(10)
    store.stop()
    assert store.offer(lambda s: None) is False
