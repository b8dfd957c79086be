"""Training throughput of CGANet: segments/s for forward + backward + SGD step at batch 32.

Runs on random MFCC-shaped input (2, 86, 40): the cost does not depend on the values. Runs the
training step of ``model.train`` (SGD, cross-entropy on the frame-averaged probabilities) with
plain float32 NCHW, channels_last, bfloat16 autocast, and both (the default on CPUs with native
bfloat16), interleaved over rounds; prints the median per setting and the machine it ran on.
Usage: .venv/bin/python bench/train_bench.py [--steps N] [--threads T] [--device D]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from model import constants as C
from model.network import CGANet, segment_log_probs
from model.train import MOMENTUM, run_model


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(channels_last: bool, bf16: bool, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = CGANet().to(device).to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=C.LEARNING_RATE, momentum=MOMENTUM, nesterov=True)
    dtype = torch.bfloat16 if bf16 else None
    x = torch.randn(C.BATCH_SIZE, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC, device=device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, C.N_CLASSES, (C.BATCH_SIZE,), device=device)

    def step() -> None:
        loss = nn.functional.nll_loss(segment_log_probs(run_model(model, x, dtype)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, kernel selection)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * C.BATCH_SIZE / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed batches per setting and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (median reported)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__},"
        f" {torch.get_num_threads()} threads, device {device}"
    )
    print(f"load average before: {os.getloadavg()}")
    settings = [(False, False), (True, False), (False, True), (True, True)]
    rates: dict[tuple[bool, bool], list[float]] = {k: [] for k in settings}
    for _ in range(args.rounds):
        for channels_last, bf16 in settings:
            rates[(channels_last, bf16)].append(measure(channels_last, bf16, args.steps, device))
    print("| memory format | precision | segments/s (median) | spread | speed-up |")
    print("|---|---|---|---|---|")
    base = statistics.median(rates[(False, False)])
    for (channels_last, bf16), values in rates.items():
        med = statistics.median(values)
        print(
            f"| {'channels_last' if channels_last else 'NCHW'} | {'bf16 autocast' if bf16 else 'float32'} |"
            f" {med:.1f} | {min(values):.1f}-{max(values):.1f} | {med / base:.1f}x |"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
