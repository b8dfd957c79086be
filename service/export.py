"""``pandapulse export-dataset``: stored encounters -> a dataset folder that ``pandapulse train``
and ``pandapulse evaluate`` read as it is; and one encounter's calls as a Raven selection table
or an Audacity label track.

The folder (``model.data`` reads it unchanged)::

    OUT/manifest.csv                      one row per recording (MANIFEST_FIELDS)
    OUT/skipped.csv                       every encounter, or part, left out, and why
    OUT/export.json                       when, from where, with which filters, the counts
    OUT/recordings/<name>.flac            an encounter's audio as captured (44.1 kHz, 2 ch)
    OUT/recordings/<name>.Table.1.selections.txt   its scored calls (Raven)

A *recording* is one part of an encounter's whole audio (``service.encounter_audio``): usually
the encounter has one; a restart of the service during an encounter, or an outage longer than a
minute, starts another. ``encounter`` is the group column (train and evaluate never split an
encounter between training and validation) and ``outcome`` the label: the keeper's
``success``/``failure``, the same for every call of the encounter. Each selection is one
scored 2-s segment as the live service cut it, with its scores and model version, so training
on the folder sees exactly the segments the service scored (``model.data`` cuts annotated
intervals with the same code).

Encounters still open, or without a ``success``/``failure`` outcome, are left out unless asked
for (``--all``); encounters whose audio was not kept (``storage.keep_encounter_audio`` off, or
removed by retention) are left out with what they lack. Everything left out is listed on stderr
and in ``skipped.csv``.

The History view gets the same folder as a zip (``zip_stream``), built from the same ``Plan``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from model import constants as C
from model.files import replacing
from model.raven import Selection, write_table
from service.errors import ConfigError
from service.records import AudioPartRow, EncounterRow, SegmentRow
from service.storage import DB_NAME, Storage, iso, utc_now

log = logging.getLogger(__name__)

RECORDINGS_DIR = "recordings"
MANIFEST = "manifest.csv"
SKIPPED = "skipped.csv"
INFO = "export.json"
TABLE_SUFFIX = ".Table.1.selections.txt"
"""Raven's own naming: ``model.data`` finds ``<stem>.*selections.txt`` beside the audio."""
LABELS = ("success", "failure")
"""Outcomes that are training labels (``unknown`` is not)."""
CALL_LABEL = "call"
"""The annotation of every selection: the label of a recording is its encounter's outcome."""
WALL_SLACK_S = 1.0
"""Tolerance when matching a segment's wall time to an audio part (ISO times are rounded)."""
MANIFEST_FIELDS = [
    "recording",
    "annotation",
    "encounter",
    "part",
    "pair",
    "enclosure",
    "source",
    "keeper",
    "outcome",
    "copulation_observed",
    "pregnancy_confirmed",
    "started_at",
    "ended_at",
    "audio_started_at",
    "audio_seconds",
    "silence_filled_seconds",
    "calls",
    "p_success",
    "verdict",
    "model_version",
    "notes",
]
SKIPPED_FIELDS = ["encounter", "part", "started_at", "outcome", "reason"]
EXTRA_COLUMNS = ("Segment", "P(success)", "P(failure)", "Model version", "Wall time")
"""Raven columns beyond the standard ones and the annotation, in this order."""


@dataclass(frozen=True)
class ExportOptions:
    """Which encounters to export. None: no condition."""

    since: datetime | None = None
    """Encounters that started at or after this time (UTC)."""
    source: str | None = None
    encounter_ids: tuple[int, ...] | None = None
    include_unlabelled: bool = False
    """Also encounters without a success/failure outcome (their ``outcome`` stays empty:
    ``train`` lists and skips those rows)."""


@dataclass(frozen=True)
class Recording:
    """One audio part in the export: where its file is and what goes beside it."""

    name: str
    """Path in the export, relative to its root (``recordings/<stem>.flac``)."""
    audio: Path
    selections: tuple[Selection, ...]
    row: dict[str, str]
    """Its manifest row."""

    @property
    def table(self) -> str:
        return self.name.removesuffix(".flac") + TABLE_SUFFIX


