"""WebSocket fan-out: one bounded queue per client, so one stalled browser never slows the rest.

Threads: ``Hub`` lives on the event loop. Pipeline and storage threads hand it messages through
``publish_threadsafe`` (``loop.call_soon_threadsafe``), which serialises the message on the
calling thread (once for all clients) and queues the text for the loop.

Back-pressure: each client has a ``ClientQueue`` of ``queue_size`` messages. When it is full, the
oldest droppable live update (``level``, ``spectrogram``, ``stats``) in it is discarded (counted);
``segment``, ``encounter`` and ``alert`` messages are never dropped: a client whose queue is
full of those is too far behind and is disconnected (close code 1013, "try again later"); it
reconnects and gets a fresh snapshot. A client's sender task awaits only its own socket.

Watching: a client says which sources it displays (``watch``, docs/PROTOCOL.md) and gets the
``level`` and ``spectrogram`` updates of those sources only. ``watching(source)`` tells the
pipeline and the monitor whether anyone displays a source at all, so the spectrogram of a
source nobody looks at is never computed and its levels are never serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable

from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from service.wire import CLIENT_ADAPTER, DISPLAY_TYPES, DROPPABLE_TYPES

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
"""WebSocket close code (RFC 6455: try again later) for a client that fell too far behind, and
for one that connects while the service is starting or stopping."""
CLOSE_TIMEOUT_S = 2.0
"""How long closing a stalled client's socket may take before we give up on it."""


class ClientQueue:
    """Messages waiting for one client (loop thread only)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[tuple[bool, str]] = deque()
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()
        self.dropped = 0
        self.too_slow = False
        self.closed = False
        self.watching: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, text: str, droppable: bool) -> bool:
        """Queue ``text``; returns False when the client must be disconnected (too slow)."""
        if self.closed:
            return False
        if len(self._items) >= self.maxsize:
            victim = next((i for i, (d, _) in enumerate(self._items) if d), None)
            if victim is not None:
                del self._items[victim]
                self.dropped += 1
            elif droppable:
                self.dropped += 1
                return True
            else:
                self.too_slow = True
                self.close()
                return False
        self._items.append((droppable, text))
        self._ready.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def get(self) -> str | None:
        """The next message, or None once the queue is closed."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed and self.too_slow:
            return None
        return self._items.popleft()[1]


