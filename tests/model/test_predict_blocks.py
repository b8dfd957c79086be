"""``analyse`` streams a file in blocks and answers, byte for byte, what the whole decoded file
gives: several minutes of audio fed in blocks of several sizes, stereo, mono, another rate and
MP3, with and without the decoding thread; ``AudioStream`` equals ``load``; errors and the
length limit come out as before."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from model import aggregate, predict, preprocessing
from model import constants as C
from model.classifier import Classifier, Prediction
from model.detect import DetectorParams
from model.errors import AudioError
from model.predict import analyse, prefetched, rechunked, segment_batches
from model.segmenter import iter_segments

SR = C.SAMPLE_RATE
BLOCK_SIZES = [1000, 4096, 44_100, 1_000_003, None]
REAL_CALL = "real-calls/giant_panda_twittering.mp3"
RATES = {"stereo": SR, "mono": SR, "48k": 48_000, "mono-16k": 16_000}


def whole_file_analyse(
    recording: preprocessing.Recording,
    classifier: Classifier,
    detector: DetectorParams | None = None,
    *,
    band: tuple[float, float] = aggregate.UNCERTAIN_BAND,
) -> dict[str, Any]:
    """The reference: ``analyse`` as it was before streaming (the whole decoded recording in
    memory, its segments by ``iter_segments``), kept here verbatim in what it computes."""
    starts: list[tuple[int, int]] = []
    p_succ: list[np.ndarray] = []
    p_fail: list[np.ndarray] = []
    attention: list[np.ndarray] = []
    batch: list[preprocessing.Segment] = []

    def score() -> None:
        result = classifier.predict(preprocessing.stack(batch))
        p_succ.append(result.p_success)
        p_fail.append(result.p_failure)
        attention.append(result.attention)
        starts.extend((s.start, s.end) for s in batch)
        batch.clear()

    for segment in iter_segments(recording.audio, detector):
        batch.append(segment)
        if len(batch) >= classifier.max_batch:
            score()
    if batch:
        score()
    pred_s = np.concatenate(p_succ) if p_succ else np.zeros(0, np.float32)
    pred_f = np.concatenate(p_fail) if p_fail else np.zeros(0, np.float32)
    att = np.concatenate(attention) if attention else np.zeros((0, 0), np.float32)
    running = aggregate.running_series(pred_s, classifier.class0_share)
    p_success = float(running[-1]) if running.size else None
    return {
        "duration_s": round(recording.duration_s, 3),
        "mono": recording.mono,
        "source_rate": recording.source_rate,
        "model_version": classifier.version,
        "class_names": list(classifier.class_names),
        "segments": [
            {
                "start_s": round(start / SR, 3),
                "end_s": round(end / SR, 3),
                "p_success": round(float(pred_s[i]), 4),
                "p_failure": round(float(pred_f[i]), 4),
                "attention": [round(float(a), 5) for a in att[i]],
                "running_p_success": round(float(running[i]), 4),
            }
            for i, (start, end) in enumerate(starts)
        ],
        "p_success": None if p_success is None else round(p_success, 4),
        "verdict": aggregate.verdict(p_success, classifier.class_names, band),
        "uncertain_band": list(band),
        "class0_share": None
        if classifier.class0_share is None
        else round(classifier.class0_share, 4),
    }


class Fingerprint:
    """A stand-in for the classifier, cheap and sensitive: each segment's scores are made from
    its exact bits and its place in its batch, so a changed sample, a segment cut elsewhere or
    a batch formed differently changes the answer's digits."""

    version = "fingerprint"
    class_names = C.CLASS_NAMES
    class0_share = 0.62  # the encounter rule's prior, as a trained checkpoint records it

    def __init__(self, max_batch: int, device: str = "cpu") -> None:
        self.max_batch = max_batch
        self.device = torch.device(device)
        self.batches: list[int] = []

    def predict(self, segments: np.ndarray) -> Prediction:
        assert segments.dtype == np.float32 and segments.shape[1:] == (2, C.SEGMENT_SAMPLES)
        self.batches.append(len(segments))
        bits = segments.view(np.uint32).astype(np.uint64)
        mixed = (bits * np.uint64(2654435761)) % np.uint64(1_000_003)
        frames = mixed[:, :, : C.N_FRAMES * 1025].reshape(len(segments), 2, C.N_FRAMES, -1)
        per_frame = frames.sum(axis=(1, 3)) % np.uint64(99_991)
        place = np.arange(len(segments), dtype=np.uint64)[:, None]
        attention = ((per_frame + place) % np.uint64(99_991)).astype(np.float32) / 99_991
        p_success = attention.mean(axis=1).astype(np.float32)
        n = len(segments)
        return Prediction(
            p_success=p_success,
            p_failure=(1 - p_success).astype(np.float32),
            frame_probs=np.zeros((n, C.N_FRAMES, C.N_CLASSES), np.float32),
            attention=attention,
            embedding=np.zeros((n, C.GRU_HIDDEN), np.float32),
        )


