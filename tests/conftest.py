"""Fixtures shared by the whole suite. Component-specific ones live in each folder's conftest."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model import checkpoint
from model.network import CGANet
from tests.pulse import PulseError, PulseServer, missing_tools, refresh_portaudio

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


@pytest.fixture
def pulse(monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    """A private PulseAudio server with the null sink ``enclosure``; this process's environment
    points PulseAudio clients (ALSA's ``pulse`` device included) at it, so capturing
    ``enclosure.monitor`` records what is played into the sink. Skipped only where PulseAudio
    cannot be installed at all; a missing install that scripts/setup.sh would fix fails."""
    missing = missing_tools()
    if missing:
        if shutil.which("apt-get") is None:
            pytest.skip(f"PulseAudio is not installable here ({', '.join(missing)} missing)")
        pytest.fail(f"PulseAudio tools missing: {', '.join(missing)}; run scripts/setup.sh")
    try:
        import sounddevice  # noqa: F401  (loads libportaudio2)
    except OSError as err:
        pytest.fail(f"PortAudio is missing ({err}); run scripts/setup.sh")
    server = PulseServer()
    try:
        server.start()
    except PulseError as err:
        server.stop()
        pytest.fail(f"cannot start a private PulseAudio server: {err}")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    refresh_portaudio()
    try:
        yield server
    finally:
        server.stop()
