"""Models swapped and compared without a restart: the admin token, checked uploads, activation
at a batch boundary during live scoring, rollback, shadow agreement and the active model kept
across a restart (FastAPI TestClient, lifespan, real pipeline, SQLite and model files)."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from model import aggregate, checkpoint
from model import constants as C
from model.classifier import Classifier
from model.errors import CheckpointError
from model.network import CGANet
from model.predict import analyse
from model.preprocessing import load
from service.api import create_app
from service.audio import ReplaySource
from service.config import Settings, load_settings
from service.doctor import Finding, Note, check_stored_models
from service.errors import ConfigError
from service.main import build_settings
from service.models_store import MODELS_DIR, probe_segment
from service.pipeline import Pipeline
from service.types import ScoredSegment
from service.wire import ModelList, Stats
from tests.service.conftest import drain

TOKEN = "keepers-token-0123456789"
ADMIN = "admin-token-9876543210"
KEEPER = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}


# --- checkpoints ---------------------------------------------------------------------------------
def _network(seed: int, temperature: float) -> CGANet:
    torch.manual_seed(seed)
    net = CGANet()
    net.temperature.fill_(temperature)  # a sharper (or flatter) model than the untrained one
    return net


def _save(path: Path, net: CGANet, **meta: Any) -> Path:
    checkpoint.save(path, net, {"data": {"recordings": 12}, **meta})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid checkpoints ``b`` and ``c`` and one invalid file per check."""
    d = tmp_path_factory.mktemp("models")
    out = {
        "b": _save(
            d / "b.safetensors",
            _network(99, 0.05),
            metrics={"val_auc": 0.71, "history": [{"epoch": 1}], "calibration": {"temperature": 2}},
        ),
        "c": _save(d / "c.safetensors", _network(7, 0.2)),
        "classes": _save(
            d / "classes.safetensors", _network(5, 1.0), class_names=["calm", "agitated"]
        ),
        "combined": _save(d / "combined.safetensors", CGANet(n_features=C.COMBINED_FEATURES)),
    }
    nan = _network(3, 1.0)
    with torch.no_grad():
        nan.classifier.weight.fill_(float("nan"))
    out["nan"] = _save(d / "nan.safetensors", nan)
    (d / "garbage.safetensors").write_bytes(b"this is not a checkpoint" * 100)
    out["garbage"] = d / "garbage.safetensors"
    save_file({"w": torch.zeros(3)}, str(d / "foreign.safetensors"), metadata={"x": "y"})
    out["foreign"] = d / "foreign.safetensors"
    # Weights changed after saving: they no longer match the recorded version.
    state = load_file(str(out["c"]))
    meta = checkpoint.read_metadata(out["c"])
    state["classifier.bias"] = state["classifier.bias"] + 1.0
    save_file(state, str(d / "tampered.safetensors"), metadata={"pandapulse": json.dumps(meta)})
    out["tampered"] = d / "tampered.safetensors"
    return out


def version_of(path: Path) -> str:
    return str(checkpoint.read_metadata(path)["model_version"])


def upload(client: TestClient, path: Path, headers: dict[str, str] = ADMIN_H) -> Any:
    return client.post(
        "/api/models", headers=headers, files={"file": (path.name, path.read_bytes())}
    )


def ensure_uploaded(client: TestClient, path: Path) -> str:
    r = upload(client, path)
    assert r.status_code in (201, 409), r.text
    return version_of(path)


def model_list(client: TestClient) -> ModelList:
    r = client.get("/api/models", headers=KEEPER)
    assert r.status_code == 200, r.text
    return ModelList.model_validate(r.json())


