"""The API end to end (FastAPI TestClient, lifespan included): auth on every route, the live
WebSocket, /predict parity with ``pandapulse predict --json``, encounters, clips, alerts,
exports, health and metrics."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from starlette.routing import Route
from starlette.websockets import WebSocketDisconnect

from model import aggregate
from model import constants as C
from service import cli
from service.api import create_app
from service.api.auth import RedactTokens, redact
from service.config import load_settings
from service.wire import MESSAGE_ADAPTER, Stats

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REAL_CALL = "real-calls/giant_panda_twittering.mp3"


@pytest.fixture(scope="module")
def synthetic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.synth import generate_encounter

    enc = generate_encounter(11, outcome="failure", duration_s=20.0)
    path = tmp_path_factory.mktemp("audio") / "encounter.wav"
    sf.write(path, enc.audio.T, C.SAMPLE_RATE)
    return path


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint: Path, synthetic_wav: Path
) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("service")
    settings = load_settings(
        environ={},
        overrides={
            "server": {
                "token": TOKEN,
                "max_upload_mb": 8,
                "max_upload_s": 60,
                "stats_interval_s": 0.5,
            },
            "sources": [
                # played at once (lossless): fills the database for the encounter tests
                {
                    "id": "replay",
                    "enclosure": "Replay yard",
                    "kind": "file",
                    "path": str(synthetic_wav),
                    "realtime": False,
                },
                # played in real time, looping: live events while a WebSocket listens
                {
                    "id": "live",
                    "kind": "file",
                    "path": str(synthetic_wav),
                    "realtime": True,
                    "loop": True,
                },
            ],
            "inference": {"model": str(untrained_checkpoint), "device": "cpu", "max_batch": 64},
            "encounter": {"min_segments_for_verdict": 2, "silence_close_s": 600},
            "storage": {"data_dir": str(data)},
        },
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _fill(path: str) -> str:
    return (
        path.replace("{encounter_id}", "1")
        .replace("{segment_id}", "1")
        .replace("{alert_id}", "1")
        .replace("{path:path}", "app.js")
        .replace("{version}", "v1")
    )


HIDDEN_ROUTES = [
    ("GET", "/"),
    ("GET", "/static/app.js"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
]
"""Routes left out of the OpenAPI schema (the dashboard's files and the docs themselves)."""


def test_every_route_but_healthz_needs_the_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = [(m.upper(), p) for p, ops in paths.items() for m in ops] + HIDDEN_ROUTES
    # Every route the app serves is checked: a new route is in the schema or listed above.
    served = {
        (method, route.path)
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert ("GET", "/healthz") in routes and served <= set(routes), served - set(routes)
    for method, path in routes:
        if path == "/healthz":
            continue
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": TOKEN},
            {"Authorization": "Bearer "},
        ):
            r = client.request(method, _fill(path), headers=headers)
            assert r.status_code == 401, (method, path, r.status_code)
            if path == "/":
                # The page itself: a self-contained sign-in form, and no dashboard.
                assert 'id="login-form"' in r.text and "app.js" not in r.text
            else:
                assert r.json()["error"] == "unauthorized"
    for url in ("/ws/live", "/ws/live?token=wrong"):
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url) as ws:
            ws.receive_text()
        assert refused.value.code == 4401


def test_live_websocket_snapshot_then_events(client: TestClient) -> None:
    seen: dict[str, Any] = {}
    with client.websocket_connect(f"/ws/live?token={TOKEN}") as ws:
        first = MESSAGE_ADAPTER.validate_json(ws.receive_text())
        assert first.type == "snapshot" and first.v == 1
        assert {s.id for s in first.sources} == {"replay", "live"}
        assert first.model.class_names == ["success", "failure"]
        # Meters and spectrogram come for the watched source only.
        ws.send_text(json.dumps({"type": "watch", "v": 1, "sources": ["live"]}))
        # A keeper action and a test alert arrive as events too.
        client.post("/api/alerts/test", headers=AUTH, json={"source": "live"})
        deadline = time.monotonic() + 90
        while not {"segment", "alert", "level", "spectrogram", "stats"} <= seen.keys():
            assert time.monotonic() < deadline, f"only {sorted(seen)} arrived"
            msg = MESSAGE_ADAPTER.validate_json(ws.receive_text())
            assert msg.v == 1
            if msg.type in ("level", "spectrogram"):
                assert msg.source == "live"
            seen.setdefault(msg.type, msg)
    seg = seen["segment"]
    assert 0 <= seg.p_success <= 1 and abs(seg.p_success + seg.p_failure - 1) < 1e-4
    assert len(seg.attention) == C.N_FRAMES and seg.running_p_success is not None
    spec = seen["spectrogram"]
    assert spec.bins > 0 and all(len(col) == spec.bins for col in spec.columns)
    assert seen["alert"].alert.kind == "test"


