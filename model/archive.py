"""Archive scoring: ``pandapulse predict`` on folders of recordings, thousands of files at a time.

One pure function does the work, ``score_file(path, settings) -> FileResult``: it decodes and
scores one recording through ``model.predict.analyse`` (the same streaming path ``/predict``
and ``pandapulse predict FILE`` take) and never raises; a file that cannot be scored comes back
with ``status="failed"`` and the reason. Three schedulers run it:

- in this process (``workers=1``): torch keeps its own thread pool;
- local worker processes (``workers>1``, the default on a multi-core CPU): a spawn
  ``ProcessPoolExecutor``, each worker with one torch intra-op thread, so N workers use N cores
  without oversubscribing them. A worker that dies (a decoder crash, out of memory) fails the
  file it held, found by re-running the files that were in flight one at a time;
- a Dask distributed cluster (``scheduler="tcp://host:8786"``): one task per file. The
  checkpoint is sent to the workers with the tasks (``Client.scatter``), so they need
  PandaPulse installed but not the model file; they do need the recordings at the same paths
  (a shared file system).

Results are written as they complete (``ResultsWriter``) to an output folder:

- ``calls.csv``: one row per scored segment (a detected call, or a 2-s piece of a longer one,
  as the dashboard and ``/predict`` show them): file, start_s, end_s, p_success, p_failure,
  verdict, model_version;
- ``files.csv``: one row per file: file, size, mtime_ns, duration_s, mono, source_rate,
  n_calls, p_success (the recording's running P(success), ``model.aggregate``), verdict,
  status ('ok' or 'failed'), error, model_version, raven (the selection table written, if any);
- ``calls.parquet`` and ``files.parquet``, the same tables, when pyarrow is importable: written
  from the CSVs at the end of every run (an interrupted one too), so the two always agree.

A file's calls are written before its ``files.csv`` row, which marks it done. A second run over
the same folder skips every file whose ``files.csv`` row says 'ok' with the same path, size and
modification time; failed, changed and new files are scored (again), and rows an interrupted
run left for files it had not finished are dropped first.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import hashlib
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from model import aggregate
from model import constants as C
from model.errors import DataError, PandaPulseError
from model.files import replacing
from model.raven import PREDICTION_MARK

AUDIO_PATTERNS = (
    "*.wav",
    "*.wave",
    "*.flac",
    "*.ogg",
    "*.oga",
    "*.opus",
    "*.mp3",
    "*.aif",
    "*.aiff",
    "*.aifc",
    "*.au",
    "*.snd",
    "*.w64",
    "*.rf64",
    "*.caf",
)
"""Default ``--include`` patterns: the audio formats soundfile (libsndfile) decodes. Matched
case-insensitively, so a recorder's ``.WAV`` counts."""

CALL_COLUMNS = ("file", "start_s", "end_s", "p_success", "p_failure", "verdict", "model_version")
FILE_COLUMNS = (
    "file",
    "size",
    "mtime_ns",
    "duration_s",
    "mono",
    "source_rate",
    "n_calls",
    "p_success",
    "verdict",
    "status",
    "error",
    "model_version",
    "raven",
)
OK = "ok"
FAILED = "failed"
RAVEN_SUFFIX = ".selections.txt"
"""``--raven`` writes ``<recording file name>.selections.txt`` (``rec.wav.selections.txt``)."""
RAVEN_MARK = PREDICTION_MARK
"""The model-version column of the selection tables written here: a table at the target path
without it was written by someone else and is never overwritten."""
RAVEN_FALLBACK = "raven"
"""Sub-folder of the output folder for tables whose recording's folder cannot be written."""
WORKER_MEMORY = 2**30
"""Memory (bytes) allowed for a local worker process: torch, the model and its batches. Peak
resident memory measured on the development box (one torch thread): 390 MiB scoring a short
file, 715 MiB (bf16) to 805 MiB (fp32) for a 10-min encounter with 414 segments (batches of 64).
The default worker count keeps within the available memory."""


