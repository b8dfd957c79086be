"""``pandapulse predict``: score recordings with a trained checkpoint.

``analyse`` is what ``pandapulse predict`` and ``POST /predict`` answer. It streams: the file is
decoded block by block (``preprocessing.AudioStream``), fed to the streaming detector and
segmenter, and the segments are scored in batches of ``classifier.max_batch`` as they come, so a
recording of any length costs a few batches of memory, not its decoded size. When inference
runs off the CPU, decoding and segmentation run on a worker thread a few batches ahead of it
(``overlap``); on the CPU they do not, since torch's threads already keep every core busy (one
hour on the 2-core development box, two runs each: 17.3 s with the thread against 16.9 s
without it in fp32, 11.0 against 10.6 s in bf16; ``bench/latency_bench.py`` times both). The
benefit off the CPU is expected, not measured here. Batches are formed and scored in order
either way, so the answer does not depend on timing or block size: it is the one the whole
decoded recording gives.

Given folders (or ``--out``, ``--workers``, ``--scheduler``), ``pandapulse predict`` scores a
whole archive into a results folder, file by file through ``analyse``, on worker processes or a
Dask cluster: ``model.archive``. ``--raven`` writes a Raven selection table per scored file
(``model.raven``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
import threading
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from model import aggregate, archive, preprocessing
from model import constants as C
from model.archive import AUDIO_PATTERNS, RAVEN_FALLBACK
from model.checkpoint import DEMO_MODEL
from model.classifier import PRECISIONS, Classifier
from model.detect import DetectorParams
from model.errors import CheckpointError, DataError
from model.segmenter import stream_segments

T = TypeVar("T")

PREFETCH_BATCHES = 2
"""Batches the decoding thread may have ready ahead of inference (memory: each is
``max_batch`` x 706 KB)."""

DEFAULT_OUT = "pandapulse-results"
"""The results folder of ``pandapulse predict`` on folders when ``--out`` is not given (and where
``--raven`` puts the tables of read-only folders when scoring single files)."""

Source = preprocessing.Recording | str | Path | BinaryIO | bytes
"""What ``analyse`` scores: a decoded recording, or a file (path, open binary file, bytes)."""


def segment_batches(
    blocks: Iterable[np.ndarray], detector: DetectorParams | None, max_batch: int
) -> Iterator[tuple[np.ndarray, list[tuple[int, int]]]]:
    """The segments of a stream of (2, n) blocks, in order, as (B <= max_batch, 2, 88200)
    batches with their (start, end) sample bounds; every batch but the last is full."""
    audio: list[np.ndarray] = []
    bounds: list[tuple[int, int]] = []
    for segment in stream_segments(blocks, detector):
        audio.append(segment.audio)
        bounds.append((segment.start, segment.end))
        if len(audio) == max_batch:
            yield np.stack(audio), bounds
            audio, bounds = [], []
    if audio:
        yield np.stack(audio), bounds


def rechunked(blocks: Iterable[np.ndarray], frames: int) -> Iterator[np.ndarray]:
    """The (channels, n) ``blocks`` re-cut into blocks of exactly ``frames`` samples (the last
    may be shorter), whatever the sizes that came in."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += block.shape[1]
        if held < frames:
            continue
        joined = np.concatenate(pending, axis=1) if len(pending) > 1 else block
        cut = held - held % frames
        for i in range(0, cut, frames):
            yield joined[:, i : i + frames]
        pending = [joined[:, cut:]] if cut < held else []
        held -= cut
    if held:
        yield np.concatenate(pending, axis=1)


def prefetched(
    items: Iterator[T], depth: int, *, name: str = "prefetch"
) -> Generator[T, None, None]:
    """``items``, produced by a worker thread at most ``depth`` ahead of the consumer.

    Order is kept; an exception in the worker is raised here, in order. Closing this generator
    (or an exception in the consumer) stops the worker and waits for it, so nothing reads
    ``items`` after it returns."""
    slots: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            put((False, err))
            return
        put((False, None))

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            is_item, value = slots.get()
            if not is_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        worker.join()


