"""Fixtures shared by the whole suite. Component-specific ones live in each folder's conftest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import checkpoint
from model.network import CGANet

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session", autouse=True)
def _modest_threads() -> None:
    # The suite runs on 2 cores; several torch threads per test only add contention.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real audio the suite may read (never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the suite expects ../shared beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with seeded random weights, for plumbing tests that need any model file.

    Its metadata says it is untrained; nothing outside tests may ship such a file.
    """
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.safetensors"
    checkpoint.save(path, CGANet(), {"data": {"note": "untrained weights for tests only"}})
    return path