def stats(client: TestClient) -> Stats:
    return Stats.model_validate(client.get("/stats", headers=KEEPER).json())


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def settings_for(data: Path, model: Path, sources: list[dict[str, Any]]) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "server": {"token": TOKEN, "admin_token": ADMIN, "stats_interval_s": 0.5},
            "sources": sources,
            "inference": {"model": str(model), "device": "cpu", "precision": "fp32"},
            "encounter": {"silence_close_s": 600},
            "storage": {"data_dir": str(data)},
        },
    )


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.synth import generate_encounter

    enc = generate_encounter(21, outcome="success", duration_s=20.0)
    path = tmp_path_factory.mktemp("audio") / "encounter.wav"
    sf.write(path, enc.audio.T, C.SAMPLE_RATE, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint: Path
) -> Iterator[TestClient]:
    """The service on a real-time synthetic source that keeps producing calls."""
    data = tmp_path_factory.mktemp("live-data")
    settings = settings_for(
        data,
        untrained_checkpoint,
        [{"id": "yard", "kind": "synthetic", "seed": 4, "realtime": True}],
    )
    with TestClient(create_app(settings)) as client:
        yield client


# --- configuration and tokens --------------------------------------------------------------------
def test_admin_token_is_distinct_and_read_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="admin_token equals token"):
        load_settings(environ={}, overrides={"server": {"token": "same", "admin_token": "same"}})
    with pytest.raises(ConfigError, match="blank"):
        load_settings(environ={"PANDAPULSE__SERVER__ADMIN_TOKEN": "  "})
    args = argparse.Namespace(config=None, host=None, port=None, token="k-token")
    settings, _ = build_settings(args, {"PANDAPULSE_ADMIN_TOKEN": "a-token"})
    assert settings.server.admin_token is not None
    assert settings.server.admin_token.get_secret_value() == "a-token"
    assert "a-token" not in repr(settings)
    with pytest.raises(ConfigError, match="admin_token equals token"):
        build_settings(args, {"PANDAPULSE_ADMIN_TOKEN": "k-token"})
    # Empty is how compose passes an unset variable: no admin token; blank is a mistake.
    assert build_settings(args, {"PANDAPULSE_ADMIN_TOKEN": ""})[0].server.admin_token is None
    with pytest.raises(ConfigError, match="blank"):
        build_settings(args, {"PANDAPULSE_ADMIN_TOKEN": "  "})


def test_model_routes_need_the_admin_token(live: TestClient, ckpt: dict[str, Path]) -> None:
    version = version_of(ckpt["c"])
    changes = [
        ("POST", "/api/models/rollback"),
        ("POST", f"/api/models/{version}/activate"),
        ("POST", f"/api/models/{version}/shadow"),
        ("DELETE", f"/api/models/{version}/shadow"),
    ]
    for method, path in changes:
        assert live.request(method, path).status_code == 401
        assert live.request(method, path, headers={"Authorization": "Bearer x"}).status_code == 401
        refused = live.request(method, path, headers=KEEPER)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["error"] == "forbidden"
        assert "keepers' token cannot change models" in refused.json()["detail"]
    r = upload(live, ckpt["c"], headers=KEEPER)
    assert r.status_code == 403 and "admin token" in r.json()["detail"]
    assert version not in {m.version for m in model_list(live).models}
    # Reading the list is the keepers' right; the admin token works wherever theirs does.
    assert live.get("/api/models").status_code == 401
    assert live.get("/api/models", headers=ADMIN_H).status_code == 200
    assert live.get("/stats", headers=ADMIN_H).status_code == 200
    assert live.get("/api/models", params={"token": ADMIN}).status_code == 200
    # The routes and their answers are in the OpenAPI schema.
    schema = live.get("/openapi.json", headers=KEEPER).json()
    for path in ("/api/models", "/api/models/{version}/activate", "/api/models/rollback"):
        assert path in schema["paths"], path
    assert {"ModelList", "ModelCard", "ShadowStats"} <= set(schema["components"]["schemas"])


