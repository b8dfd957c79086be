"""Notifications through Apprise: alerts to e-mail, Telegram, Slack, Teams, DingTalk, WeCom...

``alerts.notify`` lists Apprise URLs (``mailto://``, ``tgram://``, ``slack://``,
``msteams://``, ``dingtalk://``, ``wecombot://``, ``json://`` and the rest Apprise supports).
Each is a secret: it is checked when the configuration loads (``check_url``: Apprise must
recognise it; the error names its index, never the URL), and it is never stored, logged or
sent to a client. Instead every URL has

- a *key* (``url_key``: a hash of the URL), which the alert outbox stores as the row's
  ``target`` (channel ``apprise``); the deliverer finds the URL again by its key in the current
  configuration, so a URL removed from it has its pending deliveries given up, not sent;
- a *label* (``url_label``: the service's name, the scheme and, where Apprise does not hide it
  as a secret, the host), which the dashboard and the log show.

``AppriseDeliverer`` is the outbox's ``apprise`` channel (``service.alerts.Deliverer``): it
turns the stored alert event into a title and a body and sends it through that URL only; a
failure's reason comes from Apprise's own log entries, with every part of the URL that could
be a secret masked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise

from service.alerts import DeliveryError
from service.records import OutboxRow, OutboxTarget

log = logging.getLogger(__name__)

CHANNEL = "apprise"
_WIKI = "https://github.com/caronc/apprise/wiki"
APP_ID = "PandaPulse"

_KIND_TITLES = {
    "failure_dominates": "Failure dominates",
    "audio_stalled": "Audio stalled",
    "test": "Test alert",
}
_NOTIFY_TYPES = {
    "failure_dominates": apprise.NotifyType.FAILURE,
    "audio_stalled": apprise.NotifyType.WARNING,
    "test": apprise.NotifyType.INFO,
}


def _instantiate(url: str) -> Any:
    """Apprise's plugin object for ``url``, or None when Apprise does not recognise it.

    Apprise logs a URL it cannot parse (partly masked); the caller's error says what is wrong
    instead, so nothing of the URL reaches the log."""
    apprise_log = logging.getLogger("apprise")
    level = apprise_log.level
    apprise_log.setLevel(logging.CRITICAL)
    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True)
    finally:
        apprise_log.setLevel(level)


def check_url(url: str) -> None:
    """Raise ValueError (without the URL, which may hold a secret) unless Apprise accepts it."""
    scheme, sep, _ = url.strip().partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ValueError(
            "is not an Apprise URL (expected scheme://..., e.g. mailto://, tgram://, slack://)"
        )
    if _instantiate(url.strip()) is None:
        scheme = scheme.lower()
        if scheme in _known_schemes():
            raise ValueError(
                f"Apprise does not accept this {scheme}:// URL: its parts are missing or"
                f" malformed for that service (see {_WIKI} for its URL form)"
            )
        raise ValueError(f"Apprise knows no {scheme}:// service (see {_WIKI} for those it has)")


def _known_schemes() -> set[str]:
    schemes: set[str] = set()
    for entry in apprise.Apprise().details().get("schemas", []):
        for key in ("protocols", "secure_protocols"):
            schemes.update(str(p).lower() for p in entry.get(key) or ())
    return schemes


def url_key(url: str) -> str:
    """The outbox ``target`` of a notification URL: a hash that does not reveal it."""
    return hashlib.sha256(url.strip().encode()).hexdigest()[:20]


def url_label(url: str) -> str:
    """``E-Mail · mailto://smtp.example.org:587``: the service, scheme and host only, and the
    host only where Apprise's privacy view shows it as it is (a Telegram URL's "host" is the
    bot's token: ``Telegram · tgram://``)."""
    url = url.strip()
    plugin = _instantiate(url)
    scheme = url.partition("://")[0].lower()
    if plugin is None:
        return f"{scheme}://"
    service = str(getattr(plugin, "service_name", "") or scheme)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        host, port = "", None
    shown = plugin.url(privacy=True).partition("://")[2]
    authority = re.split(r"[/?#]", shown, maxsplit=1)[0].rpartition("@")[2]
    visible_host = authority.rsplit(":", 1)[0] if ":" in authority else authority
    if host and visible_host.lower() == host.lower():
        where = f"{scheme}://{host}" + (f":{port}" if port else "")
    else:
        where = f"{scheme}://"
    return f"{service} · {where}"


def kind_of(url: str) -> str:
    """The service a notification URL reaches (``E-Mail``, ``Telegram``, ...)."""
    plugin = _instantiate(url.strip())
    return str(getattr(plugin, "service_name", "") or "?") if plugin is not None else "?"


@dataclass(frozen=True)
class NotifyChannel:
    """One configured notification URL: the secret ``url`` with its ``key`` and ``label``."""

    url: str
    key: str
    label: str

    @classmethod
    def of(cls, url: str) -> NotifyChannel:
        url = url.strip()
        return cls(url=url, key=url_key(url), label=url_label(url))

    @property
    def target(self) -> OutboxTarget:
        return OutboxTarget(CHANNEL, self.key, self.label)

    def __repr__(self) -> str:  # never show the URL
        return f"NotifyChannel({self.label!r})"