@dataclass(frozen=True)
class Skip:
    encounter: int
    started_at: str
    outcome: str
    reason: str
    part: str = ""

    def __str__(self) -> str:
        what = f"encounter {self.encounter}" + (f" ({self.part})" if self.part else "")
        return f"{what}: {self.reason}"


@dataclass
class Plan:
    """What an export holds, read from storage in one go (then written without it)."""

    recordings: list[Recording] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    encounters: int = 0
    options: ExportOptions = field(default_factory=ExportOptions)


# --- reading storage ---------------------------------------------------------------------------


def plan_export(storage: Storage, options: ExportOptions) -> Plan:
    """The recordings and the left-out encounters ``options`` select (on storage's thread)."""
    rows = storage.encounters_where(
        since=None if options.since is None else iso(options.since),
        source=options.source,
        ids=options.encounter_ids,
    )
    plan = Plan(options=options)
    for enc in rows:
        outcome = enc.outcome or ""
        labelled = outcome in LABELS

        def skip(reason: str, part: str = "", enc: EncounterRow = enc) -> None:
            plan.skipped.append(Skip(enc.id, enc.started_at, enc.outcome or "", reason, part))

        if enc.is_open:
            skip("still open: export it once it has ended")
            continue
        if not labelled and not options.include_unlabelled:
            skip(
                "no outcome recorded: record success or failure in the History view (the"
                " training label), or export with --all"
                if not outcome
                else f"outcome {outcome!r} is not a training label (success or failure);"
                " export with --all to include it anyway"
            )
            continue
        parts = storage.audio_parts_of(enc.id)
        if not parts:
            skip(
                "no whole audio: it was not kept (storage.keep_encounter_audio was off, or the"
                " encounter predates it); only its 2-s clips exist"
            )
            continue
        segments = storage.segments_of(enc.id)
        exported = 0
        for number, part in enumerate(parts, start=1):
            label = f"part {number}, {part.path}"
            if part.finished_at is None:
                skip(
                    "audio file not finalised (the service stopped abruptly): start the service"
                    " once to repair it",
                    label,
                )
                continue
            if part.removed_at is not None:
                why = (
                    "nothing of it was readable after a crash"
                    if part.repaired and part.frames == 0
                    else f"audio removed by retention on {part.removed_at}"
                    " (storage.max_disk_mb / keep_days)"
                )
                skip(why, label)
                continue
            path = storage.audio_file(part)
            if path is None:
                skip("audio file missing from the data directory", label)
                continue
            plan.recordings.append(_recording(enc, part, number, path, segments))
            exported += 1
        if exported:
            plan.encounters += 1
    return plan


def _recording(
    enc: EncounterRow,
    part: AudioPartRow,
    number: int,
    path: Path,
    segments: Sequence[SegmentRow],
) -> Recording:
    started = _parse_time(part.started_at)
    stem = f"encounter{enc.id:05d}_{enc.source}_{started.strftime('%Y%m%dT%H%M%SZ')}"
    if number > 1:
        stem += f"_part{number}"
    name = f"{RECORDINGS_DIR}/{stem}.flac"
    selections = tuple(
        _selection(seg, (seg.start_sample - part.start_sample) / C.SAMPLE_RATE)
        for seg in segments_in(part, segments)
    )
    row = {
        "recording": name,
        "annotation": name.removesuffix(".flac") + TABLE_SUFFIX,
        "encounter": str(enc.id),
        "part": str(number),
        "pair": enc.pair,
        "enclosure": enc.enclosure,
        "source": enc.source,
        "keeper": enc.keeper,
        "outcome": enc.outcome if enc.outcome in LABELS else "",
        "copulation_observed": _yes_no(enc.copulation_observed),
        "pregnancy_confirmed": _yes_no(enc.pregnancy_confirmed),
        "started_at": enc.started_at,
        "ended_at": enc.ended_at or "",
        "audio_started_at": part.started_at,
        "audio_seconds": f"{part.frames / C.SAMPLE_RATE:.3f}",
        "silence_filled_seconds": f"{part.gap_samples / C.SAMPLE_RATE:.3f}",
        "calls": str(len(selections)),
        "p_success": "" if enc.p_success is None else f"{enc.p_success:.4f}",
        "verdict": enc.verdict or "",
        "model_version": enc.model_version or "",
        "notes": enc.notes,
    }
    return Recording(name, path, selections, row)


