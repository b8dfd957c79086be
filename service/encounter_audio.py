"""Whole-encounter audio: while an encounter is open, its source's audio is kept as FLAC.

The 2-s clips keep only what was scored; a training set needs the whole encounter, calls and
the quiet between them, as captured (both channels, 44.1 kHz, 24-bit FLAC).

Threads and ownership
---------------------
- **source threads** (the pipeline's, one per source) call ``tap(block)`` for every block.
  Each owns its ``_Lane``'s pre-roll ring and ``active`` marker; ``tap`` never waits: it puts
  the block into the lane's bounded hand-off queue, and when that is full (the disk or the
  storage thread is too slow) drops the block and counts it (``dropped_blocks``). Now and
  then it asks the storage thread for a drain with ``StorageThread.offer``, which never waits
  either.
- **storage thread** (``service.storage_thread``) does everything else: ``begin``/``end``
  (from the monitor's encounter jobs), ``drain`` (writes the queued blocks with soundfile's
  streaming writer), ``close_all`` at shutdown and ``recover`` at start-up. It owns the open
  files (``_writers``) and writes ``_Lane.want``, a single reference the source thread reads.

An encounter's audio is one or more *parts* (``encounter_audio`` rows, ``AudioPartRow``): one
per run of the service and per long outage. Within a part the file is sample-exact against the
source's sample clock: a short gap (blocks dropped here, or a device outage) is written as
digital silence and counted (``gap_samples``), so a segment's ``start_sample`` minus the part's
``start_sample`` is its position in the file. A gap longer than ``MAX_GAP_S`` closes the part;
the next block starts a new one.

An automatic encounter opens when its first segment has been scored, seconds after the call
began; each lane keeps the last ``PREROLL_S`` of audio so the part starts at that segment.

Crashes: libsndfile writes each FLAC frame as it is encoded, so after a crash the file holds
everything but the last frame (< 0.1 s) and the blocks still queued; only its header (length,
checksum) is missing; each file is synced to the disk every ``SYNC_S`` of audio, so a power
cut loses at most that much. ``recover`` reads back what is readable and rewrites it as a
complete file (the part is marked ``repaired``).
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile as sf

from model import constants as C
from service.storage import CLIP_SUBTYPE, ENCOUNTER_AUDIO_DIR, Storage, iso
from service.types import AudioBlock

log = logging.getLogger(__name__)

PREROLL_S = 8.0
"""Audio each lane keeps before an encounter opens (s): an automatic encounter opens once its
first 2-s segment is scored, after the detector's hang-over, inference and the storage queue."""
HANDOFF_S = 30.0
"""Audio a lane may have waiting for the storage thread before blocks are dropped (s)."""
DRAIN_S = 0.5
"""A drain is requested once this much audio is waiting (s)."""
LOSSLESS_WAIT_S = 10.0
"""Longest a lossless source waits for room in its hand-off before dropping (s)."""
MAX_GAP_S = 60.0
"""A gap up to this long is written as silence inside the part; a longer one starts a new part."""
SYNC_S = 10.0
"""Audio written between two syncs to the disk (s): what a power cut may lose of a part (a
crash of the process loses only what was still queued)."""
REPAIR_STEPS = (65_536, 4096, 256)
"""Frames read at a time when repairing a file, ever smaller near its broken end."""
SUBTYPE = CLIP_SUBTYPE
"""24-bit FLAC, like the clips."""

Offer = Callable[[Callable[[Storage], object]], bool]
"""Queue a job on the storage thread without waiting; False when it was not queued."""
Clock = Callable[[str, int], datetime]
"""Wall time of a source's sample index (``Monitor.wall_time``)."""


@dataclass(frozen=True)
class _Want:
    """The storage thread's request to record ``encounter_id`` from ``from_sample`` on (None:
    from the next block)."""

    encounter_id: int
    from_sample: int | None


@dataclass
class _Lane:
    """One source's tap (see the module docstring for who owns what)."""

    source: str
    handoff: queue.Queue[tuple[_Want, AudioBlock]]
    ring: deque[AudioBlock] = field(default_factory=deque)
    ring_samples: int = 0
    want: _Want | None = None
    """Written by the storage thread, read by the source thread."""
    active: _Want | None = None
    """The request the source thread acts on (source thread only)."""
    lossless: bool = False
    queued_samples: int = 0
    drain_requested: bool = False
    dropped_blocks: int = 0
    """Blocks the hand-off refused (source thread only)."""


@dataclass
class _Writer:
    """An open part (storage thread only)."""

    part_id: int
    path: Path
    rel: str
    file: sf.SoundFile
    next_sample: int
    frames: int = 0
    gap_samples: int = 0
    synced_frames: int = 0
    pending: list[np.ndarray] = field(default_factory=list)
    """(2, n) audio accepted up to ``next_sample`` but not yet encoded: a drain encodes all it
    took in one write, which cost about a fifth less CPU than a write per block (BENCHMARKS.md)."""


