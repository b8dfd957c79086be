"""Audio sources: a sound card, a replayed file, synthetic encounters. See ``base`` for the
contract (blocks out of a bounded queue; live sources drop and count, replay is lossless)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.audio.base import BLOCK_SAMPLES, AudioSource, ProducerSource, block_samples_for
from service.audio.device import DeviceSource, input_devices
from service.audio.replay import ReplaySource
from service.audio.synthetic import SyntheticSource

__all__ = [
    "BLOCK_SAMPLES",
    "AudioSource",
    "DeviceSource",
    "ProducerSource",
    "ReplaySource",
    "SyntheticSource",
    "block_samples_for",
    "input_devices",
    "source_from_config",
]

if TYPE_CHECKING:
    from service.config import SourceSettings

_KINDS: dict[str, type[AudioSource]] = {
    DeviceSource.kind: DeviceSource,
    ReplaySource.kind: ReplaySource,
    SyntheticSource.kind: SyntheticSource,
}


def source_from_config(cfg: SourceSettings, **kwargs: Any) -> AudioSource:
    """The source a ``service.config.SourceSettings`` describes (``kind``: sounddevice, file,
    synthetic); ``kwargs`` go to its constructor (block sizes, a test generator, ...)."""
    try:
        cls = _KINDS[cfg.kind]
    except KeyError:
        raise ValueError(f"unknown source kind {cfg.kind!r}: use one of {sorted(_KINDS)}") from None
    return cls.from_config(cfg, **kwargs)