class Hub:
    """The set of connected WebSocket clients and the counters ``stats.ws`` reports."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self._clients: set[ClientQueue] = set()
        self._watchers: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dropped_gone = 0
        self.published = 0
        self.disconnected_slow = 0
        self._subscribers: list[Callable[[BaseModel], None]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the event loop that serves the WebSockets (called in the lifespan)."""
        self._loop = loop

    @property
    def clients(self) -> int:
        return len(self._clients)

    def watching(self, source: str) -> bool:
        """True while at least one client displays ``source`` (any thread: a dict read)."""
        return self._watchers.get(source, 0) > 0

    def watchers(self, source: str) -> int:
        """How many clients display ``source``."""
        return self._watchers.get(source, 0)

    def watch(self, client: ClientQueue, sources: Iterable[str]) -> None:
        """Loop thread only: ``client`` now displays ``sources`` (replacing its choice)."""
        self._unwatch(client)
        client.watching = frozenset(sources)
        self._watchers.update(client.watching)

    def _unwatch(self, client: ClientQueue) -> None:
        self._watchers.subtract(client.watching)
        for source in client.watching:
            if self._watchers[source] <= 0:
                del self._watchers[source]
        client.watching = frozenset()

    @property
    def dropped(self) -> int:
        """Live updates dropped for slow clients since start (including gone clients)."""
        return self._dropped_gone + sum(c.dropped for c in self._clients)

    # --- publishing -------------------------------------------------------------------------
    def subscribe(self, subscriber: Callable[[BaseModel], None]) -> None:
        """Also hand every event but ``level`` and ``spectrogram`` to ``subscriber`` (the MQTT
        publisher), on the publishing thread, before it is queued for the clients. It must not
        block; an exception in it is logged and does not stop the event."""
        self._subscribers.append(subscriber)

    def _notify(self, message: BaseModel) -> None:
        if _kind(message) in DISPLAY_TYPES:
            return
        for subscriber in self._subscribers:
            try:
                subscriber(message)
            except Exception:
                log.exception("event subscriber failed on a %s event", _kind(message))

    def publish(self, message: BaseModel) -> None:
        """Send ``message`` (a ``service.wire`` event) to every client. Loop thread only."""
        self._notify(message)
        self.publish_text(_kind(message), message.model_dump_json(), _source(message))

    def publish_text(self, kind: str, text: str, source: str | None = None) -> None:
        """Loop thread only: queue serialised ``text`` of message type ``kind`` for everyone
        (a ``level`` or ``spectrogram`` of ``source``: for the clients watching it)."""
        self.published += 1
        droppable = kind in DROPPABLE_TYPES
        display = kind in DISPLAY_TYPES
        for client in list(self._clients):
            if display and source not in client.watching:
                continue
            if not client.put(text, droppable):
                self.disconnected_slow += 1
                self._remove(client)
                log.warning(
                    "WebSocket client too far behind (%d queued): disconnected", len(client)
                )

    def publish_threadsafe(self, message: BaseModel) -> None:
        """From any thread: serialise here, queue on the loop. Dropped if the loop is gone."""
        self._notify(message)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        text = message.model_dump_json()
        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            loop.call_soon_threadsafe(self.publish_text, _kind(message), text, _source(message))

    # --- clients ------------------------------------------------------------------------------
    def connect(self) -> ClientQueue:
        client = ClientQueue(self.queue_size)
        self._clients.add(client)
        return client

    def _remove(self, client: ClientQueue) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self._dropped_gone += client.dropped
            self._unwatch(client)

    def disconnect(self, client: ClientQueue) -> None:
        client.close()
        self._remove(client)

    def close_all(self) -> None:
        for client in list(self._clients):
            self.disconnect(client)

    async def serve(self, ws: WebSocket, snapshot: Callable[[], Awaitable[BaseModel]]) -> None:
        """Run one accepted WebSocket: the snapshot first, then queued events until it goes.

        The client is registered before the snapshot is built, so nothing published meanwhile
        is lost (it may repeat what the snapshot holds; ids make that harmless). What it says
        (``watch``) is read from the start, even while its snapshot is still on the way.
        """
        client = self.connect()
        receiver = asyncio.create_task(self._receive(ws, client))
        try:
            snap = await snapshot()
            await ws.send_text(snap.model_dump_json())
            tasks = {
                asyncio.create_task(self._send(ws, client)),
                receiver,
                # A send to a stalled client never returns: a kick must cancel it.
                asyncio.create_task(client.wait_closed()),
            }
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError
                ):
                    await task
            # Collect why the finished task ended (a client that vanished mid-send), so asyncio
            # does not log "Task exception was never retrieved" for every dropped connection.
            for task in done:
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.debug("WebSocket client gone: %s", error)
            if client.too_slow:
                with contextlib.suppress(TimeoutError, RuntimeError, OSError, WebSocketDisconnect):
                    await asyncio.wait_for(
                        ws.close(TRY_AGAIN_LATER, "too far behind; reconnect"),
                        CLOSE_TIMEOUT_S,
                    )
        except (WebSocketDisconnect, RuntimeError, OSError) as err:
            log.debug("WebSocket client gone: %s", err)
        finally:
            if not receiver.done():
                receiver.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError
                ):
                    await receiver
            self.disconnect(client)

    @staticmethod
    async def _send(ws: WebSocket, client: ClientQueue) -> None:
        while (text := await client.get()) is not None:
            await ws.send_text(text)

    async def _receive(self, ws: WebSocket, client: ClientQueue) -> None:
        # A client says only which sources it watches; reading also notices when it leaves.
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                continue
            try:
                watch = CLIENT_ADAPTER.validate_json(text)
            except ValidationError as err:
                log.debug("WebSocket client sent what is not a watch message: %s", err)
                continue
            if client in self._clients:
                self.watch(client, watch.sources)


def _kind(message: BaseModel) -> str:
    return str(getattr(message, "type", ""))


def _source(message: BaseModel) -> str | None:
    source = getattr(message, "source", None)
    return source if isinstance(source, str) else None
