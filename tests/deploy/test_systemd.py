"""deploy/pandapulse.service: the keys a bare-metal box needs, read as systemd reads them."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "pandapulse.service"


def unit() -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd keys may repeat, e.g. DeviceAllow)."""
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        assert section is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        out[section][key.strip()].append(value.strip())
    return out


def one(section: str, key: str) -> str:
    values = unit()[section][key]
    assert len(values) == 1, f"[{section}] {key}: {values}"
    return values[0]


def test_sections() -> None:
    assert set(unit()) == {"Unit", "Service", "Install"}
    assert one("Install", "WantedBy") == "multi-user.target"


def test_dedicated_user_in_the_audio_group() -> None:
    assert one("Service", "User") == "pandapulse"
    assert one("Service", "User") != "root"
    assert "audio" in one("Service", "SupplementaryGroups").split()


def test_restarts_on_failure() -> None:
    assert one("Service", "Restart") == "on-failure"
    assert one("Service", "RestartSec")


def test_token_from_an_environment_file_not_the_unit() -> None:
    assert one("Service", "EnvironmentFile").startswith("/etc/pandapulse/")
    for value in unit()["Service"].get("Environment", []):
        assert "TOKEN" not in value.upper() and "WEBHOOK" not in value.upper()


def test_starts_one_service_process() -> None:
    start = one("Service", "ExecStart").split()
    assert start[0].endswith("/pandapulse") and start[0].startswith("/")
    assert start[1] == "serve" and "--workers" not in start


def test_hardening() -> None:
    svc = unit()["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "DevicePolicy": "closed",
        "SystemCallFilter": "@system-service",
        "SystemCallErrorNumber": "EPERM",
    }
    for key, value in expected.items():
        assert svc[key] == [value], key
    assert svc["CapabilityBoundingSet"] == [""]
    # The sound card and the GPU stay reachable; the state directory is the one writable path.
    assert "char-alsa rw" in svc["DeviceAllow"]
    assert any(v.startswith("/dev/nvidia") for v in svc["DeviceAllow"])
    assert "PrivateDevices" not in svc
    assert one("Service", "StateDirectory") == "pandapulse"
    assert one("Service", "ReadWritePaths") == "/var/lib/pandapulse"
    data_dir = [v for v in svc["Environment"] if v.startswith("PANDAPULSE__STORAGE__DATA_DIR=")]
    assert data_dir == ["PANDAPULSE__STORAGE__DATA_DIR=/var/lib/pandapulse"]


def test_systemd_analyze_finds_no_unknown_or_unparsable_key() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here; the key checks above still ran")
    result = subprocess.run([tool, "verify", str(UNIT)], capture_output=True, text=True, timeout=60)
    # The ExecStart binary is absent on a build machine; anything systemd ignores is a fault.
    complaints = [
        line for line in result.stderr.splitlines() if "ignoring" in line or "Unknown" in line
    ]
    assert complaints == [], "\n".join(complaints)


def test_same_allocator_setting_as_the_image() -> None:
    """The soak (tests/reliability/test_soak.py) runs with the image's MALLOC_MMAP_THRESHOLD_;
    the bare-metal unit must run the service the same way."""
    from tests.deploy import dockerfile as df

    image = df.env(df.instructions(REPO / "Dockerfile"))["MALLOC_MMAP_THRESHOLD_"]
    assert f"MALLOC_MMAP_THRESHOLD_={image}" in unit()["Service"]["Environment"]
