"""deploy/compose.yaml: parses, reserves the GPU, passes the sound card, keeps data in a volume,
takes secrets from the environment, restarts, and has a demo profile on the synthetic source."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from service.config import load_settings
from tests.deploy import dockerfile as df

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
SECRET_LIKE = re.compile(r"(token|secret|password|webhook)", re.IGNORECASE)


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def live() -> dict[str, Any]:
    return services()["pandapulse"]


def demo() -> dict[str, Any]:
    return services()["pandapulse-demo"]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` for the given env."""

    def repl(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", repl, value)


def test_both_services_build_this_repository() -> None:
    for svc in (live(), demo()):
        assert svc["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (COMPOSE.parent / svc["build"]["context"] / "Dockerfile").is_file()


def test_gpu_is_reserved_through_the_nvidia_driver() -> None:
    devices = live()["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_sound_card_data_volume_and_restart_policy() -> None:
    svc = live()
    assert "/dev/snd:/dev/snd" in svc["devices"]
    assert svc["group_add"], "the container user needs the gid owning /dev/snd"
    data_mount = [v for v in svc["volumes"] if v.split(":")[1] == "/data"]
    assert data_mount and data_mount[0].split(":")[0] in compose()["volumes"]
    assert any(v.split(":")[1] == "/models" for v in svc["volumes"])
    for s in (live(), demo()):
        assert s["restart"] == "unless-stopped"


def test_secrets_come_from_the_environment_only() -> None:
    env = live()["environment"]
    token = env["PANDAPULSE__SERVER__TOKEN"]
    assert token.startswith("${PANDAPULSE_TOKEN:?")  # required: the port is published
    assert env["PANDAPULSE__ALERTS__WEBHOOK_URLS"].startswith("${PANDAPULSE_WEBHOOK_URLS")
    for svc in services().values():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_LIKE.search(key):
                assert str(value).startswith("${"), f"{key} holds a literal secret"


def test_live_environment_is_valid_configuration() -> None:
    host_env = {
        "PANDAPULSE_TOKEN": "t0ken-from-the-host",
        "PANDAPULSE_WEBHOOK_URLS": '["https://hooks.example.org/p"]',
    }
    image_env = df.env(df.instructions(REPO / "Dockerfile"))
    env = image_env | {k: interpolate(str(v), host_env) for k, v in live()["environment"].items()}
    settings = load_settings(environ=env)
    assert settings.server.token is not None
    assert settings.server.token.get_secret_value() == "t0ken-from-the-host"
    assert [str(u) for u in settings.alerts.webhook_urls] == ["https://hooks.example.org/p"]
    assert str(settings.inference.model_path).startswith("/models/")
    # Without the host's webhook variable the list is empty, not [""].
    env = image_env | {
        k: interpolate(str(v), {"PANDAPULSE_TOKEN": "x"}) for k, v in live()["environment"].items()
    }
    assert load_settings(environ=env).alerts.webhook_urls == []


def test_live_refuses_to_start_without_a_token() -> None:
    try:
        interpolate(live()["environment"]["PANDAPULSE__SERVER__TOKEN"], {})
    except KeyError as err:
        assert "PANDAPULSE_TOKEN" in str(err)
    else:
        raise AssertionError("PANDAPULSE_TOKEN must be required")


def test_demo_profile_runs_the_synthetic_source_on_loopback() -> None:
    svc = demo()
    assert svc["profiles"] == ["demo"]
    assert "profiles" not in live()
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])
    sources = json.loads(svc["environment"]["PANDAPULSE__SOURCES"])
    env = df.env(df.instructions(REPO / "Dockerfile")) | dict(svc["environment"])
    settings = load_settings(environ=env)
    assert [s.kind for s in settings.sources] == ["synthetic"] == [s["kind"] for s in sources]
    assert "devices" not in svc and "deploy" not in svc  # no hardware needed
    demo_data = [v.split(":")[0] for v in svc["volumes"] if v.endswith(":/data")]
    live_data = [v.split(":")[0] for v in live()["volumes"] if v.endswith(":/data")]
    assert demo_data and demo_data != live_data


def test_the_documented_config_file_works_with_the_compose_environment() -> None:
    """`cp pandapulse.example.yaml pandapulse.yaml` + the compose environment is valid config,
    and the environment wins where both speak (interface, data directory, model, token)."""
    host_env = {"PANDAPULSE_TOKEN": "from-the-host"}
    image_env = df.env(df.instructions(REPO / "Dockerfile"))
    env = image_env | {k: interpolate(str(v), host_env) for k, v in live()["environment"].items()}
    settings = load_settings(REPO / "deploy" / "pandapulse.example.yaml", environ=env)
    assert settings.server.host == "0.0.0.0"
    assert str(settings.storage.data_dir) == "/data"
    assert str(settings.inference.model_path) == "/models/cganet.safetensors"
    assert settings.server.token is not None
    assert any(s.kind == "sounddevice" for s in settings.sources)


def test_the_broker_profile_runs_mosquitto_and_the_fleet_view() -> None:
    broker = services()["mosquitto"]
    fleet = services()["pandapulse-fleet"]
    assert broker["profiles"] == fleet["profiles"] == ["broker"]
    assert broker["image"].startswith("eclipse-mosquitto:2")
    config_dir = [v.split(":")[0] for v in broker["volumes"] if v.endswith(":/mosquitto/config")]
    conf = (COMPOSE.parent / config_dir[0] / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "password_file" in conf
    assert any(v.endswith(":/mosquitto/data") for v in broker["volumes"])
    # The fleet view reads the broker with its own account and needs a token to start.
    image_env = df.env(df.instructions(REPO / "Dockerfile"))
    host_env = {"PANDAPULSE_FLEET_TOKEN": "fleet-token", "PANDAPULSE_FLEET_MQTT_PASSWORD": "pw"}
    env = image_env | {k: interpolate(str(v), host_env) for k, v in fleet["environment"].items()}
    settings = load_settings(environ=env)
    assert settings.mqtt.host == "mosquitto" and settings.mqtt.username == "fleet"
    assert settings.mqtt.password is not None
    # A box points at it through the environment; unset, MQTT stays off.
    box_env = {
        "PANDAPULSE_TOKEN": "t",
        "PANDAPULSE_MQTT_HOST": "mosquitto",
        "PANDAPULSE_MQTT_USERNAME": "box1",
        "PANDAPULSE_MQTT_PASSWORD": "pw",
    }
    env = image_env | {k: interpolate(str(v), box_env) for k, v in live()["environment"].items()}
    assert load_settings(environ=env).mqtt.enabled
    env = image_env | {
        k: interpolate(str(v), {"PANDAPULSE_TOKEN": "t"}) for k, v in live()["environment"].items()
    }
    assert not load_settings(environ=env).mqtt.enabled
