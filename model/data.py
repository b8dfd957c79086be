"""Dataset folders -> labelled 2-s segments with group ids and features.

A dataset folder holds recordings, optional annotation files beside them, and ``manifest.csv``
with at least a ``recording`` column (path relative to the folder), a group column (the
encounter, pair, individual...) and a label column (the outcome). Segments are cut with the
shared ``model.preprocessing`` code, so training sees exactly what ``/predict`` and the live
service see:

- from annotations when a recording has them: Raven selection tables
  (``<stem>.*selections.txt``, e.g. ``<stem>.Table.1.selections.txt``) or an Audacity label
  track (``<stem>.txt``: start, end, label), both read with ``crowsetta``; a table of model
  scores that ``pandapulse predict --raven`` wrote beside the audio is not an annotation and is
  left out;
- else from the energy vocalization detector (``model.detect.detect_calls``) when it exists;
- else by tiling the whole file into consecutive 2-s pieces.

Rows that cannot be used (missing or unreadable file, missing or unknown label, an annotation
ending before it starts or past the end of the file) are listed with their reason, logged, and
skipped; the build goes on with the rest.

Features are cached on disk, one ``.npz`` per recording, keyed by the audio file's content
hash, the feature configuration (``model.constants.feature_config``) and the segmentation
settings (the annotated intervals, or the detector's source, or tiling), so a second build
reads them back instead of recomputing them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from model import constants as C
from model import detect as detect_module
from model import features as F
from model import preprocessing as P
from model.classes import class_map
from model.errors import AudioError, DataError
from model.files import replacing

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
CACHE_DIR_NAME = ".pandapulse-cache"
CACHE_VERSION = 1
"""Bumped when the cache file layout changes."""
GROUP_COLUMNS = (
    "encounter",
    "group",
    "session",
    "pair",
    "individual",
    "baby",
    "subject",
    "animal",
    "speaker",
)
"""Group columns looked for, in order of preference, when none is named."""
ANNOTATION_COLUMNS = ("annotation", "annotations", "selection_table")
"""Optional manifest column naming each recording's annotation file (relative to the folder)."""
LABEL_COLUMNS = ("outcome", "label", "class", "target", "y")
"""Label columns looked for, in order of preference, when none is named."""
RAVEN_ANNOTATION_COLUMNS = (
    "Annotation",
    "Call Type",
    "Call type",
    "call_type",
    "Type",
    "Label",
    "Species",
)
"""Raven table columns taken as the call type, in order of preference (crowsetta's default first)."""
MISSING_LABELS = frozenset({"", "na", "nan", "none", "null", "unknown", "?", "-"})
"""Label values that mean "no label" (case-insensitive)."""
END_TOLERANCE_S = 0.01
"""An annotation may overrun the end of the file by this much (s, rounding in exported tables)."""
MFCC_BATCH = 64
"""Segments per batch when computing MFCC for a recording."""

FeatureKind = Literal["mfcc", "combined"]
FEATURE_DIMS: dict[str, int] = {"mfcc": C.N_MFCC, "combined": C.COMBINED_FEATURES}


@dataclass(frozen=True)
class Skipped:
    """Something the build left out: ``item`` names it (file, or file and annotation row)."""

    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


@dataclass(frozen=True)
class Interval:
    """A call to cut segments from: [start, end) in samples at SAMPLE_RATE, with its call type."""

    start: int
    end: int
    call_type: str = ""