def segments_in(part: AudioPartRow, segments: Iterable[SegmentRow]) -> list[SegmentRow]:
    """The segments inside ``part``'s audio: same run of the service (wall time), and their
    samples within the file."""
    start = _parse_time(part.started_at)
    end = start + timedelta(seconds=part.frames / C.SAMPLE_RATE)
    slack = timedelta(seconds=WALL_SLACK_S)
    found = []
    for seg in segments:
        offset = seg.start_sample - part.start_sample
        if not 0 <= offset < part.frames:
            continue
        if start - slack <= _parse_time(seg.wall_time) <= end + slack:
            found.append(seg)
    return found


def _selection(seg: SegmentRow, begin_s: float) -> Selection:
    length = (seg.end_sample - seg.start_sample) / C.SAMPLE_RATE
    return Selection(
        begin_s=round(begin_s, 6),
        end_s=round(begin_s + length, 6),
        low_hz=0.0,
        high_hz=C.SAMPLE_RATE / 2,
        label=CALL_LABEL,
        extra={
            "Segment": seg.id,
            "P(success)": round(seg.p_success, 4),
            "P(failure)": round(seg.p_failure, 4),
            "Model version": seg.model_version,
            "Wall time": seg.wall_time,
        },
    )


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- one encounter's calls ------------------------------------------------------------------------


@dataclass(frozen=True)
class EncounterCalls:
    """One encounter's calls on one time line, for review against its audio.

    Times count from the start of the encounter's first kept audio file (``reference``), or
    from the encounter's start when none was kept; ``files[i]`` names the audio file selection
    ``i`` lies in ('' when it lies in none).
    """

    encounter: EncounterRow
    reference: str
    selections: tuple[Selection, ...]
    files: tuple[str, ...]


def encounter_calls(storage: Storage, encounter_id: int) -> EncounterCalls | None:
    """The encounter's scored calls (storage's thread); None when there is no such encounter."""
    enc = storage.get_encounter(encounter_id)
    if enc is None:
        return None
    parts = [p for p in storage.audio_parts_of(encounter_id) if p.frames > 0 or not p.finished_at]
    segments = storage.segments_of(encounter_id)
    ref_text = parts[0].started_at if parts else enc.started_at
    ref = _parse_time(ref_text)
    where: dict[int, tuple[AudioPartRow, float]] = {}
    for part in parts:
        shift = (_parse_time(part.started_at) - ref).total_seconds()
        for seg in segments_in_open(part, segments):
            where.setdefault(seg.id, (part, shift))
    selections, files = [], []
    for seg in segments:
        if seg.id in where:
            part, shift = where[seg.id]
            begin = shift + (seg.start_sample - part.start_sample) / C.SAMPLE_RATE
            files.append(Path(part.path).name)
        else:
            begin = (_parse_time(seg.wall_time) - ref).total_seconds()
            files.append("")
        selections.append(_selection(seg, max(0.0, begin)))
    return EncounterCalls(enc, ref_text, tuple(selections), tuple(files))


def segments_in_open(part: AudioPartRow, segments: Iterable[SegmentRow]) -> list[SegmentRow]:
    """``segments_in`` for a part that may still be written (its length not yet stored)."""
    if part.finished_at is not None:
        return segments_in(part, segments)
    start = _parse_time(part.started_at)
    return [
        s
        for s in segments
        if s.start_sample >= part.start_sample
        and _parse_time(s.wall_time) >= start - timedelta(seconds=WALL_SLACK_S)
    ]


def raven_text(calls: EncounterCalls) -> str:
    """The calls as a Raven selection table, with the audio file each lies in."""
    selections = [
        Selection(
            s.begin_s,
            s.end_s,
            s.low_hz,
            s.high_hz,
            s.label,
            {**s.extra, "Audio file": f},
        )
        for s, f in zip(calls.selections, calls.files, strict=True)
    ]
    return table_text(selections)


def table_text(selections: Sequence[Selection]) -> str:
    """A Raven selection table as text (``model.raven.write_table`` writes it)."""
    with tempfile.TemporaryDirectory(prefix="pandapulse-raven-") as tmp:
        path = write_table(Path(tmp) / f"calls{TABLE_SUFFIX}", list(selections))
        return path.read_text(encoding="utf-8")


