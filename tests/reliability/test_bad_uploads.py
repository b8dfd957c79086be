"""Hostile uploads to ``POST /predict``: each gets a 4xx with a JSON ``{"error", "detail"}``
(valid-but-unusual audio gets a correct 200), the service stays healthy and its memory bounded.

One real service (subprocess) serves the whole module; the uploads come from ``hostile.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.reliability import hostile
from tests.reliability.conftest import service_config
from tests.reliability.record import record
from tests.reliability.server import VENV_BIN, Service, free_port, write_config

MAX_UPLOAD_MB = 4
MAX_UPLOAD_S = 60
UPLOADS = list(hostile.uploads(max_upload_bytes=MAX_UPLOAD_MB * 2**20, max_duration_s=MAX_UPLOAD_S))
REJECTS = [u for u in UPLOADS if u.expect == "reject"]
ACCEPTS = [u for u in UPLOADS if u.expect == "accept"]
MEMORY_ROUNDS = 5
"""Rounds of the whole list for the memory check: one to warm up, the rest measured."""
MAX_RSS_GROWTH = 0.05
"""Resident memory may grow at most this fraction over the measured rounds."""
TRAVERSAL_TARGET = Path("/tmp/pandapulse-traversal.wav")


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint: Path
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("uploads")
    # The live side replays a second of silence in a loop: the lightest source, so the memory
    # measured is the uploads' (the synthetic source's generator swings by hundreds of MiB).
    quiet = tmp / "quiet.wav"
    sf.write(quiet, np.zeros((44_100, 2), np.float32), 44_100)
    port = free_port()
    token = secrets.token_urlsafe(24)
    config = service_config(
        tmp / "data",
        untrained_checkpoint,
        port,
        token,
        server={"max_upload_mb": MAX_UPLOAD_MB, "max_upload_s": MAX_UPLOAD_S},
        sources=[{"id": "pen", "kind": "file", "path": str(quiet), "realtime": True, "loop": True}],
    )
    path = write_config(tmp / "config.yaml", config)
    svc = Service(
        [str(VENV_BIN / "pandapulse"), "serve", "--config", str(path)],
        port=port,
        log_path=tmp / "service.log",
        token=token,
    )
    with svc:
        svc.wait_ready()
        yield svc


@pytest.fixture(scope="module")
def client(service: Service) -> Iterator[httpx.Client]:
    with service.client(timeout=120.0) as c:
        yield c


def post(client: httpx.Client, upload: hostile.Upload) -> httpx.Response:
    return client.post("/predict", **upload.request_kwargs())


def test_there_are_at_least_40_hostile_uploads() -> None:
    assert len(REJECTS) >= 40
    assert len({u.name for u in UPLOADS}) == len(UPLOADS)


@pytest.mark.parametrize("upload", REJECTS, ids=[u.name for u in REJECTS])
def test_hostile_upload_is_refused_with_a_json_error(
    client: httpx.Client, upload: hostile.Upload
) -> None:
    r = post(client, upload)
    body_note = r.text[:300]
    record("bad upload", upload.name, f"{r.status_code} {body_note}")
    assert 400 <= r.status_code < 500, f"{upload.name}: {r.status_code} {body_note}"
    if upload.statuses:
        assert r.status_code in upload.statuses, f"{upload.name}: {r.status_code} {body_note}"
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"] and " " not in body["error"]
    assert isinstance(body["detail"], str) and len(body["detail"]) >= 10
    assert "Traceback" not in body["detail"]
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("upload", ACCEPTS, ids=[u.name for u in ACCEPTS])
def test_unusual_but_valid_audio_is_scored(client: httpx.Client, upload: hostile.Upload) -> None:
    TRAVERSAL_TARGET.unlink(missing_ok=True)
    r = post(client, upload)
    record("bad upload", upload.name, f"{r.status_code}")
    assert r.status_code == 200, f"{upload.name}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert len(body["segments"]) >= upload.min_segments, body
    for seg in body["segments"]:
        assert abs(seg["p_success"] + seg["p_failure"] - 1) < 1e-3
        assert len(seg["attention"]) == 86
    if body["segments"]:
        assert (
            body["verdict"] in ("success", "failure", "uncertain") and 0 <= body["p_success"] <= 1
        )
    else:
        assert body["verdict"] is None and body["p_success"] is None
    assert not TRAVERSAL_TARGET.exists(), "the upload's file name was used as a path"


def test_error_details_name_no_internals(client: httpx.Client) -> None:
    """A keeper reads these sentences: no Python object reprs, memory addresses or temp paths."""
    leaks = []
    for upload in REJECTS:
        r = post(client, upload)
        detail = r.json().get("detail", "")
        if "object at 0x" in detail or "/tmp/" in detail or "SpooledTemporaryFile" in detail:
            leaks.append(f"{upload.name}: {detail[:160]}")
    record(
        "bad upload",
        "error details free of internals",
        f"{len(leaks)} of {len(REJECTS)} leak",
        leaks=leaks[:3],
    )
    assert leaks == [], "\n".join(leaks)


def test_memory_stays_bounded_over_repeated_hostile_rounds(
    service: Service, client: httpx.Client
) -> None:
    rss = []
    for _ in range(MEMORY_ROUNDS):
        for upload in UPLOADS:
            post(client, upload)
        rss.append(service.rss())
    growth = (rss[-1] - rss[0]) / rss[0]
    record(
        "bad upload",
        f"{MEMORY_ROUNDS} rounds of all {len(UPLOADS)} uploads",
        f"RSS {rss[0] / 2**20:.0f} -> {rss[-1] / 2**20:.0f} MiB ({growth:+.1%})",
        rss_mib=[round(r / 2**20, 1) for r in rss],
    )
    assert growth < MAX_RSS_GROWTH, f"RSS per round (MiB): {[r / 2**20 for r in rss]}"
    assert service.alive() and client.get("/healthz").status_code == 200
