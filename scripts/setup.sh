#!/usr/bin/env bash
# Set up everything the service and the test suite need, from nothing, on a Debian machine.
# Idempotent: a second run only checks. Used by `make setup`, `make test` and `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.setup-stamp"

# System packages: PortAudio for sounddevice, libsndfile for soundfile, PulseAudio for the real
# capture tests, Chromium for the browser tests, espeak-ng and sox to make real speech in tests,
# ffmpeg so soundfile/librosa can read every upload format, Mosquitto for the MQTT tests, a
# Chinese font so the browser tests and screenshots of the zh-CN dashboard show its characters.
APT_PACKAGES=(libportaudio2 libsndfile1 libasound2-plugins pulseaudio pulseaudio-utils
              chromium espeak-ng sox ffmpeg mosquitto fonts-wqy-microhei)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: missing system packages (run as root or install them): ${missing[*]}" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q)

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    # Without an NVIDIA GPU take the CPU build of torch (a local wheel here, seconds);
    # with one, let pip resolve the open range in pyproject.toml to a CUDA build.
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        "${PIP[@]}" "torch==2.13.0" || "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu torch
    fi
    "${PIP[@]}" -e ".[dev]"
    touch "$STAMP"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
