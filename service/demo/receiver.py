"""A local webhook subscriber that checks Standard Webhooks signatures."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.demo.intake import LocalServer


@dataclass
class Delivery:
    """One POST as received; ``json`` is the parsed body, or None when it is not JSON."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    verified: bool
    error: str | None
    status: int = 0


class WebhookReceiver(LocalServer[Delivery]):
    """Accepts signed POSTs on paths registered with :meth:`expect`.

    Answers 204 for a valid signature, 400 for a missing or wrong one (also outside
    the 5-minute timestamp tolerance), 404 for a path with no secret and 405 for
    anything but POST. Every request is recorded in :attr:`deliveries`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, Webhook] = {}

    @property
    def deliveries(self) -> list[Delivery]:
        """Every request received, failed and rejected ones included, oldest first."""
        return self.records

    def expect(self, path: str, secret: str) -> str:
        """Accept deliveries on ``path`` signed with ``secret`` (``whsec_…``); returns the URL."""
        self._secrets[path] = Webhook(secret)
        return self.url + path

    def verified(self, path: str | None = None) -> list[Any]:
        """Parsed bodies of verified deliveries answered 2xx, optionally for one path."""
        return [
            d.json
            for d in self.records
            if d.verified and 200 <= d.status < 300 and path in (None, d.path)
        ]

    async def _handle(self, request: web.Request, body: bytes) -> tuple[Delivery, web.Response]:
        headers = {k.lower(): v for k, v in request.headers.items()}
        delivery = Delivery(request.path, headers, body, None, verified=False, error=None)
        # A non-JSON body stays as raw bytes; the signature check decides the answer.
        with contextlib.suppress(ValueError):
            delivery.json = json.loads(body)
        webhook = self._secrets.get(request.path)
        if request.method != "POST":
            delivery.error = "method not allowed"
            return delivery, web.Response(status=405)
        if webhook is None:
            delivery.error = "no secret registered for this path"
            return delivery, web.Response(status=404)
        try:
            webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            # ValueError covers malformed signature headers (bad base64, no comma).
            delivery.error = str(exc) or type(exc).__name__
            return delivery, web.json_response({"error": delivery.error}, status=400)
        delivery.verified = True
        return delivery, web.Response(status=204)
