"""CGANet inference speed on this machine, step by step, against the machine's own sgemm peak.

Prints (and with ``--write``, the default, records in BENCHMARKS.md's "Model inference"
section) the machine, the float32 sgemm peak measured in the same run, CGANet's FLOPs per
segment, and for each optimisation step: ms per segment at batch 1 and segments/s at batch 32,
each against the FLOP-bound floor (FLOPs / sgemm peak). Then torch MFCC against librosa MFCC.

Method: every timing round runs one 2048 x 2048 sgemm right before the model call, and the
"% of peak" figure is the median over rounds of each round's own ratio, so a neighbour's load
that comes and goes hits both sides of a ratio alike. Inputs are random MFCC-shaped tensors
(the cost does not depend on the values); the bfloat16 accuracy check uses a real panda call.

Usage: .venv/bin/python bench/model_bench.py [--rounds N] [--no-write] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/model_bench.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.benchmarks_md import write_section  # noqa: E402
from model import constants as C  # noqa: E402
from model.classifier import Classifier, inference_network  # noqa: E402
from model.features import mfcc  # noqa: E402
from model.hardware import cpu_flags, cpu_model  # noqa: E402
from model.network import CGANet  # noqa: E402

SECTION = "## Model inference"
SGEMM_N = 2048
BIG_BATCH = C.BATCH_SIZE
REAL_CALLS = REPO.parent / "shared" / "data" / "real-calls"
Model = Callable[[torch.Tensor], Any]


# --- the machine -----------------------------------------------------------------------------


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- FLOPs -----------------------------------------------------------------------------------


def analytic_flops(net: CGANet) -> dict[str, int]:
    """FLOPs of one segment from the layer shapes; a multiply-add counts 2.

    Convolutions, the GRU gate matmuls (input and recurrent, both directions) and the two
    linear layers; element-wise work (ReLU, pooling, gate non-linearities, softmax) is left out
    because it is not multiply-add work a matmul unit does (a few MFLOP in all).
    """
    frames, width = C.N_FRAMES, net.n_features
    parts: dict[str, int] = {"conv": 0, "gru": 0, "linear": 0}
    for layer in net.conv:
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            parts["conv"] += 2 * frames * width * layer.out_channels * layer.in_channels * k
    for block in net.gru:
        gru = block.gru
        assert isinstance(gru, nn.GRU)
        gates = 3 * gru.hidden_size
        per_step = gates * (gru.input_size + gru.hidden_size)
        parts["gru"] += 2 * frames * per_step * (2 if gru.bidirectional else 1)
    parts["linear"] += 2 * net.attention.in_features * net.attention.out_features * C.GRU_HIDDEN
    parts["linear"] += 2 * frames * net.classifier.in_features * net.classifier.out_features
    parts["total"] = sum(parts.values())
    return parts


def counted_flops(net: nn.Module) -> int:
    """FLOPs of one segment as torch.utils.flop_counter counts them (a cross-check)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


# --- timing ----------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    threads: int
    b1_ms: float
    b32_s: float
    b32_pct_peak: float
    b1_over_floor: float
    note: str = ""

    @property
    def seg_per_s(self) -> float:
        return BIG_BATCH / self.b32_s


