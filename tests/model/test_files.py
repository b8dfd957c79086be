"""``model.files.replacing``: a file is replaced whole or not at all."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from model.files import READABLE, replacing


def test_the_new_file_replaces_the_old_one_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "table.csv"
    with replacing(path) as tmp:
        assert tmp.parent == path.parent and not path.exists()
        tmp.write_text("first\n")
    with replacing(path) as tmp:
        tmp.write_text("second\n")
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(path.stat().st_mode) == READABLE
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), replacing(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_the_suffix_is_kept_for_writers_that_choose_a_format_by_it(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "cache.npz"
    with replacing(path, suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz")
        np.savez(tmp, x=np.arange(3))  # would write tmp + ".npz" for any other name
    assert np.load(path)["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]
