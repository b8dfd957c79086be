"""The model's errors, in one place. Each message says what was wrong and what is accepted.

The service defines its own (its configuration, its storage) on the same base,
``PandaPulseError``."""

from __future__ import annotations


class PandaPulseError(Exception):
    """Base class: anything the user can fix gets one of these, never a stack trace."""


class AudioError(PandaPulseError):
    """A recording cannot be read, or its content is unusable (rate, channels, NaN, empty)."""


class CheckpointError(PandaPulseError):
    """A model file is missing, unreadable, or made for a different feature configuration."""


class DataError(PandaPulseError):
    """A dataset folder, manifest or annotation is unusable."""


class SettingError(PandaPulseError):
    """A model setting (a ``PANDAPULSE_*`` environment switch) has a value it does not accept."""
