"""The audio source contract: one verb, blocks come out of a bounded queue.

A source is started, read from one thread (its pipeline thread), and stopped. Whatever produces
the audio (a sound card callback, a file reader, the synthetic generator) puts it into a bounded
queue. A live source never waits for its reader: when the queue is full it drops the newest
block and counts it. A lossless source (file replay or synthetic audio as fast as consumed)
blocks its producer instead, so nothing is lost.

Thread ownership: the producer (callback or producer thread) owns ``_blocks``, ``_dropped`` and
``_overflows`` (it is the only writer; readers on other threads only read these ints); the
reading thread owns the sample clock ``_next_sample``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from model import constants as C
from service.types import AudioBlock, SourceCounters

if TYPE_CHECKING:
    from service.config import SourceSettings

log = logging.getLogger(__name__)

BLOCK_SAMPLES = 1024
"""Samples per block a source delivers by default (23.2 ms at 44.1 kHz)."""
QUEUE_BLOCKS = 256
"""Blocks a source's queue holds before a live source drops (about 6 s of 1024-sample blocks)."""
SMALL_BLOCK_SAMPLES = 512
"""Samples per block on a box with few sources (11.6 ms): see ``block_samples_for``."""
SMALL_SITE_SOURCES = 16
"""Up to this many sources, the service reads them in small blocks."""


def block_samples_for(n_sources: int) -> int:
    """The block size the service reads its sources in.

    A call's end is seen only at the end of the block that holds it, so a block is part of the
    live latency's wait: with 512-sample blocks one source's p95 from a call's last sample to
    the dashboard was 89 ms, with 1024 101 ms. But every block costs each source its per-block
    work: 64 sources stayed real time with 1024-sample blocks (1.28 cores) and did not with 512
    (1.59 cores, overruns). So few sources get small blocks, many get the larger ones
    (BENCHMARKS.md, "Live latency").
    """
    return SMALL_BLOCK_SAMPLES if n_sources <= SMALL_SITE_SOURCES else BLOCK_SAMPLES


MAX_LATE_S = 0.5
"""A real-time producer running later than this (s) re-anchors its pace instead of catching up."""
_END = object()
"""Queue item that says the producer has finished (end of file): no more blocks."""


class AudioSource(ABC):
    """Base class of every source. Subclasses produce audio; the base queues and counts it."""

    kind = "abstract"

    @classmethod
    def from_config(cls, cfg: SourceSettings, **kwargs: Any) -> Self:
        """The source a ``SourceSettings`` of this ``kind`` describes; ``kwargs`` go to the
        constructor (block sizes, a test generator, ...)."""
        raise NotImplementedError(f"{cls.__name__} cannot be configured")

    def __init__(
        self, source_id: str, *, lossless: bool = False, queue_blocks: int = QUEUE_BLOCKS
    ) -> None:
        if queue_blocks < 1:
            raise ValueError(f"queue_blocks must be at least 1, got {queue_blocks}")
        self.source_id = source_id
        self.lossless = lossless
        """True: the producer waits for the reader (nothing dropped); False: drops, counted."""
        self.mono = False
        """True when the audio comes from one channel, duplicated to two."""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_blocks)
        self._stopping = threading.Event()
        self._finished = False
        self._blocks = 0
        self._dropped = 0
        self._overflows = 0
        self._next_sample = 0
        self.last_error: str | None = None
        """The most recent problem, in words (shown on /stats and in a stalled status)."""

    # -- the contract -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin producing audio; the sample clock starts at 0."""
        self._stopping.clear()
        self._finished = False
        self._next_sample = 0
        self._open()

    def stop(self) -> None:
        """Stop producing; blocks already queued can still be read. Idempotent."""
        self._stopping.set()
        self._close()

    def read(self, timeout: float | None = None) -> AudioBlock | None:
        """The next block, or None when none came within ``timeout`` seconds or the source has
        finished (see ``finished``)."""
        if self._finished:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._finished = True
            return None
        return self._to_block(item)

    @property
    def finished(self) -> bool:
        """True once the source has delivered its last block (a file without ``loop``)."""
        return self._finished

    def stats(self) -> SourceCounters:
        """Counters for /stats and /metrics (safe to call from any thread)."""
        return SourceCounters(
            kind=self.kind,
            blocks=self._blocks,
            dropped_blocks=self._dropped,
            overflows=self._overflows,
            queued=self._queue.qsize(),
            mono=self.mono,
            lossless=self.lossless,
            last_error=self.last_error,
        )

    @abstractmethod
    def check(self) -> None:
        """Raise ``model.errors.AudioError`` explaining the likely causes if this source cannot
        deliver audio (missing file, absent device, ...); return quietly otherwise."""

    # -- for subclasses -------------------------------------------------------------------------

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    def _to_block(self, item: Any) -> AudioBlock | None:
        """Turn a queue item into a block on the reading thread (default: it already is one)."""
        return item

    def _offer(self, item: Any) -> bool:
        """Queue ``item`` from the producer. Live: never waits, a full queue drops it (counted);
        lossless: waits for room until stopped. Returns False when the item was not queued."""
        if not self.lossless:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._dropped += 1
                return False
            self._blocks += 1
            return True
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            self._blocks += 1
            return True
        return False

    def _finish(self) -> None:
        """The producer has no more audio (end of file)."""
        while not self._stopping.is_set():
            try:
                self._queue.put(_END, timeout=0.1)
                return
            except queue.Full:
                continue

    def _make_block(self, audio: np.ndarray, captured_at: float) -> AudioBlock:
        """Stamp (2, n) float32 audio with the next sample index (reading thread only)."""
        block = AudioBlock(self.source_id, self._next_sample, audio, captured_at)
        self._next_sample += audio.shape[1]
        return block

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source_id!r})"


