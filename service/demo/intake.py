"""A local Datadog API intake that records what the real client sends.

Also home of :class:`LocalServer`, the aiohttp loopback server that the webhook
receiver shares with it.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

import zstandard
from aiohttp import web


class _Record(Protocol):
    status: int


R = TypeVar("R", bound=_Record)


class LocalServer(Generic[R]):
    """An aiohttp server on 127.0.0.1:<ephemeral> that records requests and fails on demand.

    Start and stop it inside a running event loop. Subclasses implement :meth:`_handle`,
    which returns the record to keep and the response to send.
    """

    def __init__(self) -> None:
        self.records: list[R] = []
        self._failures: deque[tuple[int, dict[str, str]]] = deque()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()  # binds to the loop on first use
        # Requests that reached the server, answered or not (see pause()).
        self.arrived = 0
        self._paused = False
        self._resumed: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        """Bind and serve; returns once the port is known."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        # Large bodies are accepted so tests can see oversize payloads instead of a
        # generic aiohttp 413; auto_decompress is off because aiohttp cannot decode
        # zstd here and the raw size on the wire is worth recording.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner

    async def stop(self) -> None:
        """Close the listening socket and open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def fail_next(self, status: int, count: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``count`` requests with ``status`` (they are still recorded)."""
        self._failures.extend([(status, dict(headers or {}))] * count)

    def pause(self) -> None:
        """Hold every request, unanswered, from now until :meth:`resume` (a slow peer)."""
        self._paused = True

    def resume(self) -> None:
        """Answer the held requests and stop holding new ones."""
        self._paused = False
        if self._resumed is not None:
            self._resumed.set()

    def clear(self) -> None:
        """Forget recorded requests and pending failures."""
        self.records.clear()
        self._failures.clear()

    async def wait_arrived(self, count: int = 1, within: float = 5.0) -> None:
        """Wait until ``count`` requests reached the server (answered or held)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.arrived >= count)

    async def wait_for(self, count: int = 1, within: float = 5.0) -> list[R]:
        """Wait until ``count`` requests are recorded; TimeoutError after ``within`` s."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.records) >= count)
        return list(self.records)

    async def _handle(self, request: web.Request, body: bytes) -> tuple[R, web.Response]:
        raise NotImplementedError

    async def _dispatch(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.arrived += 1
        async with self._changed:
            self._changed.notify_all()
        while self._paused:
            self._resumed = self._resumed or asyncio.Event()
            self._resumed.clear()
            await self._resumed.wait()
        record, response = await self._handle(request, body)
        if self._failures:
            status, headers = self._failures.popleft()
            response = web.json_response({"errors": [f"injected {status}"]}, status=status)
            response.headers.update(headers)
        # Records carry the status actually answered, so tests can tell attempts apart.
        record.status = response.status
        self.records.append(record)
        async with self._changed:
            self._changed.notify_all()
        return response


@dataclass
class IntakeRequest:
    """One request as the intake saw it; ``body`` is decompressed, ``json`` parsed (or None)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    wire_size: int
    status: int = 0
    received_at: float = field(default_factory=time.time)  # epoch seconds


def decode_body(raw: bytes, encoding: str) -> bytes:
    """Undo ``Content-Encoding`` as Datadog's intake does (deflate, gzip, zstd)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        # HTTP "deflate" is zlib-wrapped, but some senders use raw deflate.
        try:
            return zlib.decompress(raw)
        except zlib.error:
            return zlib.decompress(raw, -zlib.MAX_WBITS)
    if encoding in ("zstd", "zstd1"):  # Datadog's client labels zstd as "zstd1"
        # decompressobj copes with frames that do not declare their content size.
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


# Request fields that the client's v1 `Event` response model also accepts.
_EVENT_FIELDS = {"alert_type", "date_happened", "device_name", "host", "priority"}
_EVENT_FIELDS |= {"source_type_name", "tags", "text", "title"}


class DatadogIntake(LocalServer[IntakeRequest]):
    """Stand-in for the Datadog API: metrics v2 series, v1 events, and 200 ``{}`` elsewhere.

    Like Datadog it answers 403 without a ``DD-API-KEY`` header (or with a key other
    than ``api_key`` when one is given) and 400 for a body it cannot decode.
    """

    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self._next_event_id = 1_000_000
        # Like Datadog's payload limit, scaled down for tests: a series body larger
        # than this (decompressed) is answered 413.
        self.max_series_bytes: int | None = None
        # The dashboards and monitors API stand-in (``ecswatch datadog install``).
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.monitors: dict[int, dict[str, Any]] = {}

    @property
    def requests(self) -> list[IntakeRequest]:
        """Every request received, failed ones included, oldest first."""
        return self.records

    def series(self) -> list[dict[str, Any]]:
        """Series from accepted ``/api/v2/series`` requests, flattened in arrival order."""
        return [s for r in self._accepted("/api/v2/series") for s in r.json.get("series", [])]

    def events(self) -> list[dict[str, Any]]:
        """Bodies of accepted ``/api/v1/events`` requests."""
        return [r.json for r in self._accepted("/api/v1/events")]

    def _accepted(self, path: str) -> list[IntakeRequest]:
        return [r for r in self.records if r.path == path and 200 <= r.status < 300]

    async def _handle(
        self, request: web.Request, body: bytes
    ) -> tuple[IntakeRequest, web.Response]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = IntakeRequest(request.method, request.path, headers, body, None, len(body))
        try:
            record.body = decode_body(body, request.headers.get("Content-Encoding", ""))
            record.json = json.loads(record.body) if record.body else None
        except (ValueError, OSError, zlib.error, zstandard.ZstdError) as exc:
            return record, web.json_response({"errors": [f"bad body: {exc}"]}, status=400)
        key = request.headers.get("DD-API-KEY")
        if not key or (self.api_key is not None and key != self.api_key):
            return record, web.json_response({"errors": ["Forbidden"]}, status=403)
        if request.method == "POST" and request.path == "/api/v2/series":
            if not isinstance(record.json, dict) or not isinstance(record.json.get("series"), list):
                return record, web.json_response({"errors": ["missing series"]}, status=400)
            if self.max_series_bytes is not None and len(record.body) > self.max_series_bytes:
                return record, web.json_response({"errors": ["Payload too large"]}, status=413)
            return record, web.json_response({"errors": []}, status=202)
        if request.method == "POST" and request.path == "/api/v1/events":
            if not isinstance(record.json, dict) or not record.json.get("title"):
                return record, web.json_response({"errors": ["missing title"]}, status=400)
            return record, web.json_response(self._event_created(record.json), status=202)
        if request.path.startswith(("/api/v1/dashboard", "/api/v1/monitor")):
            if not request.headers.get("DD-APPLICATION-KEY"):
                return record, web.json_response({"errors": ["Forbidden"]}, status=403)
            return record, self._manage(request, record.json)
        return record, web.json_response({})

    def _manage(self, request: web.Request, body: Any) -> web.Response:
        """Dashboards (v1) and monitors (v1): list, get, create, update, as Datadog does."""
        parts = request.path.strip("/").split("/")  # api, v1, dashboard|monitor, [id]
        what, ident = parts[2], (parts[3] if len(parts) > 3 else None)
        if what == "dashboard":
            if request.method == "GET" and ident is None:
                summary = [
                    {k: d[k] for k in ("id", "title", "description", "layout_type") if k in d}
                    for d in self.dashboards.values()
                ]
                return web.json_response({"dashboards": summary})
            if request.method == "POST" and ident is None:
                ident = f"abc-{len(self.dashboards) + 100:03d}-xyz"
                return web.json_response(self._store_dashboard(ident, body))
            if ident in self.dashboards:
                if request.method == "GET":
                    return web.json_response(self.dashboards[ident])
                if request.method == "PUT":
                    return web.json_response(self._store_dashboard(ident, body))
            return web.json_response({"errors": ["Dashboard not found"]}, status=404)
        if what == "monitor":
            if request.method == "GET" and ident is None:
                wanted = set(filter(None, request.query.get("monitor_tags", "").split(",")))
                found = [m for m in self.monitors.values() if wanted <= set(m.get("tags", []))]
                return web.json_response(found)
            if request.method == "POST" and ident is None:
                number = 5_000 + len(self.monitors)
                # Datadog fills options the request did not give.
                options = {"notify_audit": False, "new_group_delay": 60, **body.get("options", {})}
                stored = {**body, "id": number, "options": options}
                self.monitors[number] = _as_datadog_stores(stored)
                return web.json_response(self.monitors[number])
            if ident is not None and ident.isdigit() and int(ident) in self.monitors:
                current = self.monitors[int(ident)]
                if request.method == "GET":
                    return web.json_response(current)
                if request.method == "PUT":
                    options = {**current.get("options", {}), **body.get("options", {})}
                    current.update({**body, "options": options, "id": int(ident)})
                    current.update(_as_datadog_stores(current))
                    return web.json_response(current)
            return web.json_response({"errors": ["Monitor not found"]}, status=404)
        return web.json_response({"errors": ["Not found"]}, status=404)

    def _store_dashboard(self, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        # Datadog numbers every widget; a re-read dashboard carries those ids.
        def number(widgets: list[dict[str, Any]], start: int) -> int:
            for widget in widgets:
                widget["id"] = start
                start += 1
                start = number(widget.get("definition", {}).get("widgets", []), start)
            return start

        stored: dict[str, Any] = json.loads(json.dumps(body))
        number(stored.get("widgets", []), 1)
        # Datadog fills fields the request did not give.
        stored.setdefault("reflow_type", "auto")
        stored.setdefault("is_read_only", False)
        for variable in stored.get("template_variables", []):
            variable.setdefault("available_values", [])
        stored["id"] = ident
        stored["url"] = f"/dashboard/{ident}"
        self.dashboards[ident] = stored
        return stored

    def _event_created(self, event: dict[str, Any]) -> dict[str, Any]:
        # Echo only fields of the client's `Event` model so the response deserialises.
        self._next_event_id += 1
        event_id = self._next_event_id
        created = {k: event[k] for k in _EVENT_FIELDS if k in event}
        created |= {"id": event_id, "id_str": str(event_id)}
        created["url"] = f"https://app.datadoghq.com/event/event?id={event_id}"
        return {"status": "ok", "event": created}


def _as_datadog_stores(monitor: dict[str, Any]) -> dict[str, Any]:
    """A monitor as Datadog hands it back: tags sorted, thresholds as floats."""
    out = dict(monitor)
    out["tags"] = sorted(monitor.get("tags") or [])
    options = dict(monitor.get("options") or {})
    thresholds = options.get("thresholds")
    if isinstance(thresholds, dict):
        options["thresholds"] = {
            k: float(v) if isinstance(v, int | float) else v for k, v in thresholds.items()
        }
    out["options"] = options
    return out
