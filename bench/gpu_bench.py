"""CGANet on CUDA: what reduced precision changes in the demo model's answers, and the speed of
the service's scoring path, against the same run's GPU matmul peak.

Needs a machine with an NVIDIA GPU (``bench/gpu_run.sh`` runs it with the other GPU checks);
without CUDA it says so and exits 0, so ``make bench`` can call it anywhere.

1. **Accuracy**: the held-out segments of ``bench/precision_bench.py`` (the demo script's 200
   synthetic encounters, seed 4, cut at the annotations and by the detector) scored through
   ``Classifier.predict_features`` on CUDA in fp32, bf16 and fp16 (autocast: ``CGANet.forward``
   confines it to the convolutions), each compared with CUDA fp32 by ``precision_bench.compare``
   (decision flips, largest change of P(success), AUC change, encounter verdicts), and CUDA fp32
   with CPU fp32. The bar for a default is the CPU's: at most 0.5 % flips and an AUC change of at
   most 0.005 on both segmentations.
2. **Speed**: batch 32 (segments/s) and batch 1 (ms) through ``predict_features`` (features in
   host memory, as the service hands them over) and through ``predict`` (raw audio, the MFCC on
   the GPU), each timed end to end (the answer back in host memory) and interleaved: every
   round times each precision right after its own 8192 x 8192 float32 matmul (TF32 off), and
   "% of peak" is the median of each round's own ratio.

The segments can be built once where the audio is and carried to the GPU machine:
``--export-datasets FILE`` writes them, gzipped (no GPU needed), ``--datasets FILE`` reads them.

Usage: python bench/gpu_bench.py [--datasets FILE] [--rounds N] [--no-write]
       python bench/gpu_bench.py --export-datasets FILE
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/gpu_bench.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.benchmarks_md import write_section  # noqa: E402
from bench.model_bench import analytic_flops  # noqa: E402
from bench.precision_bench import (  # noqa: E402
    ACCURACY_HEADER,
    HELD_OUT,
    Accuracy,
    compare,
    held_out,
)
from model import checkpoint  # noqa: E402
from model import constants as C  # noqa: E402
from model.classifier import Classifier, choose_precision  # noqa: E402
from model.data import Dataset  # noqa: E402
from model.hardware import cpu_flags, cpu_model  # noqa: E402

SECTION = "## GPU (CUDA)"
MATMUL_N = 8192
BATCH = C.BATCH_SIZE
PRECISIONS = ("fp32", "bf16", "fp16")


def load_datasets(path: Path | None, model: Path) -> dict[str, Dataset]:
    """The held-out segments: from ``path`` (a pickle this script wrote with --export-datasets;
    never load one from elsewhere) when it exists, else built as precision_bench builds them."""
    if path is not None and path.is_file():
        with gzip.open(path, "rb") as fh:
            datasets: dict[str, Dataset] = pickle.load(fh)
        return datasets
    _, meta = checkpoint.load(model)
    names = meta["class_names"]
    return held_out(HELD_OUT, str(meta["feature_config"]["kind"]), (str(names[0]), str(names[1])))


def classifier(
    net: torch.nn.Module, meta: dict[str, Any], precision: str, device: str
) -> Classifier:
    if precision == "fp16":
        return Classifier(net, meta, device=device, autocast=torch.float16)  # type: ignore[arg-type]
    return Classifier(net, meta, device=device, precision=precision)  # type: ignore[arg-type]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Peak:
    """The GPU's float32 matmul rate, measured again before every timed call."""

    def __init__(self, device: str, n: int = MATMUL_N) -> None:
        torch.backends.cuda.matmul.allow_tf32 = False
        self.n = n
        self.a = torch.randn(n, n, device=device)
        self.b = torch.randn(n, n, device=device)
        self.c = torch.empty(n, n, device=device)
        self.rates: list[float] = []
        for _ in range(3):
            self()

    def __call__(self) -> float:
        sync()
        start = time.perf_counter()
        torch.matmul(self.a, self.b, out=self.c)
        sync()
        rate = 2 * self.n**3 / (time.perf_counter() - start) / 1e9
        self.rates.append(rate)
        return rate


