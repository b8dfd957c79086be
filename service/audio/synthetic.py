"""An endless stream of synthetic breeding encounters (``model.synth``), for the demo and tests.

Encounters follow one another (seed, seed + 1, ...), their outcome drawn at random from the
seed, each with quiet spells between calling periods. The next encounter is generated on a
helper thread while the current one plays, so real-time delivery does not pause.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model import constants as C
from model.errors import AudioError
from service.audio.base import BLOCK_SAMPLES, QUEUE_BLOCKS, ProducerSource

if TYPE_CHECKING:
    from service.config import SourceSettings

log = logging.getLogger(__name__)

ENCOUNTER_SECONDS = 180.0
"""Length of each synthetic encounter (s)."""
FIRST_WAIT_S = 60.0
"""``start()`` waits at most this long for the first encounter (s)."""
FIRST_ENCOUNTER_SECONDS = 30.0
"""The first encounter is at most this long (s): generating it delays the first audio (about
a fifth of its length on a busy 2-core machine), later ones are generated while one plays."""

Generator = Callable[[int, str, float], np.ndarray]
"""(seed, outcome, duration_s) -> (2, n) float32 audio at SAMPLE_RATE."""


def synth_generator(seed: int, outcome: str, duration_s: float) -> np.ndarray:
    """The real generator: ``model.synth.generate_encounter`` with quiet spells."""
    from model.synth import generate_encounter  # heavy import, only when this source is used

    return generate_encounter(seed, outcome=outcome, duration_s=duration_s, quiet_spells=True).audio


@dataclass(frozen=True)
class PlayedEncounter:
    """Ground truth of an encounter the source played: where it starts on the sample clock."""

    start: int
    seed: int
    outcome: str
    samples: int


class SyntheticSource(ProducerSource):
    """Synthetic encounters back to back, at real-time pace or lossless."""

    kind = "synthetic"

    def __init__(
        self,
        source_id: str,
        *,
        seed: int | None = None,
        realtime: bool = True,
        encounter_s: float = ENCOUNTER_SECONDS,
        generate: Generator = synth_generator,
        block_samples: int | Sequence[int] = BLOCK_SAMPLES,
        queue_blocks: int = QUEUE_BLOCKS,
    ) -> None:
        super().__init__(
            source_id, realtime=realtime, block_samples=block_samples, queue_blocks=queue_blocks
        )
        if encounter_s <= 0:
            raise ValueError(f"encounter_s must be positive, got {encounter_s}")
        self.seed = (
            seed if seed is not None else int(np.random.default_rng().integers(0, 2**31 - 1))
        )
        self.encounter_s = encounter_s
        self._generate = generate
        self._pool: ThreadPoolExecutor | None = None
        self._first: Future[np.ndarray] | None = None
        self.played: deque[PlayedEncounter] = deque(maxlen=1000)
        """Encounters started so far (appended by the producer thread)."""

    @classmethod
    def from_config(cls, cfg: SourceSettings, **kwargs: Any) -> SyntheticSource:
        """From a ``service.config.SourceSettings`` of kind ``synthetic``."""
        return cls(cfg.id, seed=cfg.seed, realtime=cfg.realtime, **kwargs)

    def check(self) -> None:
        try:
            audio = self._generate(self.seed, "success", 1.0)
        except ImportError as err:
            raise AudioError(
                f"source {self.source_id!r}: the synthetic generator is not installed: {err}"
            ) from err
        if audio.ndim != 2 or audio.shape[0] != C.N_CHANNELS or audio.dtype != np.float32:
            raise AudioError(
                f"source {self.source_id!r}: the generator gave {audio.dtype} {audio.shape}, not (2, n) float32"
            )

    def outcome_of(self, seed: int) -> str:
        """The outcome played for ``seed`` (reproducible: drawn from the seed)."""
        return "success" if np.random.default_rng([seed, 0x5EED]).random() < 0.5 else "failure"

    def _open(self) -> None:
        # The first encounter is generated before start() returns, so the source does not
        # look stalled while it is made; later ones are made while the previous one plays.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"synth-{self.source_id}")
        first_s = min(self.encounter_s, FIRST_ENCOUNTER_SECONDS)
        self._first = self._pool.submit(
            self._generate, self.seed, self.outcome_of(self.seed), first_s
        )
        deadline = time.monotonic() + FIRST_WAIT_S
        while not self._first.done() and time.monotonic() < deadline:
            if self._stopping.wait(0.05):
                break
        super()._open()

    def _close(self) -> None:
        super()._close()
        if self._pool is not None:
            # Do not wait for an encounter being generated: stopping must be prompt.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _chunks(self) -> Iterator[np.ndarray]:
        assert self._pool is not None and self._first is not None
        seed, start, upcoming = self.seed, 0, self._first
        while not self._stopping.is_set():
            # Wait for the generator in short steps, so stop() is not held up by it.
            while not upcoming.done():
                if self._stopping.wait(0.1):
                    return
            audio = upcoming.result()
            upcoming = self._pool.submit(
                self._generate, seed + 1, self.outcome_of(seed + 1), self.encounter_s
            )
            outcome = self.outcome_of(seed)
            self.played.append(PlayedEncounter(start, seed, outcome, audio.shape[1]))
            log.info(
                "source %s: synthetic encounter seed %d (%s) from sample %d",
                self.source_id,
                seed,
                outcome,
                start,
            )
            yield audio
            start += audio.shape[1]
            seed += 1