def analyse(
    source: Source,
    classifier: Classifier,
    detector: DetectorParams | None = None,
    *,
    band: tuple[float, float] = aggregate.UNCERTAIN_BAND,
    limit_s: float | None = None,
    block_frames: int | None = None,
    overlap: bool | None = None,
) -> dict[str, Any]:
    """Detect the calls in a recording, score their segments and aggregate: what ``/predict``
    answers.

    Segments come from the energy detector and the streaming segmenter
    (``model.segmenter``), exactly as the live service cuts them; they are scored in batches
    of ``classifier.max_batch`` as they are cut. A file is decoded block by block
    (``preprocessing.AudioStream``; ``limit_s`` makes a longer one raise ``RecordingTooLong``);
    ``block_frames`` re-cuts the audio into blocks of that size before detection (tests: the
    answer does not depend on it). Either way the answer is the one the whole decoded recording
    gives. With ``overlap``, decoding and segmentation run on a worker thread ahead of
    inference; None: only when inference runs off the CPU. With no call found there are no segments, and ``p_success`` and ``verdict`` are
    None. Within ``band`` the verdict is ``uncertain`` (``model.aggregate``).
    """
    with contextlib.ExitStack() as stack:
        if isinstance(source, preprocessing.Recording):
            recording = source
            step = preprocessing.READ_BLOCK_FRAMES
            blocks: Iterable[np.ndarray] = (
                recording.audio[:, i : i + step] for i in range(0, recording.audio.shape[1], step)
            )
            mono, source_rate = recording.mono, recording.source_rate
        else:
            stream = stack.enter_context(preprocessing.AudioStream(source, limit_s=limit_s))
            blocks, mono, source_rate = stream, stream.mono, stream.source_rate
        if block_frames is not None:
            blocks = rechunked(blocks, block_frames)
        batches = segment_batches(blocks, detector, classifier.max_batch)
        if overlap is None:
            overlap = classifier.device.type != "cpu"
        if overlap:
            # Closed (its worker joined) before the stream is: the worker reads the file.
            batches = stack.enter_context(
                contextlib.closing(prefetched(batches, PREFETCH_BATCHES, name="predict-decode"))
            )
        bounds: list[tuple[int, int]] = []
        p_succ: list[np.ndarray] = []
        p_fail: list[np.ndarray] = []
        attention: list[np.ndarray] = []
        for audio, batch_bounds in batches:
            result = classifier.predict(audio)
            p_succ.append(result.p_success)
            p_fail.append(result.p_failure)
            attention.append(result.attention)
            bounds.extend(batch_bounds)
        if isinstance(source, preprocessing.Recording):
            n_samples = source.audio.shape[1]
        else:
            n_samples = stream.samples
    pred_s = np.concatenate(p_succ) if p_succ else np.zeros(0, np.float32)
    pred_f = np.concatenate(p_fail) if p_fail else np.zeros(0, np.float32)
    att = np.concatenate(attention) if attention else np.zeros((0, 0), np.float32)
    return answer(
        n_samples=n_samples,
        mono=mono,
        source_rate=source_rate,
        classifier=classifier,
        bounds=bounds,
        p_success=pred_s,
        p_failure=pred_f,
        attention=att,
        band=band,
    )


def answer(
    *,
    n_samples: int,
    mono: bool,
    source_rate: int,
    classifier: Classifier,
    bounds: list[tuple[int, int]],
    p_success: np.ndarray,
    p_failure: np.ndarray,
    attention: np.ndarray,
    band: tuple[float, float],
) -> dict[str, Any]:
    """The JSON-ready answer for scored segments (one rounding rule for every caller)."""
    share = classifier.class0_share
    running = aggregate.running_series(p_success, share)  # segments are in time order
    overall = float(running[-1]) if running.size else None
    sr = C.SAMPLE_RATE
    return {
        "duration_s": round(n_samples / sr, 3),
        "mono": mono,
        "source_rate": source_rate,
        "model_version": classifier.version,
        "class_names": list(classifier.class_names),
        "segments": [
            {
                "start_s": round(start / sr, 3),
                "end_s": round(end / sr, 3),
                "p_success": round(float(p_success[i]), 4),
                "p_failure": round(float(p_failure[i]), 4),
                "attention": [round(float(a), 5) for a in attention[i]],
                "running_p_success": round(float(running[i]), 4),
            }
            for i, (start, end) in enumerate(bounds)
        ],
        "p_success": None if overall is None else round(overall, 4),
        "verdict": aggregate.verdict(overall, classifier.class_names, band),
        "uncertain_band": list(band),
        "class0_share": None if share is None else round(share, 4),
    }


