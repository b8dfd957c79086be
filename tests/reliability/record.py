"""Measured results for RELIABILITY.md: each test appends what it tried and what happened.

Set ``PANDAPULSE_RELIABILITY_LOG=/path/results.jsonl`` to collect them; unset, nothing is
written. The figures in RELIABILITY.md come from such a run.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

ENV = "PANDAPULSE_RELIABILITY_LOG"


def record(test: str, tried: str, happened: str, **figures: Any) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    row = {
        "test": test,
        "tried": tried,
        "happened": happened,
        "figures": figures,
        "at": time.time(),
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row, default=str) + "\n")