def _predict_cli(path: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert cli.main(["predict", "--json", "--device", "cpu", "--model", str(model), str(path)]) == 0
    return json.loads(capsys.readouterr().out)[str(path)]


@pytest.mark.parametrize("which", ["real", "synthetic"])
def test_predict_equals_the_cli(
    which: str,
    client: TestClient,
    shared_data: Path,
    synthetic_wav: Path,
    untrained_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = shared_data / REAL_CALL if which == "real" else synthetic_wav
    r = client.post("/predict", headers=AUTH, files={"file": (path.name, path.read_bytes())})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "segments",
        "p_success",
        "verdict",
        "duration_s",
        "mono",
        "source_rate",
        "model_version",
        "class_names",
        "uncertain_band",
        "class0_share",
    }
    assert body["uncertain_band"] == [0.4, 0.6]
    assert body["class0_share"] is None  # the untrained checkpoint records no training share
    assert body["verdict"] == aggregate.verdict(body["p_success"])
    assert body["segments"], "the recording has calls: expected segments"
    running = aggregate.running_series([seg["p_success"] for seg in body["segments"]])
    for seg, figure in zip(body["segments"], running, strict=True):
        assert len(seg.pop("attention")) == C.N_FRAMES
        assert set(seg) == {"start_s", "end_s", "p_success", "p_failure", "running_p_success"}
        assert seg["running_p_success"] == pytest.approx(figure, abs=2e-4)
    assert body["segments"][-1]["running_p_success"] == pytest.approx(body["p_success"], abs=1e-4)
    expected = _predict_cli(path, untrained_checkpoint, capsys)
    assert body == expected
    if which == "real":
        assert body["mono"] is True and body["source_rate"] == 22_050


def _flac(seconds: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * 8000), 1), np.float32), 8000, format="FLAC")
    return buf.getvalue()