@dataclass(frozen=True)
class Dataset:
    """Labelled segments of a dataset folder.

    Attributes
    ----------
    features : np.ndarray, (N, 2, 86, F) float32; F is 40 (MFCC) or 62 (combined)
    labels : np.ndarray, (N,) int64, index into ``class_names``
    groups : np.ndarray, (N,) str, the group (encounter, individual) of each segment
    recordings : np.ndarray, (N,) str, the recording each segment was cut from
    starts, ends : np.ndarray, (N,) int64, the segment's source samples [start, end) at 44.1 kHz
    call_types : np.ndarray, (N,) str, the annotation label ('' without annotations)
    class_names : the two class names, column order of CGANet's output
    skipped : what was left out, with reasons
    summary : JSON-ready description (counts, columns, segmentation used, skipped)
    """

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    recordings: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    call_types: np.ndarray
    class_names: tuple[str, str]
    skipped: tuple[Skipped, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[-1])

    def subset(self, index: np.ndarray | Sequence[int]) -> Dataset:
        """The segments at ``index`` (same class names, skipped list and summary)."""
        idx = np.asarray(index, dtype=np.int64)
        return Dataset(
            features=self.features[idx],
            labels=self.labels[idx],
            groups=self.groups[idx],
            recordings=self.recordings[idx],
            starts=self.starts[idx],
            ends=self.ends[idx],
            call_types=self.call_types[idx],
            class_names=self.class_names,
            skipped=self.skipped,
            summary=self.summary,
        )

    def with_features(self, features: np.ndarray) -> Dataset:
        """The same segments with other features, e.g. the combined ones (same order)."""
        if features.shape[0] != len(self):
            raise ValueError(f"{features.shape[0]} feature rows for {len(self)} segments")
        return dataclasses.replace(self, features=features)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}


# --- manifest -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One usable manifest row."""

    recording: str
    path: Path
    group: str
    label: str
    annotation: Path | None = None
    """An annotation file named by the manifest's ``annotation`` column (else found by name)."""


def _pick_column(
    header: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str
) -> str:
    lower = {h.strip().lower(): h for h in header}
    if wanted is not None:
        if wanted in header:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise DataError(
            f"the manifest has no {what} column {wanted!r}; its columns are {list(header)}"
        )
    for name in candidates:
        if name in lower:
            return lower[name]
    raise DataError(
        f"cannot find a {what} column in the manifest (looked for {', '.join(candidates)});"
        f" its columns are {list(header)}: name it with --{what}-col"
    )


def read_manifest(
    data_dir: Path,
    *,
    group_col: str | None = None,
    label_col: str | None = None,
    classes: str | Sequence[str] | None = None,
) -> tuple[list[Row], tuple[str, str], dict[str, str], list[Skipped]]:
    """Read ``manifest.csv``: (usable rows, class names, chosen columns, skipped rows)."""
    manifest = data_dir / MANIFEST
    if not manifest.is_file():
        raise DataError(
            f"{data_dir} has no {MANIFEST}: a dataset folder needs one with columns recording,"
            " a group (e.g. encounter) and a label (e.g. outcome)"
        )
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rec_col = _pick_column(header, None, ("recording", "file", "filename", "path"), "recording")
        g_col = _pick_column(header, group_col, GROUP_COLUMNS, "group")
        l_col = _pick_column(header, label_col, LABEL_COLUMNS, "label")
        annot_col = next((h for h in header if h.strip().lower() in ANNOTATION_COLUMNS), None)
        raw = list(reader)
    skipped: list[Skipped] = []
    rows: list[tuple[str, Path, str, str, Path | None]] = []
    for i, record in enumerate(raw, start=2):  # line numbers as an editor shows them
        name = (record.get(rec_col) or "").strip()
        where = f"{MANIFEST} line {i}" + (f" ({name})" if name else "")
        if not name:
            skipped.append(Skipped(where, f"empty {rec_col!r}"))
            continue
        path = data_dir / name
        if not path.is_file():
            skipped.append(Skipped(where, f"recording {name} not found in {data_dir}"))
            continue
        label = (record.get(l_col) or "").strip()
        if label.lower() in MISSING_LABELS:
            skipped.append(Skipped(where, f"missing label in column {l_col!r} ({label!r})"))
            continue
        group = (record.get(g_col) or "").strip()
        if not group:
            skipped.append(Skipped(where, f"missing group in column {g_col!r}"))
            continue
        annotation = (record.get(annot_col) or "").strip() if annot_col else ""
        annot_path = data_dir / annotation if annotation else None
        if annot_path is not None and not annot_path.is_file():
            skipped.append(Skipped(where, f"annotation file {annotation} not found"))
            continue
        rows.append((name, path, group, label, annot_path))
    mapping = class_map([r[3] for r in rows], classes)
    usable = []
    for name, path, group, label, annot_path in rows:
        index = mapping.index(label)
        if index is None:
            skipped.append(
                Skipped(
                    f"{MANIFEST} ({name})",
                    f"unknown label {label!r}: the classes are {list(mapping.names)}",
                )
            )
            continue
        usable.append(Row(name, path, group, mapping.names[index], annot_path))
    columns = {"recording": rec_col, "group": g_col, "label": l_col}
    return usable, mapping.names, columns, skipped