def audacity_text(calls: EncounterCalls) -> str:
    """The calls as an Audacity label track (start, end, label; tab-separated, seconds)."""
    from crowsetta.formats.seq import AudSeq  # slow to import: only when asked for

    labels = [
        f"{CALL_LABEL} {s.extra['Segment']} P(success) {float(s.extra['P(success)']):.2f}"
        for s in calls.selections
    ]
    if not labels:
        return ""
    track = AudSeq(
        start_times=np.array([s.begin_s for s in calls.selections], dtype=float),
        end_times=np.array([s.end_s for s in calls.selections], dtype=float),
        labels=np.array(labels, dtype=str),
        annot_path=Path("calls.txt"),
    )
    with tempfile.TemporaryDirectory(prefix="pandapulse-audacity-") as tmp:
        path = Path(tmp) / "calls.txt"
        track.to_file(path)
        return path.read_text(encoding="utf-8")


# --- writing ------------------------------------------------------------------------------------


def _csv_text(fields: Sequence[str], rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def manifest_text(recordings: Iterable[Recording]) -> str:
    return _csv_text(MANIFEST_FIELDS, (r.row for r in recordings))


def skipped_text(skipped: Iterable[Skip]) -> str:
    return _csv_text(
        SKIPPED_FIELDS,
        ({k: str(v) for k, v in asdict(s).items() if k in SKIPPED_FIELDS} for s in skipped),
    )


def info_text(plan: Plan, recordings: Sequence[Recording], data_dir: str) -> str:
    opts = plan.options
    return json.dumps(
        {
            "exported_at": iso(utc_now()),
            "data_dir": data_dir,
            "options": {
                "since": None if opts.since is None else iso(opts.since),
                "source": opts.source,
                "encounters": None if opts.encounter_ids is None else list(opts.encounter_ids),
                "include_unlabelled": opts.include_unlabelled,
            },
            "encounters": len({r.row["encounter"] for r in recordings}),
            "recordings": len(recordings),
            "audio_hours": round(sum(float(r.row["audio_seconds"]) for r in recordings) / 3600, 4),
            "calls": sum(len(r.selections) for r in recordings),
            "skipped": len(plan.skipped),
            "label": "manifest column 'outcome' (the keeper's success/failure of the encounter;"
            " every call of a recording carries it); group column 'encounter'",
            "model_versions": sorted(
                {str(s.extra["Model version"]) for r in recordings for s in r.selections}
            ),
        },
        indent=2,
    )


def check_out(out: Path) -> None:
    """OUT must be new, empty, or an earlier export (refreshed in place: unchanged audio is not
    copied again, the feature cache stays valid)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / INFO).is_file():
        raise ConfigError(
            f"{out} is not empty and not an earlier export (no {INFO}): choose a new folder"
        )


def write_folder(plan: Plan, out: Path, *, data_dir: str = "") -> list[Recording]:
    """Write the export under ``out``; returns the recordings written (a file retention
    removed meanwhile is added to ``plan.skipped``)."""
    check_out(out)
    (out / RECORDINGS_DIR).mkdir(parents=True, exist_ok=True)
    written = []
    for rec in plan.recordings:
        target = out / rec.name
        try:
            size = rec.audio.stat().st_size
            if not (target.is_file() and target.stat().st_size == size):
                _atomic_copy(rec.audio, target)
        except FileNotFoundError:
            plan.skipped.append(_removed_meanwhile(rec))
            continue
        write_table(out / rec.table, list(rec.selections))
        written.append(rec)
    _atomic_write(out / MANIFEST, manifest_text(written))
    _atomic_write(out / SKIPPED, skipped_text(plan.skipped))
    _atomic_write(out / INFO, info_text(plan, written, data_dir))
    return written


def _removed_meanwhile(rec: Recording) -> Skip:
    """The skip of a recording whose audio file retention removed during the export."""
    row = rec.row
    return Skip(
        int(row["encounter"]),
        row["started_at"],
        row["outcome"],
        "audio file removed while exporting (retention)",
        row["part"],
    )


def _atomic_copy(src: Path, dst: Path) -> None:
    with replacing(dst) as tmp:
        shutil.copyfile(src, tmp)


def _atomic_write(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class _Sink(io.RawIOBase):
    """An unseekable stream that collects what zipfile writes, taken out chunk by chunk."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._buffer += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


COPY_CHUNK = 1 << 20
"""Bytes of audio read at a time into the zip stream."""


def zip_stream(plan: Plan, folder: str, *, data_dir: str = "") -> Iterator[bytes]:
    """The export as a zip, streamed (audio stored, text deflated), everything under
    ``folder/``: memory stays at one chunk whatever the size."""
    sink = _Sink()
    written = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for rec in plan.recordings:
            try:
                src = rec.audio.open("rb")
            except FileNotFoundError:
                plan.skipped.append(_removed_meanwhile(rec))
                continue
            with src, zf.open(f"{folder}/{rec.name}", "w", force_zip64=True) as dst:
                while chunk := src.read(COPY_CHUNK):
                    dst.write(chunk)
                    yield sink.take()
            zf.writestr(
                f"{folder}/{rec.table}",
                table_text(rec.selections),
                compress_type=zipfile.ZIP_DEFLATED,
            )
            written.append(rec)
            yield sink.take()
        for name, text in (
            (MANIFEST, manifest_text(written)),
            (SKIPPED, skipped_text(plan.skipped)),
            (INFO, info_text(plan, written, data_dir)),
        ):
            zf.writestr(f"{folder}/{name}", text, compress_type=zipfile.ZIP_DEFLATED)
    yield sink.take()


# --- the command ----------------------------------------------------------------------------------


def parse_since(text: str) -> datetime:
    """``--since``: a date (2026-03-01, midnight UTC) or an ISO-8601 time (UTC when no zone)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        when = datetime.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) or an ISO-8601 time"
        ) from err
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out", type=Path, metavar="OUT", help="folder to write (new, empty, or an earlier export)"
    )
    parser.add_argument("--config", type=Path, default=None, help="the service's YAML config file")
    parser.add_argument(
        "--since",
        type=parse_since,
        default=None,
        metavar="DATE",
        help="only encounters that started on or after DATE (YYYY-MM-DD or ISO time, UTC)",
    )
    parser.add_argument("--source", default=None, help="only this source's encounters")
    parser.add_argument(
        "--encounter",
        type=int,
        action="append",
        default=None,
        metavar="ID",
        help="only this encounter (repeat for several)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--outcome-only",
        dest="include_unlabelled",
        action="store_false",
        help="only encounters whose outcome (success or failure) is recorded: the training"
        " labels (the default)",
    )
    which.add_argument(
        "--all",
        dest="include_unlabelled",
        action="store_true",
        help="also encounters without an outcome (empty 'outcome'; train skips them), e.g. to"
        " review the detector in Raven",
    )
    parser.set_defaults(include_unlabelled=False)


def run(args: argparse.Namespace) -> int:
    from service.config import load_settings

    settings = load_settings(args.config)
    data_dir = settings.storage.data_dir
    if not (data_dir / DB_NAME).is_file():
        raise ConfigError(
            f"no PandaPulse database in {data_dir.resolve()}: point --config at the service's"
            " configuration (storage.data_dir)"
        )
    check_out(args.out)
    options = ExportOptions(
        since=args.since,
        source=args.source,
        encounter_ids=None if args.encounter is None else tuple(args.encounter),
        include_unlabelled=args.include_unlabelled,
    )
    storage = Storage(data_dir)
    try:
        plan = plan_export(storage, options)
    finally:
        storage.close()
    written = write_folder(plan, args.out, data_dir=str(data_dir.resolve()))
    for item in plan.skipped:
        print(f"skipped {item}", file=sys.stderr)
    seconds = sum(float(r.row["audio_seconds"]) for r in written)
    length = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    calls = sum(len(r.selections) for r in written)
    print(
        f"exported {len(written)} recording(s) of {len({r.row['encounter'] for r in written})}"
        f" encounter(s), {length} of audio and {calls} scored calls, to {args.out}"
        + (
            f"; {len(plan.skipped)} left out (listed above and in {args.out / SKIPPED})"
            if plan.skipped
            else ""
        )
    )
    if not written:
        print(
            "nothing to train on: no encounter had both an outcome and its audio",
            file=sys.stderr,
        )
        return 1
    return 0
