"""Feeding a streaming stage the way the streaming == batch tests do."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def blocks(audio: np.ndarray, sizes: Sequence[int]) -> Iterator[np.ndarray]:
    """Consecutive (channels, size) pieces of ``audio``, cycling through ``sizes`` (samples,
    each >= 1); the last piece is whatever remains."""
    pos, i = 0, 0
    while pos < audio.shape[1]:
        size = sizes[i % len(sizes)]
        yield audio[:, pos : pos + size]
        pos += size
        i += 1
