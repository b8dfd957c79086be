"""The one reader of /proc/cpuinfo: what reports and benchmarks say about the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from model import hardware

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 fma avx512f amx_bf16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 fma avx512f amx_bf16
"""


def test_model_name_and_flags_come_from_cpuinfo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text(CPUINFO)
    monkeypatch.setattr(hardware, "CPUINFO", fake)
    assert hardware.cpu_model() == "Intel(R) Xeon(R) Platinum 8488C"
    assert hardware.cpu_flags() == frozenset({"fpu", "sse2", "avx2", "fma", "avx512f", "amx_bf16"})


def test_without_cpuinfo_platform_names_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    assert hardware.cpu_model()  # platform's name, or "unknown CPU": never empty, never raises
    assert hardware.cpu_flags() == frozenset()


def test_this_machine_is_described() -> None:
    assert hardware.cpu_model()
    if hardware.CPUINFO.is_file() and "flags" in hardware.CPUINFO.read_text():
        assert hardware.cpu_flags()
