"""``inference.precision``: the service asks for 'auto' unless told otherwise, and refuses
what the model layer cannot run."""

from __future__ import annotations

import pytest

from model.classifier import PRECISIONS
from service.config import load_settings
from service.errors import ConfigError


def test_default_is_auto() -> None:
    assert load_settings(environ={}).inference.precision == "auto"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_model_precision_is_accepted(precision: str) -> None:
    env = {"PANDAPULSE__INFERENCE__PRECISION": precision}
    assert load_settings(environ=env).inference.precision == precision


def test_unknown_precision_and_int8_on_cuda_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"inference\.precision"):
        load_settings(environ={"PANDAPULSE__INFERENCE__PRECISION": "fp16"})
    with pytest.raises(ConfigError, match="CPU only"):
        load_settings(overrides={"inference": {"device": "cuda", "precision": "int8"}}, environ={})