# --- annotations -------------------------------------------------------------------------------


def annotation_format(path: Path) -> str:
    """'raven' for ``*.selections.txt``, 'aud-seq' for other ``.txt`` files."""
    if path.name.endswith("selections.txt"):
        return "raven"
    if path.suffix == ".txt":
        return "aud-seq"
    raise DataError(
        f"{path.name}: unknown annotation format (use a Raven .selections.txt or an Audacity .txt)"
    )


def annotation_files(recording: Path) -> tuple[str, list[Path]]:
    """(format, files) annotating ``recording``: ('raven', tables), ('aud-seq', [track]) or ('', [])."""
    stem = recording.stem
    raven = sorted(
        p
        for p in recording.parent.glob(f"{stem}.*selections.txt")
        if p.name.startswith(stem + ".") and p.is_file() and not _is_prediction_table(p)
    )
    if raven:
        return "raven", raven
    audacity = recording.with_name(stem + ".txt")
    if audacity.is_file():
        return "aud-seq", [audacity]
    return "", []


def _is_prediction_table(path: Path) -> bool:
    """A table ``pandapulse predict --raven`` wrote (model scores, not annotations)."""
    from model.raven import PREDICTION_MARK, header

    try:
        return PREDICTION_MARK in header(path)
    except (OSError, UnicodeDecodeError):
        return False  # unreadable: read_annotations reports it


def _raven_annotation_column(path: Path) -> str:
    """The column of a Raven table that holds the call type (crowsetta needs it named)."""
    with path.open(encoding="utf-8-sig") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
    for name in RAVEN_ANNOTATION_COLUMNS:
        if name in header:
            return name
    raise DataError(
        f"{path.name} has no annotation column (looked for {', '.join(RAVEN_ANNOTATION_COLUMNS)})"
    )


def read_annotations(fmt: str, path: Path) -> list[tuple[float, float, str]]:
    """(onset s, offset s, label) rows of one annotation file, read with crowsetta.

    Rows are returned as written (bad ones included) so the caller can report them one by one;
    crowsetta's own ``to_bbox``/``to_seq`` would refuse the whole file on one bad row.
    """
    import crowsetta  # slow to import: only when a dataset has annotations

    try:
        if fmt == "raven":
            scribe = crowsetta.Transcriber(format="raven")
            table = scribe.from_file(path, annot_col=_raven_annotation_column(path))
            df = table.df
            if "Selection" in df.columns:  # Raven writes one row per view of a selection
                df = df.drop_duplicates(subset="Selection")
            return [
                (float(a), float(b), str(lab))
                for a, b, lab in zip(
                    df["begin_time_s"], df["end_time_s"], df["annotation"], strict=True
                )
            ]
        if fmt == "aud-seq":
            scribe = crowsetta.Transcriber(format="aud-seq")
            track = scribe.from_file(path)
            return [
                (float(a), float(b), str(lab))
                for a, b, lab in zip(track.start_times, track.end_times, track.labels, strict=True)
            ]
    except DataError:
        raise
    except Exception as err:  # crowsetta raises pandas, pandera and ValueError variants
        raise DataError(f"cannot read {path.name} as {fmt}: {type(err).__name__}: {err}") from err
    raise DataError(f"unsupported annotation format {fmt!r}")