def fingerprint(max_batch: int = 5, device: str = "cpu") -> Classifier:
    return cast(Classifier, Fingerprint(max_batch, device))


def dumps(answer: dict[str, Any]) -> str:
    return json.dumps(answer)


@pytest.fixture(scope="module")
def long_audio() -> np.ndarray:
    """Three minutes of stereo encounters with quiet spells, back to back."""
    from model.synth import generate_encounter

    parts = [
        generate_encounter(seed, outcome=outcome, duration_s=45.0, quiet_spells=True).audio
        for seed, outcome in ((3, "success"), (4, "failure"), (5, "success"), (6, "failure"))
    ]
    return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def files(long_audio: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("long")
    stereo = folder / "stereo-44k.wav"
    sf.write(stereo, long_audio.T, SR, subtype="PCM_16")
    mono = folder / "mono-44k.wav"
    sf.write(mono, long_audio[0, : 90 * SR], SR, subtype="PCM_16")
    # Another rate: 48 kHz stereo FLAC, 90 s (resampled on reading, as load resamples it).
    at_48k = soxr.resample(np.ascontiguousarray(long_audio[:, 90 * SR :].T), SR, 48_000)
    flac = folder / "stereo-48k.flac"
    sf.write(flac, at_48k, 48_000, format="FLAC", subtype="PCM_16")
    mono_16k = folder / "mono-16k.wav"
    sf.write(mono_16k, soxr.resample(long_audio[1, : 60 * SR], SR, 16_000), 16_000)
    return {"stereo": stereo, "mono": mono, "48k": flac, "mono-16k": mono_16k}


def test_the_long_file_has_many_segments_in_many_batches(files: dict[str, Path]) -> None:
    reference = whole_file_analyse(preprocessing.load(files["stereo"]), fingerprint())
    assert len(reference["segments"]) >= 40
    assert {s["end_s"] - s["start_s"] for s in reference["segments"]} != {2.0}
    assert reference["verdict"] is not None


@pytest.mark.parametrize("block_frames", BLOCK_SIZES)
@pytest.mark.parametrize("which", ["stereo", "mono", "48k", "mono-16k"])
def test_streaming_answer_is_byte_identical_to_the_whole_file(
    files: dict[str, Path], which: str, block_frames: int | None
) -> None:
    path = files[which]
    reference = dumps(whole_file_analyse(preprocessing.load(path), fingerprint()))
    got = analyse(path, fingerprint(), block_frames=block_frames)
    assert dumps(got) == reference
    assert got["mono"] is which.startswith("mono")
    assert got["source_rate"] == RATES[which]


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("max_batch", [1, 7, 64])
def test_batches_and_the_decoding_thread_do_not_change_the_answer(
    files: dict[str, Path], overlap: bool, max_batch: int
) -> None:
    path = files["stereo"]
    reference = whole_file_analyse(preprocessing.load(path), fingerprint(max_batch))
    classifier = fingerprint(max_batch)
    got = analyse(path, classifier, block_frames=4096, overlap=overlap)
    assert dumps(got) == dumps(reference)
    # Full batches but the last: the same batches the whole file was scored in.
    sizes = cast(Fingerprint, classifier).batches
    assert all(n == max_batch for n in sizes[:-1]) and 0 < sizes[-1] <= max_batch
    assert sum(sizes) == len(reference["segments"])


def test_an_open_file_bytes_and_a_recording_answer_the_same(files: dict[str, Path]) -> None:
    path = files["mono-16k"]
    reference = dumps(whole_file_analyse(preprocessing.load(path), fingerprint()))
    with open(path, "rb") as fh:
        assert dumps(analyse(fh, fingerprint())) == reference
    assert dumps(analyse(path.read_bytes(), fingerprint())) == reference
    assert dumps(analyse(preprocessing.load(path), fingerprint(), block_frames=777)) == reference


def test_mp3_decodes_as_load_decodes_it(shared_data: Path) -> None:
    # MP3 decoding rounds some samples' last bit differently when read in smaller pieces:
    # the stream reads exactly as load does, and only then re-cuts the blocks.
    path = shared_data / REAL_CALL
    reference = whole_file_analyse(preprocessing.load(path), fingerprint(1))
    assert reference["segments"] and reference["mono"] and reference["source_rate"] == 22_050
    for block_frames in BLOCK_SIZES:
        assert dumps(analyse(path, fingerprint(1), block_frames=block_frames)) == dumps(reference)


def test_with_the_real_network(files: dict[str, Path], untrained_checkpoint: Path) -> None:
    classifier = Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=8)
    path = files["mono"]
    reference = dumps(whole_file_analyse(preprocessing.load(path), classifier))
    assert len(json.loads(reference)["segments"]) > 8
    for block_frames in (4096, None):
        assert dumps(analyse(path, classifier, block_frames=block_frames)) == reference