def test_predict_refusals(client: TestClient) -> None:
    def post(**kwargs: Any) -> Any:
        r = client.post("/predict", headers={**AUTH, **kwargs.pop("headers", {})}, **kwargs)
        body = r.json()
        assert set(body) == {"error", "detail"} and "Traceback" not in body["detail"], body
        assert "object at 0x" not in body["detail"] and "/tmp/" not in body["detail"], body
        return r.status_code, body["error"]

    assert post(files={"file": ("notes.txt", b"this is not audio at all" * 10)}) == (
        422,
        "bad_audio",
    )
    assert post(files={"other": ("a.flac", _flac(1))}) == (422, "missing_file")
    assert post(content=b"raw", headers={"Content-Type": "audio/wav"}) == (
        415,
        "unsupported_media_type",
    )
    assert post(files={"file": ("long.flac", _flac(61))}) == (413, "too_long")
    big = np.random.default_rng(0).bytes(9 * 1024 * 1024)
    assert post(files={"file": ("big.wav", big)}) == (413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n\r\n'
        for _ in range(10):
            yield bytes(1024 * 1024)

    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    assert post(content=chunks(), headers=headers) == (413, "too_large")
    assert client.get("/healthz").status_code == 200  # still serving


def test_predict_answers_what_the_whole_file_gives(
    client: TestClient, synthetic_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service streams the upload: it never decodes the whole file (load is not called),
    # and still answers exactly what the whole decoded recording gives, with its classifier.
    from model import preprocessing
    from tests.model.test_predict_blocks import whole_file_analyse

    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    recording = preprocessing.load(synthetic_wav)
    expected = whole_file_analyse(
        recording,
        runtime.classifier,
        runtime.settings.detector,
        band=runtime.settings.encounter.uncertain_band,
    )
    assert expected["segments"]

    def whole_file(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("/predict decoded the whole file")

    monkeypatch.setattr(preprocessing, "load", whole_file)
    files = {"file": (synthetic_wav.name, synthetic_wav.read_bytes())}
    r = client.post("/predict", headers=AUTH, files=files)
    assert r.status_code == 200, r.text
    assert r.json() == json.loads(json.dumps(expected))


def _wait_for_replay(client: TestClient) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        page = client.get("/api/encounters", headers=AUTH, params={"source": "replay"}).json()
        done = [e for e in page["items"] if e["n_segments"] >= 2]
        if done:
            return done[-1]
        assert time.monotonic() < deadline, page
        time.sleep(0.2)


def test_encounters_clips_and_exports(client: TestClient) -> None:
    enc = _wait_for_replay(client)
    assert enc["auto"] is True and enc["enclosure"] == "Replay yard"
    detail = client.get(f"/api/encounters/{enc['id']}", headers=AUTH).json()
    assert len(detail["segments"]) == detail["n_segments"] >= 2
    seg = detail["segments"][0]
    clip = client.get(seg["clip_url"], headers=AUTH)
    assert clip.status_code == 200 and clip.headers["content-type"] == "audio/flac"
    audio, rate = sf.read(io.BytesIO(clip.content), always_2d=True)
    assert rate == C.SAMPLE_RATE and audio.shape[1] == 2
    assert audio.shape[0] == round((seg["end_s"] - seg["start_s"]) * C.SAMPLE_RATE)
    assert client.get(f"{seg['clip_url']}?token={TOKEN}").status_code == 200  # <audio src=...>

    rows = list(
        csv.DictReader(
            io.StringIO(client.get(f"/api/encounters/{enc['id']}/export.csv", headers=AUTH).text)
        )
    )
    assert [int(r["id"]) for r in rows] == [s["id"] for s in detail["segments"]]
    all_rows = list(
        csv.DictReader(io.StringIO(client.get("/api/encounters/export.csv", headers=AUTH).text))
    )
    assert str(enc["id"]) in {r["id"] for r in all_rows} and "outcome" in all_rows[0]

    # A keeper starts an encounter on the replay source, stops it, records the outcome.
    made = client.post(
        "/api/encounters",
        headers=AUTH,
        json={"source": "replay", "pair": "Mei x Da", "keeper": "Li"},
    )
    assert (
        made.status_code == 201 and made.json()["auto"] is False and made.json()["ended_at"] is None
    )
    eid = made.json()["id"]
    stopped = client.post(f"/api/encounters/{eid}/stop", headers=AUTH).json()
    assert stopped["ended_at"] is not None
    out = client.put(
        f"/api/encounters/{eid}/outcome",
        headers=AUTH,
        json={"outcome": "success", "copulation_observed": True, "notes": "mounting seen"},
    ).json()
    assert (
        out["outcome"] == "success"
        and out["copulation_observed"] is True
        and out["notes"] == "mounting seen"
    )
    listed = client.get("/api/encounters", headers=AUTH, params={"limit": 1}).json()
    assert listed["items"][0]["id"] == eid and listed["total"] >= 2

    def status(method: str, url: str, **kw: Any) -> tuple[int, str]:
        r = client.request(method, url, headers=AUTH, **kw)
        return r.status_code, r.json()["error"]

    assert status("POST", "/api/encounters", json={"source": "nowhere"}) == (404, "unknown_source")
    assert status("POST", "/api/encounters", json={"source": "replay", "colour": 1})[0] == 422
    assert status("PUT", f"/api/encounters/{eid}/outcome", json={"outcome": "maybe"}) == (
        422,
        "invalid_request",
    )
    assert status("GET", "/api/encounters/999999") == (404, "not_found")
    assert status("POST", "/api/encounters/999999/stop") == (404, "not_found")
    assert status("GET", "/api/segments/999999/clip") == (404, "not_found")
    assert status("GET", "/api/encounters", params={"limit": 0}) == (422, "invalid_request")


def test_alerts_test_list_acknowledge(client: TestClient) -> None:
    made = client.post("/api/alerts/test", headers=AUTH)
    assert made.status_code == 201
    alert = made.json()
    assert alert["kind"] == "test" and alert["acknowledged_at"] is None
    assert alert["id"] in {
        a["id"] for a in client.get("/api/alerts?open=true", headers=AUTH).json()
    }
    acked = client.post(f"/api/alerts/{alert['id']}/ack", headers=AUTH, json={"by": "Li"}).json()
    assert acked["acknowledged_by"] == "Li" and acked["acknowledged_at"] is not None
    assert alert["id"] not in {
        a["id"] for a in client.get("/api/alerts?open=true", headers=AUTH).json()
    }
    assert client.post("/api/alerts/999999/ack", headers=AUTH).status_code == 404
    assert (
        client.post("/api/alerts/test", headers=AUTH, json={"source": "nowhere"}).status_code == 404
    )


def test_health_stats_metrics_sources(client: TestClient) -> None:
    ready = client.get("/readyz", headers=AUTH)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    stats = Stats.model_validate(client.get("/stats", headers=AUTH).json())
    assert set(stats.sources) == {"replay", "live"} and stats.device == "cpu"
    metrics = client.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "pandapulse_ws_clients",
        "pandapulse_inference_segments_total",
        "pandapulse_outbox_pending",
        'pandapulse_source_blocks_total{source="replay"}',
        "pandapulse_predict_requests_total",
        "pandapulse_alerts_raised_total",
        "pandapulse_webhook_delivered_total",
    ):
        assert name in metrics.text
    sources = client.get("/api/sources", headers=AUTH).json()
    assert [(s["id"], s["kind"]) for s in sources] == [("replay", "file"), ("live", "file")]
    # Two sources: read in the small blocks that keep the live latency low.
    from service.audio import block_samples_for

    live = client.app.state.runtime.pipeline.sources["live"]
    assert live.block_sizes == (block_samples_for(2),)


def test_dashboard_files_and_docs(client: TestClient) -> None:
    page = client.get(f"/?token={TOKEN}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "httponly" in page.headers["set-cookie"].lower()
    assert client.get("/static/../service/config.py", headers=AUTH).status_code == 404
    assert client.get("/static/%2e%2e/pyproject.toml", headers=AUTH).status_code == 404
    assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"] == "PandaPulse"
    assert client.get("/docs", headers=AUTH).status_code == 200


def test_token_redacted_from_log_records() -> None:
    assert (
        redact('"WebSocket /ws/live?token=abc&x=1" [accepted]')
        == '"WebSocket /ws/live?token=***&x=1" [accepted]'
    )
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1", "/ws/live?token=s3cret"),
        None,
    )
    RedactTokens().filter(record)
    assert "s3cret" not in record.getMessage()


def test_routes_answer_503_while_the_service_is_not_running(
    tmp_path: Path, untrained_checkpoint: Path
) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "server": {"token": TOKEN},
            "sources": [{"id": "north", "kind": "synthetic"}],
            "inference": {"model": str(untrained_checkpoint), "device": "cpu"},
            "storage": {"data_dir": str(tmp_path / "data")},
        },
    )
    app = create_app(settings)

    def refused(client: TestClient) -> None:
        assert client.get("/healthz").status_code == 200  # liveness: the process answers
        for method, path, body in (
            ("GET", "/stats", None),
            ("GET", "/readyz", None),
            ("GET", "/api/encounters", None),
            ("POST", "/api/encounters", {"source": "north"}),
            ("POST", "/api/alerts/test", {}),
        ):
            answer = client.request(method, path, headers=AUTH, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"] == "not_running" and answer.headers["Retry-After"]
        with (
            client.websocket_connect(f"/ws/live?token={TOKEN}") as ws,
            pytest.raises(WebSocketDisconnect) as closed,
        ):
            ws.receive_text()
        assert closed.value.code == 1013

    refused(TestClient(app))  # before the lifespan ran
    with TestClient(app) as client:
        assert client.get("/readyz", headers=AUTH).status_code == 200
        created = client.post("/api/encounters", headers=AUTH, json={"source": "north"})
        assert created.status_code == 201
    refused(TestClient(app))  # after shutdown