def annotated_intervals(
    recording: str, files: Sequence[Path], fmt: str, n_samples: int
) -> tuple[list[Interval], list[Skipped]]:
    """Valid intervals of a recording's annotations, and the rows skipped with reasons."""
    intervals: list[Interval] = []
    skipped: list[Skipped] = []
    duration = n_samples / C.SAMPLE_RATE
    for path in files:
        for i, (onset, offset, label) in enumerate(read_annotations(fmt, path), start=1):
            where = f"{path.name} row {i} ({onset:.3f}-{offset:.3f} s, {label!r})"
            if not (np.isfinite(onset) and np.isfinite(offset)):
                skipped.append(Skipped(where, "start or end is not a number"))
            elif onset < 0:
                skipped.append(Skipped(where, "starts before the beginning of the file"))
            elif offset <= onset:
                skipped.append(Skipped(where, "ends before it starts"))
            elif onset >= duration or offset > duration + END_TOLERANCE_S:
                skipped.append(
                    Skipped(where, f"runs past the end of {recording} ({duration:.3f} s)")
                )
            else:
                start = round(onset * C.SAMPLE_RATE)
                end = min(round(offset * C.SAMPLE_RATE), n_samples)
                if end > start:
                    intervals.append(Interval(start, end, label))
                else:
                    skipped.append(Skipped(where, "shorter than one sample"))
    return intervals, skipped


# --- segmentation and cache ------------------------------------------------------------------------


Detector = Callable[[np.ndarray], list[tuple[int, int]]]


