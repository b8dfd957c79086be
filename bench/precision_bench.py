"""Reduced-precision inference against float32: what it changes in the demo model's answers,
and what it buys in speed, on this CPU.

The held-out set is the demo script's (``scripts/demo_model.sh``): 200 synthetic encounters,
seed 4, never seen in training, cut into segments twice as ``pandapulse evaluate --checkpoint``
cuts them (at the annotated calls, and by the energy detector as the service does). Every
segment is scored through ``Classifier.predict_features`` (the service's path) in each
precision:

- fp32: the reference;
- bf16: ``torch.autocast`` in bfloat16, which ``CGANet.forward`` confines to the convolutions
  (the GRU, softmaxes and frame sums stay float32); only where the CPU has native bfloat16
  (``avx512_bf16`` or ``amx_bf16``), elsewhere skipped with the reason (``--force-bf16`` runs
  it anyway);
- int8: ``torch.ao.quantization.quantize_dynamic`` of the GRU and linear layers of the fused
  inference network (int8 weights, activations quantised per batch; convolutions fp32).

For each: decision flips against fp32 (share of segments whose ``aggregate.decide`` changes),
the largest |change of P(success)|, AUC and its change, encounter verdicts that change (the
paper's rule, and with the service's uncertain band), and speed (segments/s at batch 32, ms at
batch 1) timed as ``bench/model_bench.py`` times models: every round runs one 2048 x 2048
sgemm first and "% of peak" is the median of each round's own ratio, so load that comes and
goes hits both sides alike. The bar for a reduced precision to become a default
(``model/classifier.py``): at most 0.5 % of segments flip and AUC moves at most 0.005 on both
segmentations. The script checks that ``precision="auto"`` agrees with this run.

Usage: .venv/bin/python bench/precision_bench.py [--data DIR] [--model CKPT] [--rounds N]
       [--force-bf16] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/precision_bench.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.benchmarks_md import write_section  # noqa: E402
from bench.model_bench import (  # noqa: E402
    BIG_BATCH,
    Bench,
    Model,
    Result,
    analytic_flops,
    cores,
    load_average,
)
from model import aggregate, baselines, checkpoint  # noqa: E402
from model.classifier import (  # noqa: E402
    NATIVE_BF16_FLAGS,
    Classifier,
    choose_precision,
    native_bf16,
)
from model.data import Dataset, build_dataset  # noqa: E402
from model.evaluate import aggregation_units  # noqa: E402
from model.hardware import cpu_flags, cpu_model  # noqa: E402

SECTION = "## Reduced precision"
FASTER = 1.05
"""A precision counts as faster than fp32 only from this ratio on: closer is within the spread."""
HELD_OUT = REPO / "build" / "demo-data" / "synth-200-s4"
HELD_OUT_SYNTH = ("--encounters", "200", "--seed", "4")  # scripts/demo_model.sh's test set
MAX_FLIPS = 0.005
"""The bar: at most this share of segments may change decision against fp32 ..."""
MAX_AUC_CHANGE = 0.005
"""... and AUC may move at most this much, on every segmentation."""


@dataclass
class Accuracy:
    segmentation: str
    segments: int
    flips: float
    max_dp: float
    auc: float
    d_auc: float
    units: int
    unit_flips: int
    verdict_changes: int

    @property
    def meets_bar(self) -> bool:
        return self.flips <= MAX_FLIPS and abs(self.d_auc) <= MAX_AUC_CHANGE

    def row(self, label: str, *, judged: bool) -> str:
        """Its line of the accuracy table (``ACCURACY_HEADER``); the last cell says whether it
        meets the bar, or '—' for a row that is not judged (the reference)."""
        verdict = ("yes" if self.meets_bar else "**no**") if judged else "—"
        return (
            f"| {label} | {self.segmentation} | {self.segments} |"
            f" {100 * self.flips:.2f} % ({round(self.flips * self.segments)}) | {self.max_dp:.4f} |"
            f" {self.auc:.4f} | {self.d_auc:+.4f} | {self.unit_flips} of {self.units} |"
            f" {self.verdict_changes} of {self.units} | {verdict} |"
        )


ACCURACY_HEADER = [
    "| precision | segmentation | segments | decision flips | largest \\|ΔP(success)\\|"
    " | AUC | AUC change | encounter decisions changed | verdicts changed (uncertain band)"
    " | meets the bar |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
"""The accuracy table's header, above ``Accuracy.row`` lines."""


def held_out(data_dir: Path, kind: str, class_names: tuple[str, str]) -> dict[str, Dataset]:
    """The held-out segments, cut at the annotations and by the detector (as ``evaluate
    --checkpoint`` does); the recordings are synthesised first when the folder is missing."""
    if not (data_dir / "manifest.csv").is_file():
        command = [str(Path(sys.executable).parent / "pandapulse"), "synth", str(data_dir)]
        print(f"held-out set missing: {' '.join(command + list(HELD_OUT_SYNTH))}", flush=True)
        subprocess.run([*command, *HELD_OUT_SYNTH], check=True)

    def build(use_annotations: bool) -> Dataset:
        return build_dataset(
            data_dir,
            feature=kind,  # type: ignore[arg-type]
            classes=class_names,
            use_annotations=use_annotations,
        )

    return {"annotations": build(True), "detector": build(False)}


