"""Writing a benchmark's figures into its section of BENCHMARKS.md.

Each benchmark owns one section and, inside it, the block between its two markers; a re-run
replaces only that block, so notes written by hand around it survive.
"""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\nWhat PandaPulse's parts cost on the machines it runs on. Each"
    " section is written by the benchmark named in it (`make bench` runs them), with the"
    " date, the machine and its load; figures are medians of repeated runs, measured,"
    " never estimated. Timings are not asserted by tests.\n"
)


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of benchmark ``name``'s generated block."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(section: str, name: str, block: str) -> None:
    """Put ``block`` between ``name``'s markers under the heading ``section`` ("## ..."), and
    say so on stdout."""
    begin, end = markers(name)
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    if not text.strip():
        text = HEADER
    generated = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: generated, text, count=1)
    elif section in text:
        text = text.replace(section, f"{section}\n\n{generated}", 1)
    else:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{generated}\n"
    BENCHMARKS.write_text(text)
    print(f"\nwritten to {BENCHMARKS.name} ({section!r})")
