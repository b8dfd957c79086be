"""The service's own errors. Subclasses of ``model.errors.PandaPulseError``, so the console
script's one ``except`` still turns every one of them into a sentence, never a stack trace."""

from __future__ import annotations

from model.errors import PandaPulseError


class ConfigError(PandaPulseError):
    """The service configuration is invalid."""


class StorageError(PandaPulseError):
    """The service's database or clip store failed."""


class UnknownSource(PandaPulseError, LookupError):
    """A keeper named a source that is not configured (the API answers 404)."""

    def __init__(self, source: str, known: list[str]) -> None:
        super().__init__(f"no source {source!r}; configured sources: {', '.join(known)}")
        self.source = source