class ProducerSource(AudioSource):
    """A source whose audio comes from a generator of (2, n) float32 chunks at SAMPLE_RATE,
    played by a producer thread at real-time pace (``realtime=True``) or as fast as the reader
    takes it (lossless).

    At real-time pace each block is queued when its last sample is due (start time + its end
    sample / SAMPLE_RATE), as a sound card would deliver it; a reader that falls behind makes
    the queue overflow and blocks are dropped, counted.
    """

    def __init__(
        self,
        source_id: str,
        *,
        realtime: bool = True,
        block_samples: int | Sequence[int] = BLOCK_SAMPLES,
        queue_blocks: int = QUEUE_BLOCKS,
    ) -> None:
        super().__init__(source_id, lossless=not realtime, queue_blocks=queue_blocks)
        sizes = [block_samples] if isinstance(block_samples, int) else list(block_samples)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"block sizes must be positive, got {block_samples}")
        self.realtime = realtime
        self._sizes = sizes
        self._thread: threading.Thread | None = None

    @property
    def block_sizes(self) -> tuple[int, ...]:
        """The sizes of the blocks it delivers, in turn (samples)."""
        return tuple(self._sizes)

    @abstractmethod
    def _chunks(self) -> Iterator[np.ndarray]:
        """(2, n) float32 audio at SAMPLE_RATE, in order, of any lengths (producer thread)."""

    def _open(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"source-{self.source_id}", daemon=True
        )
        self._thread.start()

    def _close(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("source %s: producer thread did not stop within 5 s", self.source_id)
        self._thread = None

    def _run(self) -> None:
        t0 = time.monotonic()
        produced = 0
        start = 0
        try:
            for block in self._blocks_of(self._chunks()):
                if self._stopping.is_set():
                    return
                produced += block.shape[1]
                if self.realtime:
                    delay = t0 + produced / C.SAMPLE_RATE - time.monotonic()
                    if delay > 0 and self._stopping.wait(delay):
                        return
                    if delay < -MAX_LATE_S:
                        # Held up (a slow generator, a paused process): go on at real-time
                        # pace from now, as a sound card would, instead of in a burst.
                        t0 -= delay
                self._offer(AudioBlock(self.source_id, start, block, time.monotonic()))
                start += block.shape[1]
        except Exception as err:  # the producer must report, not die silently
            self.last_error = f"{type(err).__name__}: {err}"
            log.exception("source %s: producing audio failed", self.source_id)
        self._finish()

    def _blocks_of(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Re-cut arbitrary chunks into blocks of the configured sizes (cycled)."""
        pending: list[np.ndarray] = []
        have = 0
        i = 0
        for chunk in chunks:
            pending.append(chunk)
            have += chunk.shape[1]
            while have >= self._sizes[i % len(self._sizes)]:
                size = self._sizes[i % len(self._sizes)]
                joined = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
                yield np.ascontiguousarray(joined[:, :size])
                rest = joined[:, size:]
                pending = [rest] if rest.shape[1] else []
                have -= size
                i += 1
        if have:
            yield np.ascontiguousarray(np.concatenate(pending, axis=1))

    def _to_block(self, item: Any) -> AudioBlock | None:
        self._next_sample = item.end
        return item
