"""What CPU this machine has, for the reports and benchmarks that must say where they ran.

Read from ``/proc/cpuinfo`` (Linux) in this one place; elsewhere ``platform`` gives what it can.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The ``key : value`` fields of ``/proc/cpuinfo`` text, each as the first processor lists
    it (the others repeat them)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _fields() -> dict[str, str]:
    try:
        return cpuinfo_fields(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


def cpu_model() -> str:
    """The CPU's marketing name (``Intel(R) Xeon(R) ...``), or the best ``platform`` knows."""
    return (
        _fields().get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    )


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``avx2``, ``avx512f``, ``amx_bf16``...); empty where unknown."""
    return frozenset(_fields().get("flags", "").split())
