"""The health panel names the model that scores now, in Chromium against a real service: after
an activation through the API (admin token) it shows the new version without a reload, and a
shadow model with its agreement once one runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from model import checkpoint
from model.network import CGANet
from tests.web.conftest import Service, new_page, start_service

ADMIN = "panel-admin-token-0123456789"


@pytest.fixture(scope="module")
def admin_service(
    tmp_path_factory: pytest.TempPathFactory, untrained_checkpoint: Path
) -> Iterator[Service]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PANDAPULSE_ADMIN_TOKEN", ADMIN)  # serve reads it, like PANDAPULSE_TOKEN
        svc = start_service(tmp_path_factory.mktemp("models-panel"), untrained_checkpoint)
    try:
        yield svc
    finally:
        svc.kill()


def _upload(svc: Service, path: Path) -> str:
    r = httpx.post(
        f"{svc.url}/api/models",
        headers={"Authorization": f"Bearer {ADMIN}"},
        files={"file": (path.name, path.read_bytes())},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["version"])


def _admin(svc: Service, method: str, path: str) -> None:
    r = httpx.request(
        method, f"{svc.url}{path}", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
    )
    assert r.status_code == 200, r.text


def test_health_panel_shows_the_active_and_the_shadow_model(
    browser: Any, admin_service: Service, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    svc = admin_service
    torch.manual_seed(77)
    new = tmp_path / "new.safetensors"
    checkpoint.save(new, CGANet())
    torch.manual_seed(78)
    other = tmp_path / "other.safetensors"
    checkpoint.save(other, CGANet())
    configured = str(checkpoint.read_metadata(untrained_checkpoint)["model_version"])
    context, page, console = new_page(browser)
    try:
        page.goto(svc.login_url)
        page.wait_for_selector("#conn[data-state=open]")
        active = page.locator("[data-testid=active-model]")
        assert active.inner_text() == configured
        version = _upload(svc, new)
        _admin(svc, "POST", f"/api/models/{version}/activate")
        page.wait_for_function(
            "v => document.querySelector('[data-testid=active-model]')?.textContent === v",
            arg=version,
        )
        shadow = _upload(svc, other)
        _admin(svc, "POST", f"/api/models/{shadow}/shadow")
        page.wait_for_function(
            "v => document.querySelector('[data-testid=shadow-model]')?.textContent === v",
            arg=shadow,
        )
        agreement = page.locator("[data-testid=shadow-agreement]").inner_text()
        assert agreement and "health." not in agreement
        _admin(svc, "DELETE", f"/api/models/{shadow}/shadow")
        page.wait_for_selector("[data-testid=shadow-model]", state="detached")
        assert console.errors == []
    finally:
        context.close()
