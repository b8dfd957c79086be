"""The WebSocket hub: per-client bounded queues, drops counted, slow clients never delay others."""

from __future__ import annotations

import asyncio
from typing import Any

from service.hub import SLOW_CLIENT_CLOSE_CODE, ClientQueue, Hub
from service.wire import MESSAGE_ADAPTER, LevelMsg, SnapshotMsg
from tests.service.conftest import alert_msg, minimal_snapshot


def level(i: int) -> LevelMsg:
    return LevelMsg(source="north", start_s=float(i), rms_db=(-40, -40), peak_db=(-30, -30))


def test_queue_drops_oldest_droppable_first() -> None:
    async def body() -> None:
        q = ClientQueue(3)
        q.put("L1", True)
        q.put("S1", False)
        q.put("L2", True)
        assert q.put("S2", False)  # full: L1 (oldest droppable) goes
        assert q.dropped == 1
        assert q.put("L3", True)  # full: L2 goes
        assert [await q.get() for _ in range(3)] == ["S1", "S2", "L3"]

    asyncio.run(body())


def test_queue_full_of_essentials() -> None:
    async def body() -> None:
        q = ClientQueue(2)
        q.put("S1", False)
        q.put("S2", False)
        assert q.put("L1", True)  # a live update is dropped instead
        assert q.dropped == 1 and len(q) == 2
        assert q.put("S3", False) is False  # an essential one cannot be: too slow
        assert q.too_slow and await q.get() is None

    asyncio.run(body())


class FakeSocket:
    """Enough of starlette's WebSocket for ``Hub.serve``; ``stalled`` never finishes a send."""

    def __init__(self, *, stalled: bool = False) -> None:
        self.stalled = stalled
        self.received: list[str] = []
        self.got = asyncio.Event()
        self.closed_with: int | None = None
        self._gone = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if self.stalled and self.received:  # takes the snapshot, then never reads again
            await asyncio.Event().wait()
        self.received.append(text)
        self.got.set()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "websocket.disconnect"}

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = code

    def leave(self) -> None:
        self._gone.set()


def snapshot_factory() -> Any:
    async def make() -> SnapshotMsg:
        return minimal_snapshot()

    return make


async def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


def test_stalled_client_does_not_delay_fast_client() -> None:
    async def body() -> None:
        hub = Hub(queue_size=16)
        hub.bind(asyncio.get_running_loop())
        fast, slow = FakeSocket(), FakeSocket(stalled=True)
        tasks = [asyncio.create_task(hub.serve(ws, snapshot_factory())) for ws in (fast, slow)]
        await _wait_for(lambda: len(fast.received) == 1 and len(slow.received) == 1)
        n = 500
        for i in range(n):
            hub.publish(level(i))
            # The fast client has each message before the next is published: nobody waits
            # for the stalled one.
            await _wait_for(lambda i=i: len(fast.received) == i + 2)
        assert [MESSAGE_ADAPTER.validate_json(t).start_s for t in fast.received[1:]] == list(
            range(n)
        )
        assert hub.clients == 2
        assert hub.dropped >= n - 16 - 1  # the stalled client's queue stays bounded
        fast.leave()
        slow.leave()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert hub.clients == 0 and hub.dropped >= n - 17  # counts survive the client

    asyncio.run(body())


def test_client_too_far_behind_on_essentials_is_disconnected() -> None:
    async def body() -> None:
        hub = Hub(queue_size=8)
        hub.bind(asyncio.get_running_loop())
        fast, slow = FakeSocket(), FakeSocket(stalled=True)
        tasks = [asyncio.create_task(hub.serve(ws, snapshot_factory())) for ws in (fast, slow)]
        await _wait_for(lambda: len(slow.received) == 1 and len(fast.received) == 1)
        for i in range(20):
            hub.publish(alert_msg(i + 1))
            await _wait_for(lambda i=i: len(fast.received) == i + 2)
        await _wait_for(lambda: slow.closed_with is not None)
        assert slow.closed_with == SLOW_CLIENT_CLOSE_CODE
        assert hub.disconnected_slow == 1 and hub.clients == 1
        await _wait_for(lambda: len(fast.received) == 21)  # the fast client lost nothing
        fast.leave()
        await asyncio.wait_for(tasks[1], 5)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(body())


def test_publish_threadsafe_from_another_thread() -> None:
    async def body() -> None:
        hub = Hub(queue_size=16)
        hub.bind(asyncio.get_running_loop())
        ws = FakeSocket()
        task = asyncio.create_task(hub.serve(ws, snapshot_factory()))
        await _wait_for(lambda: len(ws.received) == 1)
        await asyncio.to_thread(lambda: [hub.publish_threadsafe(level(i)) for i in range(5)])
        await _wait_for(lambda: len(ws.received) == 6)
        ws.leave()
        await asyncio.wait_for(task, 5)

    asyncio.run(body())


def test_publish_after_loop_closed_is_ignored() -> None:
    loop = asyncio.new_event_loop()
    hub = Hub(queue_size=4)
    hub.bind(loop)
    loop.close()
    hub.publish_threadsafe(level(0))  # no error, nothing to do
    assert hub.published == 0
