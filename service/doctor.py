"""``pandapulse doctor``: check the box before (or beside) the service, and say how to fix it.

Checks, in order: the configuration (``service.config``), the sound cards (lists every input
device PortAudio sees, then captures ``--seconds`` from each configured sound-card source), the
GPU (torch.cuda, with a small computation on it), the model (metadata, feature configuration,
weights, one forward pass), the data directory (writable, free space, SQLite integrity), the
exposure of the API (a token when listening beyond loopback), when ``mqtt.host`` is set, the
MQTT broker (one connection with the configured credentials), and the notification channels
(``alerts.notify``: each Apprise URL parsed, count and kinds; a test message through each only
with ``--send-test-notification``).

Each check prints ``OK`` or ``PROBLEM`` with a one-line finding; every problem comes with a
``fix:`` line. The exit status is 0 when nothing is wrong, 1 otherwise (2 for a usage error).
Nothing is changed on the box: the write test removes its file, SQLite is opened read-only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model import constants as C
from model.errors import CheckpointError
from service.alerts import DeliveryError
from service.config import StorageSettings, is_loopback, load_settings
from service.errors import ConfigError
from service.storage import DB_NAME, ENCOUNTER_AUDIO_DIR, read_only

MIN_FREE_MB = 1024.0
"""Free space (MiB) below which the data directory is a problem: a day of clips and rows at
the default settings fits many times over; less means retention or the disk needs attention."""
CAPTURE_SECONDS = 1.0
"""Default length of the test capture (s)."""
CAPTURE_GRACE_S = 3.0
"""Extra time a capture may take before it counts as stalled (s): device open and latency."""
SILENCE_DBFS = -120.0
"""A capture whose peak is below this (dBFS) is digital silence: a muted or unplugged input."""


@dataclass(frozen=True)
class Finding:
    """One check's result: ``ok`` False means a problem, which then carries a ``fix``."""

    check: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Note:
    """An informational line (a device listing), printed under the check it belongs to."""

    check: str
    detail: str


Report = Iterator[Finding | Note]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="the service's YAML config file")
    parser.add_argument(
        "--seconds",
        type=float,
        default=CAPTURE_SECONDS,
        help=f"length of the test capture on each sound-card source (default {CAPTURE_SECONDS:g} s)",
    )
    parser.add_argument(
        "--no-capture", action="store_true", help="list devices but capture nothing"
    )
    parser.add_argument(
        "--min-free-mb",
        type=float,
        default=MIN_FREE_MB,
        help=f"least free space in the data directory (MiB, default {MIN_FREE_MB:g})",
    )
    parser.add_argument(
        "--send-test-notification",
        action="store_true",
        help="also send a test message through every alerts.notify URL (else they are only parsed)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    if not (0 < args.seconds <= 60):
        print("pandapulse doctor: --seconds must be in (0, 60]")
        return 2
    items = list(diagnose(args))
    problems = [i for i in items if isinstance(i, Finding) and not i.ok]
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not problems,
                    "findings": [asdict(i) for i in items if isinstance(i, Finding)],
                    "notes": [asdict(i) for i in items if isinstance(i, Note)],
                },
                indent=2,
            )
        )
    else:
        print(render(items))
    return 1 if problems else 0


def render(items: list[Finding | Note]) -> str:
    lines = []
    for item in items:
        if isinstance(item, Note):
            lines.append(f"           {item.detail}")
            continue
        lines.append(f"{'OK' if item.ok else 'PROBLEM':8}   {item.check}: {item.detail}")
        if not item.ok:
            lines.append(f"           fix: {item.fix}")
    problems = sum(1 for i in items if isinstance(i, Finding) and not i.ok)
    lines.append("")
    lines.append("all checks passed" if not problems else f"{problems} problem(s) found")
    return "\n".join(lines)


