"""Service configuration: one ``Settings`` object, built once at start-up and passed down.

Sources, lowest priority first: the built-in demo defaults, a YAML file (``--config``), then
environment variables ``PANDAPULSE__SECTION__FIELD`` (nested delimiter ``__``; lists such as
``PANDAPULSE__SOURCES`` take JSON), then command-line overrides. Unknown keys are refused
everywhere, including unknown ``PANDAPULSE__...`` variables, and every error names the field
path (``alerts.clear_threshold``) it concerns.

``deploy/pandapulse.example.yaml`` documents every field with its unit and range.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from model import aggregate
from model.checkpoint import DEMO_MODEL
from model.classifier import PRECISIONS
from model.detect import DetectorParams
from service.errors import ConfigError

RawConfig = dict[str, Any]
"""A configuration document before validation (YAML, environment, command line): untyped
until ``Settings`` checks it."""
ENV_PREFIX = "PANDAPULSE__"
ENV_DELIMITER = "__"

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``server.host``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    """Interface to listen on; 0.0.0.0 exposes the service to the network."""
    port: int = Field(default=8000, ge=1, le=65535)
    token: SecretStr | None = None
    """Bearer token required on every route but /healthz; None (no token) leaves the API open."""
    admin_token: SecretStr | None = None
    """Bearer token of the model routes (upload, activate, rollback, shadow); distinct from
    ``token``, which the admin token also stands in for. None: model changes are refused while
    ``token`` is set (and open only on an API without any token)."""

    @field_validator("token", "admin_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty line in an env file must not become a token that an empty ?token= matches.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("the token is blank: set a long random string, or leave it out")
        return value

    @model_validator(mode="after")
    def _check_admin_token(self) -> ServerSettings:
        if (
            self.token is not None
            and self.admin_token is not None
            and secrets.compare_digest(
                self.token.get_secret_value().encode(), self.admin_token.get_secret_value().encode()
            )
        ):
            raise ValueError(
                "admin_token equals token: the keepers' token would then change models;"
                " set two different random strings"
            )
        return self

    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser page they serve; [] = CORS closed."""
    max_upload_mb: float = Field(default=800.0, gt=0, le=16_384)
    """Largest /predict upload (MiB); a one-hour stereo 16-bit WAV at 44.1 kHz is ~606 MiB."""
    max_upload_s: float = Field(default=3900.0, gt=0, le=86_400)
    """Longest /predict recording (s) once decoded."""
    ws_queue_size: int = Field(default=256, ge=8, le=100_000)
    """Messages waiting per WebSocket client before its oldest live updates are dropped."""
    ws_snapshot_segments: int = Field(default=50, ge=0, le=10_000)
    """Recent segments sent in the snapshot a WebSocket client gets on connect."""
    stats_interval_s: float = Field(default=2.0, gt=0, le=3600)
    """Period of the ``stats`` WebSocket event (s)."""


class SourceSettings(_Section):
    id: str = Field(pattern=_ID_PATTERN)
    """Short identifier used in URLs, events and file names (letters, digits, ``_ . -``)."""
    enclosure: str = ""
    """Human name of the enclosure this source listens to (defaults to the id)."""
    kind: Literal["sounddevice", "file", "synthetic"] = "synthetic"
    device: str | int | None = None
    """sounddevice only: input device name (substring) or index; None = the system default."""
    path: Path | None = None
    """file only: the recording to replay."""
    realtime: bool = True
    """file and synthetic: deliver audio at real-time pace (False = as fast as consumed)."""
    loop: bool = False
    """file only: start again from the beginning at the end of the file."""
    seed: int | None = None
    """synthetic only: random seed (None = a fresh one each start)."""

    @model_validator(mode="after")
    def _check_kind(self) -> SourceSettings:
        if self.kind == "file" and self.path is None:
            raise ValueError(f"source {self.id!r} is a file source and needs a 'path'")
        if self.kind != "file" and self.path is not None:
            raise ValueError(f"source {self.id!r}: 'path' only applies to kind 'file'")
        if self.kind != "sounddevice" and self.device is not None:
            raise ValueError(f"source {self.id!r}: 'device' only applies to kind 'sounddevice'")
        return self

    @property
    def label(self) -> str:
        return self.enclosure or self.id