def test_without_an_admin_token_model_changes_are_off(
    tmp_path: Path, untrained_checkpoint: Path, recording: Path
) -> None:
    settings = load_settings(
        environ={},
        overrides={
            "server": {"token": TOKEN},
            "sources": [{"id": "r", "kind": "file", "path": str(recording), "realtime": False}],
            "inference": {"model": str(untrained_checkpoint), "device": "cpu"},
            "storage": {"data_dir": str(tmp_path / "data")},
        },
    )
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/models/rollback", headers=KEEPER)
        assert r.status_code == 403 and "server.admin_token" in r.json()["detail"]


def test_a_startup_model_that_gives_no_probabilities_is_refused_with_its_reason(
    tmp_path: Path, ckpt: dict[str, Path], recording: Path
) -> None:
    """The model the service starts with passes the same test inference as an uploaded one,
    so a broken checkpoint stops the start with the reason instead of scoring NaN."""
    settings = settings_for(
        tmp_path / "data",
        ckpt["nan"],
        [{"id": "r", "kind": "file", "path": str(recording), "realtime": False}],
    )
    with (
        pytest.raises(CheckpointError, match="do not give probabilities"),
        TestClient(create_app(settings)),
    ):
        pass


# --- uploads ---------------------------------------------------------------------------------------
def _stored_files(client: TestClient) -> dict[str, bytes]:
    folder = client.app.state.settings.storage.data_dir / MODELS_DIR  # type: ignore[attr-defined]
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_uploads_are_checked_and_bad_ones_change_nothing(
    live: TestClient, ckpt: dict[str, Path], untrained_checkpoint: Path
) -> None:
    before = model_list(live)
    # The configured model was recorded at start-up, so it can be activated again later.
    assert before.active == version_of(untrained_checkpoint)
    configured = {m.version: m for m in before.models}[before.active]
    assert configured.role == "active" and configured.origin == "config"
    files = _stored_files(live)
    refusals = {
        "garbage": "not a safetensors checkpoint",
        "foreign": "no PandaPulse metadata",
        "combined": "live pipeline computes 40 MFCC",
        "classes": "classes ['calm', 'agitated']",
        "tampered": "do not match the recorded model version",
        "nan": "do not give probabilities",
    }
    for name, why in refusals.items():
        r = upload(live, ckpt[name])
        assert r.status_code == 422, (name, r.text)
        assert r.json()["error"] == "invalid_model" and why in r.json()["detail"], r.text
        assert "/tmp" not in r.json()["detail"] and ".upload-" not in r.json()["detail"]
    r = live.post("/api/models", headers=ADMIN_H, files={"file": ("b.pt", ckpt["b"].read_bytes())})
    assert r.status_code == 422 and ".safetensors" in r.json()["detail"]
    r = live.post("/api/models", headers=ADMIN_H, files={"other": ("b.safetensors", b"x")})
    assert r.status_code == 422 and r.json()["error"] == "missing_file"
    r = live.post("/api/models", headers=ADMIN_H, json={"file": "b"})
    assert r.status_code == 415
    assert _stored_files(live) == files, "a refused upload changed the stored models"
    assert model_list(live) == before

    r = upload(live, ckpt["b"])
    assert r.status_code == 201, r.text
    card = r.json()
    version = version_of(ckpt["b"])
    assert card["version"] == version and card["role"] is None and card["origin"] == "upload"
    assert card["filename"] == "b.safetensors" and card["class_names"] == ["success", "failure"]
    assert card["feature_kind"] == "mfcc" and card["n_features"] == C.N_MFCC
    assert card["val_auc"] == 0.71 and card["calibrated"] and card["recordings"] == 12
    assert "history" not in card["card"]["metrics"]
    stored = live.app.state.settings.storage.data_dir / MODELS_DIR / f"{version}.safetensors"  # type: ignore[attr-defined]
    assert stored.read_bytes() == ckpt["b"].read_bytes()
    again = upload(live, ckpt["b"])
    assert again.status_code == 409 and again.json()["error"] == "already_stored"
    after = model_list(live)
    assert [m.version for m in after.models] == [m.version for m in before.models] + [version]
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".")]
    # Unknown versions and malformed ones.
    assert live.post("/api/models/abcdef123456/activate", headers=ADMIN_H).status_code == 404
    assert live.post("/api/models/..%2Fx/activate", headers=ADMIN_H).status_code in (404, 422)


