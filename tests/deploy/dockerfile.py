"""A small Dockerfile reader for the tests: instructions with their arguments, and the image's
environment and start command as Docker would compute them (no Docker engine needed)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def instructions(path: Path) -> list[Instruction]:
    """Instructions in order; continuation lines joined, comments and blank lines dropped."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped by Docker too
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        text = " ".join(part for part in buf if part)
        buf = []
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    if buf:
        raise ValueError(f"{path}: the last instruction ends in a line continuation")
    return out


def exec_form(args: str) -> list[str]:
    """``["a", "b"]`` (exec form) -> list; shell form is refused: it would need a shell."""
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not an exec-form JSON array: {args}")
    return value


def env(insts: list[Instruction]) -> dict[str, str]:
    """The ENV the final image carries (``KEY=value`` pairs, several per instruction)."""
    out: dict[str, str] = {}
    for inst in insts:
        if inst.keyword != "ENV":
            continue
        for token in shlex.split(inst.args):
            key, sep, value = token.partition("=")
            if not sep:
                raise ValueError(f"line {inst.line}: use ENV KEY=value, not the legacy form")
            out[key] = value
    return out


def start_command(insts: list[Instruction]) -> list[str]:
    """ENTRYPOINT + CMD, exec form, as the container would run them."""
    entry: list[str] = []
    cmd: list[str] = []
    for inst in insts:
        if inst.keyword == "ENTRYPOINT":
            entry = exec_form(inst.args)
            cmd = []  # Docker resets CMD when ENTRYPOINT is set after it
        elif inst.keyword == "CMD":
            cmd = exec_form(inst.args)
    return entry + cmd


def healthcheck(insts: list[Instruction]) -> tuple[dict[str, str], list[str]]:
    """(options, command) of the last HEALTHCHECK."""
    checks = [i for i in insts if i.keyword == "HEALTHCHECK"]
    if not checks:
        raise ValueError("no HEALTHCHECK")
    opts_text, _, command = checks[-1].args.partition("CMD ")
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", opts_text))
    return options, exec_form(command.strip())