def compare(
    name: str, data: Dataset, ref: np.ndarray, low: np.ndarray, share: float | None
) -> Accuracy:
    """``low`` (P(success) in a reduced precision) against ``ref`` (fp32) on ``data``; the
    encounters by the service's rule, with the checkpoint's training ``share``."""
    positive = data.labels == 0
    auc_ref = baselines.auc_score(positive, ref)
    auc_low = baselines.auc_score(positive, low)
    units, _ = aggregation_units(data)
    unit_flips = verdict_changes = 0
    for unit in np.unique(units):
        mask = units == unit
        p_ref = aggregate.running_p_success(ref[mask], share)
        p_low = aggregate.running_p_success(low[mask], share)
        assert p_ref is not None and p_low is not None
        unit_flips += int(aggregate.decide(p_ref) != aggregate.decide(p_low))
        verdict_changes += int(aggregate.verdict(p_ref) != aggregate.verdict(p_low))
    return Accuracy(
        segmentation=name,
        segments=len(data),
        flips=float(np.mean(aggregate.decide(ref) != aggregate.decide(low))),
        max_dp=float(np.abs(ref - low).max()),
        auc=auc_low,
        d_auc=auc_low - auc_ref,
        units=len(np.unique(units)),
        unit_flips=unit_flips,
        verdict_changes=verdict_changes,
    )


