"""The deploy tests share the reliability suite's fixtures: the PulseAudio server (doctor's
capture check) and the service subprocess factory (backup procedure)."""

from tests.reliability.conftest import make_service, pulse  # noqa: F401
