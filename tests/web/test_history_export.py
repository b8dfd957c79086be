"""The History view's researcher downloads in Chromium: one encounter's calls as a Raven table
and an Audacity label track, the encounter as a dataset zip, and the training dataset of the
list (encounters with an outcome), each readable by what ``pandapulse train`` uses."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

from model.data import read_annotations

from .conftest import DEMO_MODEL, new_page, start_service


def test_history_downloads_raven_audacity_and_datasets(
    browser: Any, tmp_path: Path, untrained_checkpoint: Path
) -> None:
    model = DEMO_MODEL if DEMO_MODEL.is_file() else untrained_checkpoint
    service = start_service(tmp_path, model, encounter={"auto": False})
    context, page, console = new_page(browser)
    try:
        made = service.api("POST", "/api/encounters", json={"source": "pen1", "pair": "Export"})
        eid = made.json()["id"]
        service.wait_for(
            lambda: service.api("GET", f"/api/encounters/{eid}").json()["n_segments"] >= 2,
            "two scored calls in the encounter",
        )
        service.api("POST", f"/api/encounters/{eid}/stop")
        service.api("PUT", f"/api/encounters/{eid}/outcome", json={"outcome": "failure"})
        n = service.api("GET", f"/api/encounters/{eid}").json()["n_segments"]

        page.goto(service.login_url)
        page.wait_for_selector("#conn[data-state=open]")
        page.goto(f"{service.url}/#history/{eid}")
        page.wait_for_selector("[data-testid=outcome-form]")
        facts = page.inner_text("#hist-detail dl.facts").lower()  # labels are upper-cased
        assert "whole audio" in facts and "not kept" not in facts

        def save(selector: str, name: str) -> Path:
            with page.expect_download(timeout=30_000) as info:
                page.click(selector)
            path = tmp_path / name
            info.value.save_as(path)
            return path

        raven = save("[data-testid=raven-download]", "calls.Table.1.selections.txt")
        assert len(read_annotations("raven", raven)) == n
        labels = save("[data-testid=audacity-download]", "labels.txt")
        assert len(read_annotations("aud-seq", labels)) == n
        for selector, name in (
            ("[data-testid=encounter-zip]", "one.zip"),
            ("#hist-dataset", "all.zip"),
        ):
            with zipfile.ZipFile(save(selector, name)) as zf:
                manifest = next(m for m in zf.namelist() if m.endswith("/manifest.csv"))
                rows = list(csv.DictReader(io.StringIO(zf.read(manifest).decode())))
            assert [(int(r["encounter"]), r["outcome"]) for r in rows] == [(eid, "failure")]
            assert any(m.endswith(".flac") for m in zf.namelist())
        assert console.errors == []
    finally:
        context.close()
        service.kill()
