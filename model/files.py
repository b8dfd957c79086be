"""Replacing a file in one step, so that a reader (or a crash) never sees half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READABLE = 0o644
"""Mode of a finished file: ``mkstemp`` makes it private (0600), but checkpoints, tables and
datasets are read by other users (the service's, a researcher's)."""


@contextmanager
def replacing(path: Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error it
    replaces ``path`` (``os.replace``: atomic on one file system) with mode ``READABLE``. On an
    error it is removed and ``path`` is left as it was. The parent folder is created.

    ``suffix`` ends the temporary name, for writers that choose a format by it (``np.savez``
    appends ``.npz`` to any other name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, READABLE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