class EncounterAudio:
    """Keeps each open encounter's audio as FLAC (see the module docstring).

    Parameters
    ----------
    offer : queues a job on the storage thread without waiting (``StorageThread.offer``)
    clock : wall time of a source's sample (``Monitor.wall_time``)
    enabled : ``storage.keep_encounter_audio``; when False every method does nothing
    preroll_s : audio each lane keeps before an encounter opens (s)
    handoff_s : audio a lane may have waiting for the storage thread (s)
    """

    def __init__(
        self,
        offer: Offer,
        clock: Clock,
        *,
        enabled: bool = True,
        preroll_s: float = PREROLL_S,
        handoff_s: float = HANDOFF_S,
    ) -> None:
        self.enabled = enabled
        self._offer = offer
        self._clock = clock
        self._preroll = int(preroll_s * C.SAMPLE_RATE)
        self._handoff_samples = int(handoff_s * C.SAMPLE_RATE)
        self._drain_samples = int(DRAIN_S * C.SAMPLE_RATE)
        self._lanes: dict[str, _Lane] = {}
        self._writers: dict[int, _Writer] = {}
        """Open parts by encounter id (storage thread only)."""
        self._failed: set[int] = set()
        """Encounters whose file could not be written: no further attempts (storage thread)."""
        self.write_errors = 0
        self.samples_written = 0
        self.parts_repaired = 0

    def add_source(self, source: str, *, lossless: bool = False) -> None:
        """Make ``source``'s lane (before its audio flows: lanes are never added concurrently).
        A ``lossless`` source (a file or synthetic audio played as fast as consumed) waits for
        room in the hand-off, as it waits for the rest of the pipeline, instead of dropping."""
        if source not in self._lanes:
            # Bounded in blocks; sized for the smallest block the service reads (512 samples).
            slots = max(1, self._handoff_samples // 512)
            self._lanes[source] = _Lane(source, queue.Queue(maxsize=slots), lossless=lossless)

    @property
    def dropped_blocks(self) -> int:
        """Blocks refused by a full hand-off so far (all sources)."""
        return sum(lane.dropped_blocks for lane in self._lanes.values())

    @property
    def seconds_written(self) -> float:
        return round(self.samples_written / C.SAMPLE_RATE, 1)

    # --- source threads -------------------------------------------------------------------------
    def tap(self, block: AudioBlock) -> None:
        """Every block of every source, from its pipeline thread; never waits."""
        if not self.enabled:
            return
        lane = self._lanes.get(block.source_id)
        if lane is None:
            return
        if self._preroll:
            lane.ring.append(block)
            lane.ring_samples += block.audio.shape[1]
            while lane.ring and lane.ring_samples - lane.ring[0].audio.shape[1] >= self._preroll:
                lane.ring_samples -= lane.ring.popleft().audio.shape[1]
        want = lane.want
        if want is not lane.active:
            lane.active = want
            if want is not None and want.from_sample is not None and self._preroll:
                for earlier in list(lane.ring):
                    if earlier.end > want.from_sample:
                        self._hand_over(lane, want, earlier)
                self._maybe_drain(lane)
                return
        if want is not None:
            self._hand_over(lane, want, block)
            self._maybe_drain(lane)

    def _hand_over(self, lane: _Lane, want: _Want, block: AudioBlock) -> None:
        try:
            lane.handoff.put_nowait((want, block))
        except queue.Full:
            if lane.lossless and self._wait_for_room(lane, (want, block)):
                lane.queued_samples += block.audio.shape[1]
                return
            lane.dropped_blocks += 1
            if lane.dropped_blocks <= 10 or lane.dropped_blocks % 1000 == 0:  # rate-limited
                log.warning(
                    "encounter audio: %s's hand-off is full (the disk is too slow?): %d blocks"
                    " dropped so far, written as silence",
                    lane.source,
                    lane.dropped_blocks,
                )
            return
        lane.queued_samples += block.audio.shape[1]

    def _wait_for_room(self, lane: _Lane, item: tuple[_Want, AudioBlock]) -> bool:
        """A lossless source waits (at most ``LOSSLESS_WAIT_S``) for the storage thread."""
        deadline = time.monotonic() + LOSSLESS_WAIT_S
        while time.monotonic() < deadline:
            self._maybe_drain(lane)
            try:
                lane.handoff.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def _maybe_drain(self, lane: _Lane) -> None:
        if lane.drain_requested or (
            lane.queued_samples < self._drain_samples and not lane.handoff.full()
        ):
            return
        lane.drain_requested = True
        lane.queued_samples = 0
        if not self._offer(lambda storage: self.drain(storage, lane.source)):
            lane.drain_requested = False  # storage is closed or full: ask again at the next block

    # --- storage thread -------------------------------------------------------------------------
    def begin(
        self, storage: Storage, encounter_id: int, source: str, from_sample: int | None
    ) -> None:
        """Record ``source`` for ``encounter_id`` from ``from_sample`` (None: the next block);
        the source's previous encounter, if any, is ended first."""
        lane = self._lanes.get(source)
        if not self.enabled or lane is None:
            return
        if lane.want is not None and lane.want.encounter_id != encounter_id:
            self.end(storage, lane.want.encounter_id)
        lane.want = _Want(encounter_id, from_sample)

    def end(self, storage: Storage, encounter_id: int) -> None:
        """Stop recording ``encounter_id``: write what is queued, finalise its file."""
        for lane in self._lanes.values():
            if lane.want is not None and lane.want.encounter_id == encounter_id:
                self.drain(storage, lane.source)
                lane.want = None
        writer = self._writers.pop(encounter_id, None)
        if writer is not None:
            self._finish(storage, writer)
        self._failed.discard(encounter_id)

    def close_all(self, storage: Storage) -> None:
        """Shutdown (the pipeline has stopped): write and finalise every open part. An encounter
        still open continues in a new part when the service starts again."""
        for lane in self._lanes.values():
            self.drain(storage, lane.source)
            lane.want = None
        for encounter_id in list(self._writers):
            self._finish(storage, self._writers.pop(encounter_id))

    def drain(self, storage: Storage, source: str) -> None:
        """Write every block waiting in ``source``'s hand-off."""
        lane = self._lanes.get(source)
        if lane is None:
            return
        lane.drain_requested = False
        taken: set[int] = set()
        while True:
            try:
                want, block = lane.handoff.get_nowait()
            except queue.Empty:
                break
            current = lane.want
            if current is None or current.encounter_id != want.encounter_id:
                continue  # the encounter ended: these blocks came after its end
            self._write(storage, want.encounter_id, source, block)
            taken.add(want.encounter_id)
        for encounter_id in taken:
            writer = self._writers.get(encounter_id)
            if writer is None:
                continue
            try:
                self._encode(writer)
            except (OSError, sf.LibsndfileError, RuntimeError) as err:
                self._fail(storage, encounter_id, writer, err)

    def _write(self, storage: Storage, encounter_id: int, source: str, block: AudioBlock) -> None:
        if encounter_id in self._failed:
            return
        writer = self._writers.get(encounter_id)
        try:
            if writer is not None and block.start - writer.next_sample > MAX_GAP_S * C.SAMPLE_RATE:
                log.info(
                    "encounter %d: %.0f s without audio on %s, its audio continues in a new file",
                    encounter_id,
                    (block.start - writer.next_sample) / C.SAMPLE_RATE,
                    source,
                )
                self._finish(storage, self._writers.pop(encounter_id))
                writer = None
            if writer is None:
                writer = self._open(storage, encounter_id, source, block.start)
                self._writers[encounter_id] = writer
            audio = block.audio
            skip = writer.next_sample - block.start
            if skip >= audio.shape[1]:
                return  # already written
            if skip > 0:
                audio = audio[:, skip:]
            elif skip < 0:
                self._silence(writer, -skip)
            writer.pending.append(audio)
            writer.next_sample += audio.shape[1]
        except (OSError, sf.LibsndfileError, RuntimeError) as err:
            self._fail(storage, encounter_id, writer, err)

    def _fail(
        self, storage: Storage, encounter_id: int, writer: _Writer | None, err: Exception
    ) -> None:
        self.write_errors += 1
        self._failed.add(encounter_id)
        log.error(
            "encounter %d: cannot write its audio (%s); what was written is kept, the rest"
            " of this encounter is not recorded",
            encounter_id,
            err,
        )
        if writer is not None:
            writer.pending.clear()
            self._writers.pop(encounter_id, None)
            self._finish(storage, writer)

    def _encode(self, writer: _Writer) -> None:
        """Encode the audio ``writer`` has accepted, in one write; sync every ``SYNC_S``."""
        if not writer.pending:
            return
        pieces, writer.pending = writer.pending, []
        # A fresh array either way (the blocks are the pipeline's): clipped in place.
        audio = np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0].copy()
        np.clip(audio, -1.0, 1.0, out=audio)
        writer.file.write(np.ascontiguousarray(audio.T))
        writer.frames += audio.shape[1]
        self.samples_written += audio.shape[1]
        if writer.frames - writer.synced_frames >= SYNC_S * C.SAMPLE_RATE:
            writer.file.flush()  # fsync: a power cut loses at most SYNC_S
            writer.synced_frames = writer.frames

    def _silence(self, writer: _Writer, n: int) -> None:
        """Write ``n`` samples of silence where audio is missing (after what is pending)."""
        self._encode(writer)
        chunk = np.zeros((min(n, C.SAMPLE_RATE), C.N_CHANNELS), np.float32)
        left = n
        while left > 0:
            k = min(left, chunk.shape[0])
            writer.file.write(chunk[:k])
            left -= k
        writer.frames += n
        writer.gap_samples += n
        writer.next_sample += n

    def _open(self, storage: Storage, encounter_id: int, source: str, start: int) -> _Writer:
        started = self._clock(source, start)
        rel = (
            Path(ENCOUNTER_AUDIO_DIR)
            / source
            / started.strftime("%Y-%m-%d")
            / f"{source}_encounter{encounter_id}_{started.strftime('%H%M%S')}.flac"
        )
        path = storage.data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # a second part in the same second
            rel = rel.with_name(f"{rel.stem}_{start}.flac")
            path = storage.data_dir / rel
        # The row first: a crash after it leaves a part that recover() finds.
        part = storage.add_audio_part(
            encounter_id=encounter_id,
            source=source,
            path=str(rel),
            start_sample=start,
            started_at=iso(started),
        )
        file = sf.SoundFile(
            path,
            "w",
            samplerate=C.SAMPLE_RATE,
            channels=C.N_CHANNELS,
            format="FLAC",
            subtype=SUBTYPE,
        )
        log.info("encounter %d: keeping its audio in %s", encounter_id, rel)
        return _Writer(part.id, path, str(rel), file, start)

    def _finish(self, storage: Storage, writer: _Writer) -> None:
        try:
            self._encode(writer)
            writer.file.close()
        except (OSError, sf.LibsndfileError, RuntimeError) as err:
            self.write_errors += 1
            log.error("cannot finalise %s: %s", writer.rel, err)
        try:
            size = writer.path.stat().st_size
        except OSError:
            size = 0
        storage.finish_audio_part(
            writer.part_id, frames=writer.frames, size_bytes=size, gap_samples=writer.gap_samples
        )

    def recover(self, storage: Storage) -> list[str]:
        """Start-up: finalise the parts a crash left unfinished (their readable audio kept);
        returns what was done, one line per part."""
        done = []
        for part in storage.unfinished_audio_parts():
            path = storage.data_dir / part.path
            frames, size = repair_flac(path)
            storage.finish_audio_part(
                part.id, frames=frames, size_bytes=size, gap_samples=part.gap_samples, repaired=True
            )
            self.parts_repaired += 1
            line = (
                f"{part.path}: {frames / C.SAMPLE_RATE:.1f} s recovered"
                if frames
                else f"{part.path}: nothing readable, removed"
            )
            log.warning(
                "encounter %d audio was not finalised (crash?): %s", part.encounter_id, line
            )
            done.append(line)
        return done