class Bench:
    """Interleaved timing of models against the sgemm peak (see the module docstring)."""

    def __init__(self, rounds: int, flops: int) -> None:
        self.rounds = rounds
        self.flops = flops
        self.cores = cores()
        self.a = torch.randn(SGEMM_N, SGEMM_N)
        self.b = torch.randn(SGEMM_N, SGEMM_N)
        self.c = torch.empty(SGEMM_N, SGEMM_N)
        self.peaks: list[float] = []  # GFLOP/s of every sgemm run, all cores
        self.x32 = torch.randn(BIG_BATCH, C.N_CHANNELS, C.N_FRAMES, C.N_MFCC)
        self.x1 = self.x32[:1].clone()

    def sgemm(self) -> float:
        torch.set_num_threads(self.cores)
        start = time.perf_counter()
        torch.matmul(self.a, self.b, out=self.c)
        gflops = 2 * SGEMM_N**3 / (time.perf_counter() - start) / 1e9
        self.peaks.append(gflops)
        return gflops

    def warm_sgemm(self, n: int = 5) -> None:
        for _ in range(n):
            self.sgemm()

    @property
    def peak(self) -> float:
        return statistics.median(self.peaks)

    def run(
        self,
        name: str,
        model: Model,
        *,
        threads: int,
        channels_last: bool = False,
        context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        note: str = "",
    ) -> Result:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x32 = self.x32.contiguous(memory_format=fmt)
        x1 = self.x1.contiguous(memory_format=fmt)
        b1_calls = 5
        with torch.inference_mode(), context():
            torch.set_num_threads(threads)
            for _ in range(2):  # warm-up: oneDNN primitive caches, allocator
                model(x32)
                model(x1)
            t32, t1, pct, over = [], [], [], []
            for _ in range(self.rounds):
                peak = self.sgemm()
                torch.set_num_threads(threads)
                start = time.perf_counter()
                model(x32)
                t32.append(time.perf_counter() - start)
                pct.append(100 * BIG_BATCH * self.flops / t32[-1] / 1e9 / peak)
                ones = []
                for _ in range(b1_calls):
                    start = time.perf_counter()
                    model(x1)
                    ones.append(time.perf_counter() - start)
                t1.append(statistics.median(ones))
                over.append(t1[-1] / (self.flops / (peak * 1e9)))
        result = Result(
            name=name,
            threads=threads,
            b1_ms=1e3 * statistics.median(t1),
            b32_s=statistics.median(t32),
            b32_pct_peak=statistics.median(pct),
            b1_over_floor=statistics.median(over),
            note=note,
        )
        torch.set_num_threads(self.cores)
        print(
            f"  {name:<44} threads {threads}: batch 1 {result.b1_ms:7.2f} ms"
            f" ({result.b1_over_floor:4.2f}x floor) | batch {BIG_BATCH}"
            f" {result.seg_per_s:7.1f} seg/s, {BIG_BATCH * self.flops / result.b32_s / 1e9:6.1f}"
            f" GFLOP/s = {result.b32_pct_peak:5.1f} % of peak",
            flush=True,
        )
        return result


@contextlib.contextmanager
def mkldnn_off() -> Iterator[None]:
    with warnings.catch_warnings():  # torch warns about TF32 on Intel GPUs when flags change
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.mkldnn.flags(enabled=False):
            yield


@contextlib.contextmanager
def bf16_autocast() -> Iterator[None]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield


def compiled(net: nn.Module, bench: Bench) -> tuple[Model, str]:
    """torch.compile (inductor, dynamic batch, frozen weights); returns the model and a note."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    model = torch.compile(net, dynamic=True)
    seconds = []
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        for x in (bench.x1, bench.x32):  # batch 1 is specialised; any other size shares a graph
            start = time.perf_counter()
            model(x.contiguous(memory_format=torch.channels_last))
            seconds.append(time.perf_counter() - start)
    return model, f"compile {seconds[0]:.0f} s (batch 1) + {seconds[1]:.0f} s (dynamic batch)"


# --- accuracy of reduced precision ------------------------------------------------------------


def panda_features() -> tuple[torch.Tensor, str]:
    """MFCC of real animal calls' 2-s tiles (up to 32), or of noise where none is found."""
    from model.preprocessing import load, stack, tile

    files = sorted(REAL_CALLS.glob("*.mp3")) if REAL_CALLS.is_dir() else []
    if files:
        segments = stack([s for f in files for s in tile(load(f).audio)][:BIG_BATCH])
        source = f"{len(segments)} segments of {', '.join(f.name for f in files)}"
    else:
        rng = np.random.default_rng(0)
        segments = (0.2 * rng.standard_normal((8, 2, C.SEGMENT_SAMPLES))).astype(np.float32)
        source = "8 segments of noise (real call not found)"
    with torch.inference_mode():
        return mfcc(torch.from_numpy(segments)), source


