"""Live latency, source capacity and long-file /predict time of the whole service on this machine.

Prints (and with ``--write``, the default, records in BENCHMARKS.md's "Live latency" section)
the machine and three measurements, all taken on the real service (``create_app`` served by
uvicorn on a local port, the SQLite store, FLAC clips, the WebSocket hub) with a WebSocket
client in a separate process, like a keeper's browser:

1. **Latency**: for at least ``--segments`` scored segments of real-time synthetic encounters,
   the time from the moment a segment's last sample entered its source (``ready_at``, stamped
   when the block holding it was delivered) to the moment the client received the segment's
   event, p50 and p95; split into detection + queue + inference (to the sink), inference alone,
   and store + publish (sink to client). Both processes read the same CLOCK_MONOTONIC.
2. **Capacity**: N real-time sources that all call continuously (a call of 1.9-4.3 s every
   ~0.35 s of silence), with the client watching one of them (its meters and spectrogram), and
   the CPU the service used per source; N grows until the service stops keeping up. Real time means: no block
   or segment dropped, no inference overrun, and the 95th-percentile latency to the client
   below one segment's length (2 s), so the backlog does not grow.
3. **/predict**: one hour of stereo audio with about 30 % calling (synthetic encounters with
   quiet spells), uploaded as a 16-bit WAV to the service running in a process of its own; the
   request's wall time and that process's peak resident memory (VmHWM), and the parts measured
   in-process (decode, detection + segmentation, inference, the streaming ``analyse`` with and
   without its decoding thread). ``--predict-repo DIR`` serves it from another checkout (an
   older commit: the before figure).

The model is the demo model when it exists (its weights do not change the timings), else
seeded random weights. Usage:
    .venv/bin/python bench/latency_bench.py [--segments 100] [--latency-sources 1]
        [--sources 8,16,32,64,96] [--window 30] [--no-predict] [--predict-repo DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/latency_bench.py` puts bench/, not the repo, first
    sys.path.insert(0, str(REPO))

from bench.benchmarks_md import write_section  # noqa: E402
from model import constants as C  # noqa: E402
from model.hardware import cpu_model  # noqa: E402

SR = C.SAMPLE_RATE
SECTION = "## Live latency"
GPU_SECTION = "## GPU (CUDA)"
TOKEN = "bench-token"
LATENCY_SOURCES = 1
"""Enclosures in the latency run: the target (p95 <= 100 ms) is for one source."""
ENCOUNTER_S = 60.0
"""Length of each synthetic encounter looped by a latency-run source (s)."""
CONTINUOUS_S = 30.0
"""Length of each continuously calling recording looped by a capacity-run source (s)."""
WARMUP_S = 6.0
"""Seconds ignored at the start of a capacity run (model warm-up, first floor estimates)."""
HOUR_S = 3600.0


# --- machine ---------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    import torch

    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": mem,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


# --- audio -----------------------------------------------------------------------------------


def continuous_calling(seed: int, seconds: float) -> np.ndarray:
    """(2, n) float32: ventilation-like noise at -45 dBFS and harmonic, amplitude-modulated
    calls 15-25 dB above it, 1.9-4.3 s long, 0.3-0.4 s apart: a source that never stops calling."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    audio = rng.standard_normal((2, n)) * 10 ** (-45 / 20)
    t = rng.uniform(0.2, 0.5)
    while t < seconds - 0.5:
        length = min(float(rng.choice([1.9, 2.1, 4.3])), seconds - t)
        s, e = int(t * SR), int((t + length) * SR)
        tt = np.arange(e - s) / SR
        f0 = rng.uniform(180, 450)
        call = sum(np.sin(2 * np.pi * k * f0 * tt) / k for k in range(1, 6))
        call *= 1 - 0.4 * (0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(8, 14) * tt))
        call *= np.minimum(1, np.minimum(tt, tt[-1] - tt) / 0.02)
        level = 10 ** ((rng.uniform(15, 25) - 45) / 20) / np.sqrt(np.mean(call**2))
        audio[:, s:e] += call * level * np.array([[1.0], [rng.uniform(0.4, 1.0)]])
        t += length + rng.uniform(0.3, 0.4)
    return audio.astype(np.float32)


