"""A deliberately slow webhook receiver: it reads each request, then answers one byte
every ``interval_s`` seconds and never finishes its answer.

It stands for a receiver that hangs without ever going quiet long enough for a
per-read timeout to fire; only an overall delivery deadline ends such a request.
Each request is recorded with its ``webhook-id``; :attr:`TrickleReceiver.overlaps`
counts requests of one ``webhook-id`` that were open at the same time (a row sent
twice at once).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


@dataclass
class TrickleRequest:
    """One request as received."""

    webhook_id: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class TrickleReceiver:
    """A raw asyncio HTTP/1.1 server on 127.0.0.1 that trickles its answers."""

    def __init__(self, interval_s: float = 3.0) -> None:
        self.interval_s = interval_s
        self.requests: list[TrickleRequest] = []
        self.overlaps = 0
        self.arrived = asyncio.Condition()
        self._open: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None, "the receiver is not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> TrickleReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def count(self, webhook_id: str) -> int:
        """Requests received carrying ``webhook_id``."""
        return sum(1 for r in self.requests if r.webhook_id == webhook_id)

    async def wait_for(self, count: int) -> None:
        """Until at least ``count`` requests have arrived."""
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= count)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        msg_id = ""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEADER_BYTES:
                return
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                name.strip().lower(): value.strip()
                for name, sep, value in (line.partition(":") for line in lines)
                if sep
            }
            length = min(int(headers.get("content-length", "0") or 0), MAX_BODY_BYTES)
            body = await reader.readexactly(length)
            msg_id = headers.get("webhook-id", "")
            self._open[msg_id] = self._open.get(msg_id, 0) + 1
            if self._open[msg_id] > 1:
                self.overlaps += 1
            async with self.arrived:
                self.requests.append(TrickleRequest(msg_id, body, headers))
                self.arrived.notify_all()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
            await writer.drain()
            while True:
                try:
                    # Anything more from the client, or its hanging up, ends the wait.
                    more = await asyncio.wait_for(reader.read(1024), self.interval_s)
                except TimeoutError:
                    writer.write(b".")
                    await writer.drain()
                    continue
                if not more:
                    return  # the client gave up on us

        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        except asyncio.CancelledError:
            # The receiver is closing: the stream machinery must not see a cancelled task.
            return
        finally:
            if msg_id:
                self._open[msg_id] -= 1
            self._handlers.discard(task)
            writer.close()