def bf16_error(net: nn.Module) -> str:
    feats, source = panda_features()
    feats = feats.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = net(feats).totals / C.N_FRAMES
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(feats).totals.float() / C.N_FRAMES
    diff = (ref - low).abs().max().item()
    flips = int(((ref[:, 0] > ref[:, 1]) != (low[:, 0] > low[:, 1])).sum())
    return f"max abs change of P(success) {diff:.4f}, {flips} decision flips on {source} (random weights)"


# --- MFCC ------------------------------------------------------------------------------------


def time_median(fn: Callable[[], object], n: int, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mfcc_bench(rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal((BIG_BATCH, 2, C.SEGMENT_SAMPLES))).astype(np.float32)
    one = audio[0]

    def reference() -> None:
        librosa.feature.mfcc(
            y=one, sr=C.SAMPLE_RATE, n_mfcc=C.N_MFCC, n_fft=C.N_FFT, hop_length=C.HOP_LENGTH
        )

    out = {"librosa_ms": 1e3 * time_median(reference, rounds)}
    with torch.inference_mode():
        t1, t32 = torch.from_numpy(audio[:1]), torch.from_numpy(audio)
        for threads in sorted({cores(), 1}, reverse=True):
            torch.set_num_threads(threads)
            out[f"torch_b1_t{threads}_ms"] = 1e3 * time_median(lambda: mfcc(t1), rounds)
            out[f"torch_b32_t{threads}_ms"] = (
                1e3 * time_median(lambda: mfcc(t32), rounds) / BIG_BATCH
            )
        torch.set_num_threads(cores())
    return out


# --- report ----------------------------------------------------------------------------------


def report(
    machine: dict[str, str],
    flops: dict[str, int],
    counted: int,
    peak: float,
    results: list[Result],
    mf: dict[str, float],
    notes: list[str],
) -> str:
    floor_ms = flops["total"] / (peak * 1e9) * 1e3
    lines = [
        f"Run started {machine['date']} by `bench/model_bench.py` (figures written by the script).",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']},"
        f" device cpu, default threads {machine['threads']}; ISA flags: {machine['isa']}",
        f"- Load average at start {machine['load_start']}; at end {machine['load_end']}"
        " (the machine is shared: figures are medians of interleaved rounds)",
        f"- sgemm peak (torch.matmul {SGEMM_N}x{SGEMM_N} float32, all cores, median of"
        f" {machine['sgemm_runs']} runs interleaved with the model): **{peak:.0f} GFLOP/s**"
        f" (spread {machine['sgemm_spread']})",
        f"- CGANet FLOPs per segment, counted analytically from the layer shapes (multiply-add ="
        f" 2): **{flops['total'] / 1e9:.3f} GFLOP** (conv {flops['conv'] / 1e9:.3f}, GRU"
        f" {flops['gru'] / 1e6:.1f} M, linear {flops['linear'] / 1e6:.2f} M);"
        f" torch.utils.flop_counter cross-check: {counted / 1e9:.3f} GFLOP",
        f"- FLOP-bound floor: {floor_ms:.2f} ms per segment;"
        f" targets: batch {BIG_BATCH} >= 70 % of peak, batch 1 <= 2x floor",
        "",
        f"| step | threads | batch 1 ms/segment | batch 1 / floor | batch {BIG_BATCH} segments/s"
        f" | batch {BIG_BATCH} GFLOP/s | % of sgemm peak | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.threads} | {r.b1_ms:.2f} | {r.b1_over_floor:.2f}x |"
            f" {r.seg_per_s:.1f} | {BIG_BATCH * flops['total'] / r.b32_s / 1e9:.0f} |"
            f" {r.b32_pct_peak:.0f} % | {r.note} |"
        )
    lines += [
        "",
        "MFCC per 2-s stereo segment (target: torch >= 3x faster than librosa):",
        "",
        "| implementation | threads | ms/segment | speed-up over librosa |",
        "|---|---|---|---|",
        f"| librosa.feature.mfcc (one segment) | 1 | {mf['librosa_ms']:.2f} | 1.0x |",
    ]
    for key, value in mf.items():
        if key.startswith("torch_"):
            batch, threads = key.split("_")[1:3]
            lines.append(
                f"| model.features.mfcc, batch {batch[1:]} | {threads[1:]} | {value:.2f} |"
                f" {mf['librosa_ms'] / value:.1f}x |"
            )
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds per step (>= 10)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=True, help="time torch.compile"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    flags = cpu_flags()
    isa = [
        f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags
    ]
    machine = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(cores()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "isa": ", ".join(isa) or "none of avx2/avx512/amx",
        "load_start": load_average(),
    }
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']},")
    print(f"  device cpu, threads {machine['threads']}, flags {machine['isa']}")
    print(f"  load average {machine['load_start']}", flush=True)

    torch.manual_seed(0)
    net = CGANet().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding is really exercised
        for layer in net.modules():
            if isinstance(layer, nn.BatchNorm2d):
                assert layer.running_mean is not None and layer.running_var is not None
                layer.running_mean.normal_(0, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    flops = analytic_flops(net)
    counted = counted_flops(net)
    print(
        f"CGANet: {flops['total'] / 1e9:.3f} GFLOP per segment (analytic; flop_counter {counted / 1e9:.3f})"
    )

    bench = Bench(args.rounds, flops["total"])
    bench.warm_sgemm()
    print(f"sgemm {SGEMM_N}: {bench.peak:.0f} GFLOP/s (warm-up)", flush=True)
    n = cores()
    fused = net.fused()
    fast = inference_network(net, torch.device("cpu"))
    notes: list[str] = []
    results = [
        bench.run("eager baseline (batch norm unfused, NCHW)", net, threads=n),
        bench.run("+ batch-norm folding (`CGANet.fused()`)", fused, threads=n),
        bench.run("+ channels_last (oneDNN NHWC conv)", fast, threads=n, channels_last=True),
    ]
    results.append(
        bench.run("(same, 1 thread: thread setting)", fast, threads=1, channels_last=True)
    )
    results.append(
        bench.run(
            "(same, oneDNN off: `torch.backends.mkldnn`)",
            fast,
            threads=n,
            channels_last=True,
            context=mkldnn_off,
            note="contrast: what oneDNN gives",
        )
    )
    if args.compile:
        try:
            model, note = compiled(fast, bench)
            results.append(
                bench.run(
                    "+ torch.compile (inductor, freezing)",
                    model,
                    threads=n,
                    channels_last=True,
                    note=note,
                )
            )
        except Exception as err:
            notes.append(f"torch.compile failed: {type(err).__name__}: {err}")
            print(f"  torch.compile failed: {err}", flush=True)
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        accuracy = bf16_error(fast)
        results.append(
            bench.run(
                "+ bfloat16 autocast (opt-in, not default)",
                fast,
                threads=n,
                channels_last=True,
                context=bf16_autocast,
                note=accuracy,
            )
        )
    else:
        notes.append("bfloat16 not tried: the CPU has neither avx512_bf16 nor AMX")

    clf = Classifier(net, device="cpu", compile=False)
    results.append(
        bench.run(
            "`Classifier.predict_features` (default path)",
            lambda x: clf.predict_features(x),
            threads=n,
            note="includes NumPy conversion",
        )
    )

    print("MFCC per segment:", flush=True)
    mf = mfcc_bench(max(args.rounds, 10))
    for key, value in mf.items():
        print(f"  {key}: {value:.2f} ms ({mf['librosa_ms'] / value:.1f}x faster than librosa)")
    machine["load_end"] = load_average()
    machine["sgemm_runs"] = str(len(bench.peaks))
    machine["sgemm_spread"] = f"{min(bench.peaks):.0f}-{max(bench.peaks):.0f}"
    print(f"load average at end {machine['load_end']}")
    text = report(machine, flops, counted, bench.peak, results, mf, notes)
    if args.write:
        write_section(SECTION, "model_bench", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