class InferenceSettings(_Section):
    model: Path | None = None
    """CGANet checkpoint (.safetensors); None = the bundled demo model."""
    device: str | None = None
    """'cpu', 'cuda' or 'cuda:N'; None = CUDA when present, else CPU."""
    max_batch: int = Field(default=32, ge=1, le=1024)
    """Most segments scored in one forward pass (all sources share one worker)."""
    precision: str = "auto"
    """auto | fp32 | bf16 | int8: 'auto' is bf16 (convolutions) on CPUs with native bfloat16,
    fp32 elsewhere and on CUDA (``model.classifier.choose_precision``, BENCHMARKS.md)."""

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f"device {value!r} is not supported: use cpu, cuda or cuda:N")
        return value

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, value: str, info: ValidationInfo) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"precision {value!r} is not supported: use {', '.join(PRECISIONS)}")
        if value == "int8" and str(info.data.get("device") or "").startswith("cuda"):
            raise ValueError("precision 'int8' runs on the CPU only: use it with device cpu")
        return value

    @property
    def model_path(self) -> Path:
        return self.model if self.model is not None else DEMO_MODEL


class EncounterSettings(_Section):
    auto: bool = True
    """Open an encounter automatically on the first call after silence."""
    silence_close_s: float = Field(default=120.0, gt=0, le=86_400)
    """An automatic encounter closes after this much silence (s, on the source's sample clock);
    encounters a keeper started are closed only by a keeper."""
    min_segments_for_verdict: int = Field(default=5, ge=1, le=10_000)
    """No verdict is given before this many segments were scored."""
    uncertain_band: tuple[float, float] = aggregate.UNCERTAIN_BAND
    """(lower, upper): while the running P(success) is within it, the verdict is "uncertain"
    (also for ``/predict``); 0 <= lower <= 0.5 <= upper <= 1."""

    @field_validator("uncertain_band")
    @classmethod
    def _check_band(cls, value: tuple[float, float]) -> tuple[float, float]:
        return aggregate.check_band(value)


