"""Configuration: YAML + environment, strictness, cross-field checks, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model.detect import DetectorParams
from service.config import DEMO_MODEL, load_settings
from service.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pandapulse.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_demo() -> None:
    s = load_settings(environ={})
    assert [(src.id, src.kind) for src in s.sources] == [("demo", "synthetic")]
    assert s.server.host == "127.0.0.1" and s.server.token is None
    assert s.server.cors_origins == []
    assert s.inference.model_path == DEMO_MODEL
    assert s.detector == DetectorParams()


def test_yaml_then_env_then_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
server: {port: 9001, token: from-yaml}
sources:
  - {id: north, enclosure: North yard, kind: file, path: a.wav}
  - {id: south, kind: synthetic, seed: 3}
alerts: {hold_segments: 2, webhook_urls: ["http://127.0.0.1:9/hook"]}
storage: {data_dir: /tmp/pp}
""",
    )
    env = {"PANDAPULSE__SERVER__PORT": "9002", "PANDAPULSE__ALERTS__COOLDOWN_S": "30", "HOME": "/x"}
    s = load_settings(path, environ=env, overrides={"server": {"host": "0.0.0.0"}})
    assert s.server.port == 9002 and s.server.host == "0.0.0.0"
    assert s.server.token is not None and s.server.token.get_secret_value() == "from-yaml"
    assert "from-yaml" not in repr(s)  # SecretStr hides it
    assert [src.id for src in s.sources] == ["north", "south"]
    assert s.sources[0].label == "North yard" and s.sources[1].label == "south"
    assert s.alerts.hold_segments == 2 and s.alerts.cooldown_s == 30
    assert str(s.alerts.webhook_urls[0]) == "http://127.0.0.1:9/hook"
    assert s.storage.data_dir == Path("/tmp/pp")


def test_env_list_as_json() -> None:
    env = {"PANDAPULSE__SOURCES": '[{"id": "a", "kind": "synthetic"}, {"id": "b"}]'}
    assert [s.id for s in load_settings(environ=env).sources] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("server: {prot: 1}", "server.prot"),
        ("bogus: 1", "bogus"),
        ("sources: [{id: a, colour: red}]", "sources.0.colour"),
        ("detector: {on_dB: 7}", "detector.on_dB"),
    ],
)
def test_unknown_keys_refused(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=rf"{where}: unknown key"):
        load_settings(write(tmp_path, text), environ={})


def test_unknown_env_section_refused() -> None:
    with pytest.raises(ConfigError, match="PANDAPULSE__SERVR__PORT"):
        load_settings(environ={"PANDAPULSE__SERVR__PORT": "1"})
    with pytest.raises(ConfigError, match=r"server\.colour: unknown key"):
        load_settings(environ={"PANDAPULSE__SERVER__COLOUR": "1"})
    with pytest.raises(ConfigError, match=r"detector\.colour: unknown key"):
        load_settings(environ={"PANDAPULSE__DETECTOR__COLOUR": "1"})


def test_detector_section_is_the_model_s_detector_params(tmp_path: Path) -> None:
    """One declaration (``model.detect.DetectorParams``): YAML and environment build it."""
    path = write(tmp_path, "detector: {on_db: 9, frame_samples: 512}")
    s = load_settings(path, environ={"PANDAPULSE__DETECTOR__OFF_DB": "5.5"})
    assert s.detector == DetectorParams(on_db=9.0, off_db=5.5, frame_samples=512)
    assert type(s.detector) is DetectorParams


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detector: {on_db: 6, off_db: 8}", "off_db .* must be lower than on_db"),
        ("detector: {on_db: 70, off_db: 4}", r"on_db must be in \(0, 60\], got 70"),
        ("detector: {min_level_db: -130}", r"min_level_db must be in \[-120, 0\]"),
        ("detector: {frame_samples: 1000.5}", "detector.frame_samples"),
        ("detector: 3", "detector"),
        ("alerts: {failure_threshold: 0.6, clear_threshold: 0.7}", "clear_threshold .* lower"),
        ("sources: [{id: a}, {id: a}]", "source ids must be unique; repeated: a"),
        ("sources: [{id: a, kind: file}]", "file source and needs a 'path'"),
        ("sources: [{id: a, kind: synthetic, device: 3}]", "'device' only applies"),
        ("sources: []", "sources"),
        ("sources: [{id: 'bad id/'}]", "sources.0.id"),
        ("server: {port: 70000}", "server.port"),
        ("inference: {device: gpu}", "device 'gpu' is not supported"),
        ("alerts: {retry_schedule_s: []}", "retry_schedule_s"),
        ("server: {token: ''}", "server.token: the token is blank"),
        ("server: {token: '   '}", "server.token: the token is blank"),
        ("encounter: {uncertain_band: [0.6, 0.4]}", "uncertain band must satisfy"),
        ("encounter: {uncertain_band: [0.55, 0.7]}", "uncertain band must satisfy"),
        ("encounter: {uncertain_band: [0.4]}", "encounter.uncertain_band"),
    ],
)
def test_cross_field_and_range_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), environ={})


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "server: [unclosed"), environ={})
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(write(tmp_path, "- 1\n- 2"), environ={})


