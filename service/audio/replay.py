"""Replay a recording as if it were a live source: at real-time pace, or losslessly as fast as
it is consumed (``/predict``-like processing, tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model import preprocessing
from model.errors import AudioError
from service.audio.base import BLOCK_SAMPLES, QUEUE_BLOCKS, ProducerSource

if TYPE_CHECKING:
    from service.config import SourceSettings


class ReplaySource(ProducerSource):
    """A decoded recording (any format ``model.preprocessing.load`` reads), played block by block.

    The file is decoded and converted (resampled to 44.1 kHz, mono duplicated) once, at
    ``start``; ``loop`` plays it again and again with a continuous sample clock.
    """

    kind = "file"

    def __init__(
        self,
        source_id: str,
        path: str | Path,
        *,
        realtime: bool = True,
        loop: bool = False,
        block_samples: int | Sequence[int] = BLOCK_SAMPLES,
        queue_blocks: int = QUEUE_BLOCKS,
    ) -> None:
        super().__init__(
            source_id, realtime=realtime, block_samples=block_samples, queue_blocks=queue_blocks
        )
        self.path = Path(path)
        self.loop = loop
        self._audio: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: SourceSettings, **kwargs: Any) -> ReplaySource:
        """From a ``service.config.SourceSettings`` of kind ``file``."""
        if cfg.path is None:  # the settings refuse a file source without one
            raise AudioError(f"source {cfg.id!r} is a file source and needs a 'path'")
        return cls(cfg.id, cfg.path, realtime=cfg.realtime, loop=cfg.loop, **kwargs)

    def check(self) -> None:
        if not self.path.is_file():
            raise AudioError(
                f"source {self.source_id!r}: no file at {self.path} (check the path and permissions)"
            )
        preprocessing.load(self.path)  # raises AudioError naming what is wrong

    def _open(self) -> None:
        recording = preprocessing.load(self.path)
        self.mono = recording.mono
        self._audio = recording.audio
        super()._open()

    def _chunks(self) -> Iterator[np.ndarray]:
        assert self._audio is not None
        while True:
            yield self._audio
            if not self.loop:
                return
