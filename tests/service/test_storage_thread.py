"""The storage thread: one owner thread for the database, bounded, closed means closed."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from service.storage import Storage
from service.storage_thread import StorageClosed, StorageThread


def test_jobs_run_on_one_thread_that_owns_the_database(tmp_path: Path) -> None:
    store = StorageThread(lambda: Storage(tmp_path))
    opened_on: list[str] = []
    store.start(then=lambda s: opened_on.append(threading.current_thread().name))
    try:
        names = {store.run(lambda s: threading.current_thread().name).result() for _ in range(5)}
        names.add(asyncio.run(store.arun(lambda s: threading.current_thread().name)))
        assert names == set(opened_on) and opened_on[0].startswith("pandapulse-store")
        assert threading.current_thread().name not in names
        row = asyncio.run(store.arun(lambda s: s.create_encounter(source="north")))
        assert store.run(lambda s: s.get_encounter(row.id)).result() == row
    finally:
        store.stop()


def test_closed_storage_refuses_work_and_skips_background_jobs(tmp_path: Path) -> None:
    store = StorageThread(lambda: Storage(tmp_path))
    with pytest.raises(StorageClosed):
        store.run(lambda s: None)
    store.start()
    closing: list[int] = []
    store.stop(before=lambda s: closing.append(s.count_segments()))
    assert closing == [0]  # ``before`` ran, with the database still open
    with pytest.raises(StorageClosed):
        store.run(lambda s: None)
    with pytest.raises(StorageClosed):
        asyncio.run(store.arun(lambda s: None))
    store.submit(lambda s: None)  # from a pipeline thread while stopping: skipped, no error
    store.stop()  # twice is harmless


def test_background_failures_are_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StorageThread(lambda: Storage(tmp_path))
    store.start()
    try:

        def broken(_: Storage) -> None:
            raise ValueError("disk on fire")

        with caplog.at_level(logging.ERROR, logger="service.storage_thread"):
            store.submit(broken)
            store.run(lambda s: None).result()  # after the broken job
        assert store.failed_jobs == 1 and "disk on fire" in caplog.text
        # The thread survives a failed job.
        assert store.run(lambda s: s.count_segments()).result() == 0
    finally:
        store.stop()


def test_a_full_queue_blocks_the_producer_instead_of_growing(tmp_path: Path) -> None:
    store = StorageThread(lambda: Storage(tmp_path), slots=2)
    store.start()
    gate = threading.Event()
    try:
        store.run(lambda s: gate.wait(10))
        store.run(lambda s: None)
        third_queued = threading.Event()

        def producer() -> None:
            store.run(lambda s: None)
            third_queued.set()

        thread = threading.Thread(target=producer)
        thread.start()
        assert not third_queued.wait(0.3), "a third job was queued past the two slots"
        gate.set()
        assert third_queued.wait(10)
        thread.join(10)
    finally:
        gate.set()
        store.stop()


def test_a_failed_open_leaves_nothing_running(tmp_path: Path) -> None:
    def opener() -> Storage:
        raise OSError("no such disk")

    store = StorageThread(opener)
    with pytest.raises(OSError, match="no such disk"):
        store.start()
    assert not store.running
    with pytest.raises(StorageClosed):
        store.run(lambda s: None)