def test_example_config_is_valid() -> None:
    s = load_settings(REPO / "deploy" / "pandapulse.example.yaml", environ={})
    assert len(s.sources) >= 2


def _serve_args(*argv: str) -> Any:
    import argparse

    from service import main

    parser = argparse.ArgumentParser()
    main.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_token_precedence_and_demo_token(tmp_path: Path) -> None:
    from service.main import build_settings, dashboard_url

    # The demo (no config, no token anywhere): a fresh token, shown in the URL on request only.
    demo, generated = build_settings(_serve_args(), environ={})
    assert generated and demo.server.token is not None
    secret = demo.server.token.get_secret_value()
    assert len(secret) >= 20 and secret not in dashboard_url(demo)
    assert dashboard_url(demo, with_token=True) == f"http://127.0.0.1:8000/?token={secret}"
    again, _ = build_settings(_serve_args(), environ={})
    assert again.server.token.get_secret_value() != secret

    path = write(tmp_path, "server: {token: from-file, port: 9100}")
    s, generated = build_settings(_serve_args("--config", str(path)), environ={})
    assert not generated and s.server.token.get_secret_value() == "from-file"
    s, _ = build_settings(_serve_args("--config", str(path)), environ={"PANDAPULSE_TOKEN": "env"})
    assert s.server.token.get_secret_value() == "env"
    s, _ = build_settings(
        _serve_args("--config", str(path), "--token", "cli", "--port", "9200", "--host", "0.0.0.0"),
        environ={"PANDAPULSE_TOKEN": "env"},
    )
    assert s.server.token.get_secret_value() == "cli" and s.server.port == 9200
    assert dashboard_url(s) == "http://127.0.0.1:9200/"
    # A config without a token leaves the API open (no generated token).
    open_cfg = write(tmp_path, "server: {port: 9300}")
    s, generated = build_settings(_serve_args("--config", str(open_cfg)), environ={})
    assert s.server.token is None and not generated
    with pytest.raises(ConfigError, match="empty"):
        build_settings(_serve_args("--token", " "), environ={})


def test_serve_refuses_a_busy_port() -> None:
    import socket

    from service.main import _check_port_free

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            _check_port_free("127.0.0.1", port)


def test_example_config_shows_the_defaults() -> None:
    """Every section but ``sources`` shows exactly the defaults, so the file cannot drift."""
    import yaml

    example = yaml.safe_load((REPO / "deploy" / "pandapulse.example.yaml").read_text())
    defaults = load_settings(environ={})
    for section, values in example.items():
        if section == "sources":
            continue
        expected = defaults.model_dump(mode="json")[section]
        assert set(values) | {"token"} >= set(expected) - {"token"}, section
        for key, value in values.items():
            assert value == expected[key], (
                f"{section}.{key}: example {value!r}, default {expected[key]!r}"
            )


def test_uncertain_band_and_alarm_class_are_configurable(tmp_path: Path) -> None:
    text = "encounter: {uncertain_band: [0.3, 0.7]}\nalerts: {alarm_class: pain}"
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.encounter.uncertain_band == (0.3, 0.7)
    assert settings.alerts.alarm_class == "pain"
    assert load_settings(environ={}).encounter.uncertain_band == (0.4, 0.6)


def test_serve_refuses_an_alarm_class_the_model_does_not_have(untrained_checkpoint: Path) -> None:
    from service.main import check_alarm_class

    check_alarm_class(untrained_checkpoint, None)  # panda outcomes: the alarm is "failure"
    check_alarm_class(untrained_checkpoint, "failure")
    with pytest.raises(ConfigError, match="not a class of the model"):
        check_alarm_class(untrained_checkpoint, "pain")