@pytest.mark.parametrize("which", ["stereo", "48k", "mono-16k"])
def test_audio_stream_equals_load(files: dict[str, Path], which: str) -> None:
    path = files[which]
    recording = preprocessing.load(path)
    with preprocessing.AudioStream(path) as stream:
        blocks = list(stream)
    assert all(b.dtype == np.float32 and b.shape[0] == 2 and b.flags.c_contiguous for b in blocks)
    # Bounded: one read's worth of audio at SAMPLE_RATE (and the resampler's delay) at a time.
    most = preprocessing.READ_BLOCK_FRAMES * max(1.0, SR / recording.source_rate) + 4096
    assert max(b.shape[1] for b in blocks) <= most
    assert np.array_equal(np.concatenate(blocks, axis=1), recording.audio)
    assert stream.samples == recording.audio.shape[1]
    assert (stream.mono, stream.source_rate) == (recording.mono, recording.source_rate)


@pytest.mark.parametrize("rate", [8_000, 22_050, 32_000, 48_000, 96_000, 192_000])
@pytest.mark.parametrize("channels", [1, 2])
def test_resampled_stream_equals_load_at_every_rate(
    tmp_path: Path, rate: int, channels: int
) -> None:
    n = int(rate * 2.7) + 13  # not a whole number of blocks or of output samples
    audio = np.random.default_rng(rate).uniform(-0.5, 0.5, (n, channels)).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, audio, rate, subtype="FLOAT")
    with preprocessing.AudioStream(path) as stream:
        got = np.concatenate(list(stream), axis=1)
    assert np.array_equal(got, preprocessing.load(path).audio)


def test_rechunked_cuts_exact_blocks() -> None:
    audio = np.arange(2 * 10_007, dtype=np.float32).reshape(2, -1)
    pieces = [audio[:, :3], audio[:, 3:3000], audio[:, 3000:3001], audio[:, 3001:]]
    for frames in (1, 7, 1000, 10_007, 20_000):
        out = list(rechunked(pieces, frames))
        assert all(b.shape[1] == frames for b in out[:-1]) and 0 < out[-1].shape[1] <= frames
        assert np.array_equal(np.concatenate(out, axis=1), audio)
    with pytest.raises(ValueError):
        list(rechunked(pieces, 0))


