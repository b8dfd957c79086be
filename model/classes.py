"""Class names: which manifest label becomes which output column of CGANet.

The live service treats a model's class names as the meaning of its two columns, and raises the
failure alarm on the ``failure`` column. A label's spelling must therefore never reorder them:

- Panda outcomes, whatever their case or spelling (``success``, ``Success``, ``SUCCESSFUL``,
  ``failed``, ...), become the canonical names ``("success", "failure")``: success is class 0.
- Labels whose order means nothing by itself (``1``/``0``, ``true``/``false``, ``yes``/``no``)
  are refused unless ``--classes`` says which is which: ``--classes success=1,failure=0``
  (NAME=LABEL pairs, in output order) or ``--classes 1,0`` (labels in output order).
- Any other two labels (``pain``/``discomfort``) keep their spelling, in sorted order; such a
  model can be scored and shown, but its alarm class must be named (``alerts.alarm_class``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model import constants as C
from model.errors import DataError

PANDA_SPELLINGS: dict[str, frozenset[str]] = {
    C.CLASS_NAMES[0]: frozenset({"success", "successful", "succeeded", "succeed"}),
    C.CLASS_NAMES[1]: frozenset({"failure", "failed", "fail", "unsuccessful"}),
}
"""Spellings (case-insensitive) of the panda outcomes; each maps to its canonical name."""
AMBIGUOUS_LABELS = frozenset(
    {"0", "1", "-1", "true", "false", "yes", "no", "y", "n", "t", "f", "pos", "neg"}
)
"""Labels whose meaning and order cannot be told from the label itself (case-insensitive)."""
EXAMPLE = "--classes success=1,failure=0"


def key(label: str) -> str:
    """The form labels are compared in: stripped and case-folded."""
    return label.strip().casefold()


def panda_name(label: str) -> str | None:
    """The canonical panda outcome a label spells, or None."""
    k = key(label)
    return next((name for name, spellings in PANDA_SPELLINGS.items() if k in spellings), None)


def is_panda(class_names: Sequence[str]) -> bool:
    """True when ``class_names`` are the panda outcomes in the service's order."""
    return tuple(class_names) == C.CLASS_NAMES


@dataclass(frozen=True)
class ClassMap:
    """The two class names (column order) and which labels (by ``key``) map to each column."""

    names: tuple[str, str]
    index_of: dict[str, int]

    def index(self, label: str) -> int | None:
        return self.index_of.get(key(label))


def _from_names(names: Sequence[str]) -> ClassMap:
    """Two labels in output order; panda spellings become canonical, success first."""
    pandas = [panda_name(n) for n in names]
    if set(pandas) == set(C.CLASS_NAMES):
        index_of = {key(n): C.CLASS_NAMES.index(str(p)) for n, p in zip(names, pandas, strict=True)}
        return ClassMap(C.CLASS_NAMES, index_of)
    return ClassMap((names[0], names[1]), {key(n): i for i, n in enumerate(names)})


def parse_classes(text: str) -> ClassMap:
    """``--classes``: 'A,B' (labels in output order) or 'success=1,failure=0' (NAME=LABEL)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if len(items) != C.N_CLASSES:
        raise DataError(f"--classes needs exactly {C.N_CLASSES} classes, got {text!r}")
    if all("=" in item for item in items):
        pairs = [tuple(part.strip() for part in item.split("=", 1)) for item in items]
        names = [p[0] for p in pairs]
        labels = [p[1] for p in pairs]
        if (
            len({key(n) for n in names}) != C.N_CLASSES
            or len({key(x) for x in labels}) != C.N_CLASSES
        ):
            raise DataError(f"--classes {text!r}: the names and the labels must be distinct")
        named = _from_names(names)
        return ClassMap(
            named.names,
            {key(x): named.index_of[key(n)] for n, x in zip(names, labels, strict=True)},
        )
    if any("=" in item for item in items):
        raise DataError(f"--classes {text!r}: use A,B or NAME=LABEL for both ({EXAMPLE})")
    if len({key(n) for n in items}) != C.N_CLASSES:
        raise DataError(f"--classes {text!r}: the two classes must differ")
    return _from_names(items)


def class_map(labels: Sequence[str], classes: str | Sequence[str] | None = None) -> ClassMap:
    """The ``ClassMap`` for a manifest's labels (see the module doc); raises ``DataError``
    naming ``--classes`` when the labels do not say which class is which."""
    if classes is not None:
        return parse_classes(classes if isinstance(classes, str) else ",".join(classes))
    spelled: dict[str, str] = {}
    for label in labels:
        spelled.setdefault(key(label), label.strip())
    outcomes = {k: panda_name(k) for k in spelled if panda_name(k) is not None}
    if spelled and (len(outcomes) == len(spelled) or set(outcomes.values()) == set(C.CLASS_NAMES)):
        # panda outcomes (even when only one occurs); any other label is left out, with a reason
        return ClassMap(
            C.CLASS_NAMES, {k: C.CLASS_NAMES.index(str(n)) for k, n in outcomes.items()}
        )
    ambiguous = sorted(k for k in spelled if k in AMBIGUOUS_LABELS)
    if ambiguous:
        raise DataError(
            f"the labels {sorted(spelled.values())} do not say which class is which: name them"
            f" with --classes, e.g. {EXAMPLE} for panda outcomes, or --classes A,B in output order"
        )
    if len(spelled) != C.N_CLASSES:
        raise DataError(
            f"CGANet is a two-class model but the labels are {sorted(spelled.values())}: keep two"
            " in the manifest or choose them with --classes A,B"
        )
    return _from_names(sorted(spelled.values(), key=key))
