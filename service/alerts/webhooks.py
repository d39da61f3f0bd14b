"""The webhook :class:`~service.outbox.sender.Sender`: signs and POSTs alerts.

Per Standard Webhooks (the ``standardwebhooks`` package signs): headers
``webhook-id`` (derived from the outbox row's dedupe key, so the same on every
retry and after a crash between send and record), ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``. While a
rotated secret's overlap lasts, the header carries one ``v1,`` signature per
secret, space-separated, the new one first; a receiver verifies with either.

Subscriptions' URLs and secrets are stored encrypted (:mod:`service.cipher`) and
decrypted here, just before use; a value no configured key opens is retried
(the operator may restore the key), never sent unsigned.

Each delivery has one overall deadline (``ECSWATCH_WEBHOOK_TIMEOUT_S``: resolving,
connecting, sending and reading the answer), so a receiver that trickles its
answer cannot hold a batch past the dispatcher's lease. At most
``ECSWATCH_WEBHOOK_MAX_IN_FLIGHT`` deliveries per subscription are in flight in
one process; its further rows are deferred (not tried, no attempt counted) for
:data:`DEFER_S`, so a slow receiver delays only its own rows.

Each attempt runs the SSRF guard again and connects to the very address the
guard checked (the URL's host becomes that IP; ``Host`` and TLS SNI keep the
name), so a DNS answer that changes between check and connect cannot redirect
the request. Responses are read up to :data:`MAX_RESPONSE_BYTES`.

Outcomes: 2xx delivered; network errors, timeouts, 408, 429 and 5xx retried
(``Retry-After`` honoured); 410 Gone disables the subscription; any other
status, a refused address, or a deleted or disabled subscription is final for
that row only. For a ``slack`` subscription, Slack's error string (the body of
its 400, e.g. ``invalid_blocks``) is logged and kept in the delivery log.
Every attempt lands in ``webhook_deliveries`` through :meth:`WebhookSender.record`,
in the dispatcher's recording transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from service.alerts.slack import slack_message
from service.alerts.ssrf import IPAddress, Resolver, WebhookUrlRefusedError, check_webhook_url
from service.cipher import KEY_ENV, SecretCipher, SecretDecryptError, cipher_for
from service.logging import get_logger
from service.outbox.models import OutboxKind, OutboxStatus
from service.outbox.sender import ClaimedRow, SendResult, SendStatus

if TYPE_CHECKING:
    from service.outbox.dispatcher import Recorded
    from service.runtime import Runtime

log = get_logger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
#: Deliveries in flight at once in one process, all subscriptions together.
CONCURRENCY = 64
#: Seconds a row waits when its subscription already has its deliveries in flight.
DEFER_S = 1.0
#: Characters of a receiver's error answer kept (Slack's is one short word).
MAX_ERROR_TEXT = 100
TEST_EVENT_TYPE = "webhook.test"
USER_AGENT = "ecswatch-webhooks/1"


def message_id(dedupe_key: str) -> str:
    """The ``webhook-id`` of an outbox row: stable across retries and restarts."""
    return "msg_" + hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]


def encode_body(body: dict[str, Any]) -> str:
    """The exact text that is signed and sent (compact JSON, UTF-8)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def sign_headers(
    secret: str | Sequence[str], msg_id: str, at: datetime, body: str
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``: one ``v1,`` signature per
    secret, space-separated."""
    keys = [secret] if isinstance(secret, str) else list(secret)
    signature = " ".join(Webhook(key).sign(msg_id=msg_id, timestamp=at, data=body) for key in keys)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def test_body(payload: dict[str, Any]) -> dict[str, Any]:
    """The body of a ``POST /v1/webhooks/{id}/test`` delivery."""
    return {
        "type": TEST_EVENT_TYPE,
        "id": payload.get("test_id"),
        "created_at": payload.get("requested_at"),
        "cluster": None,
        "service": None,
        "deployment": None,
        "summary": "Test delivery from ecswatch",
        "events": [],
    }


def pinned_request(url: str, address: IPAddress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``url`` rewritten to connect to ``address``, with the Host header and SNI of the name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host:  # an IPv6 literal in the URL itself
        host_header = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
    extensions: dict[str, Any] = {}
    if parts.scheme == "https":
        extensions["sni_hostname"] = host
    return pinned, {"host": host_header}, extensions


def error_text(head: bytes) -> str:
    """A receiver's error answer as one short printable line (for the log)."""
    decoded = head[:MAX_ERROR_TEXT].decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else " " for c in decoded).strip()


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - now).total_seconds())


