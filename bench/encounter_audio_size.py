"""What whole-encounter audio costs on disk: MiB per hour of 44.1 kHz stereo FLAC, as the
service writes it: the audio goes block by block through the service's own recorder
(``service.encounter_audio.EncounterAudio``, 24-bit FLAC), its drains run at once.

Inputs, all real or what the service really records:

- **ambience, 24-bit**: real outdoor recordings (ESC-10's rain, sea waves and fire crackling,
  ``../shared/data/esc10``; 44.1 kHz mono clips), one sequence on the left channel and the
  same clips in another order on the right: two microphones that hear different sounds, the
  worst case for FLAC's stereo decorrelation. A 24-bit sound card fills every bit.
- **ambience, 16-bit card**: the same audio quantised to 16 bits before writing, as a 16-bit
  sound card delivers it (the low 8 bits of each 24-bit sample are then zero; FLAC drops them).
- **synthetic encounter**: ``model.synth`` encounters with quiet spells, what the demo source
  plays.

Usage: ``python bench/encounter_audio_size.py [--minutes 10]``; the figures go to
BENCHMARKS.md ("Whole-encounter audio on disk") and are quoted in README and ``doctor``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.benchmarks_md import write_section
from model import constants as C
from service.audio import BLOCK_SAMPLES
from service.encounter_audio import EncounterAudio
from service.storage import Storage
from service.types import AudioBlock

SECTION = "## Whole-encounter audio on disk"
ESC10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
AMBIENCE = ("002 - Rain", "003 - Sea waves", "010 - Fire crackling")
BLOCK = BLOCK_SAMPLES
MIB = 2**20


def ambience(minutes: float) -> np.ndarray:
    """(2, n) float32 at 44.1 kHz: ESC-10 ambience clips, a different order on each channel."""
    clips = []
    for folder in AMBIENCE:
        for path in sorted((ESC10 / folder).glob("*.ogg")):
            audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
            if rate != C.SAMPLE_RATE:
                raise SystemExit(f"{path} is {rate} Hz, expected {C.SAMPLE_RATE}")
            clips.append(audio[:, 0])
    if not clips:
        raise SystemExit(f"no ambience clips under {ESC10}")
    order = np.random.default_rng(0).permutation(len(clips))
    left = np.concatenate(clips)
    right = np.concatenate([clips[i] for i in order])
    n = min(len(left), int(minutes * 60 * C.SAMPLE_RATE))
    return np.stack([left[:n], right[:n]])


def synthetic(minutes: float) -> np.ndarray:
    from model.synth import generate_encounter

    parts, seconds, seed = [], 0.0, 1
    while seconds < minutes * 60:
        length = min(180.0, minutes * 60 - seconds)
        outcome = "success" if seed % 2 else "failure"
        parts.append(
            generate_encounter(seed, outcome=outcome, duration_s=length, quiet_spells=True).audio
        )
        seconds += length
        seed += 1
    return np.concatenate(parts, axis=1)


def mib_per_hour(audio: np.ndarray) -> tuple[float, float]:
    """(MiB per hour, seconds to write per hour of audio) of ``audio`` (2, n) as written live."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp))
        enc = storage.create_encounter(source="pen")

        def offer(job: Callable[[Storage], object]) -> bool:
            job(storage)  # this thread stands in for the storage thread
            return True

        def clock(_source: str, sample: int) -> datetime:
            return datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=sample / C.SAMPLE_RATE)

        recorder = EncounterAudio(offer, clock, preroll_s=0)
        recorder.add_source("pen")
        recorder.begin(storage, enc.id, "pen", None)
        t0 = time.perf_counter()
        for i in range(0, audio.shape[1], BLOCK):
            recorder.tap(AudioBlock("pen", i, audio[:, i : i + BLOCK], 0.0))
        recorder.end(storage, enc.id)
        elapsed = time.perf_counter() - t0
        (part,) = storage.audio_parts_of(enc.id)
        storage.close()
        assert part.frames == audio.shape[1] and recorder.write_errors == 0
        hours = audio.shape[1] / C.SAMPLE_RATE / 3600
        return part.size_bytes / MIB / hours, elapsed / hours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="audio per input (min)")
    args = parser.parse_args()
    amb = ambience(args.minutes)
    inputs = {
        "ambience (ESC-10 rain, sea, fire), 24-bit": amb,
        "ambience, 16-bit sound card": np.round(amb * 32767) / 32768,
        "synthetic encounter (model.synth)": synthetic(args.minutes),
    }
    rows = []
    for name, audio in inputs.items():
        rate, write_s = mib_per_hour(audio.astype(np.float32))
        rows.append((name, audio.shape[1] / C.SAMPLE_RATE / 60, rate, write_s))
        print(f"{name}: {rate:.0f} MiB/h ({write_s:.1f} s of one core per hour written)")
    raw = C.SAMPLE_RATE * 2 * 3 * 3600 / MIB
    lines = [
        f"- Run {datetime.now(UTC).strftime('%Y-%m-%d')}, Python {platform.python_version()},"
        f" libsndfile {sf.__libsndfile_version__}; 44.1 kHz stereo, 24-bit FLAC as"
        f" `service.encounter_audio` writes it ({BLOCK}-sample blocks in, libsndfile's default"
        f" compression). Uncompressed 24-bit"
        f" would be {raw:.0f} MiB/h.",
        "",
        "| input | minutes | MiB per hour | CPU s per hour written |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {m:.1f} | {r:.0f} | {w:.1f} |" for n, m, r, w in rows),
    ]
    write_section(SECTION, "encounter_audio_size", "\n".join(lines))


if __name__ == "__main__":
    main()
