"""Domain errors, in one place. Each message says what was wrong and what is accepted."""

from __future__ import annotations


class PandaPulseError(Exception):
    """Base class: anything the user can fix gets one of these, never a stack trace."""


class AudioError(PandaPulseError):
    """A recording cannot be read, or its content is unusable (rate, channels, NaN, empty)."""


class CheckpointError(PandaPulseError):
    """A model file is missing, unreadable, or made for a different feature configuration."""


class DataError(PandaPulseError):
    """A dataset folder, manifest or annotation is unusable."""


class ConfigError(PandaPulseError):
    """The service configuration is invalid."""
