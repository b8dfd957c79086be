"""A real Mosquitto broker for the tests: Debian's ``/usr/sbin/mosquitto`` on a free loopback
port, with a generated config (anonymous, or a password file made by ``mosquitto_passwd``).

``Broker.start``/``kill``/``start`` keep the port, so a test can take the broker away and bring
it back where the clients reconnect to. ``Listener`` subscribes with paho and keeps every
message it receives (a retained empty payload is a deletion).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = Path(os.environ.get("PANDAPULSE_MOSQUITTO", "/usr/sbin/mosquitto"))
MOSQUITTO_PASSWD = Path(shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd")
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """One mosquitto process; ``users`` (name -> password) turns anonymous access off."""

    directory: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    """Serve TLS only, with a certificate for 127.0.0.1 signed by a CA made for this broker
    (``ca_file``)."""
    persistent: bool = False
    """Keep sessions and retained messages on disk, saved after every change, so they survive
    ``kill`` (a subscriber with a persistent session then misses nothing while it was away)."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def _config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "log_dest stderr"]
        if self.tls:
            ca, cert, key = make_certificates(self.directory)
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if self.persistent:
            lines += [
                "persistence true",
                f"persistence_location {self.directory}/",
                "autosave_on_changes true",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        # Started as root, mosquitto would switch to user "mosquitto", who cannot read files
        # in the test's private temporary directory; as anyone else the line changes nothing.
        lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.users:
            passwords = self.directory / "passwords"
            passwords.write_text("")
            passwords.chmod(0o600)
            for user, password in self.users.items():
                subprocess.run(
                    [str(MOSQUITTO_PASSWD), "-b", str(passwords), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        config = self._config()
        log = (self.directory / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mosquitto did not start on port {self.port}:"
                    f" {(self.directory / 'mosquitto.log').read_text()[-2000:]}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as a crashed one would (no goodbye to clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA (certificate, key) valid for a day."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "1",
        "-subj",
        f"/CN=PandaPulse test {name}",
    )
    return cert, key


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    ca, ca_key = make_ca(directory)
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """An anonymous broker for one test."""
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.kill()


class Listener:
    """A paho subscriber that records (topic, payload, retain) of everything it receives."""

    def __init__(
        self, broker: Broker, topics: list[str], *, session: str | None = None, **auth: str
    ) -> None:
        """``session``: a client id whose session the broker keeps while it is disconnected."""
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=session or f"test-{free_port()}",
            clean_session=session is None,
        )
        self.client.reconnect_delay_set(1, 1)
        if auth:
            self.client.username_pw_set(auth["username"], auth["password"])
        self.topics = topics

        def on_connect(c: paho.Client, *_: Any) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_subscribe(*_: Any) -> None:
            self._subscribed.set()

        def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
            with self._cond:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
                self._cond.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            raise RuntimeError("the test subscriber did not get its SUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(
        self, predicate: Callable[[list[tuple[str, bytes, bool]]], Any], timeout: float = 30.0
    ) -> Any:
        """Wait until ``predicate(messages)`` is truthy and return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self.messages))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({t for t, _, _ in self.messages})
                    raise AssertionError(f"timed out; topics seen: {topics}")
                self._cond.wait(min(left, 0.5))

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in list(self.messages) if t == topic and p]

    def latest(self, topic: str) -> bytes | None:
        payloads = [p for t, p, _ in list(self.messages) if t == topic]
        return payloads[-1] if payloads else None
