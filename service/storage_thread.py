"""``StorageThread``: the one thread that owns the service's ``Storage``.

sqlite3 connections belong to the thread that made them, and the service wants exactly one
writer, so the database is opened, used and closed on a single worker thread. Everything else
hands it work: ``run(fn)`` from any thread (a ``Future``), ``await arun(fn)`` from the event
loop. ``fn`` receives the ``Storage``; whatever it returns comes back.

The job queue is bounded (``JOB_SLOTS``): when storage falls that far behind, ``run`` blocks
its caller (the inference worker, say) rather than letting memory grow; ``arun`` waits for a
slot off the event loop. After ``stop`` (or before ``start``) both raise ``StorageClosed``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from service.storage import Storage

log = logging.getLogger(__name__)

T = TypeVar("T")

JOB_SLOTS = 1024
"""Jobs waiting for the storage thread before callers block."""


class StorageClosed(RuntimeError):
    """The storage thread is not running (the service is starting or stopping)."""


class StorageThread:
    """Owns a ``Storage`` on one worker thread (see the module docstring)."""

    def __init__(self, opener: Callable[[], Storage], *, slots: int = JOB_SLOTS) -> None:
        self._opener = opener
        self._executor: ThreadPoolExecutor | None = None
        self._storage: Storage | None = None
        self._slots = threading.BoundedSemaphore(slots)
        self.failed_jobs = 0
        """Fire-and-forget jobs (``submit``) that raised; each is logged."""

    @property
    def running(self) -> bool:
        return self._executor is not None

    def start(self, then: Callable[[Storage], object] | None = None) -> None:
        """Open the storage on the worker thread, then run ``then(storage)`` there (restoring
        state, say) before any other job; raises what opening raised."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="pandapulse-store")
        try:
            executor.submit(self._open, then).result()
        except BaseException:
            executor.shutdown(wait=True)
            raise
        self._executor = executor

    def stop(self, before: Callable[[Storage], object] | None = None) -> None:
        """Run the queued jobs, then ``before(storage)``, then close the database."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            executor.submit(self._close, before).result()
        finally:
            executor.shutdown(wait=True)

    def _open(self, then: Callable[[Storage], object] | None) -> None:
        storage = self._opener()
        try:
            if then is not None:
                then(storage)
        except BaseException:
            storage.close()
            raise
        self._storage = storage

    def _close(self, before: Callable[[Storage], object] | None) -> None:
        storage, self._storage = self._storage, None
        if storage is None:
            return
        try:
            if before is not None:
                before(storage)
        finally:
            storage.close()

    # --- handing work over ----------------------------------------------------------------------
    def run(self, fn: Callable[[Storage], T]) -> Future[T]:
        """Queue ``fn(storage)``; blocks while ``JOB_SLOTS`` jobs are waiting."""
        executor = self._executor
        if executor is None:
            raise StorageClosed("storage is not running")
        self._slots.acquire()
        try:
            future = executor.submit(self._job, fn)
        except RuntimeError as err:  # shut down between the check and the submit
            self._slots.release()
            raise StorageClosed("storage is not running") from err
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    async def arun(self, fn: Callable[[Storage], T]) -> T:
        """``run`` for coroutines; the wait for a free slot, if any, happens off the loop."""
        if self._slots.acquire(blocking=False):
            self._slots.release()
            return await asyncio.wrap_future(self.run(fn))
        future = await asyncio.to_thread(self.run, fn)
        return await asyncio.wrap_future(future)

    def submit(self, fn: Callable[[Storage], object]) -> None:
        """Fire and forget (from a pipeline thread): errors are logged and counted, not
        raised; while storage is closed the job is skipped."""
        try:
            future = self.run(fn)
        except StorageClosed:
            return
        future.add_done_callback(self._log_failure)

    def offer(self, fn: Callable[[Storage], object]) -> bool:
        """``submit`` that never waits (from an audio thread): False, and nothing queued, while
        storage is closed or ``JOB_SLOTS`` jobs are waiting."""
        executor = self._executor
        if executor is None or not self._slots.acquire(blocking=False):
            return False
        try:
            future = executor.submit(self._job, fn)
        except RuntimeError:  # shut down between the check and the submit
            self._slots.release()
            return False
        future.add_done_callback(lambda _: self._slots.release())
        future.add_done_callback(self._log_failure)
        return True

    def _job(self, fn: Callable[[Storage], T]) -> T:
        if self._storage is None:
            raise StorageClosed("storage is closed")
        return fn(self._storage)

    def _log_failure(self, future: Future[object]) -> None:
        err = future.exception()
        if err is not None:
            self.failed_jobs += 1
            log.error("storage job failed: %s", err, exc_info=err)
