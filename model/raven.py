"""Raven Pro selection tables: PandaPulse's scored calls as a table Raven opens beside the audio.

A selection table is tab-separated text with a header row. Raven needs the standard columns
(``STANDARD_COLUMNS``: Selection, View, Channel, Begin Time (s), End Time (s), Low Freq (Hz),
High Freq (Hz)); any further column is shown as a measurement or annotation column. Tables are
written with ``crowsetta`` (the same library ``pandapulse train`` reads them with), so what is
written here reads back with ``crowsetta.formats.bbox.Raven.from_file(path, annot_col=...)``.

``write_table`` is generic: each ``Selection`` carries its label (the annotation column) and any
further columns (scores, model version). ``pandapulse predict --raven`` uses it; so can anything
else that has calls with times (stored encounters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.files import replacing

STANDARD_COLUMNS = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
)
"""The columns every Raven selection table has, in Raven's order."""
VIEW = "Spectrogram 1"
"""The view each selection belongs to (Raven's default spectrogram view)."""
SUFFIX = ".selections.txt"
"""Raven recognises selection tables by this ending."""
PREDICTION_MARK = "PandaPulse model"
"""The model-version column of the tables ``pandapulse predict --raven`` writes: such a table
holds a model's scores, not a person's annotations, so ``model.data`` never reads it as one."""


@dataclass(frozen=True)
class Selection:
    """One selection (a call): times in seconds from the start of the file, band in Hz.

    ``label`` fills the annotation column; ``extra`` holds further columns (name -> value), the
    same names in every selection of a table, written in the order of the first one.
    """

    begin_s: float
    end_s: float
    low_hz: float
    high_hz: float
    label: str
    extra: Mapping[str, float | int | str] = field(default_factory=dict)
    channel: int = 1


def write_table(
    path: str | Path, selections: Sequence[Selection], *, annotation_column: str = "Annotation"
) -> Path:
    """Write ``selections`` as a Raven selection table at ``path`` (atomically: a reader never
    sees half a table) and return the path.

    ``path`` must end in ``.txt`` (Raven and crowsetta expect it; ``SUFFIX`` is the convention).
    An empty ``selections`` writes the header alone: Raven opens it as a table with no
    selections (crowsetta refuses to read a table without rows).
    """
    import crowsetta  # slow to import (pandas, pandera): only when a table is written
    import pandas as pd

    path = Path(path)
    if path.suffix != ".txt":
        raise ValueError(f"{path.name}: a Raven selection table's name must end in .txt")
    extra_names: list[str] = list(selections[0].extra) if selections else []
    for sel in selections:
        if list(sel.extra) != extra_names:
            raise ValueError(
                f"every selection needs the same extra columns ({extra_names}), got {list(sel.extra)}"
            )
        if not 0 <= sel.begin_s <= sel.end_s:
            raise ValueError(f"selection {sel.begin_s}-{sel.end_s} s: need 0 <= begin <= end")
    columns = {
        "Selection": [i for i in range(1, len(selections) + 1)],
        "View": [VIEW] * len(selections),
        "Channel": [s.channel for s in selections],
        # crowsetta's names for the four standard columns; it writes Raven's back.
        "begin_time_s": [float(s.begin_s) for s in selections],
        "end_time_s": [float(s.end_s) for s in selections],
        "low_freq_hz": [float(s.low_hz) for s in selections],
        "high_freq_hz": [float(s.high_hz) for s in selections],
        "annotation": [s.label for s in selections],
    }
    for name in extra_names:
        if name in STANDARD_COLUMNS or name == annotation_column:
            raise ValueError(f"extra column {name!r} clashes with a standard column")
        columns[name] = [s.extra[name] for s in selections]
    table = crowsetta.formats.bbox.Raven(
        df=pd.DataFrame(columns), annot_path=path, annot_col=annotation_column
    )
    with replacing(path, suffix=".txt") as tmp:
        table.to_file(tmp)
    return path


def header(path: str | Path) -> list[str]:
    """The column names of the table at ``path`` (its first line); [] when it is empty."""
    with Path(path).open(encoding="utf-8-sig") as handle:
        line = handle.readline().rstrip("\r\n")
    return line.split("\t") if line else []