# --- the per-file function ---------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What ``score_file`` needs besides the path; picklable (sent to every worker).

    ``model`` is a checkpoint path (read where the function runs, unless the checkpoint bytes
    come with the call); ``torch_threads`` is torch's intra-op thread count in that process
    (None: leave it)."""

    model: str
    device: str | None = None
    precision: str = "auto"
    band: tuple[float, float] = aggregate.UNCERTAIN_BAND
    torch_threads: int | None = None


@dataclass(frozen=True)
class Call:
    """One scored segment of a file (seconds from the start of the file)."""

    start_s: float
    end_s: float
    p_success: float
    p_failure: float
    verdict: str


@dataclass(frozen=True)
class FileResult:
    """What ``score_file`` returns for one recording (``status`` 'ok' or 'failed')."""

    file: str
    status: str
    error: str = ""
    duration_s: float | None = None
    mono: bool | None = None
    source_rate: int | None = None
    model_version: str = ""
    class_names: tuple[str, str] = C.CLASS_NAMES
    p_success: float | None = None
    verdict: str | None = None
    calls: tuple[Call, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.status == OK


_local = threading.local()
_model_files_lock = threading.Lock()


def _model_file(checkpoint_bytes: bytes) -> str:
    """A local file holding ``checkpoint_bytes`` (a worker on another machine may lack the
    checkpoint): written once per process and content."""
    digest = hashlib.sha256(checkpoint_bytes).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"pandapulse-models-{os.getuid()}"
    path = folder / f"{digest}.safetensors"
    with _model_files_lock:
        if not path.is_file():
            with replacing(path) as tmp:
                tmp.write_bytes(checkpoint_bytes)
    return str(path)


def _classifier(settings: Settings, checkpoint_bytes: bytes | None) -> Any:
    """This thread's classifier for ``settings``, loaded once: threads of a Dask worker score
    in parallel, each with its own copy (the Classifier serialises calls to one copy)."""
    from model.classifier import Classifier  # torch: only where files are scored

    model = settings.model if checkpoint_bytes is None else _model_file(checkpoint_bytes)
    key = (model, settings.device, settings.precision, settings.torch_threads)
    cache: dict[tuple[Any, ...], Any] = getattr(_local, "classifiers", None) or {}
    _local.classifiers = cache
    if key not in cache:
        cache.clear()
        cache[key] = Classifier.from_checkpoint(
            model,
            device=settings.device,
            precision=settings.precision,
            num_threads=settings.torch_threads,
        )
    return cache[key]


def _header_duration(path: str) -> float | None:
    try:
        import soundfile as sf

        return round(float(sf.info(path).duration), 3)
    except Exception:  # the header is as broken as the rest
        return None


def score_file(path: str, settings: Settings, checkpoint_bytes: bytes | None = None) -> FileResult:
    """Score one recording: its calls and its overall P(success) and verdict. Never raises for
    a bad file (or a bad checkpoint): the result then says ``failed`` and why."""
    from model.predict import analyse

    try:
        classifier = _classifier(settings, checkpoint_bytes)
        answer = analyse(path, classifier, band=settings.band)
    except Exception as err:
        reason = str(err) if isinstance(err, PandaPulseError) else f"{type(err).__name__}: {err}"
        return FileResult(file=path, status=FAILED, error=reason, duration_s=_header_duration(path))
    return result_from_answer(path, answer, settings.band)


def result_from_answer(
    path: str, answer: dict[str, Any], band: tuple[float, float] = aggregate.UNCERTAIN_BAND
) -> FileResult:
    """``model.predict.analyse``'s answer for the recording at ``path`` as a ``FileResult``
    (each segment's verdict by ``band``)."""
    names = (str(answer["class_names"][0]), str(answer["class_names"][1]))
    calls = tuple(
        Call(
            start_s=seg["start_s"],
            end_s=seg["end_s"],
            p_success=seg["p_success"],
            p_failure=seg["p_failure"],
            verdict=str(aggregate.verdict(seg["p_success"], names, band)),
        )
        for seg in answer["segments"]
    )
    return FileResult(
        file=path,
        status=OK,
        duration_s=answer["duration_s"],
        mono=answer["mono"],
        source_rate=answer["source_rate"],
        model_version=answer["model_version"],
        class_names=names,
        p_success=answer["p_success"],
        verdict=answer["verdict"],
        calls=calls,
    )


# --- finding the files -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A recording to score: absolute path, and the key a finished run recorded it by."""

    path: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path, self.size, self.mtime_ns)


def matches(relative: str, patterns: Sequence[str]) -> bool:
    """Whether the path ``relative`` (to the folder searched, '/'-separated) matches one of the
    glob ``patterns``, case-insensitively: a pattern with a '/' is matched against the whole
    relative path ('*' crossing folders), one without against the file name."""
    rel = relative.lower()
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel if "/" in p else name, p.lower()) for p in patterns)


