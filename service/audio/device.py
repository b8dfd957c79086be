"""A sound card (any PortAudio input through ``sounddevice``): the live enclosure microphone.

The PortAudio callback runs on the audio thread and only copies the block and enqueues it
(``put_nowait``; a full queue drops the newest block, counted); input overflows reported by
PortAudio are counted. Everything else happens on the reading thread in ``read``: channel
layout (a mono device is duplicated to two channels and flagged), resampling of other device
rates to 44.1 kHz (``soxr.ResampleStream``, stateful, so block boundaries leave no trace), the
sample clock, and recovery.

Recovery: when the stream stops by itself (device unplugged, sound server gone) or delivers
nothing for ``reopen_after_s``, the stream is closed and reopened with back-off; ``last_error``
says what happened. After an outage the sample clock is advanced by the outage's length, so
sample time keeps tracking wall time; the block after a gap starts later than the previous one
ended, which tells the pipeline to close any call in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model import constants as C
from model.errors import AudioError
from service.audio.base import BLOCK_SAMPLES, QUEUE_BLOCKS, AudioSource
from service.types import AudioBlock, DeviceCounters

if TYPE_CHECKING:
    from service.config import SourceSettings

log = logging.getLogger(__name__)

REOPEN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits between attempts to reopen a lost device (s); the last one repeats."""
REOPEN_AFTER_S = 2.0
"""A running stream that delivered nothing for this long is taken as lost (s)."""


def _sd() -> Any:
    """The sounddevice module, imported on first use (it loads PortAudio)."""
    try:
        import sounddevice
    except OSError as err:  # raised when the PortAudio library itself is missing
        raise AudioError(
            f"PortAudio is not available ({err}): install libportaudio2 (scripts/setup.sh does)"
        ) from err
    return sounddevice


PortAudioDevice = dict[str, Any]
"""A device as sounddevice's ``query_devices`` describes it (its keys are PortAudio's)."""


@dataclass(frozen=True)
class InputDevice:
    """An input PortAudio offers: what a keeper needs to name it in ``sources[].device``."""

    index: int
    name: str
    channels: int
    default_samplerate: float