def diagnose(args: argparse.Namespace) -> Report:
    """Every check, in order; later checks are skipped only where they need what failed."""
    settings = None
    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        yield Finding(
            "config",
            False,
            str(err).replace("\n", " "),
            "edit the file or the PANDAPULSE__... variable named above;"
            " deploy/pandapulse.example.yaml lists every key with its range",
        )
    else:
        origin = str(args.config) if args.config else "built-in defaults + environment"
        kinds = ", ".join(f"{s.id} ({s.kind})" for s in settings.sources)
        yield Finding("config", True, f"{origin}: sources {kinds}")

    yield from check_audio(settings, capture_s=None if args.no_capture else args.seconds)
    yield from check_cuda(None if settings is None else settings.inference.device)
    if settings is not None:
        yield from check_model(
            settings.inference.model_path,
            settings.inference.device,
            settings.alerts.alarm_class,
            settings.inference.precision,
        )
        yield from check_data_dir(settings.storage.data_dir, args.min_free_mb)
        yield from check_encounter_audio(settings.storage)
        yield from check_stored_models(settings.storage.data_dir, settings.inference.model_path)
        yield from check_exposure(settings.server.host, settings.server.token is not None)
        yield from check_mqtt(settings)
        yield from check_notify(settings, send=getattr(args, "send_test_notification", False))


# --- sound cards -----------------------------------------------------------------------------


def check_audio(settings: Any, *, capture_s: float | None) -> Report:
    try:
        import sounddevice as sd
    except OSError as err:  # PortAudio itself is missing
        yield Finding(
            "audio devices",
            False,
            f"PortAudio cannot be loaded: {err}",
            "install it: apt-get install libportaudio2 (the Docker image has it)",
        )
        return
    from service.audio.device import input_devices

    try:
        inputs = input_devices()
    except sd.PortAudioError as err:
        yield Finding("audio devices", False, f"PortAudio cannot list devices: {err}", _SND_FIX)
        return
    sound_sources = (
        [] if settings is None else [s for s in settings.sources if s.kind == "sounddevice"]
    )
    if not inputs:
        yield Finding(
            "audio devices",
            not sound_sources,
            "no input devices found"
            + ("" if sound_sources else " (no sound-card source is configured)"),
            _SND_FIX if sound_sources else "",
        )
    else:
        yield Finding("audio devices", True, f"{len(inputs)} input device(s)")
        default_in = _default_input(sd)
        for d in inputs:
            mark = "*" if d.index == default_in else " "
            yield Note(
                "audio devices",
                f"{mark} [{d.index}] {d.name}: {d.channels} in,"
                f" default {d.default_samplerate:.0f} Hz",
            )
    if not sound_sources:
        yield Finding("audio capture", True, "no sound-card source configured: nothing to capture")
        return
    for source in sound_sources:
        yield _check_source(sd, source.id, source.device, capture_s)


_SND_FIX = (
    "plug in the sound card, check `arecord -l`, give the service user the audio group"
    " (Docker: --device /dev/snd and --group-add audio)"
)


def _default_input(sd: Any) -> int | None:
    try:
        return int(sd.default.device[0])
    except (TypeError, ValueError, IndexError):
        return None


