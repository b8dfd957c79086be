"""Training throughput of CGANet with the default recipe, against the same run's sgemm peak.

Times ``model.train._Trainer.train_epoch`` (augmentation, mixup, forward, class-weighted loss,
backward, clipping, AdamW step: what ``pandapulse train`` runs) on random MFCC-shaped input
(the cost does not depend on the values), for float32 and bfloat16-autocast convolutions in
channels_last and NCHW, interleaved over rounds. Each round runs a 2048 x 2048 sgemm right
before each setting, and the "% of peak" figure is the median of each round's own ratio
(segments/s x forward+backward FLOPs per segment / sgemm FLOP/s), so a neighbour's load hits
both sides alike. Prints which precision ``--precision auto`` picks on this CPU, and why.

bf16 runs only where the CPU has native bfloat16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``)
unless ``--force-bf16``: elsewhere ATen falls back to slow kernels (10x slower, BENCHMARKS.md).
Prints the figures and (unless ``--no-write``) records them in BENCHMARKS.md's "Training
throughput" section.
Usage: .venv/bin/python bench/train_bench.py [--segments N] [--rounds R] [--force-bf16] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/train_bench.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.benchmarks_md import write_section  # noqa: E402
from bench.model_bench import SGEMM_N  # noqa: E402
from model import constants as C  # noqa: E402
from model.hardware import cpu_model  # noqa: E402
from model.network import CGANet  # noqa: E402
from model.train import TrainConfig, _Trainer, autocast_dtype  # noqa: E402

SETTINGS = (("channels_last", "fp32"), ("channels_last", "bf16"), ("NCHW", "fp32"))


def train_flops_per_segment() -> int:
    """Forward + backward FLOPs of one segment (torch.utils.flop_counter, batch 8)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = CGANet().train()
    x = torch.randn(8, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)
    counter = FlopCounterMode(display=False)
    with counter:
        net(x).totals.sum().backward()
    return int(counter.get_total_flops()) // 8


def sgemm_gflops() -> float:
    a, b = torch.randn(SGEMM_N, SGEMM_N), torch.randn(SGEMM_N, SGEMM_N)
    start = time.perf_counter()
    torch.mm(a, b)
    return 2 * SGEMM_N**3 / (time.perf_counter() - start) / 1e9


def epoch_rate(trainer: _Trainer) -> float:
    """Segments/s of one ``train_epoch``."""
    start = time.perf_counter()
    seen = trainer.train_epoch()["seen"]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=96, help="segments per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--force-bf16", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    native = autocast_dtype("auto", torch.device("cpu")) is not None
    lines = [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {cpu_model()}, {os.cpu_count()} logical"
        f" cores, torch {torch.__version__}, {torch.get_num_threads()} threads; load average"
        f" {os.getloadavg()[0]:.2f} before.",
        "",
        f"`--precision auto` picks {'bf16 autocast of the convolutions (native bfloat16)' if native else 'float32 (no native bfloat16)'} on this CPU.",
    ]
    print("\n".join(lines))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.segments, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)).astype(np.float32)
    y = (np.arange(args.segments) % 2).astype(np.int64)
    flops = train_flops_per_segment()
    settings = [s for s in SETTINGS if s[1] == "fp32" or native or args.force_bf16]
    trainers = {}
    for layout, precision in settings:
        config = replace(
            TrainConfig(device="cpu", progress=False),
            channels_last=layout == "channels_last",
            precision=precision,
        )
        trainers[(layout, precision)] = _Trainer(x, y, config)
        trainers[(layout, precision)].train_epoch()  # warm-up: allocations, kernel choice
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in trainers}
    shares: dict[tuple[str, str], list[float]] = {k: [] for k in trainers}
    peaks: list[float] = []
    for _ in range(args.rounds):
        for key, trainer in trainers.items():
            peak = sgemm_gflops()
            peaks.append(peak)
            rate = epoch_rate(trainer)
            rates[key].append(rate)
            shares[key].append(100 * rate * flops / 1e9 / peak)
    table = [
        "",
        f"Forward + backward: {flops / 1e9:.2f} GFLOP per segment (torch's FLOP counter); fp32"
        f" sgemm peak in this run {statistics.median(peaks):.0f} GFLOP/s (median of {len(peaks)}).",
        "",
        "| memory format | convolutions | segments/s (median) | spread | % of fp32 sgemm peak |",
        "|---|---|---|---|---|",
    ]
    for (layout, precision), values in rates.items():
        table.append(
            f"| {layout} | {precision} | {statistics.median(values):.1f} |"
            f" {min(values):.1f}-{max(values):.1f} | {statistics.median(shares[(layout, precision)]):.0f} % |"
        )
    table += ["", f"Load average after: {os.getloadavg()[0]:.2f}."]
    print("\n".join(table))
    if not args.no_write:
        write_section("## Training throughput", "train_bench", "\n".join(lines + table))


if __name__ == "__main__":
    main()