def synth(seed: int, seconds: float, *, quiet_spells: bool) -> np.ndarray:
    from model.synth import generate_encounter

    outcome = "success" if seed % 2 else "failure"
    return generate_encounter(
        seed, outcome=outcome, duration_s=seconds, quiet_spells=quiet_spells
    ).audio


def write_wav(path: Path, audio: np.ndarray, subtype: str = "PCM_16") -> Path:
    sf.write(path, audio.T, SR, subtype=subtype)
    return path


# --- the service in this process, a WebSocket client in another -----------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    """The service under test: uvicorn in a thread; the sink instrumented to note, for each
    segment, ``ready_at`` and when the pipeline handed it over (both time.monotonic())."""

    def __init__(
        self,
        sources: list[dict[str, Any]],
        model: Path,
        data_dir: Path,
        *,
        encounter_audio: bool = True,
    ) -> None:
        import uvicorn

        from service.api import create_app
        from service.config import load_settings
        from service.main import server_config

        self.port = free_port()
        settings = load_settings(
            environ={},
            overrides={
                "server": {
                    "token": TOKEN,
                    "port": self.port,
                    "max_upload_mb": 1024,
                    "max_upload_s": 3700,
                },
                "sources": sources,
                "inference": {"model": str(model), "max_batch": 32},
                "encounter": {"silence_close_s": 600},
                "alerts": {"stall_after_s": 30},
                "storage": {
                    "data_dir": str(data_dir),
                    "max_disk_mb": 4096,
                    "keep_encounter_audio": encounter_audio,
                },
            },
        )
        self.app = create_app(settings)
        self.server = uvicorn.Server(server_config(self.app, settings))
        self.thread = threading.Thread(target=self.server.run, name="bench-uvicorn", daemon=True)
        self.handed: dict[tuple[str, float], tuple[float, float, float, float]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Bench:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        monitor = self.runtime.monitor
        original = monitor.on_segment

        def on_segment(event: Any) -> None:
            handed = time.monotonic()
            with self._lock:
                key = (event.source_id, round(event.start / SR, 4))
                self.handed[key] = (event.ready_at, event.cut_at, handed, event.processing_ms)
            original(event)

        monitor.on_segment = on_segment  # instance attribute: the pipeline looks it up per call
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def client(self) -> Iterator[WsClient]:
        client = WsClient(f"ws://127.0.0.1:{self.port}/ws/live?token={TOKEN}")
        try:
            yield client
        finally:
            client.close()


class WsClient:
    """A separate process that prints, for each ``segment`` event, when it arrived."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--ws-client", url],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while not self.connected:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the WebSocket client did not connect")
            time.sleep(0.05)

    connected = False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg.get("type") == "connected":
                self.connected = True
                continue
            with self._lock:
                self.received.append(msg)

    def segments(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ws_client_main(url: str) -> int:
    """``--ws-client URL``: print a JSON line per segment event with its arrival time. Like a
    keeper's dashboard, it watches one source (the first) for its meters and spectrogram."""
    from websockets.sync.client import connect

    with connect(url, max_size=None) as ws:
        print(json.dumps({"type": "connected"}), flush=True)
        for raw in ws:
            now = time.monotonic()
            msg = json.loads(raw)
            if msg.get("type") == "snapshot" and msg["sources"]:
                watch = {"type": "watch", "v": 1, "sources": [msg["sources"][0]["id"]]}
                ws.send(json.dumps(watch))
            if msg.get("type") == "segment":
                out = {
                    "t": now,
                    "source": msg["source"],
                    "start_s": msg["start_s"],
                    "end_s": msg["end_s"],
                }
                print(json.dumps(out), flush=True)
    return 0


def latencies(
    bench: Bench, received: list[dict[str, Any]], since: float = 0.0
) -> dict[str, np.ndarray]:
    """Per segment received whose last sample came after ``since`` (monotonic s), in ms:
    total (last sample -> client), detect (last sample -> cut), processing (cut -> client),
    to_sink (last sample -> sink), infer (its batch), publish (sink -> client)."""
    names = ("total", "detect", "processing", "to_sink", "infer", "publish")
    values: dict[str, list[float]] = {name: [] for name in names}
    with bench._lock:
        handed = dict(bench.handed)
    for msg in received:
        key = (msg["source"], round(msg["start_s"], 4))
        if key not in handed:
            continue
        ready, cut, at_sink, processing_ms = handed[key]
        if ready < since:
            continue
        values["total"].append(msg["t"] - ready)
        values["detect"].append(cut - ready)
        values["processing"].append(msg["t"] - cut)
        values["to_sink"].append(at_sink - ready)
        values["infer"].append(processing_ms / 1e3)
        values["publish"].append(msg["t"] - at_sink)
    return {name: 1e3 * np.array(v) for name, v in values.items()}


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


# --- the three measurements ------------------------------------------------------------------


def measure_latency(
    model: Path, work: Path, n_segments: int, n_sources: int = LATENCY_SOURCES
) -> dict[str, Any]:
    files = []
    for i in range(n_sources):
        files.append(
            write_wav(work / f"encounter{i}.wav", synth(100 + i, ENCOUNTER_S, quiet_spells=False))
        )
    sources = [
        {"id": f"pen{i}", "kind": "file", "path": str(f), "realtime": True, "loop": True}
        for i, f in enumerate(files)
    ]
    with Bench(sources, model, work / "data-latency") as bench, bench.client() as client:
        started = time.monotonic()
        deadline = started + 30 + 3 * n_segments
        while len(client.segments()) < n_segments:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(1.0)
        lat = latencies(bench, client.segments())
        stats = bench.runtime.pipeline.stats()
        elapsed = time.monotonic() - started
    return {"lat": lat, "stats": stats, "elapsed_s": elapsed, "sources": n_sources}


def cpu_seconds() -> float:
    """CPU time of this process (the service; the WebSocket client is another process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_capacity(
    model: Path,
    work: Path,
    counts: list[int],
    window_s: float,
    warmup_s: float = WARMUP_S,
    *,
    encounter_audio: bool = True,
) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        paths = [
            write_wav(work / f"calling{i}.wav", continuous_calling(1000 + i, CONTINUOUS_S))
            for i in range(n)
        ]
        sources = [
            {"id": f"src{i}", "kind": "file", "path": str(p), "realtime": True, "loop": True}
            for i, p in enumerate(paths)
        ]
        with (
            Bench(sources, model, work / f"data-cap{n}", encounter_audio=encounter_audio) as bench,
            bench.client() as client,
        ):
            time.sleep(warmup_s)
            before = bench.runtime.pipeline.stats()
            t0, cpu0 = time.monotonic(), cpu_seconds()
            time.sleep(window_s)
            after = bench.runtime.pipeline.stats()
            cores_used = (cpu_seconds() - cpu0) / (time.monotonic() - t0)
            time.sleep(1.0)
            lat = latencies(bench, client.segments(), since=t0)
        src_b, src_a = before.sources, after.sources
        dropped_blocks = sum(
            src_a[s].source.dropped_blocks - src_b[s].source.dropped_blocks for s in src_a
        )
        inf_b, inf_a = before.inference, after.inference
        scored = inf_a.segments - inf_b.segments
        row = {
            "sources": n,
            "segments_per_s": scored / window_s,
            "dropped_blocks": dropped_blocks,
            "dropped_segments": inf_a.dropped_segments - inf_b.dropped_segments,
            "overruns": inf_a.overruns - inf_b.overruns,
            "queued": inf_a.queued,
            "batch_mean_ms": inf_a.mean_ms,
            "p50_ms": pct(lat["total"], 50),
            "p95_ms": pct(lat["total"], 95),
            # Where the tail is: last sample -> cut, -> scored (sink), sink -> client.
            "p95_stage_ms": {k: pct(lat[k], 95) for k in ("detect", "to_sink", "publish")},
            "received": int(lat["total"].size),
            "scored_total": inf_a.segments,
            "cores_used": cores_used,
            "cpu_per_source_pct": 100 * cores_used / n,
            "encounter_audio": encounter_audio,
        }
        row["realtime"] = (
            row["dropped_blocks"] == 0
            and row["dropped_segments"] == 0
            and row["overruns"] == 0
            and row["received"] > 0
            and row["p95_ms"] <= C.SEGMENT_SECONDS * 1e3
        )
        rows.append(row)
        print(
            f"  {n:3d} sources: {row['segments_per_s']:.1f} segments/s, p95 {row['p95_ms']:.0f} ms,"
            f" {cores_used:.2f} cores ({row['cpu_per_source_pct']:.1f} % of a core per source),"
            f" dropped blocks {dropped_blocks}, dropped segments {row['dropped_segments']},"
            f" p95 by stage (ms) {' '.join(f'{k} {v:.0f}' for k, v in row['p95_stage_ms'].items())},"
            f" overruns {row['overruns']} -> {'real time' if row['realtime'] else 'NOT real time'}",
            flush=True,
        )
        for p in paths:
            p.unlink()
        if not row["realtime"]:
            break
    return rows


def looped(piece: np.ndarray, n: int) -> np.ndarray:
    """(2, n): ``piece`` repeated with 20-ms cross-fades at the seams (no clicks)."""
    fade = min(int(0.02 * SR), piece.shape[1] // 4)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out = piece.copy()
    while out.shape[1] < n:
        seam = out[:, -fade:] * (1 - ramp) + piece[:, :fade] * ramp
        out = np.concatenate([out[:, :-fade], seam, piece[:, fade:]], axis=1)
    return out[:, :n]


HOUR_SHARE = 0.45
"""Calling share each encounter + background pair is built for. Over the whole hour the
detector then finds about 30 % calling (it finds less in an encounter heard after a quiet
stretch than in the encounter alone: measured 23 % for 0.30, 27 % for 0.39); the bench prints
the share it measured."""


def hour_recording(work: Path, share: float = HOUR_SHARE) -> tuple[Path, float]:
    """One hour of stereo audio calling part of the time, as a 16-bit WAV, and its measured
    calling share (detected call time / duration).

    Synthetic encounters with quiet spells call about half the time or more; each is followed
    by a stretch of its own background (its longest call-free part, looped) long enough to
    bring the share down to ``share``, like the quiet time between an enclosure's encounters."""
    from model.detect import detect_calls

    parts: list[np.ndarray] = []
    for seed in range(200, 232):  # the first four encounters with a clean quiet stretch
        enc = synth(seed, 120.0, quiet_spells=True)
        calls = detect_calls(enc)
        edges = [0] + [x for call in calls for x in call] + [enc.shape[1]]
        gaps = list(zip(edges[::2], edges[1::2], strict=True))
        start, end = max(gaps, key=lambda g: g[1] - g[0])
        if end - start < 6 * SR:
            continue
        calling = sum(e - s for s, e in calls)
        extra = max(0, int(calling / share) - enc.shape[1])
        background = looped(enc[:, start + SR // 2 : end - SR // 2], extra)
        if detect_calls(background):  # background events that read as calls: not quiet
            continue
        parts += [enc, background]
        if len(parts) == 8:
            break
    n = int(HOUR_S * SR)
    audio = np.empty((2, n), np.float32)
    pos, i = 0, 0
    while pos < n:
        piece = parts[i % len(parts)][:, : n - pos]
        audio[:, pos : pos + piece.shape[1]] = piece
        pos += piece.shape[1]
        i += 1
    measured = sum(e - s for s, e in detect_calls(audio)) / n
    path = write_wav(work / "hour.wav", audio)
    return path, measured


SERVE_PREDICT = """
import json, sys
repo, port, overrides = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
sys.path.insert(0, repo)
import uvicorn
from service.api import create_app
from service.config import load_settings
app = create_app(load_settings(environ={}, overrides=overrides))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""
"""The service for the /predict measurement, in a process of its own (``python -c``): the
checkout given first on its command line, the settings ``Bench`` uses."""


def proc_status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def service_process(
    repo: Path,
    model: Path,
    data_dir: Path,
    sources: list[dict[str, Any]],
    precision: str | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The service (``repo``'s code) served by uvicorn in a child process; yields it and its URL
    once ``/healthz`` answers (the model is loaded by then). ``precision`` sets
    ``inference.precision`` (None: the checkout's default; an older one may not know it)."""
    import httpx

    port = free_port()
    inference: dict[str, Any] = {"model": str(model), "max_batch": 32}
    if precision is not None:
        inference["precision"] = precision
    overrides = {
        "server": {"token": TOKEN, "port": port, "max_upload_mb": 1024, "max_upload_s": 3700},
        "sources": sources,
        "inference": inference,
        "encounter": {"silence_close_s": 600},
        "alerts": {"stall_after_s": 30},
        "storage": {"data_dir": str(data_dir), "max_disk_mb": 4096},
    }
    child = subprocess.Popen(
        [sys.executable, "-c", SERVE_PREDICT, str(repo), str(port), json.dumps(overrides)],
        cwd=repo,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"the service exited with {child.returncode} before it served")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start within 180 s")
            time.sleep(0.2)
        yield child, url
    finally:
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def measure_predict(
    bench_model: Path,
    work: Path,
    *,
    repo: Path = REPO,
    parts: bool = True,
    precision: str | None = None,
) -> dict[str, Any]:
    """The /predict request for one hour, to the service (``repo``'s code) in its own process:
    wall time and the service process's peak resident memory (VmHWM). With ``parts``, the same
    work again in this process, step by step (this checkout's code, the same precision)."""
    import httpx

    path, calling = hour_recording(work)
    size_mb = path.stat().st_size / 2**20
    out: dict[str, Any] = {"calling": calling, "size_mb": size_mb, "repo": str(repo)}
    out["precision"] = precision or "the service's default"
    sources = [
        {
            "id": "idle",
            "kind": "file",
            "path": str(work / "quiet.wav"),
            "realtime": True,
            "loop": True,
        }
    ]
    write_wav(
        work / "quiet.wav",
        (1e-4 * np.random.default_rng(0).standard_normal((2, SR * 5))).astype(np.float32),
    )
    service = service_process(repo, bench_model, work / "data-predict", sources, precision)
    with service as (child, url):
        time.sleep(3.0)  # the live source and the first stats settle
        out["idle_rss_mib"] = proc_status_kib(child.pid, "VmRSS") / 1024
        with open(path, "rb") as fh, httpx.Client(timeout=900) as http:
            t0 = time.perf_counter()
            r = http.post(
                f"{url}/predict",
                headers={"Authorization": f"Bearer {TOKEN}"},
                files={"file": ("hour.wav", fh, "audio/wav")},
            )
            out["request_s"] = time.perf_counter() - t0
        out["peak_rss_mib"] = proc_status_kib(child.pid, "VmHWM") / 1024
        r.raise_for_status()
        answer = r.json()
        out["segments"] = len(answer["segments"])
        from model.classifier import choose_device

        out["device"] = str(choose_device())  # the service's default: CUDA when present
    if not parts:
        path.unlink()
        return out

    from model.classifier import Classifier
    from model.predict import analyse
    from model.preprocessing import Segment, load, stack
    from model.segmenter import segments_from_audio
    from service.config import load_settings

    inference = load_settings(environ={}).inference
    classifier = Classifier.from_checkpoint(
        bench_model, max_batch=32, precision=precision or inference.precision
    )
    out["device"] = str(classifier.device)
    out["precision"] = classifier.precision
    # The same work in-process, step by step: the whole file decoded, then segmented, then scored.
    t0 = time.perf_counter()
    recording = load(path)
    out["decode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    segments: list[Segment] = list(segments_from_audio(recording.audio))
    out["segment_s"] = time.perf_counter() - t0
    del recording
    t0 = time.perf_counter()
    for i in range(0, len(segments), classifier.max_batch):
        classifier.predict(stack(list(segments[i : i + classifier.max_batch])))
    out["infer_s"] = time.perf_counter() - t0
    out["ms_per_segment"] = 1e3 * out["infer_s"] / max(1, len(segments))
    del segments
    # And as /predict runs it: streamed from the file, with and without the decoding thread.
    for key, overlap in (("analyse_s", False), ("analyse_thread_s", True)):
        t0 = time.perf_counter()
        analyse(path, classifier, overlap=overlap)
        out[key] = time.perf_counter() - t0
    path.unlink()
    return out


# --- report ----------------------------------------------------------------------------------


def report(
    m: dict[str, str],
    lat: dict[str, Any] | None,
    cap: list[dict[str, Any]],
    pred: dict[str, Any] | None,
    model_note: str,
) -> str:
    lines = [
        f"Measured {m['date']} by `bench/latency_bench.py` (figures written by the script).",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, GPU {m['gpu']};"
        f" Python {m['python']}, torch {m['torch']} ({m['threads']} threads); load average at"
        f" start {m['load']} (the machine is shared with other work: figures move with its load)",
        f"- Model: {model_note}; the service as deployed: uvicorn, SQLite store, FLAC clips,"
        " WebSocket hub; the WebSocket client is a separate process",
        "",
    ]
    if lat is not None:
        t = lat["lat"]
        inf = lat["stats"].inference
        lines += [
            f"**Latency** ({lat['sources']} real-time source{'s' if lat['sources'] != 1 else ''}"
            " of synthetic encounters,"
            f" {t['total'].size} segments in {lat['elapsed_s']:.0f} s; target p95 <= 100 ms):",
            "",
            "| stage | p50 ms | p95 ms |",
            "|---|---|---|",
            f"| last sample in the source -> event at the WebSocket client | **{pct(t['total'], 50):.0f}** | **{pct(t['total'], 95):.0f}** |",
            f"| ... detection: last sample -> segment cut (the hang-over, for a call's last piece) | {pct(t['detect'], 50):.0f} | {pct(t['detect'], 95):.0f} |",
            f"| ... processing: segment cut -> event at the client | {pct(t['processing'], 50):.0f} | {pct(t['processing'], 95):.0f} |",
            f"| ... ... of which the inference of the segment's batch | {pct(t['infer'], 50):.0f} | {pct(t['infer'], 95):.0f} |",
            f"| ... ... of which store (SQLite + FLAC) + publish, sink -> client | {pct(t['publish'], 50):.0f} | {pct(t['publish'], 95):.0f} |",
            "",
            f"Inference batches: mean {inf.mean_ms} ms, p95 {inf.p95_ms} ms;"
            f" overruns {inf.overruns}, dropped segments {inf.dropped_segments}.",
            "",
        ]
    if cap:
        best = max((r["sources"] for r in cap if r["realtime"]), default=0)
        lines += [
            f"**Capacity** (sources all calling continuously, each run {cap[0].get('window', '')}"
            f" measured after a {WARMUP_S:g}-s warm-up, one WebSocket client watching one source,"
            f" whole-encounter audio {'on' if cap[0]['encounter_audio'] else 'off'};"
            f" target >= 64 sources): **{best} sources**"
            " stay real time" + ("" if cap[-1]["realtime"] else f"; {cap[-1]['sources']} do not"),
            "",
            "| sources | segments/s | latency p50 ms | latency p95 ms | dropped blocks | dropped segments | overruns | mean batch ms | service CPU (cores) | CPU per source | real time |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in cap:
            lines.append(
                f"| {r['sources']} | {r['segments_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |"
                f" {r['dropped_blocks']} | {r['dropped_segments']} | {r['overruns']} |"
                f" {r['batch_mean_ms']} | {r['cores_used']:.2f} | {r['cpu_per_source_pct']:.1f} % |"
                f" {'yes' if r['realtime'] else 'no'} |"
            )
        lines.append("")
    if pred is not None:
        lines += [
            f"**/predict, one hour** (stereo 44.1 kHz 16-bit WAV, {pred['size_mb']:.0f} MiB,"
            f" {100 * pred['calling']:.0f} % of it detected as calling, {pred['segments']} segments,"
            f" inference on {pred['device']}, precision {pred['precision']}; targets <= 15 s and < 1 GiB): **{pred['request_s']:.1f} s**"
            " for the request (upload, decode, detection, inference, JSON); the service process"
            f" (its own, serving one idle live source) peaked at **{pred['peak_rss_mib']:.0f} MiB**"
            f" resident (VmHWM; {pred['idle_rss_mib']:.0f} MiB before the request).",
            "",
        ]
        if "decode_s" in pred:
            lines += [
                "| part (in-process, same file) | s |",
                "|---|---|",
                f"| decode the whole file (soundfile, `load`) | {pred['decode_s']:.1f} |",
                f"| detection + segmentation of the whole file | {pred['segment_s']:.1f} |",
                f"| inference ({pred['ms_per_segment']:.0f} ms/segment) | {pred['infer_s']:.1f} |",
                f"| `analyse` streaming the file, one thread (as /predict runs it on CPU) | {pred['analyse_s']:.1f} |",
                f"| `analyse` streaming the file, a decoding thread ahead of inference | {pred['analyse_thread_s']:.1f} |",
                "",
            ]
    return "\n".join(lines).rstrip("\n")


def bench_model(work: Path) -> tuple[Path, str]:
    from model.checkpoint import DEMO_MODEL

    if DEMO_MODEL.is_file():
        return DEMO_MODEL, f"the demo model ({DEMO_MODEL.name})"
    import torch

    from model import checkpoint
    from model.network import CGANet

    torch.manual_seed(0)
    path = work / "timing-only.safetensors"
    checkpoint.save(path, CGANet(), {"data": {"note": "random weights, for timing only"}})
    return (
        path,
        "CGANet with seeded random weights (no demo model yet; timings do not depend on weights)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segments", type=int, default=100, help="segments in the latency run")
    parser.add_argument(
        "--sources", default="8,16,32,64,96", help="source counts for the capacity run"
    )
    parser.add_argument(
        "--window", type=float, default=30.0, help="seconds measured per capacity run"
    )
    parser.add_argument("--predict", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--predict-repo",
        type=Path,
        default=None,
        help="serve /predict from this checkout (e.g. an older commit, for a before figure);"
        " its in-process parts are then not measured",
    )
    parser.add_argument(
        "--predict-precision",
        default=None,
        help="inference.precision for /predict (default: the service's own default)",
    )
    parser.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--latency-sources",
        type=int,
        default=LATENCY_SOURCES,
        help="real-time sources in the latency run (default %(default)s)",
    )
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--encounter-audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="capacity run with storage.keep_encounter_audio (the service's default: on)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads for the service (default: torch's)"
    )
    parser.add_argument("--ws-client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ws_client:
        return ws_client_main(args.ws_client)

    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    m = machine()
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, GPU {m['gpu']}, load {m['load']}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="pp-latency-") as tmp:
        work = Path(tmp)
        model, note = bench_model(work)
        lat = None
        if args.latency:
            print(
                f"latency: {args.latency_sources} real-time source(s) until {args.segments}"
                " segments ...",
                flush=True,
            )
            lat = measure_latency(model, work, args.segments, args.latency_sources)
            t = lat["lat"]
            print(
                f"  {t['total'].size} segments: p50 {pct(t['total'], 50):.0f} ms, p95 {pct(t['total'], 95):.0f} ms",
                flush=True,
            )
        counts = [int(x) for x in args.sources.split(",") if x.strip()]
        cap = []
        if counts:
            print(
                f"capacity: {counts} continuously calling sources, {args.window:g} s each ...",
                flush=True,
            )
            cap = measure_capacity(
                model, work, counts, args.window, encounter_audio=args.encounter_audio
            )
            for row in cap:
                row["window"] = f"{args.window:g} s"
        pred = None
        if args.predict:
            print("/predict: one hour ...", flush=True)
            repo = (args.predict_repo or REPO).resolve()
            pred = measure_predict(
                model,
                work,
                repo=repo,
                parts=args.predict_repo is None,
                precision=args.predict_precision,
            )
            print(
                f"  {pred['request_s']:.1f} s ({pred['segments']} segments, {100 * pred['calling']:.0f} %"
                f" calling), service peak {pred['peak_rss_mib']:.0f} MiB ({repo})",
                flush=True,
            )
    block = report(m, lat, cap, pred, note)
    print()
    print(block)
    if args.write:  # a GPU machine's figures go beside the CPU ones, not over them
        if m["gpu"] == "none":
            write_section(SECTION, "latency_bench", block)
        else:
            write_section(GPU_SECTION, "latency_bench_cuda", block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