def time_interleaved(bench: Bench, models: dict[str, Model]) -> dict[str, Result]:
    """``Bench.run``'s figures for each model, with the models interleaved: every round times
    each once (batch 32, then the median of 5 batch-1 calls) right after its own sgemm, in an
    order rotated per round, so a neighbour's load falls on all of them alike."""
    names = list(models)
    b32: dict[str, list[float]] = {n: [] for n in names}
    b1: dict[str, list[float]] = {n: [] for n in names}
    pct: dict[str, list[float]] = {n: [] for n in names}
    over: dict[str, list[float]] = {n: [] for n in names}
    threads = cores()
    with torch.inference_mode():
        for model in models.values():  # warm-up: oneDNN primitive caches, allocator
            for _ in range(2):
                model(bench.x32)
                model(bench.x1)
        for r in range(bench.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                peak = bench.sgemm()
                torch.set_num_threads(threads)
                start = time.perf_counter()
                models[name](bench.x32)
                b32[name].append(time.perf_counter() - start)
                pct[name].append(100 * BIG_BATCH * bench.flops / b32[name][-1] / 1e9 / peak)
                ones = []
                for _ in range(5):
                    start = time.perf_counter()
                    models[name](bench.x1)
                    ones.append(time.perf_counter() - start)
                b1[name].append(statistics.median(ones))
                over[name].append(b1[name][-1] / (bench.flops / (peak * 1e9)))
    results = {
        n: Result(
            name=n,
            threads=threads,
            b1_ms=1e3 * statistics.median(b1[n]),
            b32_s=statistics.median(b32[n]),
            b32_pct_peak=statistics.median(pct[n]),
            b1_over_floor=statistics.median(over[n]),
        )
        for n in names
    }
    for res in results.values():
        print(
            f"  {res.name}: batch {BIG_BATCH} {res.seg_per_s:.1f} seg/s ({res.b32_pct_peak:.0f} % of"
            f" peak), batch 1 {res.b1_ms:.2f} ms",
            flush=True,
        )
    return results


def report(
    machine: dict[str, str],
    precisions: list[str],
    accuracy: dict[str, list[Accuracy]],
    speed: dict[str, Result],
    notes: list[str],
) -> str:
    lines = [
        f"Run started {machine['date']} by `bench/precision_bench.py` (figures written by the"
        " script).",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']},"
        f" device cpu, threads {machine['threads']}; bf16 flags: {machine['bf16_flags']}",
        f"- Load average at start {machine['load_start']}; at end {machine['load_end']}",
        f"- Model: `{machine['model']}` (version {machine['version']}); held-out set"
        f" `{machine['data']}` ({machine['recordings']} recordings, never seen in training)",
        f'- `precision="auto"` on this CPU: **{machine["auto"]}**',
        "",
        "Accuracy against fp32 (bar: decision flips <= 0.5 % and |AUC change| <= 0.005 on both"
        " segmentations):",
        "",
        *ACCURACY_HEADER,
    ]
    for precision in precisions:
        for a in accuracy[precision]:
            lines.append(a.row(precision, judged=precision != "fp32"))
    base = speed["fp32"]
    lines += [
        "",
        f"Speed through `Classifier.predict_features`, {machine['threads']} threads (medians"
        f" of {machine['rounds']} rounds; each round times every precision, each right after"
        " its own fp32 sgemm; the sgemm peak in this run was"
        f" {machine['peak']} GFLOP/s):",
        "",
        "| precision | batch 32 segments/s | vs fp32 | % of fp32 sgemm peak | batch 1 ms/segment"
        " | vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for precision in precisions:
        r = speed[precision]
        lines.append(
            f"| {precision} | {r.seg_per_s:.1f} | {r.seg_per_s / base.seg_per_s:.2f}x |"
            f" {r.b32_pct_peak:.0f} % | {r.b1_ms:.2f} | {base.b1_ms / r.b1_ms:.2f}x |"
        )
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HELD_OUT, help="held-out dataset folder")
    parser.add_argument("--model", type=Path, default=checkpoint.DEMO_MODEL, help="checkpoint")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (each: all)")
    parser.add_argument(
        "--force-bf16", action="store_true", help="run bf16 without native bfloat16 too"
    )
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    flags = cpu_flags()
    auto = choose_precision("cpu", flags)
    net, meta = checkpoint.load(args.model)
    machine = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(cores()),
        "torch": torch.__version__,
        "threads": str(cores()),
        "bf16_flags": ", ".join(sorted(NATIVE_BF16_FLAGS & flags)) or "none (no native bfloat16)",
        "load_start": load_average(),
        "model": args.model.name,
        "version": str(meta.get("model_version")),
        "data": str(args.data.relative_to(REPO) if args.data.is_relative_to(REPO) else args.data),
        "auto": auto,
    }
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}")
    print(f"  bf16 flags: {machine['bf16_flags']}; load average {machine['load_start']}")
    print(f"  precision='auto' here: {auto}", flush=True)

    notes: list[str] = []
    precisions = ["fp32"]
    if native_bf16(flags) or args.force_bf16:
        precisions.append("bf16")
        if not native_bf16(flags):
            notes.append("bf16 forced (`--force-bf16`) on a CPU without native bfloat16")
    else:
        skipped = (
            "bf16 skipped: the CPU has neither avx512_bf16 nor amx_bf16, so bfloat16 runs"
            " through slow fallback kernels (10x slower than fp32 on an AVX2-only EPYC);"
            " `--force-bf16` runs it anyway"
        )
        notes.append(skipped)
        print(skipped, flush=True)
    precisions.append("int8")

    kind = str(meta["feature_config"]["kind"])
    names = meta["class_names"]
    datasets = held_out(args.data, kind, (str(names[0]), str(names[1])))
    machine["recordings"] = str(datasets["annotations"].summary["recordings"])
    classifiers = {
        p: Classifier(net, meta, device="cpu", compile=False, precision=p) for p in precisions
    }
    scores: dict[str, dict[str, np.ndarray]] = {}
    for precision, clf in classifiers.items():
        scores[precision] = {
            name: clf.predict_features(data.features).p_success.astype(np.float64)
            for name, data in datasets.items()
        }
        print(f"scored {precision}", flush=True)
    accuracy: dict[str, list[Accuracy]] = {}
    for precision in precisions:
        accuracy[precision] = [
            compare(
                name,
                data,
                scores["fp32"][name],
                scores[precision][name],
                classifiers["fp32"].class0_share,
            )
            for name, data in datasets.items()
        ]
        for a in accuracy[precision]:
            print(
                f"  {precision} {a.segmentation:11s} {a.segments} segments: flips"
                f" {100 * a.flips:.2f} %, max |dP| {a.max_dp:.4f}, AUC {a.auc:.4f}"
                f" ({a.d_auc:+.4f}), encounter decisions changed {a.unit_flips}/{a.units},"
                f" verdicts {a.verdict_changes}/{a.units}",
                flush=True,
            )

    bench = Bench(args.rounds, analytic_flops(net)["total"])
    bench.warm_sgemm()
    speed = time_interleaved(bench, {p: c.predict_features for p, c in classifiers.items()})
    machine["rounds"] = str(args.rounds)
    machine["peak"] = f"{bench.peak:.0f}"

    base = speed["fp32"]
    for precision in precisions[1:]:
        passes = all(a.meets_bar for a in accuracy[precision])
        ratio = speed[precision].seg_per_s / base.seg_per_s
        pace = "faster than" if ratio >= FASTER else "not faster than"
        if 1 / FASTER < ratio < FASTER:
            pace = f"as fast as (within {100 * (FASTER - 1):.0f} %)"
        notes.append(
            f"{precision}: {'meets' if passes else 'misses'} the accuracy bar and is {pace}"
            f" fp32 at batch 32 on this CPU ({ratio:.2f}x)"
        )
    if auto != "fp32" and not (
        all(a.meets_bar for a in accuracy[auto])
        and speed[auto].seg_per_s >= FASTER * base.seg_per_s
    ):
        warning = (
            f'WARNING: `precision="auto"` picks {auto} here, but this run says it misses the'
            " bar or is not faster: revisit `choose_precision` (model/classifier.py)"
        )
        notes.append(warning)
        print(warning, flush=True)
    machine["load_end"] = load_average()
    print(f"load average at end {machine['load_end']}")
    text = report(machine, precisions, accuracy, speed, notes)
    print(text)
    if args.write:
        write_section(SECTION, "precision_bench", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
