# syntax=docker/dockerfile:1
# PandaPulse for the edge box: one process, one uvicorn worker, the sound card and the GPU.
#
#   GPU image (default): docker build -t pandapulse .
#   CPU-only image:      docker build -t pandapulse:cpu \
#                          --build-arg BASE=python:3.11.11-slim-bookworm .
#
# The CUDA base already carries a CUDA build of torch; a base without torch (the CPU build)
# gets torch from TORCH_INDEX, which defaults to PyTorch's CPU-only wheel index.
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

FROM ${BASE}

ARG TORCH_VERSION=2.5.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# PortAudio (sounddevice) and libsndfile (soundfile); ffmpeg lets uploads in MP3/OGG decode;
# the ALSA PulseAudio plugin lets the service capture through a host PulseAudio socket;
# sqlite3 is for the operator's online backups (deploy/README.md).
# DL3008 (pin apt versions) is ignored on purpose: the same line serves the Ubuntu-based CUDA
# image and the Debian-based CPU image, whose package versions differ; the pinned base tag
# fixes the distribution release, and with it these packages' major versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libportaudio2 libsndfile1 libasound2-plugins ffmpeg sqlite3 \
    && rm -rf /var/lib/apt/lists/*

# A base without torch gets the pinned CPU build; the CUDA base keeps its own.
RUN python -c "import torch" 2>/dev/null \
    || pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /opt/pandapulse
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY web ./web
# The project's own dependency ranges come from pyproject.toml; torch is already satisfied.
# Editable, so the service finds web/ beside its package as it does in a checkout.
RUN pip install --no-cache-dir -e . \
    && python -c "import model, service, sounddevice, soundfile"

# A dedicated user in the audio group: it may open /dev/snd, and nothing else of the host's.
RUN useradd --system --create-home --uid 10001 --gid audio --groups audio \
        --shell /usr/sbin/nologin pandapulse \
    && mkdir -p /data /models \
    && chown pandapulse:audio /data /models \
    && test "$(id -u pandapulse):$(getent group audio | cut -d: -f3)" = "10001:29"

# Settings by environment (service/config.py): listen on every interface of the container,
# keep the database and clips on the /data volume. With no config file the service runs its
# demo profile: the synthetic source and the bundled demo model.
# MALLOC_MMAP_THRESHOLD_: buffers of 128 KiB and more (audio blocks, segments, STFTs) get
# their own mappings, returned to the system when freed. With glibc's default (a threshold
# that rises as such buffers are freed) the heap fragments and resident memory creeps up by
# about 5-6 % per hour of audio; with it fixed, flat (RELIABILITY.md, soak).
ENV PYTHONUNBUFFERED=1 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    PANDAPULSE__SERVER__HOST=0.0.0.0 \
    PANDAPULSE__SERVER__PORT=8000 \
    PANDAPULSE__STORAGE__DATA_DIR=/data

VOLUME ["/data", "/models"]
EXPOSE 8000
# Numeric, so the runtime needs no passwd lookup (10001 = pandapulse, 29 = audio).
USER 10001:29

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PANDAPULSE__SERVER__PORT', '8000'), timeout=4)"]

# One worker: a second process would open the same sound card and load the model twice.
CMD ["pandapulse", "serve"]
