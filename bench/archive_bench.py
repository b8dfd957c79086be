"""Archive scoring throughput: hours of audio scored per minute, and per core, on this machine.

Scores one folder of synthetic encounters (``--files`` recordings of ``--minutes`` each, 16-bit
stereo WAV at 44.1 kHz; distinct encounters with quiet spells, so about a third of the audio is
calling) with ``model.archive.run_archive``, exactly what ``pandapulse predict DIR`` runs, in
four ways:

1. one process, torch's own thread pool over every core (``--workers 1``);
2. one process, one torch thread (the unit the parallel runs are made of);
3. local worker processes, one per core, one torch thread each (``--workers N``, the default);
4. a Dask ``LocalCluster`` with as many single-threaded worker processes (``--scheduler``).

Each run starts from an empty results folder and is timed from the call to the last row
written, local worker start-up and model loading included (what a user waits for); the Dask
cluster is started before the timing, as a lab's cluster is already running (its workers keep
the model loaded between runs). Per core divides
by the cores the run may use. Medians of ``--repeats`` runs. Prints the machine (``lscpu``) and
its load; with ``--write`` (the default) records the figures in BENCHMARKS.md's "Archive
scoring" section. Usage:
    .venv/bin/python bench/archive_bench.py [--files 16] [--minutes 3] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def timed(run: Callable[[Path], archive.Summary], work: Path, repeats: int) -> tuple[float, float]:
    """(median wall seconds, audio seconds scored) of ``repeats`` runs into fresh folders."""
    walls = []
    audio_s = 0.0
    for i in range(repeats):
        out = work / f"results-{time.monotonic_ns()}-{i}"
        start = time.perf_counter()
        archive.release_models()  # each run loads its model, as a fresh command does
        summary = run(out)
        walls.append(time.perf_counter() - start)
        if summary.failed or not summary.scored:
            raise SystemExit(f"the benchmark corpus did not score cleanly: {summary.failed}")
        audio_s = summary.audio_s
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

        def settings(threads: int | None) -> archive.Settings:
            return archive.Settings(model=str(args.model), torch_threads=threads)

        def local(workers: int, threads: int | None) -> Callable[[Path], archive.Summary]:
            return lambda out: archive.run_archive(
                [corpus], out, settings(threads), model_version=model_version,
                workers=workers, progress=False,
            )  # fmt: skip

        cluster = LocalCluster(
            n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None
        )

        def on_dask(out: Path) -> archive.Summary:
            return archive.run_archive(
                [corpus], out, settings(1), model_version=model_version,
                scheduler=cluster.scheduler_address, progress=False,
            )  # fmt: skip

        runs: list[tuple[str, int, Callable[[Path], archive.Summary]]] = [
            (f"1 process, torch's {torch.get_num_threads()} threads", n, local(1, None)),
            ("1 process, 1 torch thread", 1, local(1, 1)),
            (f"{n} worker processes x 1 thread (the default)", n, local(n, 1)),
            (f"Dask LocalCluster, {n} worker processes x 1 thread", n, on_dask),
        ]
        rows = []
        try:
            for name, used, run in runs:
                wall, audio_s = timed(run, work, args.repeats)
                per_min = audio_s / 3600 / (wall / 60)
                rows.append((name, used, wall, per_min, per_min / used))
                print(
                    f"{name}: {wall:.1f} s, {per_min:.2f} h/min, {per_min / used:.2f} h/min per core"
                )
        finally:
            cluster.close()
    load_after = os.getloadavg()

    precision = archive.Settings(model=str(args.model)).precision
    from model.classifier import resolve_precision

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
        " nested folders; each run into an empty results folder, local worker start-up and"
        " model loading included (the Dask cluster was started before, as a lab's is);"
        f" median of {args.repeats} runs",
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