@dataclass(frozen=True, slots=True)
class _Subscription:
    id: str
    url: str
    secrets: tuple[str, ...]  # the current secret first, then one in its overlap
    format: str
    active: bool


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What :meth:`WebhookSender.record` needs beyond the dispatcher's result."""

    webhook_id: str | None
    alert_id: str | None
    event_type: str
    message_id: str
    status_code: int | None
    attempted_at: datetime
    disable: bool = False


_SUBSCRIPTIONS = text(
    "SELECT id, url, secret, previous_secret, previous_secret_expires_at, format, active"
    " FROM webhook_subscriptions WHERE id = ANY(:ids)"
)
_ALERTS = text("SELECT id, payload FROM alerts WHERE id = ANY(:ids)")
_LOG = text(
    "INSERT INTO webhook_deliveries (webhook_id, alert_id, message_id, event_type, attempt,"
    " status_code, error, attempted_at, next_attempt_at)"
    " SELECT :webhook_id, a.id, :message_id, :event_type, :attempt, :status_code, :error,"
    " :attempted_at, :next_attempt_at"
    " FROM webhook_subscriptions AS w LEFT JOIN alerts AS a ON a.id = :alert_id"
    " WHERE w.id = :webhook_id"
)
_DISABLE = text("UPDATE webhook_subscriptions SET active = false WHERE id = :id")