def find_detector() -> tuple[Detector, str]:
    """``model.detect.detect_calls`` and a hash of its module's source (part of the cache key,
    so segments cut by an older detector are not reused)."""
    source = inspect.getsource(detect_module)
    return detect_module.detect_calls, hashlib.sha256(source.encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(audio_hash: str, kind: str, segmentation: dict[str, Any]) -> str:
    """Key of one recording's cached features: content, feature configuration, segmentation."""
    payload = {
        "version": CACHE_VERSION,
        "audio": audio_hash,
        "features": C.feature_config(FEATURE_DIMS[kind]),
        "segmentation": segmentation,
        "segment": {"samples": C.SEGMENT_SAMPLES, "min_tail": C.MIN_TAIL_SAMPLES},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def compute_features(segments: np.ndarray, kind: str) -> np.ndarray:
    """(B, 2, 88200) float32 segments -> (B, 2, 86, 40 or 62) float32 features."""
    if len(segments) == 0:
        return np.zeros((0, C.N_CHANNELS, C.N_FRAMES, FEATURE_DIMS[kind]), np.float32)
    if kind == "mfcc":
        parts = [
            F.mfcc_numpy(segments[i : i + MFCC_BATCH]) for i in range(0, len(segments), MFCC_BATCH)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)
    if kind == "combined":
        return np.stack([F.combined(s) for s in segments]).astype(np.float32, copy=False)
    raise DataError(f"unknown feature kind {kind!r}: use mfcc or combined")


def _n_samples(path: Path) -> int:
    """Length at SAMPLE_RATE of a recording, from its header (as ``load`` would resample it)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"cannot read {path.name}: {err}") from err
    return int(np.ceil(info.frames * C.SAMPLE_RATE / info.samplerate))


def _write_cache(path: Path, **arrays: np.ndarray) -> None:
    with replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]


@dataclass
class _BuildStats:
    cache_hits: int = 0
    cache_misses: int = 0
    methods: Counter[str] = field(default_factory=Counter)


def _recording_segments(
    row: Row,
    kind: str,
    cache_dir: Path,
    detector: tuple[Detector | None, str],
    stats: _BuildStats,
    skipped: list[Skipped],
    use_annotations: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    """(features, starts, ends, call types) of one recording, from the cache when possible."""
    fmt: str | None
    files: list[Path]
    if not use_annotations:
        fmt, files = None, []
    elif row.annotation is not None:
        fmt, files = annotation_format(row.annotation), [row.annotation]
    else:
        fmt, files = annotation_files(row.path)
    intervals: list[Interval] | None = None
    if fmt:
        n_samples = _n_samples(row.path)
        intervals, bad = annotated_intervals(row.recording, files, fmt, n_samples)
        skipped.extend(bad)
        method = "annotations"
        segmentation: dict[str, Any] = {
            "method": method,
            "format": fmt,
            "intervals": [(iv.start, iv.end) for iv in intervals],
        }
    elif detector[0] is not None:
        method = "detector"
        segmentation = {
            "method": method,
            "detector": "model.detect.detect_calls",
            "source": detector[1],
        }
    else:
        method = "tiling"
        segmentation = {"method": method}
    stats.methods[method] += 1
    cache_file = cache_dir / f"{cache_key(file_hash(row.path), kind, segmentation)}.npz"
    cached = None
    if cache_file.is_file():
        try:
            with np.load(cache_file) as npz:
                cached = (npz["features"], npz["starts"], npz["ends"], npz["interval"])
        except (OSError, ValueError, KeyError) as err:
            log.warning("ignoring unreadable cache file %s: %s", cache_file, err)
    if cached is not None:
        stats.cache_hits += 1
        feats, starts, ends, interval = cached
    else:
        stats.cache_misses += 1
        audio = P.load(row.path).audio
        if intervals is None:
            if method == "detector":
                assert detector[0] is not None
                found = detector[0](audio)
                intervals = [Interval(int(s), int(e)) for s, e in found]
            else:
                intervals = [Interval(0, audio.shape[1])]
        segments: list[P.Segment] = []
        interval_idx: list[int] = []
        for j, iv in enumerate(intervals):
            cut = P.segment_call(audio, iv.start, iv.end)
            segments += cut
            interval_idx += [j] * len(cut)
        feats = compute_features(P.stack(segments), kind)
        starts = np.array([s.start for s in segments], dtype=np.int64)
        ends = np.array([s.end for s in segments], dtype=np.int64)
        interval = np.array(interval_idx, dtype=np.int64)
        _write_cache(cache_file, features=feats, starts=starts, ends=ends, interval=interval)
    types = [intervals[int(j)].call_type if intervals is not None else "" for j in interval]
    if len(feats) == 0:
        skipped.append(Skipped(row.recording, f"no segments ({method} found no calls)"))
        return None
    return feats, starts, ends, types


def build_dataset(
    data_dir: str | Path,
    *,
    feature: FeatureKind = "mfcc",
    group_col: str | None = None,
    label_col: str | None = None,
    classes: str | Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    use_detector: bool = True,
    use_annotations: bool = True,
    only: Sequence[str] | None = None,
) -> Dataset:
    """Build the labelled segments of a dataset folder (see the module docstring).

    Parameters
    ----------
    data_dir : folder with ``manifest.csv`` and the recordings it names
    feature : 'mfcc' -> (N, 2, 86, 40) or 'combined' -> (N, 2, 86, 62)
    group_col, label_col : manifest columns; found automatically when None
    classes : the two class names in output order; from the data when None
    cache_dir : feature cache folder (default ``DATA_DIR/.pandapulse-cache``)
    use_detector : segment recordings without annotations with ``model.detect``
    use_annotations : False: ignore annotations and cut every recording with the detector, as
        ``/predict`` and the live service do (a held-out test of the whole path)
    only : build only these recordings (manifest names), e.g. those a subsample kept
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder")
    if feature not in FEATURE_DIMS:
        raise DataError(f"unknown feature {feature!r}: use one of {sorted(FEATURE_DIMS)}")
    cache = Path(cache_dir) if cache_dir is not None else data_dir / CACHE_DIR_NAME
    rows, class_names, columns, skipped = read_manifest(
        data_dir, group_col=group_col, label_col=label_col, classes=classes
    )
    if only is not None:
        keep = set(only)
        rows = [r for r in rows if r.recording in keep]
    detector = find_detector() if use_detector else (None, "")
    stats = _BuildStats()
    parts: list[tuple[Row, np.ndarray, np.ndarray, np.ndarray, list[str]]] = []
    for row in rows:
        try:
            got = _recording_segments(
                row, feature, cache, detector, stats, skipped, use_annotations
            )
        except (AudioError, DataError) as err:
            skipped.append(Skipped(row.recording, str(err)))
            continue
        if got is not None:
            parts.append((row, *got))
    for item in skipped:
        log.warning("skipped %s", item)
    if not parts:
        raise DataError(
            f"no usable segments in {data_dir}"
            + (f"; skipped: {'; '.join(map(str, skipped[:5]))}" if skipped else "")
        )
    n_feat = FEATURE_DIMS[feature]
    features = np.concatenate([p[1] for p in parts]).reshape(-1, C.N_CHANNELS, C.N_FRAMES, n_feat)
    label_of = {name: i for i, name in enumerate(class_names)}
    counts = [len(p[1]) for p in parts]
    dataset = Dataset(
        features=features,
        labels=np.repeat([label_of[p[0].label] for p in parts], counts).astype(np.int64),
        groups=np.repeat([p[0].group for p in parts], counts).astype(str),
        recordings=np.repeat([p[0].recording for p in parts], counts).astype(str),
        starts=np.concatenate([p[2] for p in parts]).astype(np.int64),
        ends=np.concatenate([p[3] for p in parts]).astype(np.int64),
        call_types=np.array([t for p in parts for t in p[4]], dtype=str),
        class_names=class_names,
        skipped=tuple(skipped),
    )
    summary = {
        "data_dir": str(data_dir),
        "feature": feature,
        "columns": columns,
        "class_names": list(class_names),
        "recordings": len(parts),
        "groups": len(set(dataset.groups.tolist())),
        "segments": len(dataset),
        "segments_per_class": dataset.class_counts(),
        "recordings_per_class": dict(Counter(p[0].label for p in parts)),
        "segmentation": dict(stats.methods),
        "detector": "model.detect.detect_calls" if detector[0] is not None else None,
        "cache": {"dir": str(cache), "hits": stats.cache_hits, "misses": stats.cache_misses},
        "skipped": [{"item": s.item, "reason": s.reason} for s in skipped],
    }
    log.info(
        "dataset %s: %d segments from %d recordings in %d groups %s; segmentation %s; %d skipped;"
        " cache %d hits, %d computed",
        data_dir,
        len(dataset),
        len(parts),
        summary["groups"],
        summary["segments_per_class"],
        dict(stats.methods),
        len(skipped),
        stats.cache_hits,
        stats.cache_misses,
    )
    return dataclasses.replace(dataset, summary=summary)


def subsample(dataset: Dataset, max_segments: int | None, *, seed: int = 0) -> Dataset:
    """At most ``max_segments`` segments, drawn at random without replacement (order kept)."""
    if max_segments is None or len(dataset) <= max_segments:
        return dataset
    if max_segments < 1:
        raise DataError(f"max_segments must be positive, got {max_segments}")
    idx = np.sort(
        np.random.default_rng(seed).choice(len(dataset), size=max_segments, replace=False)
    )
    sub = dataset.subset(idx)
    summary = {
        **dataset.summary,
        "subsampled": {"from": len(dataset), "to": max_segments, "seed": seed},
    }
    summary["segments_per_class"] = sub.class_counts()
    return dataclasses.replace(sub, summary=summary)
