"""A private PulseAudio server for hardware-path tests.

``PulseServer`` starts its own ``pulseaudio`` daemon in a temporary runtime directory with a
null sink (``enclosure``, 44.1 kHz stereo float). Playing a file into the sink with ``paplay``
and capturing the sink's monitor through sounddevice (ALSA's ``pulse`` device, with
``PULSE_SOURCE=<sink>.monitor``) exercises the real capture path: PortAudio, ALSA, a sound
server, its clock. The daemon listens only on its own socket (``PULSE_SERVER=unix:...``) and
never touches a system or user PulseAudio, nor the user's home directory.

A null sink renders nothing while nothing plays into it, so its monitor then delivers no
audio at all (unlike a real sound card, which always delivers room noise); start the capture,
then play.

Used by ``tests/service/conftest.py`` (fixture ``pulse``); the sink can be unloaded and loaded
again to simulate a sound card that vanishes and comes back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SINK = "enclosure"
RATE = 44_100
CHANNELS = 2
TOOLS = ("pulseaudio", "pactl", "paplay")


def missing_tools() -> list[str]:
    """The PulseAudio programs not installed here (scripts/setup.sh installs them)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


class PulseError(RuntimeError):
    """The private PulseAudio server could not be started or driven."""


class PulseServer:
    """A private PulseAudio daemon with one null sink. Use as a context manager, or call
    ``start()`` and ``stop()``."""

    def __init__(self, *, sink: str = SINK, rate: int = RATE, channels: int = CHANNELS) -> None:
        self.sink = sink
        self.rate = rate
        self.channels = channels
        # A short path: a unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="pp-pulse-"))
        self.runtime = self.root / "runtime"
        self.socket = self.runtime / "native"
        self._process: subprocess.Popen[bytes] | None = None
        self._sink_module: int | None = None
        self._log = self.root / "pulseaudio.log"

    @property
    def env(self) -> dict[str, str]:
        """Variables that point clients (pactl, paplay, ALSA's pulse plugin) at this server."""
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.runtime),
            "PULSE_STATE_PATH": str(self.root / "state"),
            "PULSE_COOKIE": str(self.root / "cookie"),
            "PULSE_SOURCE": f"{self.sink}.monitor",
            "PULSE_SINK": self.sink,
        }

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        # The daemon keeps its files under HOME and XDG_RUNTIME_DIR: give it ours.
        env.update(
            HOME=str(self.root), XDG_RUNTIME_DIR=str(self.runtime), XDG_CONFIG_HOME=str(self.root)
        )
        return env

    def start(self, timeout: float = 15.0) -> PulseServer:
        missing = missing_tools()
        if missing:
            raise PulseError(
                f"PulseAudio tools missing: {', '.join(missing)} (run scripts/setup.sh)"
            )
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.root / "state").mkdir(exist_ok=True)
        script = self.root / "default.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 auth-cookie-enabled=0"
            f" socket={self.socket}\n"
        )
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(
                [
                    "pulseaudio",
                    "-n",  # no default.pa: only our script
                    "-F",
                    str(script),
                    "--daemonize=no",
                    "--exit-idle-time=-1",
                    "--use-pid-file=no",
                    "--disable-shm=yes",  # memfd blocks are flaky in containers; use the socket
                    "--disallow-exit",
                    "--log-target=stderr",
                    "--log-level=notice",
                ],
                env=self._child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise PulseError(
                    f"pulseaudio exited ({self._process.returncode}): {self.log_tail()}"
                )
            if self.socket.exists() and self._pactl_ok("info"):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise PulseError(
                    f"pulseaudio did not answer within {timeout:g} s: {self.log_tail()}"
                )
            time.sleep(0.1)
        self.load_sink()
        return self

    def stop(self) -> None:
        """Stop the daemon and remove its files. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._sink_module = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PulseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving it --------------------------------------------------------------------------

    def pactl(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``pactl`` against this server; its output, or PulseError."""
        result = subprocess.run(
            ["pactl", *args], env=self._child_env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise PulseError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _pactl_ok(self, *args: str) -> bool:
        try:
            self.pactl(*args, timeout=2.0)
        except (PulseError, subprocess.TimeoutExpired):
            return False
        return True

    def load_sink(self) -> int:
        """Load the null sink (and so its monitor source); its module index."""
        if self._sink_module is not None:
            return self._sink_module
        out = self.pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={self.sink}",
            f"rate={self.rate}",
            f"channels={self.channels}",
            "format=float32le",
        )
        self._sink_module = int(out.strip())
        return self._sink_module

    def unload_sink(self) -> None:
        """Remove the null sink: a capture of its monitor loses its device."""
        if self._sink_module is not None:
            self.pactl("unload-module", str(self._sink_module))
            self._sink_module = None

    @property
    def sink_loaded(self) -> bool:
        return self._sink_module is not None

    def play(
        self, path: str | Path, *, wait: bool = True, timeout: float = 120.0
    ) -> subprocess.Popen[bytes]:
        """Play a sound file into the sink with ``paplay``; waits for the end unless told not
        to (then the caller owns the returned process)."""
        process = subprocess.Popen(
            ["paplay", f"--device={self.sink}", str(path)],
            env=self._child_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if wait:
            try:
                _, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise PulseError(f"paplay {path} did not finish within {timeout:g} s") from None
            if process.returncode != 0:
                raise PulseError(f"paplay {path} failed: {err.decode(errors='replace').strip()}")
        return process

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def refresh_portaudio() -> None:
    """Make PortAudio enumerate devices again (it lists them once, when initialised), so the
    ALSA ``pulse`` device sees the server started after ``sounddevice`` was imported. Only
    call it while no stream is open."""
    import sounddevice as sd

    sd._terminate()
    sd._initialize()