def timed(fn: Callable[[], Any]) -> float:
    """Seconds for ``fn()``, whose answer comes back in host memory (so the GPU is done)."""
    sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(
    models: dict[str, Classifier], features: np.ndarray, flops: int, rounds: int, peak: Peak
) -> dict[str, dict[str, float]]:
    """Interleaved timing of each precision (see the module docstring)."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((BATCH, C.N_CHANNELS, C.SEGMENT_SAMPLES))).astype(np.float32)
    f32, f1, a32, a1 = features[:BATCH], features[:1], audio, audio[:1]
    for clf in models.values():  # warm-up: cuDNN's algorithm choice, the caching allocator
        for _ in range(3):
            clf.predict_features(f32), clf.predict_features(f1), clf.predict(a32), clf.predict(a1)
    samples: dict[str, dict[str, list[float]]] = {
        n: {"f32": [], "f1": [], "a32": [], "a1": [], "pct": []} for n in models
    }
    names = list(models)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            clf, s = models[name], samples[name]
            rate = peak()
            s["f32"].append(timed(lambda c=clf: c.predict_features(f32)))
            s["pct"].append(100 * BATCH * flops / s["f32"][-1] / 1e9 / rate)
            s["f1"].append(
                statistics.median(timed(lambda c=clf: c.predict_features(f1)) for _ in range(5))
            )
            s["a32"].append(timed(lambda c=clf: c.predict(a32)))
            s["a1"].append(statistics.median(timed(lambda c=clf: c.predict(a1)) for _ in range(5)))
    out = {}
    for name, s in samples.items():
        out[name] = {
            "features_b32_seg_s": BATCH / statistics.median(s["f32"]),
            "features_b1_ms": 1e3 * statistics.median(s["f1"]),
            "audio_b32_seg_s": BATCH / statistics.median(s["a32"]),
            "audio_b1_ms": 1e3 * statistics.median(s["a1"]),
            "pct_peak": statistics.median(s["pct"]),
        }
    out["_peak"] = {"gflops": statistics.median(peak.rates)}
    return out


def report(
    machine: dict[str, str],
    accuracy: dict[str, list[Accuracy]],
    cpu_vs_cuda: list[Accuracy],
    fast: dict[str, dict[str, float]],
    rounds: int,
) -> str:
    lines = [
        f"Run started {machine['date']} by `bench/gpu_bench.py` (figures written by the script).",
        "",
        f"- Machine: {machine['gpu']} (CUDA {machine['cuda']}, driver {machine['driver']}),"
        f" host CPU {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}",
        f"- Model: `{machine['model']}` (version {machine['version']}); held-out set: the demo"
        " script's 200 synthetic encounters (seed 4), never seen in training",
        f'- `precision="auto"` on CUDA: **{machine["auto"]}**',
        "",
        "Accuracy against CUDA fp32 (the CPU's bar: decision flips <= 0.5 % and |AUC change| <="
        " 0.005 on both segmentations); the first rows compare CUDA fp32 with CPU fp32:",
        "",
        *ACCURACY_HEADER,
    ]
    lines += [a.row("CUDA fp32 vs CPU fp32", judged=False) for a in cpu_vs_cuda]
    for precision in PRECISIONS[1:]:
        lines += [a.row(precision, judged=True) for a in accuracy[precision]]
    base = fast["fp32"]
    lines += [
        "",
        f"Speed, end to end (answer back in host memory), medians of {rounds} interleaved rounds;"
        f" the float32 matmul peak ({MATMUL_N}, TF32 off) in this run was"
        f" {fast['_peak']['gflops'] / 1e3:.1f} TFLOP/s:",
        "",
        "| precision | features, batch 32 segments/s | vs fp32 | % of fp32 matmul peak"
        " | features, batch 1 ms | audio (MFCC on the GPU), batch 32 segments/s"
        " | audio, batch 1 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for precision in PRECISIONS:
        s = fast[precision]
        lines.append(
            f"| {precision} | {s['features_b32_seg_s']:.0f} |"
            f" {s['features_b32_seg_s'] / base['features_b32_seg_s']:.2f}x |"
            f" {s['pct_peak']:.2f} % | {s['features_b1_ms']:.2f} | {s['audio_b32_seg_s']:.0f} |"
            f" {s['audio_b1_ms']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", type=Path, default=None, help="segments from --export-datasets"
    )
    parser.add_argument("--export-datasets", type=Path, default=None, metavar="FILE")
    parser.add_argument("--model", type=Path, default=checkpoint.DEMO_MODEL)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--cpu-trial",
        action="store_true",
        help="run the code path on the CPU (fp32, bf16; no figures)",
    )
    args = parser.parse_args(argv)
    if args.export_datasets is not None:
        datasets = load_datasets(None, args.model)
        args.export_datasets.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(args.export_datasets, "wb", compresslevel=6) as fh:
            pickle.dump(datasets, fh, protocol=pickle.HIGHEST_PROTOCOL)
        print(f"wrote {', '.join(f'{k}: {len(v)}' for k, v in datasets.items())} segments")
        return 0
    device, precisions = "cuda", PRECISIONS
    if args.cpu_trial:
        device, precisions, args.write = "cpu", ("fp32", "bf16", "bf16"), False
    elif not torch.cuda.is_available():
        print("gpu_bench: skipped, no CUDA device here")
        return 0

    net, meta = checkpoint.load(args.model)
    machine = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "cuda": str(torch.version.cuda),
        "driver": os.popen("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
        .read()
        .strip()
        or "?",
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "model": args.model.name,
        "version": str(meta.get("model_version")),
        "auto": choose_precision("cuda", cpu_flags()),
    }
    print(f"machine: {machine['gpu']}, CUDA {machine['cuda']}, host {machine['cpu']}", flush=True)
    datasets = load_datasets(args.datasets, args.model)
    models = {
        p: classifier(net, meta, q, device) for p, q in zip(PRECISIONS, precisions, strict=True)
    }
    cpu = Classifier(net, meta, device="cpu", precision="fp32")
    scores = {
        p: {
            n: clf.predict_features(d.features).p_success.astype(np.float64)
            for n, d in datasets.items()
        }
        for p, clf in models.items()
    }
    cpu_scores = {
        n: cpu.predict_features(d.features).p_success.astype(np.float64)
        for n, d in datasets.items()
    }
    cpu_vs_cuda = [compare(n, d, cpu_scores[n], scores["fp32"][n]) for n, d in datasets.items()]
    accuracy = {
        p: [compare(n, d, scores["fp32"][n], scores[p][n]) for n, d in datasets.items()]
        for p in PRECISIONS
    }
    for p, rows in [("cuda-fp32 vs cpu", cpu_vs_cuda), *accuracy.items()]:
        for a in rows:
            print(
                f"  {p} {a.segmentation}: flips {100 * a.flips:.2f} %, max |dP| {a.max_dp:.4f},"
                f" AUC {a.auc:.4f} ({a.d_auc:+.4f})",
                flush=True,
            )
    features = datasets["annotations"].features
    peak = Peak(device, MATMUL_N if device == "cuda" else 1024)
    fast = speed(models, features, analytic_flops(net)["total"], args.rounds, peak)
    text = report(machine, accuracy, cpu_vs_cuda, fast, args.rounds)
    print()
    print(text)
    if args.write:
        write_section(SECTION, "gpu_bench", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
