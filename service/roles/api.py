"""The ``api`` role: uvicorn serving the app inside the shared event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn

from service.api.app import create_app
from service.eventloop import settle_gc
from service.readiness import RoleStatus
from service.runtime import Runtime


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process supervisor owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_api(
    runtime: Runtime,
    stop: asyncio.Event,
    *,
    host: str,
    port: int,
    roles: RoleStatus,
    started: asyncio.Future[int] | None = None,
) -> None:
    """Serve until ``stop`` is set; ``started`` gets the bound port once it listens."""
    app = create_app(runtime, roles)
    app.openapi()  # built now, not by the first request that needs it
    settle_gc()  # the app, built just now, lives as long as the process
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)

    async def _serve() -> None:
        try:
            await server.serve()
        except SystemExit as exc:
            # uvicorn calls sys.exit(3) when it cannot bind (port in use, address
            # not available). A SystemExit escaping a task tears the event loop
            # down without the runtime's cleanup; make it an ordinary failure
            # (uvicorn has already logged the OSError that names the cause).
            raise RuntimeError(
                f"the API could not listen on {host}:{port} (see the error above)"
            ) from exc

    serving = asyncio.create_task(_serve())

    async def _watch_started() -> None:
        # uvicorn exposes only a ``started`` flag, no event to wait on.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if not server.started:
            return  # the bind failed: uvicorn never set up its servers
        port = bound_port(server)
        if server.started:
            roles.running["api"] = True  # as soon as it serves, not after the supervisor sees it
        if started is not None and server.started and port is not None and not started.done():
            started.set_result(port)

    watcher = asyncio.create_task(_watch_started())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopper.cancel()
        await serving
        watcher.cancel()
    if not server.started:
        raise RuntimeError(f"the API could not listen on {host}:{port}")


def bound_port(server: uvicorn.Server) -> int | None:
    """The port a started server listens on (useful with port 0)."""
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return None
