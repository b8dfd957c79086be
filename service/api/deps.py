"""What routes depend on: the running ``Runtime`` and its ``Monitor``.

Both answer 503 ``not_running`` while the service has no runtime: before the lifespan has
built it and once shutdown has begun. A route that declares ``rt: RuntimeDep`` or
``monitor: MonitorDep`` therefore always gets a complete, running service. The dependencies
are coroutines so FastAPI runs them on the event loop, not in its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from service.api.errors import not_running
from service.api.runtime import Runtime
from service.monitor import Monitor


def running_runtime(conn: HTTPConnection) -> Runtime | None:
    """The app's runtime, or None while it is not running (for the WebSocket and probes)."""
    runtime: Runtime | None = getattr(conn.app.state, "runtime", None)
    return runtime


async def get_runtime(conn: HTTPConnection) -> Runtime:
    runtime = running_runtime(conn)
    if runtime is None:
        raise not_running()
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_monitor(rt: RuntimeDep) -> Monitor:
    return rt.monitor


MonitorDep = Annotated[Monitor, Depends(get_monitor)]
