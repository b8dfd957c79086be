"""deploy/README.md's backup procedure, against the running service: SQLite's online backup
(the `sqlite3 .backup` command and Python's ``Connection.backup``) taken while the service
writes gives a consistent, self-contained database."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from service.storage import DB_NAME
from tests.reliability.conftest import ServiceFactory

BOUND_S = 180.0


def rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_online_backup_while_the_service_writes(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = make_service(
        sources=[{"id": "demo", "kind": "synthetic", "realtime": False, "seed": 5}]
    )
    db = service.log_path.parent / "data" / DB_NAME
    service.wait_ready()
    with service.client() as client:
        deadline = time.monotonic() + BOUND_S
        while client.get("/stats").json()["storage"]["segments"] < 4:
            assert time.monotonic() < deadline, "no segments stored"
            time.sleep(0.5)
        # The README's commands, while segments keep arriving.
        cli = tmp_path / "cli-backup.sqlite3"
        if shutil.which("sqlite3"):
            subprocess.run(["sqlite3", str(db), f".backup '{cli}'"], check=True, timeout=60)
        py = tmp_path / "py-backup.sqlite3"
        src, dst = sqlite3.connect(db), sqlite3.connect(py)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        stored_now = client.get("/stats").json()["storage"]["segments"]
    backups = [p for p in (cli, py) if p.exists()]
    assert py in backups
    for backup in backups:
        assert rows(backup, "PRAGMA integrity_check") == [("ok",)]
        n = rows(backup, "SELECT count(*) FROM segments")[0][0]
        assert 4 <= n <= stored_now
        assert rows(backup, "PRAGMA user_version") == rows(db, "PRAGMA user_version")
        # A backup is a plain database file: no WAL needed beside it.
        assert not Path(f"{backup}-wal").exists() or Path(f"{backup}-wal").stat().st_size == 0