class WebhookSender:
    """Delivers ``webhook`` outbox rows; also keeps the delivery log."""

    kinds = frozenset({OutboxKind.WEBHOOK})

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        *,
        allow_private: bool,
        cipher: SecretCipher,
        resolver: Resolver | None = None,
        deadline_s: float = 15.0,
        per_subscription: int = 4,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._client = client
        self._allow_private = allow_private
        self._cipher = cipher
        self._resolver = resolver
        self._deadline_s = deadline_s
        self._per_subscription = per_subscription
        self._attempts: dict[int, _Attempt] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)
        #: Deliveries in flight per subscription id.
        self._busy: dict[str, int] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls, runtime: Runtime, *, resolver: Resolver | None = None
    ) -> AsyncIterator[WebhookSender]:
        """A sender with its own HTTP client (per-step timeouts under the overall
        deadline, no redirects)."""
        settings = runtime.settings
        limit = settings.webhook_timeout_s
        timeout = httpx.Timeout(limit, connect=min(5.0, limit))
        async with httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,  # a proxy would connect by name, defeating the pinning
            headers={"user-agent": USER_AGENT},
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=20),
        ) as client:
            yield cls(
                runtime.sessionmaker,
                client,
                allow_private=settings.webhook_allow_private,
                cipher=cipher_for(settings),
                resolver=resolver,
                deadline_s=limit,
                per_subscription=settings.webhook_max_in_flight,
            )

    async def send(self, rows: Sequence[ClaimedRow]) -> Sequence[SendResult]:
        webhook_ids = sorted({str(r.payload.get("webhook_id")) for r in rows})
        alert_ids = sorted({str(r.payload["alert_id"]) for r in rows if r.payload.get("alert_id")})
        async with self._sessionmaker() as session:
            found = (await session.execute(_SUBSCRIPTIONS, {"ids": webhook_ids})).all()
            alerts = {
                row.id: row.payload
                for row in (await session.execute(_ALERTS, {"ids": alert_ids})).all()
            }
        now = datetime.now(UTC)
        subs: dict[str, _Subscription | None] = {}
        for sub in found:
            try:
                subs[sub.id] = self._open_subscription(sub, now)
            except SecretDecryptError:
                log.error("webhook_secret_unreadable", webhook_id=sub.id)
                subs[sub.id] = None
        return await asyncio.gather(*(self._send_one(row, subs, alerts) for row in rows))

    def _open_subscription(self, row: Any, now: datetime) -> _Subscription:
        """A subscription row with its URL and secrets decrypted."""
        keys = [self._cipher.decrypt(row.secret)]
        expires = row.previous_secret_expires_at
        if row.previous_secret is not None and expires is not None and expires > now:
            keys.append(self._cipher.decrypt(row.previous_secret))
        url = self._cipher.decrypt(row.url)
        return _Subscription(row.id, url, tuple(keys), row.format, row.active)

    async def _send_one(
        self,
        row: ClaimedRow,
        subs: dict[str, _Subscription | None],
        alerts: dict[str, dict[str, Any]],
    ) -> SendResult:
        payload = row.payload
        webhook_id = payload.get("webhook_id")
        alert_id = payload.get("alert_id")
        event_type = str(payload.get("event_type") or "unknown")
        msg_id = message_id(row.dedupe_key)
        now = datetime.now(UTC)

        def done(
            status: SendStatus,
            error: str | None = None,
            code: int | None = None,
            retry_after: float | None = None,
            disable: bool = False,
        ) -> SendResult:
            self._attempts[row.id] = _Attempt(
                str(webhook_id) if webhook_id else None,
                str(alert_id) if alert_id else None,
                event_type,
                msg_id,
                code,
                now,
                disable,
            )
            return SendResult(row.id, status, error, retry_after)

        if str(webhook_id) not in subs:
            return done(SendStatus.DEAD, "the subscription was deleted")
        sub = subs[str(webhook_id)]
        if sub is None:
            return done(
                SendStatus.RETRY,
                f"the subscription's URL or secret cannot be decrypted ({KEY_ENV})",
            )
        if not sub.active:
            return done(SendStatus.DEAD, "the subscription is disabled")
        if alert_id:
            body = alerts.get(str(alert_id))
            if body is None:
                return done(SendStatus.DEAD, f"alert {alert_id} no longer exists")
        elif event_type == TEST_EVENT_TYPE:
            body = test_body(payload)
        else:
            return done(SendStatus.DEAD, "an outbox row with neither alert nor test")
        if sub.format == "slack":
            body = slack_message(body)
        text_body = encode_body(body)

        if self._busy.get(sub.id, 0) >= self._per_subscription:
            # Its receiver is busy with earlier rows: not tried now, no attempt counted.
            return SendResult(row.id, SendStatus.DEFERRED, retry_after=DEFER_S)
        self._busy[sub.id] = self._busy.get(sub.id, 0) + 1
        try:
            async with asyncio.timeout(self._deadline_s):
                return await self._deliver(sub, text_body, msg_id, now, done)
        except TimeoutError:
            return done(SendStatus.RETRY, f"deadline: no full answer within {self._deadline_s:g} s")
        finally:
            self._busy[sub.id] -= 1
            if not self._busy[sub.id]:
                del self._busy[sub.id]

    async def _deliver(
        self,
        sub: _Subscription,
        text_body: str,
        msg_id: str,
        now: datetime,
        done: Callable[..., SendResult],
    ) -> SendResult:
        """Check the URL, POST, and classify the answer (under the caller's deadline)."""
        try:
            addresses = await check_webhook_url(
                sub.url, allow_private=self._allow_private, resolver=self._resolver
            )
        except WebhookUrlRefusedError as exc:
            # A name that stopped resolving may come back; a forbidden address is final.
            transient = "does not resolve" in exc.detail
            return done(SendStatus.RETRY if transient else SendStatus.DEAD, exc.detail)
        async with self._limit:
            try:
                response, head = await self._post(
                    sub.url, addresses, text_body, msg_id, sub.secrets, now
                )
            except httpx.TimeoutException as exc:
                return done(SendStatus.RETRY, f"timeout: {type(exc).__name__}")
            except httpx.HTTPError as exc:
                return done(SendStatus.RETRY, f"network error: {type(exc).__name__}: {exc}"[:300])
        code = response.status_code
        if 200 <= code < 300:
            return done(SendStatus.DELIVERED, code=code)
        error = f"HTTP {code}"
        if code == 410:
            return done(SendStatus.DEAD, f"{error}: subscription disabled", code, disable=True)
        if code in (408, 429) or code >= 500:
            wait = retry_after_seconds(response.headers.get("retry-after"), now)
            return done(SendStatus.RETRY, error, code, retry_after=wait)
        if sub.format == "slack":
            # Slack answers a refused message with a short error string as the body.
            reason = error_text(head)
            log.warning("slack_rejected", webhook_id=sub.id, status=code, error=reason)
            if reason:
                error = f"{error}: {reason}"
        return done(SendStatus.DEAD, error, code)

    async def _post(
        self,
        url: str,
        addresses: Sequence[IPAddress],
        body: str,
        msg_id: str,
        secrets: Sequence[str],
        now: datetime,
    ) -> tuple[httpx.Response, bytes]:
        """POST to the checked addresses in turn (the next one only when a connection
        cannot be made, as a resolver's client would); the answer, read to a bound,
        and its first bytes."""
        headers = {"content-type": "application/json", **sign_headers(secrets, msg_id, now, body)}
        for index, address in enumerate(addresses):
            pinned, host, extensions = pinned_request(url, address)
            request = self._client.build_request(
                "POST",
                pinned,
                content=body.encode(),
                headers={**host, **headers},
                extensions=extensions,
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectError:
                if index + 1 == len(addresses):
                    raise
                continue
            head = b""
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    if len(head) < MAX_ERROR_TEXT:
                        head += chunk[: MAX_ERROR_TEXT - len(head)]
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break
            finally:
                await response.aclose()
            return response, head
        raise httpx.ConnectError("no address to connect to")

    async def record(self, session: AsyncSession, attempts: Sequence[Recorded]) -> None:
        """Append each attempt to the delivery log; disable subscriptions that said 410."""
        for recorded in attempts:
            attempt = self._attempts.pop(recorded.row.id, None)
            if attempt is None or attempt.webhook_id is None:
                continue
            await session.execute(
                _LOG,
                {
                    "webhook_id": attempt.webhook_id,
                    "alert_id": attempt.alert_id,
                    "message_id": attempt.message_id,
                    "event_type": attempt.event_type,
                    "attempt": recorded.attempt,
                    "status_code": attempt.status_code,
                    "error": recorded.result.error,
                    "attempted_at": attempt.attempted_at,
                    "next_attempt_at": (
                        recorded.next_attempt_at
                        if recorded.status is OutboxStatus.PENDING
                        else None
                    ),
                },
            )
            if attempt.disable:
                await session.execute(_DISABLE, {"id": attempt.webhook_id})
                log.warning("webhook_disabled", webhook_id=attempt.webhook_id, reason="HTTP 410")


_STORED = text(
    "SELECT id, url, secret, previous_secret FROM webhook_subscriptions ORDER BY id FOR UPDATE"
)
_REWRITE = text(
    "UPDATE webhook_subscriptions SET url = :url, secret = :secret, previous_secret = :previous"
    " WHERE id = :id"
)


async def reencrypt_subscriptions(session: AsyncSession, cipher: SecretCipher) -> tuple[int, int]:
    """Re-encrypt every subscription's URL and secrets under ``cipher``'s newest key
    (``ecswatch secrets rotate-key``); (rows rewritten, rows in all).

    Rows are locked for the caller's transaction; a value no configured key opens
    stops the whole rotation, naming the subscription, and nothing is written.
    """
    rows = (await session.execute(_STORED)).all()
    rotated = 0
    for row in rows:
        values = (row.url, row.secret, row.previous_secret)
        if all(v is None or cipher.is_current(v) for v in values):
            continue
        try:
            url, secret, previous = (None if v is None else cipher.rotate(v) for v in values)
        except SecretDecryptError as exc:
            raise SecretDecryptError(f"webhook {row.id}: {exc.detail}") from None
        await session.execute(
            _REWRITE, {"id": row.id, "url": url, "secret": secret, "previous": previous}
        )
        rotated += 1
    return rotated, len(rows)