# --- activation during live scoring ----------------------------------------------------------------
class SegmentSpy:
    """Wraps the monitor's ``on_segment`` and keeps each scored segment (from the worker)."""

    def __init__(self, original: Callable[[ScoredSegment], None]) -> None:
        self.original = original
        self.lock = threading.Lock()
        self.segments: list[ScoredSegment] = []

    def __call__(self, event: ScoredSegment) -> None:
        with self.lock:
            self.segments.append(event)
        self.original(event)

    def count(self, version: str) -> int:
        with self.lock:
            return sum(1 for s in self.segments if s.model_version == version)


def _versions_switch_once(versions: list[str], old: str, new: str) -> bool:
    if not versions or versions[-1] != new:
        return False
    first_new = versions.index(new)
    return set(versions[:first_new]) <= {old} and set(versions[first_new:]) == {new}


def test_activate_swaps_at_a_batch_boundary_while_audio_flows(
    live: TestClient, ckpt: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = live.app.state.runtime  # type: ignore[attr-defined]
    old = rt.model_version
    new = ensure_uploaded(live, ckpt["b"])
    spy = SegmentSpy(rt.monitor.on_segment)
    monkeypatch.setattr(rt.monitor, "on_segment", spy)
    first_id = rt.monitor.segments_stored
    wait_for("segments from the old model", lambda: spy.count(old) >= 3)
    r = live.post(f"/api/models/{new}/activate", headers=ADMIN_H)
    assert r.status_code == 200, r.text
    listed = ModelList.model_validate(r.json())
    assert (listed.active, listed.previous) == (new, old)
    assert {m.version: m.role for m in listed.models}[old] == "previous"
    wait_for("segments from the new model", lambda: spy.count(new) >= 3)
    # Audio keeps flowing: snapshot what was scored, then let the storage thread catch up.
    with spy.lock:
        seen = list(spy.segments)
    drain(rt.monitor)
    by_batch: dict[int, set[str]] = {}
    for seg in seen:
        by_batch.setdefault(seg.batch, set()).add(seg.model_version)
    assert all(len(v) == 1 for v in by_batch.values()), "a batch mixed two models"
    ordered = [next(iter(by_batch[b])) for b in sorted(by_batch)]
    assert _versions_switch_once(ordered, old, new), ordered
    assert [s.batch for s in seen] == sorted(s.batch for s in seen)
    # The stored segments record the version that scored them, and it changes once.
    segments = rt.pipeline.stats()
    stored = live.get("/api/encounters", headers=KEEPER, params={"limit": 500}).json()["items"]
    every = []
    for enc in sorted(stored, key=lambda e: e["id"]):
        every += live.get(f"/api/encounters/{enc['id']}", headers=KEEPER).json()["segments"]
    rows = sorted((s for s in every if s["id"] > first_id), key=lambda s: s["id"])
    assert _versions_switch_once([s["model_version"] for s in rows], old, new)
    # No audio or segment was lost around the swap.
    lane = segments.sources["yard"]
    assert lane.source.dropped_blocks == 0 and lane.source.overflows == 0
    assert lane.dropped_segments == 0 and segments.inference.dropped_segments == 0
    assert segments.inference.sink_errors == 0 and rt.monitor.store_errors == 0
    # Each segment scored around the swap is stored, with the version that scored it.
    version_at = {(s["source"], s["start_s"]): s["model_version"] for s in every}
    assert [version_at.get((s.source_id, round(s.start / C.SAMPLE_RATE, 4))) for s in seen] == [
        s.model_version for s in seen
    ]
    assert stats(live).model_version == new
    assert live.get("/readyz", headers=KEEPER).json()["model_version"] == new
    assert rt.model_info().version == new


def test_rollback_and_shadow(live: TestClient, ckpt: dict[str, Path]) -> None:
    rt = live.app.state.runtime  # type: ignore[attr-defined]
    b = ensure_uploaded(live, ckpt["b"])
    c = ensure_uploaded(live, ckpt["c"])
    if rt.model_version != b:
        assert live.post(f"/api/models/{b}/activate", headers=ADMIN_H).status_code == 200
    configured = model_list(live).previous
    assert configured is not None and configured != b
    r = live.post("/api/models/rollback", headers=ADMIN_H)
    assert r.status_code == 200, r.text
    assert (r.json()["active"], r.json()["previous"]) == (configured, b)
    assert rt.pipeline.classifier.version == configured
    r = live.post("/api/models/rollback", headers=ADMIN_H)
    assert (r.json()["active"], r.json()["previous"]) == (b, configured)
    metrics = live.get("/metrics", headers=KEEPER).text
    swaps = next(line for line in metrics.splitlines() if line.startswith("pandapulse_model_swaps"))
    assert float(swaps.split()[-1]) == rt.model_swaps >= 2
    assert "pandapulse_shadow_errors_total 0" in metrics

    assert live.post(f"/api/models/{b}/shadow", headers=ADMIN_H).status_code == 409
    assert live.delete(f"/api/models/{c}/shadow", headers=ADMIN_H).status_code == 404
    r = live.post(f"/api/models/{c}/shadow", headers=ADMIN_H)
    assert r.status_code == 200, r.text
    assert r.json()["shadow"] == c
    assert {m["version"]: m["role"] for m in r.json()["models"]}[c] == "shadow"
    shadowed = wait_for(
        "shadow agreement in /stats",
        lambda: (
            (s := stats(live).shadow) is not None
            and any(a.segments >= 2 for a in s.sources.values())
            and s
        ),
    )
    assert shadowed.model_version == c
    agreement = shadowed.sources["yard"]
    assert 0.0 <= (agreement.same_verdicts or 0.0) <= 1.0
    assert agreement.mean_abs_diff is not None and 0.0 <= agreement.mean_abs_diff <= 1.0
    assert agreement.active_verdict in ("success", "failure", "uncertain")
    # The shadow drives nothing: the stored segments are the active model's.
    assert stats(live).model_version == b

    def stored_versions(n: int) -> set[str]:
        rows = rt.monitor.store.run(lambda s: s.recent_segments(n)).result(timeout=30)
        return {row.model_version for row in rows}

    # (Segments scored during the rollbacks above may still be among the latest few.)
    wait_for("the active model's segments stored", lambda: stored_versions(5) == {b})
    assert c not in stored_versions(200)
    r = live.delete(f"/api/models/{c}/shadow", headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["shadow"] is None
    assert stats(live).shadow is None and rt.pipeline.shadow is None
    # Activating the shadow model ends the shadow.
    assert live.post(f"/api/models/{c}/shadow", headers=ADMIN_H).status_code == 200
    r = live.post(f"/api/models/{c}/activate", headers=ADMIN_H)
    assert (r.json()["active"], r.json()["shadow"], r.json()["previous"]) == (c, None, b)


# --- shadow agreement, computed independently -----------------------------------------------------
def test_shadow_agreement_matches_an_independent_computation(
    recording: Path,
    untrained_checkpoint: Path,
    monitor_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    active = Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=8)
    audio = load(recording)
    a = [s["p_success"] for s in analyse(audio, active)["segments"]]
    # The shadow: the same network, recalibrated so that its P(success) straddles the
    # uncertain band on this recording (some verdicts agree with the active model's, some not).
    net, _ = checkpoint.load(untrained_checkpoint)
    middle = float(np.median(np.log(np.divide(a, np.subtract(1.0, a)))))
    net.temperature.fill_(0.1)
    net.calibration_bias.fill_(-middle / 0.1)
    # ... and trained, as its recorded data says, on 60 % success segments: its running figure
    # takes that share out, the active model's (which records none) is the mean
    data = {
        "class_names": ["success", "failure"],
        "segments_per_class": {"success": 3, "failure": 2},
    }
    meta = checkpoint.save(tmp_path / "shadow.safetensors", net, {"data": data})
    shadow = Classifier(net, meta, device="cpu")
    assert shadow.class0_share == pytest.approx(0.6) and active.class0_share is None
    monitor, _ = monitor_factory(sources=[{"id": "enc", "kind": "synthetic"}])
    source = ReplaySource("enc", recording, realtime=False)
    pipeline = Pipeline([source], active, monitor, max_batch=8)
    pipeline.set_shadow(shadow)
    with pipeline:
        assert pipeline.join(timeout=120), "the replay did not finish"
    drain(monitor)
    tally = monitor.shadow.current(shadow.version)["enc"]

    # Independently: both models on the offline segmentation of the same recording.
    b = [s["p_success"] for s in analyse(audio, shadow)["segments"]]
    band = monitor.settings.encounter.uncertain_band
    names = ("success", "failure")
    same = [
        aggregate.verdict(x, names, band) == aggregate.verdict(y, names, band)
        for x, y in zip(a, b, strict=True)
    ]
    assert tally.segments == len(a) >= 5
    assert tally.share_same == pytest.approx(float(np.mean(same)))
    assert tally.mean_abs_diff == pytest.approx(float(np.mean(np.abs(np.subtract(a, b)))), abs=2e-4)
    assert tally.shadow_p_success == pytest.approx(aggregate.running_p_success(b, 0.6), abs=2e-4)
    assert tally.active_p_success == pytest.approx(float(np.mean(a)), abs=2e-4)
    # The two models differ, so the figures mean something.
    assert 0 < tally.share_same < 1 and tally.mean_abs_diff > 0
    # The stored encounter and its verdict are the active model's alone.
    encounter = monitor.store.run(lambda s: s.all_encounters()).result(timeout=30)[-1]
    assert encounter.p_success == pytest.approx(float(np.mean(a)), abs=2e-4)
    assert encounter.model_version == active.version


def test_a_swap_in_the_middle_of_a_batch_takes_effect_at_the_next_one(
    recording: Path, untrained_checkpoint: Path, ckpt: dict[str, Path]
) -> None:
    """The swap comes from the sink while a batch is being handed over: the rest of that batch
    keeps the model that scored it, the next batch is the new model's."""
    old = Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=8)
    new = Classifier.from_checkpoint(ckpt["b"], device="cpu", max_batch=8)
    seen: list[ScoredSegment] = []
    swapped_in: list[int] = []

    class Sink:
        def __getattr__(self, name: str) -> Callable[[Any], None]:
            return lambda event: None

        def on_segment(self, event: ScoredSegment) -> None:
            seen.append(event)
            # Swap after the second segment of a batch, while the rest of it is handed over.
            if not swapped_in and len(seen) >= 2 and seen[-2].batch == event.batch:
                swapped_in.append(event.batch)
                assert pipeline.swap(new) is old

    source = ReplaySource("enc", recording, realtime=False)
    pipeline = Pipeline([source], old, Sink(), max_batch=8)
    with pipeline:
        assert pipeline.join(timeout=120), "the replay did not finish"
    assert swapped_in and len(seen) >= 6
    swap_batch = swapped_in[0]
    for seg in seen:
        expected = old.version if seg.batch <= swap_batch else new.version
        assert seg.model_version == expected, (seg.batch, swap_batch)
    assert {s.model_version for s in seen} == {old.version, new.version}


def test_a_failing_shadow_costs_the_live_scores_nothing(
    recording: Path, untrained_checkpoint: Path, monitor_factory: Callable[..., Any]
) -> None:
    class Broken(Classifier):
        def predict(self, segments: np.ndarray) -> Any:
            raise RuntimeError("out of memory")

    active = Classifier.from_checkpoint(untrained_checkpoint, device="cpu", max_batch=8)
    broken = Broken.from_checkpoint(untrained_checkpoint, device="cpu")
    monitor, _ = monitor_factory(sources=[{"id": "enc", "kind": "synthetic"}])
    pipeline = Pipeline([ReplaySource("enc", recording, realtime=False)], active, monitor)
    pipeline.set_shadow(broken)
    with pipeline:
        assert pipeline.join(timeout=120)
    drain(monitor)
    assert monitor.segments_stored >= 5 and pipeline.shadow_errors >= 1
    assert monitor.shadow.current(broken.version) == {}


# --- restarts --------------------------------------------------------------------------------------
def test_a_restart_keeps_the_active_model_unless_the_config_changed(
    tmp_path: Path, recording: Path, untrained_checkpoint: Path, ckpt: dict[str, Path]
) -> None:
    data = tmp_path / "data"
    sources = [{"id": "r", "kind": "file", "path": str(recording), "realtime": False}]
    settings = settings_for(data, untrained_checkpoint, sources)
    configured = version_of(untrained_checkpoint)
    b, c = version_of(ckpt["b"]), version_of(ckpt["c"])
    with TestClient(create_app(settings)) as client:
        ensure_uploaded(client, ckpt["b"])
        ensure_uploaded(client, ckpt["c"])
        assert client.post(f"/api/models/{b}/activate", headers=ADMIN_H).status_code == 200
        assert client.post(f"/api/models/{c}/shadow", headers=ADMIN_H).status_code == 200
    with TestClient(create_app(settings)) as client:
        listed = model_list(client)
        assert (listed.active, listed.shadow, listed.previous) == (b, c, configured)
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        assert rt.pipeline.classifier.version == b and rt.pipeline.shadow.version == c
        assert rt.pipeline.join(timeout=120), "the replay did not finish"
        drain(rt.monitor)
        latest = rt.monitor.store.run(lambda s: s.recent_segments(1)).result(timeout=30)
        assert latest[0].model_version == b
        # The previous model is still there to roll back to, from its stored file.
        r = client.post("/api/models/rollback", headers=ADMIN_H)
        assert r.status_code == 200 and r.json()["active"] == configured
        assert client.post(f"/api/models/{b}/activate", headers=ADMIN_H).status_code == 200
    # The operator points inference.model at another checkpoint: that choice wins.
    changed = settings_for(data, ckpt["c"], sources)
    with TestClient(create_app(changed)) as client:
        listed = model_list(client)
        assert (listed.active, listed.shadow, listed.previous) == (c, None, None)
        assert {b, c, configured} <= {m.version for m in listed.models}
        assert client.post(f"/api/models/{b}/activate", headers=ADMIN_H).status_code == 200
        assert client.post(f"/api/models/{b}/shadow", headers=ADMIN_H).status_code == 409

    # pandapulse doctor lists them, says which one runs, and notices a damaged file.
    items = list(check_stored_models(data, ckpt["c"]))
    finding = next(i for i in items if isinstance(i, Finding))
    assert finding.ok and f"3 stored; the service runs {b} (activated" in finding.detail
    notes = "\n".join(i.detail for i in items if isinstance(i, Note))
    assert f"{b} active" in notes and f"{c} previous" in notes and configured in notes
    (data / MODELS_DIR / f"{b}.safetensors").write_bytes(b"damaged")
    finding = next(i for i in check_stored_models(data, ckpt["c"]) if isinstance(i, Finding))
    assert not finding.ok and b in finding.detail and "POST /api/models" in finding.fix
    assert next(iter(check_stored_models(tmp_path / "empty", ckpt["c"]))).ok


def test_probe_segment_is_a_live_segment_shape() -> None:
    segment = probe_segment()
    assert segment.shape == (1, C.N_CHANNELS, C.SEGMENT_SAMPLES) and segment.dtype == np.float32
    assert float(np.abs(segment).max()) == pytest.approx(C.NORMALISED_PEAK)
    assert not np.allclose(segment[0, 0], segment[0, 1])