def channels_of(urls: Iterable[str]) -> list[NotifyChannel]:
    return [NotifyChannel.of(u) for u in urls]


def secret_parts(url: str) -> list[str]:
    """Pieces of ``url`` that may be secrets (credentials, path, query values, a host that
    Apprise hides), longest first, to mask them in error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # not a number: a token where a port would be
        port = None
    pieces = {parts.username or "", parts.password or "", host}
    pieces.update(unquote(p) for p in re.split(r"[/,]", parts.path))
    pieces.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
    pieces.update(re.split(r"[:@]", parts.netloc))
    if host and f"://{host}" in url_label(url):
        pieces.discard(host)  # shown in the label anyway
        pieces.discard(str(port))
    return sorted((p for p in pieces if len(p) >= 4), key=len, reverse=True)


def mask(text: str, url: str) -> str:
    for piece in [url, *secret_parts(url)]:
        text = text.replace(piece, "***")
    return text


def alert_message(
    payload: str, source_names: Mapping[str, str] | None = None
) -> tuple[str, str, apprise.NotifyType]:
    """Title, body and Apprise notification type of a stored alert event (``AlertMsg`` JSON)."""
    try:
        alert = json.loads(payload)["alert"]
        kind = str(alert["kind"])
    except (ValueError, KeyError, TypeError):
        return f"{APP_ID} alert", payload, apprise.NotifyType.WARNING
    source = alert.get("source")
    where = (source_names or {}).get(source, source) if source else None
    title = " · ".join(
        t for t in (APP_ID, _KIND_TITLES.get(kind, kind.replace("_", " ").capitalize()), where) if t
    )
    lines = [str(alert.get("message") or "")]
    if alert.get("p_failure") is not None:
        lines.append(f"Running P(failure): {100 * float(alert['p_failure']):.0f}%")
    if where:
        lines.append(f"Enclosure: {where}")
    if alert.get("encounter_id") is not None:
        lines.append(f"Encounter: #{alert['encounter_id']}")
    lines.append(f"Raised: {alert.get('created_at', '')} (UTC)")
    lines.append(f"Alert #{alert.get('id')}: acknowledge it in the PandaPulse dashboard.")
    return title, "\n".join(lines), _NOTIFY_TYPES.get(kind, apprise.NotifyType.WARNING)


class AppriseDeliverer:
    """The outbox's ``apprise`` channel: sends each row through the URL its key names."""

    channel = CHANNEL

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 30.0,
        source_names: Mapping[str, str] | None = None,
    ) -> None:
        self._channels = {c.key: c for c in channels_of(urls)}
        self._timeout_s = timeout_s
        self._source_names = dict(source_names or {})
        self._asset = apprise.AppriseAsset(
            app_id=APP_ID, app_desc="PandaPulse panda breeding-encounter alerts"
        )
        # Apprise's info and debug lines name recipients and URLs, and urllib3's debug lines
        # carry request paths (a Telegram bot's token is in its path): warnings only. Apprise's
        # warnings are also the failure reasons this deliverer records (masked).
        for name in ("apprise", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)

    @property
    def channels(self) -> list[NotifyChannel]:
        return list(self._channels.values())

    def deliver(self, row: OutboxRow) -> None:
        channel = self._channels.get(row.target)
        if channel is None:
            raise DeliveryError(
                "this notification URL is no longer in alerts.notify", permanent=True
            )
        self.send(channel, *alert_message(row.payload, self._source_names))

    def send(
        self,
        channel: NotifyChannel,
        title: str,
        body: str,
        kind: apprise.NotifyType = apprise.NotifyType.INFO,
    ) -> None:
        """Send one message through ``channel``; DeliveryError with Apprise's reason if not."""
        sender = apprise.Apprise(asset=self._asset)
        if not sender.add(channel.url):
            raise DeliveryError("Apprise does not accept this URL any more", permanent=True)
        problems: list[str] = []

        def keep(entry: Any, _plugin: Any) -> None:
            if entry.level in ("WARNING", "ERROR", "CRITICAL"):
                problems.append(str(entry.message))

        try:
            result = sender.notify(
                body=body,
                title=title,
                notify_type=kind,
                timeout=self._timeout_s,
                log_callback=keep,
                log_level=logging.WARNING,
            )
        except Exception as err:  # a plugin's own failure is a failed attempt, not a crash
            raise DeliveryError(mask(f"{type(err).__name__}: {err}", channel.url)) from err
        if not result:
            reason = " ".join(dict.fromkeys(problems)) or f"Apprise reported {result.status}"
            raise DeliveryError(mask(reason, channel.url)[:400])

    def close(self) -> None:
        pass


def describe(urls: Sequence[str]) -> str:
    """``3 channels: E-Mail, Telegram, DingTalk`` (for ``doctor`` and the start-up log)."""
    if not urls:
        return "no notification URLs (alerts.notify is empty)"
    kinds = [kind_of(u) for u in urls]
    counted = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    text = ", ".join(k if n == 1 else f"{k} x{n}" for k, n in counted.items())
    return f"{len(urls)} notification URL{'s' if len(urls) != 1 else ''}: {text}"