def test_segment_batches_are_the_whole_file_segments(long_audio: np.ndarray) -> None:
    audio = long_audio[:, : 60 * SR]
    expected = list(iter_segments(audio))
    batches = list(segment_batches(rechunked([audio], 5000), None, 4))
    assert [a.shape[0] for a, _ in batches[:-1]] == [4] * (len(batches) - 1)
    assert [bound for _, bounds in batches for bound in bounds] == [
        (s.start, s.end) for s in expected
    ]
    assert np.array_equal(
        np.concatenate([a for a, _ in batches]), np.stack([s.audio for s in expected])
    )


def test_errors_come_out_as_load_raises_them(tmp_path: Path) -> None:
    # NaN far into a file: raised from the decoding thread, in the caller, and the thread ends.
    audio = np.zeros((3 * preprocessing.READ_BLOCK_FRAMES, 2), np.float32)
    audio[-5] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    before = threading.active_count()
    for overlap in (True, False):
        with pytest.raises(AudioError, match="NaN"):
            analyse(path, fingerprint(), overlap=overlap)
        with pytest.raises(AudioError, match="NaN"):
            preprocessing.load(path)
    assert threading.active_count() == before
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 2), np.float32), SR)
    with pytest.raises(AudioError, match="no samples"):
        analyse(empty, fingerprint())
    with pytest.raises(AudioError, match="cannot decode the upload"):
        analyse(b"this is not audio at all" * 10, fingerprint())
    odd = tmp_path / "odd.wav"
    sf.write(odd, np.zeros((100, 3), np.float32), SR)
    with pytest.raises(AudioError, match="3 channels"):
        analyse(odd, fingerprint())


def test_a_failing_classifier_stops_the_decoding_thread(files: dict[str, Path]) -> None:
    class Broken(Fingerprint):
        def predict(self, segments: np.ndarray) -> Prediction:
            raise RuntimeError("inference failed")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="inference failed"):
        analyse(files["stereo"], cast(Classifier, Broken(2)), block_frames=1000, overlap=True)
    assert threading.active_count() == before


def test_the_decoding_thread_runs_only_when_inference_is_off_the_cpu(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the CPU torch's threads already use every core: the thread measured no faster there.
    started: list[str] = []
    original = predict.prefetched

    def counting(*args: Any, **kwargs: Any) -> Any:
        started.append(kwargs.get("name", ""))
        return original(*args, **kwargs)

    monkeypatch.setattr(predict, "prefetched", counting)
    path = files["mono-16k"]
    on_cpu = analyse(path, fingerprint(device="cpu"))
    assert started == []
    off_cpu = analyse(path, fingerprint(device="cuda"))  # a device name only: nothing runs there
    assert started == ["predict-decode"]
    assert dumps(on_cpu) == dumps(off_cpu)


def test_prefetched_keeps_order_and_bounds_the_lead() -> None:
    made: list[int] = []

    def items() -> Any:
        for i in range(50):
            made.append(i)
            yield i

    out = prefetched(items(), 3)
    assert next(out) == 0
    for _ in range(100):  # let the worker run ahead as far as it may
        if len(made) >= 5:
            break
        threading.Event().wait(0.01)
    assert len(made) <= 5  # one taken, three queued, one waiting to be queued
    assert list(out) == list(range(1, 50))


def test_the_length_limit(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(preprocessing.RecordingTooLong) as err:
        analyse(files["mono"], fingerprint(), limit_s=60)
    assert not err.value.at_least and err.value.seconds == pytest.approx(90.0)
    assert isinstance(err.value, AudioError)
    assert analyse(files["mono"], fingerprint(), limit_s=90)["duration_s"] == 90.0
    # A resampled file can come out a fraction of a sample longer than its header says: the
    # limit applies to the audio as decoded, as it did to load's.
    path = tmp_path / "48k.wav"
    sf.write(path, np.zeros((48_001, 1), np.float32), 48_000)
    decoded_s = preprocessing.load(path).duration_s
    assert decoded_s > 48_001 / 48_000
    with pytest.raises(preprocessing.RecordingTooLong) as err:
        analyse(path, fingerprint(), limit_s=(decoded_s + 48_001 / 48_000) / 2)
    assert err.value.at_least
