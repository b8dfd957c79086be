"""``pandapulse synth``: a folder of synthetic encounters with annotations and a manifest.

Layout of OUT_DIR::

    SYNTH_s<seed>_<index>.flac                      stereo 44.1 kHz, FLAC 24-bit
    SYNTH_s<seed>_<index>.Table.1.selections.txt    Raven selection table (the calls)
    SYNTH_s<seed>_<index>.json                      every sampled parameter and call
    manifest.csv                                    recording, encounter, pair, outcome, ...
    README.md                                       dataset card (synthetic data)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from model.constants import SAMPLE_RATE
from model.errors import DataError
from model.raven import STANDARD_COLUMNS
from model.synth import spec as S
from model.synth.encounter import Pair, sample_pair
from model.synth.generate import SynthEncounter, generate_encounter

log = logging.getLogger(__name__)

AUDIO_SUBTYPE = "PCM_24"
AUDIO_SUFFIX = ".flac"
TABLE_SUFFIX = ".Table.1.selections.txt"
RAVEN_COLUMNS = (*STANDARD_COLUMNS, "Annotation", "Caller")
MANIFEST_COLUMNS = (
    "recording",
    "encounter",
    "pair",
    "outcome",
    "seed",
    "duration_s",
    "atypical",
    "n_calls",
    "annotation",
    "sidecar",
)
ENCOUNTERS_PER_PAIR = 3
"""N encounters are spread over about N / 3 pairs, so grouping by pair is meaningful."""
MAX_DURATION_S = 3600.0


def comment() -> str:
    return (
        "SYNTHETIC giant panda breeding-encounter audio (not a real recording), "
        f"PandaPulse synth generator {S.GENERATOR_VERSION}"
    )


@dataclass(frozen=True)
class Job:
    index: int
    seed: int
    outcome: str
    pair: Pair
    duration_s: float
    atypical_rate: float
    out_dir: Path
    stem: str


def _derived_seed(*words: int) -> int:
    """A non-negative 63-bit seed derived from ``words`` (stable across runs and platforms)."""
    state = np.random.SeedSequence(list(words)).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))


def plan_jobs(
    out_dir: Path, n: int, seed: int, duration_s: float, atypical_rate: float
) -> list[Job]:
    """Encounter i: outcome alternates (balanced), pair (i // 2) % n_pairs (each pair meets
    with both outcomes), its own derived seed."""
    n_pairs = max(1, round(n / ENCOUNTERS_PER_PAIR))
    pairs = [sample_pair(_derived_seed(seed, 1, j), f"s{seed}-P{j:03d}") for j in range(n_pairs)]
    return [
        Job(
            index=i,
            seed=_derived_seed(seed, 2, i),
            outcome=S.OUTCOMES[i % 2],
            pair=pairs[(i // 2) % n_pairs],
            duration_s=duration_s,
            atypical_rate=atypical_rate,
            out_dir=out_dir,
            stem=f"SYNTH_s{seed}_{i:05d}",
        )
        for i in range(n)
    ]


def raven_table(enc: SynthEncounter) -> str:
    """The calls as a Raven selection table (tab-separated, one row per call)."""
    lines = ["\t".join(RAVEN_COLUMNS)]
    for i, call in enumerate(enc.calls, start=1):
        row = (
            str(i),
            "Spectrogram 1",
            "1",
            f"{call.onset_s:.6f}",
            f"{call.offset_s:.6f}",
            f"{call.low_hz:.1f}",
            f"{call.high_hz:.1f}",
            call.call_type,
            call.caller,
        )
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def write_recording(enc: SynthEncounter, out_dir: Path, stem: str) -> dict[str, str]:
    """Write the audio, Raven table and JSON sidecar of one encounter; return file names."""
    audio_name = stem + AUDIO_SUFFIX
    with sf.SoundFile(
        out_dir / audio_name, "w", SAMPLE_RATE, enc.audio.shape[0], subtype=AUDIO_SUBTYPE,
        format="FLAC",
    ) as f:  # fmt: skip
        f.comment = comment()
        f.title = f"{stem} (synthetic giant panda encounter)"
        f.write(enc.audio.T)
    table_name = stem + TABLE_SUFFIX
    (out_dir / table_name).write_text(raven_table(enc), encoding="utf-8")
    sidecar = {
        "synthetic": True,
        "generator_version": S.GENERATOR_VERSION,
        "recording": audio_name,
        "outcome": enc.outcome,
        "seed": enc.seed,
        "calls": [
            {
                "onset_s": c.onset_s,
                "offset_s": c.offset_s,
                "caller": c.caller,
                "call_type": c.call_type,
                "low_hz": c.low_hz,
                "high_hz": c.high_hz,
            }
            for c in enc.calls
        ],
        "params": enc.params,
    }
    sidecar_name = stem + ".json"
    (out_dir / sidecar_name).write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    return {"recording": audio_name, "annotation": table_name, "sidecar": sidecar_name}


def _run_job(job: Job) -> dict[str, str]:
    enc = generate_encounter(
        job.seed,
        outcome=job.outcome,
        duration_s=job.duration_s,
        pair=job.pair,
        atypical_rate=job.atypical_rate,
    )
    names = write_recording(enc, job.out_dir, job.stem)
    return {
        "recording": names["recording"],
        "encounter": job.stem,
        "pair": job.pair.pair_id,
        "outcome": job.outcome,
        "seed": str(job.seed),
        "duration_s": f"{job.duration_s:g}",
        "atypical": str(bool(enc.params["atypical"])).lower(),
        "n_calls": str(len(enc.calls)),
        "annotation": names["annotation"],
        "sidecar": names["sidecar"],
    }


def dataset_card(n: int, seed: int, duration_s: float, atypical_rate: float) -> str:
    return f"""# Synthetic giant panda breeding encounters (NOT real recordings)