def repair_flac(path: Path) -> tuple[int, int]:
    """Rewrite an unfinished FLAC (a crash before its header was written) as a complete file
    with every frame that can be read; (frames kept, bytes). A file with nothing readable, or
    none at all, is removed: (0, 0)."""
    tmp = path.with_name(path.name + ".repair")
    frames = 0
    try:
        info = sf.info(str(path))
        with sf.SoundFile(
            tmp,
            "w",
            samplerate=info.samplerate,
            channels=info.channels,
            format="FLAC",
            subtype=SUBTYPE,
        ) as dst:
            frames = _copy_readable(path, dst)
    except (OSError, sf.LibsndfileError, RuntimeError) as err:
        log.warning("%s cannot be read (%s)", path, err)
        frames = 0
    if frames == 0:
        for p in (tmp, path):
            p.unlink(missing_ok=True)
        return 0, 0
    os.replace(tmp, path)
    return frames, path.stat().st_size


def _copy_readable(path: Path, dst: sf.SoundFile) -> int:
    """Copy ``path``'s frames into ``dst`` until reading fails; frames copied.

    The header of an unfinished file gives no length, so libsndfile fails a read that runs
    past what was written, and loses its place: the file is opened again at the frame reached
    and read in smaller steps, down to ``REPAIR_STEPS[-1]`` frames.
    """
    frames = 0
    for step in REPAIR_STEPS:
        with sf.SoundFile(path) as src:
            if frames:
                src.seek(frames)
            while True:
                try:
                    data = src.read(step, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError):
                    break  # past the end of what was written: try smaller steps
                if not len(data):
                    return frames  # a clean end
                dst.write(data)
                frames += len(data)
    return frames