def input_devices() -> list[InputDevice]:
    """PortAudio's input devices."""
    sd = _sd()
    return [
        InputDevice(
            index=i,
            name=d["name"],
            channels=d["max_input_channels"],
            default_samplerate=d["default_samplerate"],
        )
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


class DeviceSource(AudioSource):
    """Live capture from a PortAudio input device, two channels at 44.1 kHz."""

    kind = "sounddevice"

    def __init__(
        self,
        source_id: str,
        device: str | int | None = None,
        *,
        block_samples: int = BLOCK_SAMPLES,
        queue_blocks: int = QUEUE_BLOCKS,
        reopen_after_s: float = REOPEN_AFTER_S,
        backoff_s: Sequence[float] = REOPEN_BACKOFF_S,
    ) -> None:
        super().__init__(source_id, lossless=False, queue_blocks=queue_blocks)
        if block_samples < 1:
            raise ValueError(f"block_samples must be positive, got {block_samples}")
        if not backoff_s or min(backoff_s) <= 0:
            raise ValueError("backoff_s must be a non-empty list of positive seconds")
        self.device = device
        self.block_samples = block_samples
        self.reopen_after_s = reopen_after_s
        self.backoff_s = tuple(backoff_s)
        self.device_name = ""
        self.device_rate = C.SAMPLE_RATE
        self.reopens = 0
        self.state = "closed"
        """'open', 'lost' (waiting to reopen) or 'closed'; written by the reading thread."""
        # Owned by the reading thread:
        self._stream: Any = None
        self._resampler: Any = None
        self._channels = C.N_CHANNELS
        self._last_data = 0.0  # time.monotonic() of the last block read
        self._attempts = 0
        self._next_attempt = 0.0
        self._gap_from: float | None = None  # when audio stopped, to advance the clock
        # Opening and closing the stream happen on the reading thread, closing also in stop():
        # this lock keeps the two from crossing (no stream opened after stop()).
        self._stream_lock = threading.Lock()
        # Set by PortAudio's thread when the stream ends by itself.
        self._ended = threading.Event()

    @classmethod
    def from_config(cls, cfg: SourceSettings, **kwargs: Any) -> DeviceSource:
        """From a ``service.config.SourceSettings`` of kind ``sounddevice``."""
        return cls(cfg.id, cfg.device, **kwargs)

    # -- contract -------------------------------------------------------------------------------

    def check(self) -> None:
        info = self._query()
        if info["max_input_channels"] < 1:
            raise AudioError(
                f"source {self.source_id!r}: device {info['name']!r} has no input channels"
            )
        channels = min(info["max_input_channels"], C.N_CHANNELS)
        try:
            _sd().check_input_settings(
                device=self.device,
                channels=channels,
                samplerate=self._rate_for(info),
                dtype="float32",
            )
        except Exception as err:  # PortAudioError or ValueError, depending on the host API
            raise AudioError(
                f"source {self.source_id!r}: device {info['name']!r} refuses {channels} channel(s)"
                f" float32 input: {err}. Is another program holding it exclusively?"
            ) from err

    def stats(self) -> DeviceCounters:
        return DeviceCounters(
            **vars(super().stats()),
            device=self.device_name or str(self.device),
            device_rate=self.device_rate,
            reopens=self.reopens,
            state=self.state,
        )

    def read(self, timeout: float | None = None) -> AudioBlock | None:
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        while not self._stopping.is_set():
            self._supervise()
            block = super().read(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            if block is not None:
                return block
            if time.monotonic() >= deadline:
                return None
        return None

    # -- stream management (reading thread) --------------------------------------------------------

    def _open(self) -> None:
        # A device missing at start is retried like a lost one (the watchdog reports the
        # source stalled meanwhile); call ``check()`` first to refuse to start instead.
        self._attempts = 0
        self._gap_from = None
        self._try_open()

    def _close(self) -> None:
        self._close_stream()
        self.state = "closed"

    def _supervise(self) -> None:
        now = time.monotonic()
        if self._stream is not None:
            silent = now - self._last_data > self.reopen_after_s
            if not (self._ended.is_set() or silent):
                return
            why = (
                "the stream stopped"
                if self._ended.is_set()
                else f"no audio for {self.reopen_after_s:g} s"
            )
            self.last_error = f"device {self.device_name or self.device!r} lost ({why})"
            log.warning("source %s: %s; reopening", self.source_id, self.last_error)
            self._gap_from = self._last_data
            self._close_stream()
            self.state = "lost"
            self._next_attempt = now
        if now >= self._next_attempt:
            self._try_open()

    def _try_open(self) -> None:
        with self._stream_lock:
            if not self._stopping.is_set():
                self._open_stream()

    def _open_stream(self) -> None:
        sd = _sd()
        try:
            info = self._query()
            self._channels = min(info["max_input_channels"], C.N_CHANNELS)
            if self._channels < 1:
                raise AudioError(f"device {info['name']!r} has no input channels")
            rate = self._rate_for(info)
            self._ended.clear()
            stream = sd.InputStream(
                device=self.device,
                channels=self._channels,
                samplerate=rate,
                blocksize=max(1, round(self.block_samples * rate / C.SAMPLE_RATE)),
                dtype="float32",
                callback=self._callback,
                finished_callback=self._ended.set,
            )
            stream.start()
        except Exception as err:  # PortAudioError, AudioError, ValueError: all mean "not now"
            wait = self.backoff_s[min(self._attempts, len(self.backoff_s) - 1)]
            self._attempts += 1
            self._next_attempt = time.monotonic() + wait
            self.last_error = (
                f"cannot open input device {self.device!r}: {err}; retrying in {wait:g} s"
            )
            self.state = "lost"
            log.warning("source %s: %s", self.source_id, self.last_error)
            return
        self._stream = stream
        self.device_name = str(info["name"])
        self.device_rate = int(rate)
        self.mono = self._channels == 1
        self._resampler = None
        if rate != C.SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(
                rate, C.SAMPLE_RATE, C.N_CHANNELS, dtype="float32"
            )
        if self._attempts or self.state == "lost":
            self.reopens += 1
            log.info("source %s: device %r reopened", self.source_id, self.device_name)
        self._attempts = 0
        self._last_data = time.monotonic()
        self.state = "open"

    def _close_stream(self) -> None:
        with self._stream_lock:
            stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except Exception as err:  # a vanished device may refuse even to close
            log.debug("source %s: closing the stream: %s", self.source_id, err)

    def _query(self) -> PortAudioDevice:
        sd = _sd()
        try:
            return dict(sd.query_devices(self.device, "input"))
        except (ValueError, sd.PortAudioError) as err:
            names = ", ".join(f"{d.index}: {d.name!r}" for d in input_devices()) or "none"
            raise AudioError(
                f"source {self.source_id!r}: no input device {self.device!r} ({err}). Inputs"
                f" seen by PortAudio: {names}. Check the name or index, that the device is"
                " plugged in, and that this user may use it (the 'audio' group, PULSE_SERVER)."
            ) from err

    def _rate_for(self, info: PortAudioDevice) -> int:
        """44.1 kHz when the device takes it, else its default rate (resampled on read)."""
        try:
            _sd().check_input_settings(
                device=self.device, samplerate=C.SAMPLE_RATE, dtype="float32"
            )
        except Exception:  # the device refuses 44.1 kHz: capture at its own rate
            return int(info["default_samplerate"])
        return C.SAMPLE_RATE

    # -- PortAudio thread ---------------------------------------------------------------------------

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's real-time thread: copy, enqueue, count. Nothing else.
        if status.input_overflow:
            self._overflows += 1
        self._offer((indata.copy(), time.monotonic()))

    # -- reading thread ---------------------------------------------------------------------------------

    def _to_block(self, item: Any) -> AudioBlock | None:
        data, captured_at = item
        self._last_data = time.monotonic()
        if self._gap_from is not None:
            # Keep sample time on wall time across an outage.
            gap_s = captured_at - self._gap_from - data.shape[0] / self.device_rate
            self._next_sample += max(0, round(gap_s * C.SAMPLE_RATE))
            self._gap_from = None
        audio = data.T if data.shape[1] == C.N_CHANNELS else np.repeat(data.T, C.N_CHANNELS, axis=0)
        if self._resampler is not None:
            out = self._resampler.resample_chunk(np.ascontiguousarray(audio.T))
            if out.shape[0] == 0:
                return None
            audio = out.T
        return self._make_block(np.ascontiguousarray(audio, dtype=np.float32), captured_at)
