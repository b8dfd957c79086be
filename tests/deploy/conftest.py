"""The deploy tests share the reliability suite's PulseAudio fixture (doctor's capture check)."""

from tests.reliability.conftest import pulse  # noqa: F401