class AlertSettings(_Section):
    alarm_class: str | None = None
    """The class whose running probability raises the alarm. None: ``failure`` for a model of
    panda outcomes; a model with other class names has no alarm until this names one."""
    failure_threshold: float = Field(default=0.7, gt=0, lt=1)
    """Raise when the encounter's running P(failure) is above this..."""
    hold_segments: int = Field(default=3, ge=1, le=1000)
    """...for this many consecutive segments."""
    clear_threshold: float = Field(default=0.6, ge=0, lt=1)
    """Re-arm only after the running P(failure) fell below this (hysteresis); < failure_threshold."""
    cooldown_s: float = Field(default=600.0, ge=0, le=86_400)
    """Least time between two failure alerts of one encounter (s, on the sample clock)."""
    min_segments: int = Field(default=3, ge=1, le=10_000)
    """No failure alert before the encounter has this many segments."""
    stall_after_s: float = Field(default=5.0, gt=0, le=3600)
    """The pipeline's watchdog reports a source stalled after this long without audio (s)."""
    webhook_urls: list[HttpUrl] = Field(default_factory=list)
    """Each alert is POSTed as JSON to every URL here (from the SQLite outbox, with retries)."""
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=120)
    notify: list[SecretStr] = Field(default_factory=list)
    """Apprise URLs (mailto://, tgram://, slack://, msteams://, dingtalk://, wecombot://,
    json://, ...): each alert is sent through every one (from the SQLite outbox, with retries).
    Secrets: give them in the environment (``PANDAPULSE__ALERTS__NOTIFY`` as a JSON list)."""
    notify_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Longest one Apprise notification may take before the attempt counts as failed (s)."""
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0, 15.0, 60.0, 300.0]
    )
    """Waits between delivery attempts (s); the last one repeats until delivery succeeds."""

    @field_validator("retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("retry_schedule_s must be a non-empty list of positive seconds")
        return value

    @model_validator(mode="after")
    def _check_notify(self) -> AlertSettings:
        # Here rather than on each item, so that no error ever carries the URL (a secret).
        from service.notify import check_url

        seen: dict[str, int] = {}
        for i, secret in enumerate(self.notify):
            url = secret.get_secret_value().strip()
            try:
                check_url(url)
            except ValueError as err:
                raise ValueError(f"notify[{i}]: {err}") from None
            if url in seen:
                raise ValueError(f"notify[{i}]: repeats notify[{seen[url]}]")
            seen[url] = i
        return self

    @model_validator(mode="after")
    def _check_hysteresis(self) -> AlertSettings:
        if self.clear_threshold >= self.failure_threshold:
            raise ValueError(
                f"clear_threshold ({self.clear_threshold}) must be lower than failure_threshold"
                f" ({self.failure_threshold}): alerts need hysteresis"
            )
        return self


class StorageSettings(_Section):
    data_dir: Path = Path("data")
    """SQLite database and FLAC clips live here (relative paths: from the working directory)."""
    keep_days: float = Field(default=90.0, gt=0, le=36_500)
    """Closed encounters, their segments, clips and alerts older than this are deleted (days)."""
    max_disk_mb: float = Field(default=16_384.0, gt=0)
    """Whole-encounter audio, then clips, are deleted oldest first while together they use more
    than this (MiB); rows stay. 16 GiB hold about 25 h of encounter audio from a 24-bit sound
    card, 45 h from a 16-bit one (BENCHMARKS.md, "Whole-encounter audio on disk")."""
    keep_clips: bool = True
    """Store each scored segment's audio as FLAC (for review and retraining)."""
    keep_encounter_audio: bool = True
    """Keep each encounter's whole audio as captured (FLAC, both channels): what
    ``pandapulse export-dataset`` turns into training data. Costs disk (README, "Whole-encounter
    audio"; ``pandapulse doctor`` says how many hours fit); counted in ``max_disk_mb``."""
    retention_interval_s: float = Field(default=600.0, gt=0, le=86_400)
    """How often retention runs (s)."""


_TOPIC_LEVEL = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