def _check_source(
    sd: Any, source_id: str, device: str | int | None, capture_s: float | None
) -> Finding:
    name = f"audio capture ({source_id})"
    try:
        info = sd.query_devices(device, "input")
    except (ValueError, sd.PortAudioError) as err:
        return Finding(
            name,
            False,
            f"device {device!r} not found: {err}",
            "set sources[].device to a name fragment or index from the list above",
        )
    channels = min(C.N_CHANNELS, int(info["max_input_channels"]))
    if channels < 1:
        return Finding(
            name, False, f"{info['name']} has no input channels", "choose an input device"
        )
    rate = C.SAMPLE_RATE
    try:
        sd.check_input_settings(
            device=info["index"], channels=channels, samplerate=rate, dtype="float32"
        )
    except (ValueError, sd.PortAudioError):
        # The service then captures at the device's own rate and resamples (DeviceSource).
        rate = int(info["default_samplerate"])
        try:
            sd.check_input_settings(
                device=info["index"], channels=channels, samplerate=rate, dtype="float32"
            )
        except (ValueError, sd.PortAudioError) as err:
            return Finding(
                name,
                False,
                f"{info['name']} refuses {channels} channel(s) float32 at {C.SAMPLE_RATE} Hz"
                f" and at its default {rate} Hz: {err}",
                "choose the device's 'plughw'/'pulse' variant, which converts, or another"
                " device; make sure no other program holds it exclusively",
            )
    resampled = "" if rate == C.SAMPLE_RATE else f", resampled to {C.SAMPLE_RATE} Hz"
    label = f"{info['name']} (index {info['index']}, {channels} ch, {rate} Hz{resampled})"
    if capture_s is None:
        return Finding(name, True, f"{label}: opens (capture skipped)")
    try:
        audio = capture(sd, info["index"], channels, capture_s, rate)
    except (sd.PortAudioError, OSError) as err:
        return Finding(
            name,
            False,
            f"{label}: cannot capture: {err}",
            "stop whatever holds the device (a running service holds it: check with"
            " `fuser -v /dev/snd/*`), then run doctor again",
        )
    expected = int(capture_s * rate)
    if audio.shape[0] < expected:
        return Finding(
            name,
            False,
            f"{label}: stalled, {audio.shape[0]} of {expected} frames in"
            f" {capture_s + CAPTURE_GRACE_S:g} s",
            "the device opens but delivers no audio: check the cable and clock source, or pick"
            " another device",
        )
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    peak_db = 20 * math.log10(peak) if peak > 0 else -math.inf
    if peak_db < SILENCE_DBFS:
        return Finding(
            name,
            False,
            f"{label}: captured {capture_s:g} s of digital silence",
            "the input is muted or unplugged: unmute the capture channel (alsamixer, F4) and"
            " check the microphone's phantom power",
        )
    if peak >= 1.0:
        detail = f"{label}: {capture_s:g} s captured, clipping (peak 0 dBFS)"
    else:
        detail = f"{label}: {capture_s:g} s captured, peak {peak_db:.1f} dBFS"
    return Finding(name, True, detail)


