"""Archive scoring throughput: hours of audio scored per minute, and per core, on this machine.

Scores one folder of synthetic encounters (``--files`` recordings of ``--minutes`` each, 16-bit
stereo WAV at 44.1 kHz; distinct encounters with quiet spells, so about a third of the audio is
calling) by running ``pandapulse predict DIR`` itself, in four ways:

1. ``--workers 1``: one process, torch's own thread pool over every core;
2. the same with ``OMP_NUM_THREADS=1``: one core (the unit the parallel runs are made of);
3. ``--workers N``: local worker processes, one per core, one torch thread each (the default);
4. ``--scheduler``: a Dask ``LocalCluster`` with as many single-threaded worker processes.

Each run is the wall time of the whole command into an empty results folder (what a user waits
for: Python and torch start-up, model loading, worker start-up); the Dask cluster is started
before, as a lab's cluster is already running (its workers keep the model loaded between
runs). Per core divides
by the cores the run may use. Medians of ``--repeats`` runs. Prints the machine (``lscpu``) and
its load; with ``--write`` (the default) records the figures in BENCHMARKS.md's "Archive
scoring" section. Usage:
    .venv/bin/python bench/archive_bench.py [--files 16] [--minutes 3] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/archive_bench.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.benchmarks_md import write_section  # noqa: E402
from model import archive  # noqa: E402
from model import constants as C  # noqa: E402
from model.checkpoint import DEMO_MODEL, read_metadata  # noqa: E402
from model.hardware import cpu_model  # noqa: E402

SECTION = "## Archive scoring"
SR = C.SAMPLE_RATE


def lscpu_model() -> str:
    """The CPU model as ``lscpu`` names it (``/proc/cpuinfo`` when lscpu is missing)."""
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return cpu_model()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return cpu_model()


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_corpus(folder: Path, files: int, minutes: float) -> float:
    """Write ``files`` distinct synthetic encounters of ``minutes`` each; their total seconds."""
    from model.synth import generate_encounter

    total = 0.0
    for i in range(files):
        audio = generate_encounter(
            100 + i,
            outcome=("success", "failure")[i % 2],
            duration_s=minutes * 60,
            quiet_spells=True,
        ).audio
        sub = folder / f"site-{i % 3}" / f"day-{i // 3:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(
            sub / f"encounter-{i:03d}.wav", np.ascontiguousarray(audio.T), SR, subtype="PCM_16"
        )
        total += audio.shape[1] / SR
    return total


def timed(command: list[str], env: dict[str, str], work: Path, repeats: int) -> tuple[float, float]:
    """(median wall seconds, audio seconds scored) of ``repeats`` runs of the ``pandapulse
    predict`` command line ``command`` (``--out`` added), each into a fresh results folder."""
    walls = []
    audio_s = 0.0
    for i in range(repeats):
        out = work / f"results-{time.monotonic_ns()}-{i}"
        start = time.perf_counter()
        done = subprocess.run(
            [*command, "--out", str(out), "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
        summary = json.loads(done.stdout)
        if summary["failed"] or not summary["scored"]:
            raise SystemExit(f"the benchmark corpus did not score cleanly: {summary['failed']}")
        audio_s = summary["audio_hours"] * 3600
        shutil.rmtree(out)
    return statistics.median(walls), audio_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)

    import torch
    from distributed import LocalCluster

    n = cores()
    default = archive.default_workers()
    load_before = os.getloadavg()
    model_version = str(read_metadata(args.model)["model_version"])
    print(f"CPU: {lscpu_model()} ({n} cores); load average {load_before[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        start = time.perf_counter()
        total_s = make_corpus(corpus, args.files, args.minutes)
        print(
            f"corpus: {args.files} files, {total_s / 3600:.2f} h of audio"
            f" (made in {time.perf_counter() - start:.0f} s)"
        )

        predict = [sys.executable, "-m", "service.cli", "predict", str(corpus)]
        predict += ["--model", str(args.model)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        one_thread = {**env, "OMP_NUM_THREADS": "1"}  # torch's intra-op threads
        cluster = LocalCluster(
            n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None
        )
        runs: list[tuple[str, int, list[str], dict[str, str]]] = [
            (
                f"`--workers 1`: this process, torch's {n} threads",
                n,
                [*predict, "--workers", "1"],
                env,
            ),
            (
                "`--workers 1`, OMP_NUM_THREADS=1: one core",
                1,
                [*predict, "--workers", "1"],
                one_thread,
            ),
            (
                f"`--workers {n}`{' (the default here)' if default == n else ''}:"
                f" {n} processes x 1 thread",
                n,
                [*predict, "--workers", str(n)],
                env,
            ),
            (
                f"`--scheduler`: Dask LocalCluster, {n} worker processes x 1 thread",
                n,
                [*predict, "--scheduler", cluster.scheduler_address],
                env,
            ),
        ]
        rows = []
        try:
            for name, used, command, run_env in runs:
                wall, audio_s = timed(command, run_env, work, args.repeats)
                per_min = audio_s / 3600 / (wall / 60)
                rows.append((name, used, wall, per_min, per_min / used))
                print(
                    f"{name}: {wall:.1f} s, {per_min:.2f} h/min, {per_min / used:.2f} h/min per core"
                )
        finally:
            cluster.close()
    load_after = os.getloadavg()

    from model.classifier import resolve_precision

    precision = "auto"
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bench/archive_bench.py`"
        " (figures written by the script).",
        "",
        f"- Machine: {lscpu_model()} (lscpu), {n} cores; Python {platform.python_version()},"
        f" torch {torch.__version__}; load average {load_before[0]:.2f} before,"
        f" {load_after[0]:.2f} after (the machine is shared: figures move with its load)",
        f"- Model: {args.model.name} ({model_version}), precision {precision}"
        f" ({resolve_precision(precision, 'cpu')} on this CPU)",
        f"- Corpus: {args.files} WAV files of {args.minutes:g} min (16-bit stereo 44.1 kHz,"
        f" synthetic encounters with quiet spells), {total_s / 3600:.2f} h of audio, in"
        " nested folders. Each figure is the wall time of the whole `pandapulse predict CORPUS"
        " --out EMPTY` command (Python and torch start-up, model loading and local workers"
        " included; the Dask cluster was started before, as a lab's is); median of"
        f" {args.repeats} runs",
        "",
        "| how | cores used | wall s | hours of audio per minute | per core |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {used} | {wall:.1f} | **{per_min:.2f}** | {per_core:.2f} |"
        for name, used, wall, per_min, per_core in rows
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        write_section(SECTION, "archive_bench", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