def parse_band(text: str) -> tuple[float, float]:
    """'0.4,0.6' -> (0.4, 0.6), checked (``model.aggregate.check_band``)."""
    try:
        low, high = (float(x) for x in text.split(","))
        return aggregate.check_band((low, high))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give LOWER,UPPER, e.g. 0.4,0.6 ({err})"
        ) from err


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="recordings to score, or folders of recordings (searched recursively; the results"
        " then go to --out)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"checkpoint (default: the demo model, {DEMO_MODEL.name})",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N (default: CUDA if present)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="arithmetic of the convolutions; auto (default) is what the service runs: bf16 on"
        " CPUs with native bfloat16, fp32 elsewhere",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--uncertain-band",
        type=parse_band,
        default=aggregate.UNCERTAIN_BAND,
        metavar="LOWER,UPPER",
        help="P(class 0) range whose verdict is 'uncertain' (default: %(default)s)",
    )
    archive = parser.add_argument_group(
        "archives",
        "A folder (or --out, --workers, --scheduler) scores into a results folder: calls.csv and"
        " files.csv written as each file completes (and .parquet beside them with pyarrow),"
        " resumable: a second run skips the files already scored.",
    )
    archive.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"results folder (default: ./{DEFAULT_OUT})",
    )
    archive.add_argument(
        "--include",
        action="append",
        default=None,
        metavar="GLOB",
        help="file pattern to score in folders, repeatable, case-insensitive; a pattern with '/'"
        " matches the path below the folder (default: the audio formats soundfile reads:"
        f" {' '.join(AUDIO_PATTERNS)})",
    )
    archive.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="local worker processes, one torch thread each (default: one per core, as memory"
        " allows; 1 on a GPU)",
    )
    archive.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="score on the Dask distributed cluster at ADDRESS (tcp://host:8786), one task per"
        " file; its workers need PandaPulse installed and the recordings at the same paths",
    )
    parser.add_argument(
        "--raven",
        action="store_true",
        help="write a Raven selection table <file>.selections.txt beside each scored recording"
        f" (under <out>/{RAVEN_FALLBACK}/ where its folder is read-only)",
    )


def archive_mode(args: argparse.Namespace) -> bool:
    """Whether ``args`` score into a results folder (a folder given, or an archive option)."""
    return (
        any(Path(f).is_dir() for f in args.files)
        or args.out is not None
        or args.workers is not None
        or args.scheduler is not None
    )


def run(args: argparse.Namespace) -> int:
    path = args.model or DEMO_MODEL
    if not Path(path).is_file():
        raise CheckpointError(
            f"no trained checkpoint at {path}: train one with `pandapulse train` (or `make demo-model`)"
            " and pass it with --model; PandaPulse never predicts with untrained weights"
        )
    if archive_mode(args):
        return run_archive_command(args, Path(path))
    classifier = Classifier.from_checkpoint(path, device=args.device, precision=args.precision)
    results = {}
    for file in args.files:
        results[str(file)] = analyse(file, classifier, band=args.uncertain_band)
        if args.raven:
            scored = archive.result_from_answer(str(file), results[str(file)], args.uncertain_band)
            table = archive.write_raven(scored, DEFAULT_OUT)
            print(f"Raven selection table: {table}", file=sys.stderr)
    if args.json:
        for result in results.values():
            for seg in result["segments"]:
                seg.pop("attention")
        print(json.dumps(results, indent=2))
        return 0
    s_name, f_name = classifier.class_names
    for file, result in results.items():
        print(
            f"{file}  ({result['duration_s']:.1f} s{', mono' if result['mono'] else ''}, model {classifier.version})"
        )
        print(f"  {'start s':>8} {'end s':>8} {'P(' + s_name + ')':>14} {'P(' + f_name + ')':>14}")
        for seg in result["segments"]:
            print(
                f"  {seg['start_s']:8.2f} {seg['end_s']:8.2f} {seg['p_success']:14.3f} {seg['p_failure']:14.3f}"
            )
        if result["verdict"] is None:
            print("  verdict: no vocalization found")
        elif result["verdict"] == aggregate.UNCERTAIN:
            low, high = args.uncertain_band
            print(
                f"  verdict: uncertain (P({s_name}) = {result['p_success']:.3f} is within"
                f" {low:.2f}-{high:.2f}; over {len(result['segments'])} segments)"
            )
        else:
            print(
                f"  verdict: {result['verdict']} (P({s_name}) = {result['p_success']:.3f} over {len(result['segments'])} segments)"
            )
    return 0