def capture(sd: Any, device: int, channels: int, seconds: float, rate: int) -> np.ndarray:
    """Record ``seconds`` from ``device`` at ``rate`` Hz: (frames, channels) float32, fewer
    frames if it stalls.

    A callback stream with a deadline, so a device that opens but never delivers cannot hang
    the doctor (``sd.rec`` would wait forever).
    """
    want = int(seconds * rate)
    blocks: list[np.ndarray] = []
    got = 0
    done = threading.Event()

    def callback(indata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        nonlocal got
        if got < want:
            blocks.append(indata[: want - got].copy())
            got += min(frames, want - got)
        if got >= want:
            done.set()

    with sd.InputStream(
        device=device,
        channels=channels,
        samplerate=rate,
        dtype="float32",
        callback=callback,
    ):
        done.wait(seconds + CAPTURE_GRACE_S)
    if not blocks:
        return np.zeros((0, channels), np.float32)
    return np.concatenate(blocks)[:want]


# --- GPU -------------------------------------------------------------------------------------


def check_cuda(requested: str | None) -> Report:
    import torch

    wants_cuda = requested is not None and requested.startswith("cuda")
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = (
            "this torch is a CPU-only build"
            if built is None
            else f"torch (CUDA {built}) sees no GPU"
        )
        fix = (
            "install the CUDA build of torch (the default Docker image has it)"
            if built is None
            else "check `nvidia-smi` on the host; in Docker run with --gpus all (compose: the"
            " nvidia device reservation) and install nvidia-container-toolkit"
        )
        if wants_cuda:
            yield Finding("gpu", False, f"inference.device is {requested!r} but {why}", fix)
        else:
            yield Finding("gpu", True, f"{why}: inference runs on the CPU")
        return
    index = int(requested.split(":")[1]) if requested and ":" in requested else 0
    count = torch.cuda.device_count()
    if index >= count:
        yield Finding(
            "gpu",
            False,
            f"inference.device is {requested!r} but only {count} GPU(s) are visible",
            f"use cuda or cuda:0..cuda:{count - 1}",
        )
        return
    try:
        device = torch.device("cuda", index)
        x = torch.randn(256, 256, device=device)
        value = float((x @ x).sum().item())
        torch.cuda.synchronize(device)
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError as err:
        yield Finding(
            "gpu",
            False,
            f"cuda:{index} is visible but a computation on it failed: {err}",
            "a driver/toolkit mismatch is the usual cause: compare `nvidia-smi` with"
            f" torch's CUDA {torch.version.cuda}",
        )
        return
    if not math.isfinite(value):
        yield Finding(
            "gpu",
            False,
            f"cuda:{index} returned a non-finite result",
            "check the GPU (`nvidia-smi -q`)",
        )
        return
    yield Finding(
        "gpu",
        True,
        f"cuda:{index} {torch.cuda.get_device_name(index)}, {free / 2**30:.1f} of"
        f" {total / 2**30:.1f} GiB free, CUDA {torch.version.cuda}",
    )


# --- model -----------------------------------------------------------------------------------


def check_model(
    path: Path,
    requested_device: str | None,
    alarm_class: str | None = None,
    precision: str = "auto",
) -> Report:
    from model import checkpoint
    from model.classifier import Classifier
    from service.alerts import alarm_column

    fix_missing = (
        "copy a trained checkpoint there (deploy/README.md, 'Installing a trained model') or"
        " point inference.model at one"
    )
    try:
        meta = checkpoint.read_metadata(path)
        checkpoint.check_feature_config(meta, path)
    except CheckpointError as err:
        yield Finding("model", False, str(err), fix_missing)
        return
    try:
        classifier = Classifier.from_checkpoint(path, device="cpu", precision=precision)
        silence = np.zeros((1, C.N_CHANNELS, C.SEGMENT_SAMPLES), np.float32)
        pred = classifier.predict(silence)
    except (CheckpointError, RuntimeError, ValueError) as err:
        yield Finding("model", False, f"{path}: {err}", fix_missing)
        return
    total = float(pred.p_success[0] + pred.p_failure[0])
    if not math.isfinite(total) or abs(total - 1.0) > 1e-3:
        yield Finding(
            "model",
            False,
            f"{path}: a test segment gave P(success) + P(failure) = {total}",
            "the weights are corrupt: reinstall the checkpoint from its source",
        )
        return
    feat = meta["feature_config"]
    yield Finding(
        "model",
        True,
        f"{path.name}: version {meta.get('model_version')}, classes {meta.get('class_names')},"
        f" {feat['kind']} features ({feat['n_features']}) at {feat['sample_rate']} Hz match this"
        f" code; a test segment scores (on cpu{'' if requested_device in (None, 'cpu') else ', the service uses ' + requested_device})",
    )
    if requested_device in (None, "cpu"):
        yield Finding(
            "precision",
            True,
            f"inference.precision {precision}: the convolutions run in {classifier.precision}"
            + (
                " (this CPU has native bfloat16; BENCHMARKS.md, 'Reduced precision')"
                if classifier.precision == "bf16"
                else ""
            ),
        )
    calibration = (meta.get("metrics") or {}).get("calibration") or {}
    if "temperature" in calibration:
        yield Finding(
            "calibration",
            True,
            "probabilities Platt-scaled on "
            + (
                "the validation recordings as the detector cuts them"
                if calibration.get("cut") == "detector"
                else "validation"
            )
            + f" (T = {calibration['temperature']:.2f},"
            f" b = {calibration.get('bias', 0.0):+.2f},"
            f" validation ECE {calibration.get('val_ece_before', float('nan')):.3f} ->"
            f" {calibration.get('val_ece_after', float('nan')):.3f})",
        )
    else:
        yield Finding(
            "calibration",
            False,
            f"{path.name} was trained without calibration: its probabilities may be over- or"
            " under-confident",
            "retrain it with this version's `pandapulse train` (calibration is on by default)",
        )
    names = list(classifier.class_names)
    try:
        column = alarm_column(names, alarm_class)
    except ConfigError as err:
        yield Finding("alarm", False, str(err), f"set alerts.alarm_class to one of {names}")
        return
    if column is None:
        yield Finding(
            "alarm",
            False,
            f"the model's classes {names} are not panda outcomes: no failure alarm will be raised",
            f"set alerts.alarm_class to the class that should raise the alarm (one of {names})",
        )
    else:
        yield Finding("alarm", True, f"the alarm watches the running P({names[column]})")


# --- data directory --------------------------------------------------------------------------


def check_data_dir(data_dir: Path, min_free_mb: float) -> Report:
    path = data_dir.resolve()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        yield Finding(
            "data directory",
            False,
            f"{path}: {existing} is not a directory",
            "set storage.data_dir to a directory",
        )
        return
    target = path if path.exists() else existing
    try:
        _write_probe(target)
    except OSError as err:
        owner = _owner(target)
        yield Finding(
            "data directory",
            False,
            f"{target} is not writable by uid {os.getuid()}: {err.strerror or err}",
            f"chown it to the service user (now owned by {owner}), e.g."
            f" `chown -R pandapulse:pandapulse {target}`; Docker: the /data volume must be"
            " writable by uid 10001",
        )
        return
    free_mb = shutil.disk_usage(target).free / 2**20
    where = str(path) if path.exists() else f"{path} (will be created)"
    if free_mb < min_free_mb:
        yield Finding(
            "data directory",
            False,
            f"{where}: only {free_mb:.0f} MiB free, less than {min_free_mb:.0f} MiB",
            "free space on that disk, lower storage.keep_days / storage.max_disk_mb, or move"
            " storage.data_dir to a larger disk",
        )
    else:
        yield Finding("data directory", True, f"{where}: writable, {free_mb / 1024:.1f} GiB free")
    if (path / DB_NAME).is_file():
        yield _check_sqlite(path / DB_NAME)


def _write_probe(directory: Path) -> None:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".doctor-", suffix=".tmp")
    try:
        os.write(fd, b"pandapulse doctor write test\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def _owner(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "unknown"
    return f"uid {st.st_uid}, gid {st.st_gid}"


ENCOUNTER_AUDIO_MIB_PER_HOUR = 661.0
"""Whole-encounter audio from a 24-bit sound card with busy ambience, the dearer case measured
(BENCHMARKS.md, "Whole-encounter audio on disk"; a 16-bit card: 361). Used until this box has
``MEASURED_MIN_S`` of its own stored audio to measure."""
MEASURED_MIN_S = 600.0
"""Stored encounter audio (s) from which this box's own cost per hour is used instead."""
MIN_AUDIO_HOURS = 12.0
"""Fewer hours of encounter audio than this fitting on the box is a problem: a few long
encounters would push the oldest out before anyone exported them."""


def check_encounter_audio(storage: StorageSettings) -> Report:
    """How many hours of whole-encounter audio the disk and ``storage.max_disk_mb`` hold."""
    name = "encounter audio"
    if not storage.keep_encounter_audio:
        yield Finding(
            name,
            True,
            "not kept (storage.keep_encounter_audio is off): `pandapulse export-dataset` will"
            " list every encounter as lacking its audio",
        )
        return
    path = storage.data_dir.resolve()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    rate, source = ENCOUNTER_AUDIO_MIB_PER_HOUR, "24-bit figure of BENCHMARKS.md"
    measured = _stored_audio_rate(path / DB_NAME)
    if measured is not None:
        rate, source = measured, "measured on this box's stored encounters"
    used = sum(_bytes_under(path / sub) for sub in (ENCOUNTER_AUDIO_DIR, "clips") if path.exists())
    free = shutil.disk_usage(existing).free
    budget = storage.max_disk_mb * 2**20
    room = min(budget, used + free)
    hours = room / 2**20 / rate
    detail = (
        f"about {rate:.0f} MiB per hour ({source}); storage.max_disk_mb {storage.max_disk_mb:.0f}"
        f" MiB holds {budget / 2**20 / rate:.0f} h, the disk {free / 2**30:.1f} GiB free:"
        f" {hours:.0f} h of encounter audio fit"
    )
    if budget > used + free:
        yield Finding(
            name,
            False,
            detail + " (the disk fills before retention's budget is reached)",
            f"set storage.max_disk_mb to at most {(used + free) / 2**20 * 0.9:.0f} (what the disk"
            " holds, with room to spare), free space, or move storage.data_dir to a larger disk",
        )
    elif hours < MIN_AUDIO_HOURS:
        yield Finding(
            name,
            False,
            detail + f", fewer than {MIN_AUDIO_HOURS:.0f} h",
            "raise storage.max_disk_mb on a larger disk, export encounters often"
            " (`pandapulse export-dataset`), or turn storage.keep_encounter_audio off on this box",
        )
    else:
        yield Finding(name, True, detail)


def _stored_audio_rate(db: Path) -> float | None:
    """MiB per hour of the encounter audio stored so far, or None below ``MEASURED_MIN_S``."""
    if not db.is_file():
        return None
    try:
        (row,) = read_only(
            db,
            "SELECT SUM(frames), SUM(size_bytes) FROM encounter_audio WHERE finished_at IS"
            " NOT NULL AND removed_at IS NULL AND frames > 0",
        )
    except sqlite3.Error:  # an older schema, or unreadable (the database check says so)
        return None
    if not row[0] or row[0] / C.SAMPLE_RATE < MEASURED_MIN_S:
        return None
    return float(row[1]) / 2**20 / (row[0] / C.SAMPLE_RATE / 3600)


def _bytes_under(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*.flac"):
        try:
            total += p.stat().st_size
        except OSError:
            continue
    return total


def _check_sqlite(db: Path) -> Finding:
    name = f"database {db.name}"
    try:
        rows = read_only(db, "PRAGMA quick_check")
    except sqlite3.Error as err:
        return Finding(
            name,
            False,
            f"cannot be read: {err}",
            "check its owner and permissions; if it is damaged, restore the last backup"
            " (deploy/README.md, 'Backing up the data')",
        )
    result = "; ".join(str(r[0]) for r in rows)
    if result != "ok":
        return Finding(
            name,
            False,
            f"quick_check: {result[:300]}",
            "stop the service and restore the last backup (deploy/README.md, 'Backing up the data')",
        )
    return Finding(name, True, f"quick_check ok, {db.stat().st_size / 2**20:.1f} MiB")


# --- MQTT broker -------------------------------------------------------------------------------


def check_mqtt(settings: Any, timeout_s: float = 5.0) -> Report:
    """Connect to ``mqtt.host`` once with the configured credentials (nothing when it is off)."""
    cfg = settings.mqtt
    if not cfg.enabled:
        return
    from service.mqtt import check_broker

    ok, detail = check_broker(cfg, timeout_s=timeout_s)
    if ok:
        yield Finding("mqtt broker", True, detail)
        return
    if "refused the connection" in detail:
        fix = (
            "set mqtt.username and PANDAPULSE__MQTT__PASSWORD to an account of the broker"
            " (mosquitto_passwd), or allow this client on the broker"
        )
    else:
        fix = (
            "start the broker (deploy/compose.yaml has one) or correct mqtt.host / mqtt.port"
            " (mqtt.tls and mqtt.ca_file for a TLS listener); the service runs without it"
            " and keeps trying"
        )
    yield Finding("mqtt broker", False, detail, fix)


# --- notifications -----------------------------------------------------------------------------


def check_notify(settings: Any, *, send: bool = False) -> Report:
    """Parse every ``alerts.notify`` URL with Apprise (count and kinds); with ``send``, send a
    test message through each one (directly, not through the service's outbox)."""
    from service.notify import AppriseDeliverer, describe

    alerts = settings.alerts
    urls = [u.get_secret_value() for u in alerts.notify]
    hooks = len(alerts.webhook_urls)
    extra = f"; {hooks} webhook URL{'s' if hooks != 1 else ''}" if hooks else ""
    yield Finding("notifications", True, describe(urls) + extra)
    sender = AppriseDeliverer(urls, timeout_s=alerts.notify_timeout_s)
    for channel in sender.channels:
        if not send:
            yield Note("notifications", channel.label)
            continue
        try:
            sender.send(
                channel,
                "PandaPulse · Test notification",
                "pandapulse doctor sent this to check the channel; no action needed.",
            )
        except DeliveryError as err:
            yield Finding(
                "notification",
                False,
                f"{channel.label}: not sent: {err.reason}",
                "check the URL's account, token and recipient, and that this box reaches the"
                " service (proxy, firewall); the service retries alerts but cannot fix the URL",
            )
        else:
            yield Finding("notification", True, f"{channel.label}: test message sent")


# --- stored models ---------------------------------------------------------------------------


def check_stored_models(data_dir: Path, configured: Path) -> Report:
    """The models stored through ``POST /api/models`` (and ``inference.model``, recorded at
    start-up), which of them the service will run, and whether each file is still intact."""
    from model import checkpoint
    from service.models_store import choose_startup, model_file, read_models

    rows = read_models(data_dir)
    if not rows:
        yield Finding("stored models", True, f"none yet: the service runs {configured.name}")
        return
    startup = choose_startup(data_dir, configured)
    api_active = startup.active != configured
    roles = {
        "active": startup.active.stem if api_active else None,
        "shadow": None if startup.shadow is None else startup.shadow.stem,
        "previous": startup.previous,
    }
    broken, notes = [], []
    for row in rows:
        try:
            meta = checkpoint.read_metadata(model_file(data_dir, row))
            intact = meta.get("model_version") == row.version
        except CheckpointError:
            intact = False
        if not intact:
            broken.append(row.version)
        role = next((r for r, v in roles.items() if v == row.version), "-")
        auc = (json.loads(row.card or "{}").get("metrics") or {}).get("val_auc")
        notes.append(
            Note(
                "stored models",
                f"{row.version} {role:8} {row.origin:6} {row.filename}, {row.uploaded_at[:10]}"
                + (f", val AUC {auc:.3f}" if isinstance(auc, int | float) else "")
                + ("" if intact else ", FILE MISSING OR DAMAGED"),
            )
        )
    runs = (
        f"{roles['active']} (activated through the API)"
        if api_active
        else f"{configured.name} (inference.model)"
    )
    detail = f"{len(rows)} stored; the service runs {runs}"
    if roles["shadow"] is not None:
        detail += f", shadow {roles['shadow']}"
    if broken:
        yield Finding(
            "stored models",
            False,
            f"{detail}; {', '.join(broken)} missing or damaged under {data_dir / 'models'}",
            "upload those checkpoints again (POST /api/models), or activate another model",
        )
    else:
        yield Finding("stored models", True, detail)
    yield from notes


# --- exposure --------------------------------------------------------------------------------


def check_exposure(host: str, has_token: bool) -> Report:
    if is_loopback(host) or has_token:
        where = "loopback only" if is_loopback(host) else f"{host}, token required"
        yield Finding("api access", True, where)
        return
    yield Finding(
        "api access",
        False,
        f"the API listens on {host} without a token: anyone on the network can use it",
        "set PANDAPULSE__SERVER__TOKEN (or server.token) to a long random string, e.g."
        " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
    )