def _default_box_id() -> str:
    """This box's id on the broker: the host name, reduced to the id alphabet."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname().split(".")[0]).strip("-_")
    return (name or "pandapulse")[:64]


class MqttSettings(_Section):
    """Publishing to an MQTT broker (``service.mqtt``; topics in docs/PROTOCOL.md, "MQTT")."""

    host: str | None = None
    """The broker's host name or address; None (the default) = no MQTT."""
    port: int = Field(default=1883, ge=1, le=65535)
    """1883 plain, 8883 with TLS (by convention)."""
    tls: bool = False
    """Connect with TLS, checking the broker's certificate against the system CAs or ca_file."""
    ca_file: Path | None = None
    """CA certificate (PEM) that signed the broker's certificate; implies tls."""
    username: str | None = None
    password: SecretStr | None = None
    """Set it in the environment: PANDAPULSE__MQTT__PASSWORD (never in a shared YAML file)."""
    topic_prefix: str = Field(default="pandapulse", pattern=_TOPIC_LEVEL, max_length=128)
    """First topic levels of everything this box publishes (no wildcards, no leading '/')."""
    box_id: str | None = Field(default=None, pattern=_ID_PATTERN)
    """This box's topic level (``<prefix>/<box_id>/...``); None: the host name (``box``).
    Unique per broker: two boxes with one id overwrite each other's retained state."""
    box_name: str = Field(default="", max_length=200)
    """What the fleet view and Home Assistant call this box (default: box_id)."""
    box_url: HttpUrl | None = None
    """This box's dashboard as the fleet's browsers reach it (default: built from the host
    name and server.port)."""
    client_id: str = Field(default="", max_length=128)
    """MQTT client id (default ``pandapulse-<box_id>``); unique per broker."""
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    """Keep-alive; the broker publishes this box's Last Will (offline) 1.5 times this after
    the box went silent."""
    publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """How long an alert's publish waits for the broker's acknowledgement (QoS 1) before the
    outbox retries it."""
    discovery: bool = False
    """Announce each enclosure to Home Assistant (MQTT discovery)."""
    discovery_prefix: str = Field(default="homeassistant", pattern=_TOPIC_LEVEL, max_length=128)

    @field_validator("host", "username", "password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # Compose passes an unset ${VAR:-} as "": that means "not configured", not "".
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(text, str) and not text.strip() else value

    @model_validator(mode="after")
    def _check_credentials(self) -> MqttSettings:
        if self.password is not None and self.username is None:
            raise ValueError("password is set without a username: set mqtt.username too")
        return self

    @property
    def enabled(self) -> bool:
        return self.host is not None

    @property
    def use_tls(self) -> bool:
        return self.tls or self.ca_file is not None

    @property
    def box(self) -> str:
        """This box's id on the broker: ``box_id``, else the host name."""
        return self.box_id or _default_box_id()

    @property
    def name(self) -> str:
        return self.box_name or self.box

    @property
    def client(self) -> str:
        return self.client_id or f"pandapulse-{self.box}"


def _demo_sources() -> list[SourceSettings]:
    return [SourceSettings(id="demo", enclosure="Demo enclosure (synthetic)", kind="synthetic")]


class Settings(BaseSettings):
    """The whole service configuration (see the module docstring for where values come from)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER, extra="forbid", frozen=True
    )

    server: ServerSettings = ServerSettings()
    sources: list[SourceSettings] = Field(default_factory=_demo_sources, min_length=1)
    detector: DetectorParams = DetectorParams()
    """The energy detector, declared once in ``model.detect`` (its checks run here too)."""
    inference: InferenceSettings = InferenceSettings()
    encounter: EncounterSettings = EncounterSettings()
    alerts: AlertSettings = AlertSettings()
    storage: StorageSettings = StorageSettings()
    mqtt: MqttSettings = MqttSettings()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any
    ) -> Any:
        # ``load`` merges file, environment and overrides itself, so the constructor only
        # validates what it is given: no hidden second reading of the environment.
        return (init_settings,)

    @model_validator(mode="after")
    def _check_sources(self) -> Settings:
        ids = [s.id for s in self.sources]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"source ids must be unique; repeated: {', '.join(dupes)}")
        return self

    def source(self, source_id: str) -> SourceSettings | None:
        return next((s for s in self.sources if s.id == source_id), None)


def _deep_merge(base: RawConfig, override: Mapping[str, Any]) -> RawConfig:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> RawConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, not {type(data).__name__}"
        )
    return data


def _read_env(environ: Mapping[str, str]) -> RawConfig:
    sections = set(Settings.model_fields)
    for key in environ:
        if key.upper().startswith(ENV_PREFIX):
            section = key[len(ENV_PREFIX) :].split(ENV_DELIMITER)[0].lower()
            if section not in sections:
                raise ConfigError(
                    f"environment variable {key}: unknown section {section!r};"
                    f" known: {', '.join(sorted(sections))}"
                )
    source = EnvSettingsSource(Settings, case_sensitive=False)
    source.env_vars = {k.lower(): v for k, v in environ.items()}
    return dict(source())


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        # a pydantic model says extra_forbidden, a dataclass (``detector``) the keyword one
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key (see deploy/pandapulse.example.yaml for the accepted ones)"
        lines.append(f"  {loc}: {msg}")
    return f"invalid configuration ({origin}):\n" + "\n".join(lines)


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from the YAML file ``path`` (optional), the environment and overrides.

    ``environ`` defaults to ``os.environ``; ``overrides`` (nested dicts, e.g. from the command
    line) win over both. Raises ``ConfigError`` naming every bad field.
    """
    data: RawConfig = {}
    origins = []
    if path is not None:
        data = _read_yaml(Path(path))
        origins.append(str(path))
    env = _read_env(os.environ if environ is None else environ)
    if env:
        origins.append("environment")
        data = _deep_merge(data, env)
    if overrides:
        origins.append("command line")
        data = _deep_merge(data, overrides)
    try:
        return Settings(**data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, " + ".join(origins) or "defaults")) from err