def find_recordings(inputs: Sequence[str | Path], patterns: Sequence[str]) -> list[Target]:
    """The recordings under ``inputs``: folders are searched recursively for files matching
    ``patterns`` (hidden files and folders, names starting with '.', are left out: macOS
    leaves ``._name.wav`` resource forks on shared drives); files named directly are taken
    whatever their name. Sorted, each once. A missing input raises ``DataError``."""
    found: dict[str, Target] = {}

    def add(path: str) -> None:
        st = os.stat(path)
        found[path] = Target(path, st.st_size, st.st_mtime_ns)

    for item in inputs:
        root = os.path.abspath(item)
        if os.path.isfile(root):
            add(root)
        elif os.path.isdir(root):
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, root).replace(os.sep, "/")
                    if not name.startswith(".") and matches(rel, patterns) and os.path.isfile(path):
                        add(path)
        else:
            raise DataError(f"{item}: no such file or folder")
    return [found[p] for p in sorted(found)]


def default_workers(device_type: str = "cpu") -> int:
    """Worker processes for ``pandapulse predict`` on folders: one per usable core, as many as
    the available memory holds (``WORKER_MEMORY`` each); 1 when scoring runs on a GPU."""
    if device_type != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import psutil

        by_memory = int(psutil.virtual_memory().available // WORKER_MEMORY)
    except Exception:
        by_memory = cores or 1
    return max(1, min(cores or 1, by_memory))


# --- schedulers --------------------------------------------------------------------------------


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _crashed(path: str) -> FileResult:
    return FileResult(
        file=path,
        status=FAILED,
        error="the worker process scoring it died (a decoder crash or out of memory)",
        duration_s=_header_duration(path),
    )


def score_local(
    paths: Iterable[str],
    settings: Settings,
    workers: int,
    function: Callable[[str, Settings], FileResult] = score_file,
) -> Iterator[FileResult]:
    """``function`` (``score_file``; another only in tests) over ``paths`` in this process
    (``workers == 1``) or in ``workers`` spawned processes with ``settings.torch_threads`` each;
    results as they complete."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        for path in paths:
            yield function(path, settings)
        return
    todo = deque(paths)
    suspects: deque[str] = deque()  # in flight when a worker died: re-run one at a time
    context = multiprocessing.get_context("spawn")
    while todo or suspects:
        alone = bool(suspects)
        queue = suspects if alone else todo
        window = 1 if alone else 2 * workers
        pool = ProcessPoolExecutor(
            max_workers=1 if alone else workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(settings.torch_threads or 1,),
        )
        pending: dict[Future[FileResult], str] = {}
        broken = False
        try:
            while queue or pending:
                while queue and len(pending) < window and not broken:
                    path = queue.popleft()
                    pending[pool.submit(function, path, settings)] = path
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    path = pending.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        if alone:
                            yield _crashed(path)
                        else:
                            suspects.append(path)
                        continue
                    yield result
                if broken:
                    for path in pending.values():
                        if alone:
                            yield _crashed(path)
                        else:
                            suspects.append(path)
                    pending.clear()
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def score_dask(paths: Sequence[str], settings: Settings, address: Any) -> Iterator[FileResult]:
    """``score_file`` over ``paths`` on the Dask cluster at ``address`` (a scheduler address,
    or a cluster object), one task per file; results as they complete. The checkpoint travels
    to the workers; the recordings must be at the same paths there."""
    from distributed import Client, as_completed

    checkpoint_bytes = Path(settings.model).read_bytes()
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as err:
        raise DataError(f"cannot reach the Dask scheduler at {address}: {err}") from err
    with client:
        shipped = client.scatter(checkpoint_bytes, broadcast=True)
        token = uuid.uuid4().hex[:12]  # this run's keys: a shared cluster runs others' too
        futures = {
            client.submit(
                score_file, path, settings, shipped, key=f"pandapulse-{token}-{i}", pure=False
            ): path
            for i, path in enumerate(paths)
        }
        try:
            for future in as_completed(futures):
                path = futures.pop(future)
                try:
                    result = future.result()
                except Exception as err:  # the task could not run (KilledWorker, ...)
                    result = FileResult(
                        file=path,
                        status=FAILED,
                        error=f"{type(err).__name__}: {err}",
                        duration_s=_header_duration(path),
                    )
                future.release()
                yield result
        finally:
            client.cancel(list(futures))


# --- the results folder ------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _rewrite(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """Replace the CSV at ``path`` by ``rows``, atomically."""
    with replacing(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _read(path: Path, columns: Sequence[str]) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != tuple(columns):
            raise DataError(
                f"{path} is not a PandaPulse results table (columns {reader.fieldnames},"
                f" expected {list(columns)}): use another output folder"
            )
        yield from reader


class ResultsWriter:
    """The results folder: reads what an earlier run finished, then appends each result as it
    comes (flushed, so a crash loses at most the file being written)."""

    def __init__(self, out: str | Path, model_version: str) -> None:
        self.out = Path(out)
        self.model_version = model_version
        self.calls_csv = self.out / "calls.csv"
        self.files_csv = self.out / "files.csv"
        self.done: dict[str, dict[str, str]] = {}
        """Latest ``files.csv`` row per file, from earlier runs."""
        self._calls: TextIO | None = None
        self._files: TextIO | None = None
        self._call_writer: Any = None
        self._file_writer: Any = None
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"cannot create the output folder {self.out}: {err}") from err
        if self.files_csv.is_file():
            for row in _read(self.files_csv, FILE_COLUMNS):
                self.done[row["file"]] = row  # a later row wins
        others = {
            row["model_version"]
            for row in self.done.values()
            if row["status"] == OK and row["model_version"] != model_version
        }
        if others:
            raise DataError(
                f"{self.out} holds results of model {', '.join(sorted(others))}, not"
                f" {model_version}: choose another --out (or delete those results)"
            )

    def is_done(self, target: Target) -> bool:
        row = self.done.get(target.path)
        return (
            row is not None
            and row["status"] == OK
            and row["size"] == str(target.size)
            and row["mtime_ns"] == str(target.mtime_ns)
        )

    def stored_calls(self, files: Iterable[str]) -> dict[str, list[Call]]:
        """The calls ``calls.csv`` holds for ``files`` (in the order written)."""
        wanted = set(files)
        found: dict[str, list[Call]] = {f: [] for f in wanted}
        if not wanted or not self.calls_csv.is_file():
            return found
        for row in _read(self.calls_csv, CALL_COLUMNS):
            if row["file"] in wanted:
                found[row["file"]].append(
                    Call(
                        start_s=float(row["start_s"]),
                        end_s=float(row["end_s"]),
                        p_success=float(row["p_success"]),
                        p_failure=float(row["p_failure"]),
                        verdict=row["verdict"],
                    )
                )
        return found

    def open(self, rescore: Iterable[str], *, changed: bool = False) -> None:
        """Drop earlier rows of the files about to be scored (and calls an interrupted run left
        without their file's row), then open both tables for appending. ``changed``: rows in
        ``done`` were updated, so ``files.csv`` is rewritten in any case."""
        rescore = set(rescore)
        kept = {f: row for f, row in self.done.items() if f not in rescore}
        if self.files_csv.is_file() and (
            changed or len(kept) != sum(1 for _ in _read(self.files_csv, FILE_COLUMNS))
        ):
            _rewrite(self.files_csv, FILE_COLUMNS, kept.values())
        self.done = kept
        if self.calls_csv.is_file():
            ok = {f for f, row in kept.items() if row["status"] == OK}
            stale = any(row["file"] not in ok for row in _read(self.calls_csv, CALL_COLUMNS))
            if stale:
                rows = [r for r in _read(self.calls_csv, CALL_COLUMNS) if r["file"] in ok]
                _rewrite(self.calls_csv, CALL_COLUMNS, rows)
        self._calls, self._call_writer = self._append(self.calls_csv, CALL_COLUMNS)
        self._files, self._file_writer = self._append(self.files_csv, FILE_COLUMNS)

    @staticmethod
    def _append(path: Path, columns: Sequence[str]) -> tuple[TextIO, Any]:
        new = not path.is_file() or path.stat().st_size == 0
        handle = path.open("a", newline="", encoding="utf-8")
        writer = csv.writer(handle, lineterminator="\n")
        if new:
            writer.writerow(columns)
            handle.flush()
        return handle, writer

    def write(self, target: Target, result: FileResult, raven: str = "") -> None:
        assert self._call_writer is not None and self._file_writer is not None
        assert self._calls is not None and self._files is not None
        version = result.model_version or self.model_version
        for call in result.calls:
            self._call_writer.writerow(
                [
                    result.file,
                    call.start_s,
                    call.end_s,
                    call.p_success,
                    call.p_failure,
                    call.verdict,
                    version,
                ]
            )
        self._calls.flush()
        row = [
            result.file,
            target.size,
            target.mtime_ns,
            result.duration_s,
            result.mono,
            result.source_rate,
            len(result.calls) if result.ok else None,
            result.p_success,
            result.verdict,
            result.status,
            result.error.replace("\n", " "),
            version,
            raven,
        ]
        self._file_writer.writerow([_fmt(v) for v in row])
        self._files.flush()
        self.done[result.file] = dict(zip(FILE_COLUMNS, (_fmt(v) for v in row), strict=True))

    def close(self) -> None:
        for handle in (self._calls, self._files):
            if handle is not None:
                handle.close()
        self._calls = self._files = None

    def write_parquet(self) -> list[Path]:
        """``calls.parquet`` and ``files.parquet`` from the CSVs; [] without pyarrow."""
        try:
            import pyarrow as pa
            import pyarrow.csv as pacsv
            import pyarrow.parquet as pq
        except ImportError:
            return []
        types = {
            "file": pa.string(),
            "start_s": pa.float64(),
            "end_s": pa.float64(),
            "p_success": pa.float64(),
            "p_failure": pa.float64(),
            "verdict": pa.string(),
            "model_version": pa.string(),
            "size": pa.int64(),
            "mtime_ns": pa.int64(),
            "duration_s": pa.float64(),
            "mono": pa.bool_(),
            "source_rate": pa.int64(),
            "n_calls": pa.int64(),
            "status": pa.string(),
            "error": pa.string(),
            "raven": pa.string(),
        }
        written = []
        for source in (self.calls_csv, self.files_csv):
            if not source.is_file():
                continue
            table = pacsv.read_csv(
                source,
                convert_options=pacsv.ConvertOptions(
                    column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False
                ),
            )
            target = source.with_suffix(".parquet")
            with replacing(target) as tmp:
                pq.write_table(table, str(tmp))
            written.append(target)
        return written


# --- Raven selection tables --------------------------------------------------------------------


def raven_selections(result: FileResult) -> list[Any]:
    """The scored calls of ``result`` as Raven selections: the full band the model hears
    (0 Hz to the Nyquist frequency of the file, at most the model's), the segment's verdict as
    the annotation, its two probabilities and the model version as further columns."""
    from model.raven import Selection

    s_name, f_name = result.class_names
    nyquist = min(result.source_rate or C.SAMPLE_RATE, C.SAMPLE_RATE) / 2
    return [
        Selection(
            begin_s=call.start_s,
            end_s=call.end_s,
            low_hz=0.0,
            high_hz=nyquist,
            label=call.verdict,
            extra={
                f"P({s_name})": call.p_success,
                f"P({f_name})": call.p_failure,
                RAVEN_MARK: result.model_version,
            },
        )
        for call in result.calls
    ]


def raven_path(recording: str, out: str | Path) -> Path:
    """Where the selection table of ``recording`` goes: beside it (``<name>.selections.txt``)
    when its folder can be written and no table of someone else's is there; otherwise under
    ``<out>/raven/`` at the recording's absolute path (``out/raven/mnt/archive/a.wav...``)."""
    beside = Path(recording + RAVEN_SUFFIX)
    ours = True
    if beside.exists():
        from model.raven import header

        try:
            ours = RAVEN_MARK in header(beside)
        except (OSError, UnicodeDecodeError):
            ours = False
    if ours and os.access(beside.parent, os.W_OK | os.X_OK):
        return beside
    return Path(out) / RAVEN_FALLBACK / (os.path.abspath(recording).lstrip(os.sep) + RAVEN_SUFFIX)


def write_raven(result: FileResult, out: str | Path) -> Path:
    """Write the selection table of a scored file (``raven_path``); falls back to the output
    folder when writing beside the recording fails after all."""
    from model.raven import write_table

    selections = raven_selections(result)
    path = raven_path(result.file, out)
    try:
        return write_table(path, selections, annotation_column="Verdict")
    except PermissionError:
        fallback = (
            Path(out)
            / RAVEN_FALLBACK
            / (os.path.abspath(result.file).lstrip(os.sep) + RAVEN_SUFFIX)
        )
        if fallback == path:
            raise
        return write_table(fallback, selections, annotation_column="Verdict")


def backfill_raven(
    writer: ResultsWriter, done: Sequence[Target], class_names: tuple[str, str]
) -> int:
    """Write the selection tables of files an earlier run scored whose table is missing, from
    their rows in ``calls.csv``; record where in ``writer.done``. Returns how many."""
    missing = [
        t.path
        for t in done
        if not (writer.done[t.path]["raven"] and Path(writer.done[t.path]["raven"]).is_file())
    ]
    stored = writer.stored_calls(missing)
    for path in missing:
        row = writer.done[path]
        result = FileResult(
            file=path,
            status=OK,
            source_rate=int(row["source_rate"]) if row["source_rate"] else None,
            model_version=row["model_version"],
            class_names=class_names,
            calls=tuple(stored[path]),
        )
        try:
            row["raven"] = str(write_raven(result, writer.out))
        except OSError as err:
            print(f"pandapulse predict: no Raven table for {path}: {err}", file=sys.stderr)
    return len(missing)


# --- a whole run -------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a run did (``run_archive``)."""

    found: int = 0
    skipped: int = 0
    scored: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0
    ok_in_results: int = 0
    parquet: list[Path] = field(default_factory=list)
    raven_fallback: int = 0


def run_archive(
    inputs: Sequence[str | Path],
    out: str | Path,
    settings: Settings,
    *,
    model_version: str,
    patterns: Sequence[str] = AUDIO_PATTERNS,
    workers: int = 1,
    scheduler: Any = None,
    raven: bool = False,
    class_names: tuple[str, str] = C.CLASS_NAMES,
    progress: bool | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> Summary:
    """Score every recording under ``inputs`` into the results folder ``out``, skipping those
    an earlier run finished; ``scheduler`` (an address or cluster) runs them on Dask, else
    ``workers`` local processes. ``raven``: a selection table per scored file, also for files
    an earlier run scored (from ``calls.csv``; ``class_names`` name its score columns).
    ``progress``: a tqdm bar on stderr (None: when it is a terminal). Raises ``DataError`` for bad inputs (nothing found, a folder of another model)."""
    from tqdm import tqdm

    started = time.monotonic()
    targets = find_recordings(inputs, patterns)
    if not targets:
        raise DataError(
            f"no recordings matching {', '.join(patterns)} under {', '.join(map(str, inputs))}"
        )
    writer = ResultsWriter(out, model_version)
    summary = Summary(found=len(targets))
    todo = [t for t in targets if not writer.is_done(t)]
    summary.skipped = len(targets) - len(todo)
    by_path = {t.path: t for t in todo}
    backfilled = 0
    if raven:  # files scored by an earlier run without --raven (or whose table is gone)
        backfilled = backfill_raven(writer, [t for t in targets if writer.is_done(t)], class_names)
    writer.open(by_path, changed=backfilled > 0)
    print(
        f"{len(targets)} recordings; {summary.skipped} already scored in {writer.out};"
        f" scoring {len(todo)}"
        + (
            f" on the Dask cluster at {scheduler}"
            if scheduler is not None
            else f" with {workers} worker(s)"
        ),
        file=sys.stderr,
    )
    bar = tqdm(
        total=len(todo),
        unit="file",
        desc="scoring",
        disable=(not progress) if progress is not None else None,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    paths = [t.path for t in todo]
    results = (
        score_dask(paths, settings, scheduler)
        if scheduler is not None
        else score_local(paths, settings, workers)
    )
    try:
        for result in results:
            raven_file = ""
            if raven and result.ok:
                try:
                    written = write_raven(result, writer.out)
                    raven_file = str(written)
                    if written != Path(result.file + RAVEN_SUFFIX):
                        summary.raven_fallback += 1
                except OSError as err:
                    result = dataclasses.replace(
                        result, status=FAILED, error=f"Raven table: {err}", calls=()
                    )
            writer.write(by_path[result.file], result, raven_file)
            if result.ok:
                summary.scored += 1
                summary.audio_s += result.duration_s or 0.0
            else:
                summary.failed.append((result.file, result.error))
            if on_result is not None:
                on_result(result)
            elapsed_min = max(time.monotonic() - started, 1e-9) / 60
            bar.set_postfix_str(
                f"{summary.audio_s / 3600:.2f} h audio, {summary.audio_s / 3600 / elapsed_min:.2f} h/min",
                refresh=False,
            )
            bar.update(1)
    finally:
        bar.close()
        if hasattr(results, "close"):
            results.close()
        writer.close()
        summary.parquet = writer.write_parquet()
        summary.wall_s = time.monotonic() - started
    summary.ok_in_results = sum(
        1 for t in targets if writer.done.get(t.path, {}).get("status") == OK
    )
    return summary
