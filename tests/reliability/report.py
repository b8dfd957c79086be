"""Turn a results file written by the reliability suite into the Markdown tables of
RELIABILITY.md: ``python -m tests.reliability.report results.jsonl``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    uploads = [r for r in rows if r["test"] == "bad upload" and r["happened"][:3].isdigit()]
    others = [r for r in rows if r not in uploads]
    print("| test | what was tried | what happened |")
    print("|---|---|---|")
    for r in others:
        print(f"| {r['test']} | {r['tried']} | {r['happened']} |")
    print()
    print("| upload | status | error |")
    print("|---|---|---|")
    for r in uploads:
        status, _, body = r["happened"].partition(" ")
        try:
            error = json.loads(body).get("error", "")
        except json.JSONDecodeError:
            error = ""
        print(f"| {r['tried'].replace('|', '/')} | {status} | {error} |")


if __name__ == "__main__":
    main(sys.argv[1])
