"""The ``api`` role: uvicorn serving the app inside the shared event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from service.api.app import create_app, create_metrics_app
from service.eventloop import settle_gc
from service.readiness import RoleStatus
from service.runtime import Runtime


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process supervisor owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(app: FastAPI, runtime: Runtime, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings for one of ecswatch's listeners.

    ``limit_concurrency`` (``ECSWATCH_API_LIMIT_CONCURRENCY``) bounds the open
    connections and in-flight requests: past it uvicorn answers 503 at once
    instead of holding more requests (each up to ``ECSWATCH_API_MAX_BODY_BYTES``
    of body) in memory.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        limit_concurrency=runtime.settings.api_limit_concurrency,
    )


async def serve_api(
    runtime: Runtime,
    stop: asyncio.Event,
    *,
    host: str,
    port: int,
    roles: RoleStatus,
    started: asyncio.Future[int] | None = None,
) -> None:
    """Serve until ``stop`` is set; ``started`` gets the bound port once it listens.

    With ``ECSWATCH_METRICS_PORT`` set to another port, ``/metrics`` is served
    there alone, and the API's port does not answer it.
    """
    metrics_port = runtime.settings.metrics_port
    separate_metrics = metrics_port is not None and metrics_port != port
    app = create_app(runtime, roles, serve_metrics=not separate_metrics)
    app.openapi()  # built now, not by the first request that needs it
    settle_gc()  # the app, built just now, lives as long as the process
    server = _Server(server_config(app, runtime, host=host, port=port))
    metrics_server: _Server | None = None
    if separate_metrics and metrics_port is not None:
        metrics_app = create_metrics_app(runtime)
        metrics_server = _Server(server_config(metrics_app, runtime, host=host, port=metrics_port))

    async def _serve(one: _Server, where: int) -> None:
        try:
            await one.serve()
        except SystemExit as exc:
            # uvicorn calls sys.exit(3) when it cannot bind (port in use, address
            # not available). A SystemExit escaping a task tears the event loop
            # down without the runtime's cleanup; make it an ordinary failure
            # (uvicorn has already logged the OSError that names the cause).
            raise RuntimeError(
                f"the API could not listen on {host}:{where} (see the error above)"
            ) from exc

    serving = {asyncio.create_task(_serve(server, port))}
    if metrics_server is not None and metrics_port is not None:
        serving.add(asyncio.create_task(_serve(metrics_server, metrics_port)))

    async def _watch_started() -> None:
        # uvicorn exposes only a ``started`` flag, no event to wait on.
        servers = [s for s in (server, metrics_server) if s is not None]
        while not all(s.started for s in servers) and not any(t.done() for t in serving):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if not all(s.started for s in servers):
            return  # a bind failed: uvicorn never set up its servers
        bound = bound_port(server)
        roles.running["api"] = True  # as soon as it serves, not after the supervisor sees it
        if started is not None and bound is not None and not started.done():
            started.set_result(bound)

    watcher = asyncio.create_task(_watch_started())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({*serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        if metrics_server is not None:
            metrics_server.should_exit = True
        stopper.cancel()
        results = await asyncio.gather(*serving, return_exceptions=True)
        watcher.cancel()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    if not server.started:
        raise RuntimeError(f"the API could not listen on {host}:{port}")
    if metrics_server is not None and not metrics_server.started:
        raise RuntimeError(f"the metrics could not listen on {host}:{metrics_port}")


def bound_port(server: uvicorn.Server) -> int | None:
    """The port a started server listens on (useful with port 0)."""
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return None