Every file here is **synthetic**: generated by PandaPulse `pandapulse synth` (generator
{S.GENERATOR_VERSION}) from the specification `SYNTH.md`, because no giant panda mating-encounter
audio is public. Use it to develop and test software, never as evidence about real pandas.

- {n} encounters of {duration_s:g} s, seed {seed}, outcomes alternating success/failure,
  about {ENCOUNTERS_PER_PAIR} encounters per pair (`pair` in `manifest.csv`: split by pair).
- Class overlap h = {atypical_rate:g}: that share of encounters mixes both classes' behaviour
  (`atypical` in the manifest), so no classifier should reach 100 %.
- Audio: stereo, 44,100 Hz, FLAC 24-bit; peak -6 to -1 dBFS. Each file's comment says it is
  synthetic. Both classes share the same room, background and SNR distributions.
- Annotations: `<stem>.Table.1.selections.txt` (Raven; `Annotation` = call type) and
  `<stem>.json` (every sampled parameter and call). Neighbouring pandas heard in the
  background are not annotated.
- Frequencies, durations and levels are estimates from mammal acoustics; who calls when and
  the direction of the receptivity cues follow published work (see SYNTH.md).
"""


def write_dataset(
    out_dir: Path,
    n: int,
    *,
    seed: int,
    duration_s: float = 30.0,
    workers: int = 1,
    atypical_rate: float = S.ATYPICAL_RATE,
) -> list[dict[str, str]]:
    """Generate ``n`` encounters into ``out_dir``; return the manifest rows."""
    if n < 1:
        raise DataError(f"--encounters must be at least 1, not {n}")
    if seed < 0:
        raise DataError(f"--seed must be a non-negative integer, not {seed}")
    if not (math.isfinite(duration_s) and 1.0 <= duration_s <= MAX_DURATION_S):
        raise DataError(f"--duration must be between 1 and {MAX_DURATION_S:g} s, not {duration_s}")
    if workers < 1:
        raise DataError(f"--workers must be at least 1, not {workers}")
    if not 0.0 <= atypical_rate <= 1.0:
        raise DataError(f"--atypical-rate must be within [0, 1], not {atypical_rate}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create output folder {out_dir}: {err}") from err
    jobs = plan_jobs(out_dir, n, seed, duration_s, atypical_rate)
    if workers == 1:
        rows = [_run_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_run_job, jobs))
    with open(out_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    card = dataset_card(n, seed, duration_s, atypical_rate)
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder")
    parser.add_argument("--encounters", type=int, required=True, help="how many encounters")
    parser.add_argument("--seed", type=int, required=True, help="dataset seed (reproducible)")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds per encounter (default 30)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (default 1; output is the same)"
    )
    parser.add_argument(
        "--atypical-rate",
        type=float,
        default=S.ATYPICAL_RATE,
        help=f"class-overlap share h (default {S.ATYPICAL_RATE})",
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    rows = write_dataset(
        args.out_dir,
        args.encounters,
        seed=args.seed,
        duration_s=args.duration,
        workers=args.workers,
        atypical_rate=args.atypical_rate,
    )
    log.info(
        "wrote %d synthetic encounters to %s in %.1f s",
        len(rows),
        args.out_dir,
        time.perf_counter() - started,
    )
    return 0