FAILURES_LISTED = 50
"""Failed files named on stderr at the end of a run (all of them are in files.csv)."""


def run_archive_command(args: argparse.Namespace, model_path: Path) -> int:
    """``pandapulse predict`` on folders: ``model.archive.run_archive`` and its summary.

    Exit status 0 when the results folder holds at least one of the recordings scored (now or
    by an earlier run), 1 when none of them could be scored; bad arguments raise (status 2)."""
    from model import checkpoint
    from model.classifier import choose_device

    if args.workers is not None and args.scheduler is not None:
        raise DataError("give --workers (local processes) or --scheduler (Dask), not both")
    _, meta = checkpoint.load(model_path)  # fails here, not in every worker, when broken
    try:
        device = choose_device(args.device)
    except ValueError as err:
        raise DataError(str(err)) from err
    workers = args.workers or archive.default_workers(device.type)
    distributed = args.scheduler is not None or workers > 1
    settings = archive.Settings(
        model=str(model_path.resolve()),
        device=args.device,
        precision=args.precision,
        band=args.uncertain_band,
        torch_threads=1 if distributed else None,
    )
    out = args.out or Path(DEFAULT_OUT)
    summary = archive.run_archive(
        [str(f) for f in args.files],
        out,
        settings,
        model_version=str(meta["model_version"]),
        patterns=tuple(args.include or AUDIO_PATTERNS),
        workers=workers,
        scheduler=args.scheduler,
        raven=args.raven,
        class_names=(str(meta["class_names"][0]), str(meta["class_names"][1])),
    )
    hours = summary.audio_s / 3600
    rate = hours / max(summary.wall_s / 60, 1e-9)
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(out),
                    "found": summary.found,
                    "skipped": summary.skipped,
                    "scored": summary.scored,
                    "failed": [{"file": f, "error": e} for f, e in summary.failed],
                    "audio_hours": round(hours, 4),
                    "wall_s": round(summary.wall_s, 2),
                    "hours_per_minute": round(rate, 4),
                    "parquet": [str(p) for p in summary.parquet],
                },
                indent=2,
            )
        )
    else:
        parquet = " and .parquet" if summary.parquet else " (no Parquet: pyarrow is not installed)"
        print(
            f"scored {summary.scored} recording(s) ({hours:.2f} h of audio) in"
            f" {summary.wall_s / 60:.1f} min, {rate:.2f} h of audio per minute;"
            f" {summary.skipped} already done, {len(summary.failed)} failed."
            f" Results: {out / 'calls.csv'}, {out / 'files.csv'}{parquet}"
        )
        if summary.raven_fallback:
            print(
                f"{summary.raven_fallback} Raven table(s) went to {out / RAVEN_FALLBACK}: their"
                " recordings' folders are read-only or hold a table PandaPulse did not write"
            )
    if summary.failed:
        print(
            f"pandapulse predict: {len(summary.failed)} recording(s) could not be scored:",
            file=sys.stderr,
        )
        for file, error in summary.failed[:FAILURES_LISTED]:
            print(f"  {file}: {error}", file=sys.stderr)
        if len(summary.failed) > FAILURES_LISTED:
            print(
                f"  ... and {len(summary.failed) - FAILURES_LISTED} more (status 'failed' in"
                f" {out / 'files.csv'})",
                file=sys.stderr,
            )
    return 0 if summary.ok_in_results else 1
