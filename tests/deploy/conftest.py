"""The deploy tests share the reliability suite's service subprocess factory (backup
procedure); the PulseAudio server fixture comes from tests/conftest.py."""

from tests.reliability.conftest import make_service  # noqa: F401
