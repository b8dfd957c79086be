"""The WebSocket hub: per-client bounded queues, drops counted, slow clients never delay others."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from service.hub import TRY_AGAIN_LATER, ClientQueue, Hub
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
    """Enough of starlette's WebSocket for ``Hub.serve``; ``stalled`` never finishes a send.
    Like the dashboard, it first says which sources it displays (``watch``)."""

    def __init__(self, *, stalled: bool = False, watch: tuple[str, ...] = ("north",)) -> None:
        self.stalled = stalled
        self._to_send = [json.dumps({"type": "watch", "v": 1, "sources": list(watch)})]
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
        if self._to_send:
            return {"type": "websocket.receive", "text": self._to_send.pop(0)}
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
        await _wait_for(lambda: hub.watchers("north") == 2)
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
        assert slow.closed_with == TRY_AGAIN_LATER
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
        await _wait_for(lambda: len(ws.received) == 1 and hub.watching("north"))
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


def masked_text_frame(text: str) -> bytes:
    """One client-to-server WebSocket text frame (RFC 6455: clients mask; payload < 126)."""
    import os

    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def test_real_server_never_reading_socket_does_not_delay_a_fast_client(
    tmp_path: Any, untrained_checkpoint: Any, shared_data: Any
) -> None:
    """uvicorn on 127.0.0.1, a raw socket that completes the WebSocket handshake and then never
    reads, and a ``websockets`` client that reads everything."""
    import base64
    import os
    import socket
    import threading
    import time

    import uvicorn
    import websockets

    from service.api import create_app
    from service.config import load_settings
    from service.wire import SpectrogramMsg

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(
        environ={},
        overrides={
            "server": {"port": port, "ws_queue_size": 32, "token": "tok"},
            "sources": [
                {
                    "id": "calls",
                    "kind": "file",
                    "path": str(shared_data / "real-calls/giant_panda_twittering.mp3"),
                    "realtime": False,
                }
            ],
            "inference": {"model": str(untrained_checkpoint), "device": "cpu"},
            "storage": {"data_dir": str(tmp_path / "data")},
        },
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    slow = None
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        hub = app.state.runtime.hub

        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        slow.sendall(
            (
                f"GET /ws/live?token=tok HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:  # the handshake's answer; after it, nothing is read
            answer += slow.recv(1)
        assert answer.startswith(b"HTTP/1.1 101")
        slow.sendall(masked_text_frame(json.dumps({"type": "watch", "v": 1, "sources": ["probe"]})))
        deadline = time.monotonic() + 30
        while hub.clients < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)

        n, burst = 600, 8
        columns = [[200] * 64 for _ in range(40)]  # ~10 kB of JSON per message

        async def fast_client() -> list[float]:
            got: list[float] = []
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/live?token=tok", max_size=None
            ) as ws:
                assert '"snapshot"' in await ws.recv()
                await ws.send(json.dumps({"type": "watch", "v": 1, "sources": ["probe"]}))
                deadline = time.monotonic() + 10
                while hub.watchers("probe") < 2:
                    assert time.monotonic() < deadline, (
                        f"the watch messages did not arrive: {hub.watchers('probe')} clients,"
                        f" {hub.clients} connected"
                    )
                    await asyncio.sleep(0.01)
                for start in range(0, n, burst):
                    for i in range(start, start + burst):
                        hub.publish_threadsafe(
                            SpectrogramMsg(
                                source="probe", start_s=float(i), bins=64, columns=columns
                            )
                        )
                    while len(got) < start + burst:
                        msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if msg.get("source") == "probe":
                            got.append(msg["start_s"])
            return got

        got = asyncio.run(fast_client())
        assert got == [float(i) for i in range(n)]  # all of them, in order, none dropped
        assert hub.dropped > 0  # ... while the socket that never reads lost its live updates
    finally:
        if slow is not None:
            slow.close()
        server.should_exit = True
        thread.join(30)


def test_level_and_spectrogram_go_only_to_the_clients_watching_their_source() -> None:
    async def body() -> None:
        hub = Hub(queue_size=64)
        hub.bind(asyncio.get_running_loop())
        north, south, nobody = (
            FakeSocket(watch=("north",)),
            FakeSocket(watch=("south",)),
            FakeSocket(watch=()),
        )
        tasks = [
            asyncio.create_task(hub.serve(ws, snapshot_factory())) for ws in (north, south, nobody)
        ]
        await _wait_for(lambda: all(len(ws.received) == 1 for ws in (north, south, nobody)))
        await _wait_for(lambda: hub.watching("north") and hub.watching("south"))
        assert not hub.watching("east")
        hub.publish(level(1))
        hub.publish(LevelMsg(source="south", start_s=2.0, rms_db=(-40, -40), peak_db=(-30, -30)))
        hub.publish(alert_msg(7))  # not per source: everyone
        await _wait_for(lambda: len(nobody.received) == 2)
        await _wait_for(lambda: len(north.received) == 3 and len(south.received) == 3)
        got = {
            name: [MESSAGE_ADAPTER.validate_json(t) for t in ws.received[1:]]
            for name, ws in (("north", north), ("south", south), ("nobody", nobody))
        }
        assert [(m.type, getattr(m, "source", None)) for m in got["north"]] == [
            ("level", "north"),
            ("alert", None),
        ]
        assert [m.type for m in got["south"]] == ["level", "alert"]
        assert got["south"][0].source == "south"
        assert [m.type for m in got["nobody"]] == ["alert"]
        for ws in (north, south, nobody):
            ws.leave()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not hub.watching("north") and not hub.watching("south")  # gone with the clients

    asyncio.run(body())


def test_a_malformed_client_message_is_ignored() -> None:
    async def body() -> None:
        hub = Hub(queue_size=8)
        hub.bind(asyncio.get_running_loop())
        ws = FakeSocket()
        ws._to_send.insert(0, '{"type": "watch", "sources": "north"}')  # not a list
        ws._to_send.insert(0, "not json")
        task = asyncio.create_task(hub.serve(ws, snapshot_factory()))
        await _wait_for(lambda: hub.watching("north"))  # the valid one after them still counts
        ws.leave()
        await asyncio.wait_for(task, 5)

    asyncio.run(body())
