"""Webhook subscriptions (admin): create, list, read, delete, delivery log, test,
secret rotation.

The signing secret (``whsec_`` + base64 of 24 to 64 bytes, the Standard Webhooks
format) is returned once, in the response to ``POST /v1/webhooks`` (or to
``POST /v1/webhooks/{id}/rotate-secret`` for a new one); no other route shows
it. Target URLs pass the SSRF guard (:mod:`service.alerts.ssrf`) at creation.
URLs and secrets are stored encrypted (:mod:`service.cipher`); the routes
decrypt URLs to show them. No route filters subscriptions by URL (an encrypted
column could not be searched).

``POST /v1/webhooks/{id}/test`` queues an outbox row that the dispatcher role
delivers like any alert (signed, with retries, the SSRF check repeated at send
time, pinned to the checked address); every attempt is in the delivery log.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy import bindparam, delete, insert, select, update

from service.alerts import models
from service.alerts.ssrf import check_webhook_url
from service.api.deps import ReadConnection, WriteSession, get_runtime, require_admin
from service.api.pagination import (
    DEFAULT_LIMIT,
    CursorParam,
    Keyset,
    LimitParam,
    ListRoute,
    fetch_page,
    page_response,
)
from service.api.queries import fetch_dicts, jsonb_list, jsonb_object, parse_tags
from service.api.schemas import (
    NO_NUL,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPage,
    WebhookFilter,
    WebhookPage,
    WebhookSecretRotated,
    WebhookTestQueued,
    responses,
)
from service.cipher import SecretCipher, cipher_for
from service.errors import NotFoundError
from service.outbox.models import OutboxItem, OutboxKind

router = APIRouter(prefix="/v1", tags=["webhooks"], dependencies=[Depends(require_admin)])

# Subscriptions oldest first ((created_at, id) is their index); attempts newest first.
KEYSET = Keyset("webhooks", ("time", "str"))
DELIVERY_KEYSET = Keyset("webhook-deliveries", ("int",))

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24

W = models.WebhookSubscription
WD = models.WebhookDelivery

_COLUMNS = (W.id, W.url, W.events, W.filter, W.format, W.active, W.created_at)
LIST: ListRoute[tuple[()]] = ListRoute(
    KEYSET, WebhookPage, select(*_COLUMNS), [(W.created_at, False), (W.id, False)]
)
DELIVERIES: ListRoute[tuple[()]] = ListRoute(
    DELIVERY_KEYSET,
    WebhookDeliveryPage,
    select(
        WD.id,
        WD.webhook_id,
        WD.alert_id,
        WD.event_type,
        WD.attempt,
        WD.status_code,
        WD.error,
        WD.attempted_at,
        WD.next_attempt_at,
    ),
    [(WD.id, True)],
    lambda shape: [WD.webhook_id == bindparam("webhook_id")],
)

WebhookId = Annotated[
    str, Path(description="Webhook subscription id.", max_length=128, pattern=NO_NUL)
]


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _cipher(request: Request) -> SecretCipher:
    return cipher_for(get_runtime(request).settings)


def _webhook(row: Any, cipher: SecretCipher) -> Webhook:
    stored = jsonb_object(row["filter"])
    known = {k: stored.get(k) for k in WebhookFilter.model_fields}
    return Webhook(
        id=row["id"],
        url=cipher.decrypt(row["url"]),
        events=[str(e) for e in jsonb_list(row["events"])],
        filter=WebhookFilter.model_validate(known),
        format=row["format"] if row["format"] in ("standard", "slack") else "standard",
        active=row["active"],
        created_at=row["created_at"],
    )


@router.post(
    "/webhooks",
    status_code=201,
    summary="Create a webhook subscription",
    description=(
        "Subscribes `url` to the listed alert types. The response carries the signing "
        "`secret`, which is never shown again. A URL whose host resolves to a loopback, "
        "private, link-local, reserved, multicast or unspecified address is refused "
        "with 400 (`webhook-url-refused`) unless ECSWATCH_WEBHOOK_ALLOW_PRIVATE is true."
    ),
    responses=responses(WebhookCreated, status=201, errors=(400, 401, 403)),
)
async def create_webhook(
    request: Request, body: WebhookCreate, session: WriteSession
) -> WebhookCreated:
    settings = get_runtime(request).settings
    cipher = cipher_for(settings)
    # A given secret was checked against SECRET_PATTERN and its size by the request model.
    secret = body.secret if body.secret is not None else new_secret()
    if body.filter.tag is not None:
        parse_tags([body.filter.tag])
    await check_webhook_url(body.url, allow_private=settings.webhook_allow_private)
    events = list(dict.fromkeys(e.value for e in body.events))
    stmt = (
        insert(W)
        .values(
            id="wh_" + secrets.token_hex(12),
            url=cipher.encrypt(body.url),
            events=events,
            filter=body.filter.model_dump(exclude_none=True),
            format=body.format,
            secret=cipher.encrypt(secret),
        )
        .returning(*_COLUMNS)
    )
    row = (await session.execute(stmt)).mappings().one()
    return WebhookCreated(**_webhook(row, cipher).model_dump(), secret=secret)


@router.get(
    "/webhooks",
    summary="List webhook subscriptions",
    description="Subscriptions, oldest first, without their secrets.",
    response_model=WebhookPage,
    responses=responses(WebhookPage, errors=(400, 401, 403)),
)
async def list_webhooks(
    request: Request,
    conn: ReadConnection,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    rows, next_page = await fetch_page(conn, LIST, (), {}, limit=limit, cursor=cursor)
    cipher = _cipher(request)
    return page_response(LIST, [_webhook(row, cipher) for row in rows], next_page)


@router.get(
    "/webhooks/{webhook_id}",
    summary="Get a webhook subscription",
    responses=responses(Webhook, errors=(401, 403, 404)),
)
async def get_webhook(request: Request, conn: ReadConnection, webhook_id: WebhookId) -> Webhook:
    found = await fetch_dicts(conn, select(*_COLUMNS).where(W.id == webhook_id))
    row = found[0] if found else None
    if row is None:
        raise NotFoundError(f"no webhook {webhook_id!r}")
    return _webhook(row, _cipher(request))


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    summary="Delete a webhook subscription",
    description=(
        "Deletes the subscription and its delivery log. Deliveries already queued for it "
        "are not sent: the dispatcher marks them dead (`the subscription was deleted`)."
    ),
    responses=responses(None, errors=(401, 403, 404)),
)
async def delete_webhook(session: WriteSession, webhook_id: WebhookId) -> Response:
    deleted = (await session.execute(delete(W).where(W.id == webhook_id).returning(W.id))).first()
    if deleted is None:
        raise NotFoundError(f"no webhook {webhook_id!r}")
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    summary="List delivery attempts of a subscription",
    description=(
        "Every attempt the dispatcher made, newest first, with the HTTP status or the "
        "error, and when the next retry is due (null once delivered or given up)."
    ),
    response_model=WebhookDeliveryPage,
    responses=responses(WebhookDeliveryPage, errors=(400, 401, 403, 404)),
)
async def list_deliveries(
    conn: ReadConnection,
    webhook_id: WebhookId,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    rows, next_page = await fetch_page(
        conn, DELIVERIES, (), {"webhook_id": webhook_id}, limit=limit, cursor=cursor
    )
    # Tell "no attempts yet" from "no such webhook" only when the page is empty.
    if not rows and (await conn.execute(select(W.id).where(W.id == webhook_id))).first() is None:
        raise NotFoundError(f"no webhook {webhook_id!r}")
    return page_response(DELIVERIES, rows, next_page)


@router.post(
    "/webhooks/{webhook_id}/test",
    status_code=202,
    summary="Send a test delivery",
    description=(
        "Queues a `webhook.test` delivery to the subscription and answers at once with "
        "the outbox id (status `queued`). The dispatcher role sends it within moments "
        "(signed, with retries); the attempts appear under `/v1/webhooks/{id}/deliveries`."
    ),
    responses=responses(WebhookTestQueued, status=202, errors=(401, 403, 404)),
)
async def test_webhook(session: WriteSession, webhook_id: WebhookId) -> WebhookTestQueued:
    exists_row = (await session.execute(select(W.id).where(W.id == webhook_id))).first()
    if exists_row is None:
        raise NotFoundError(f"no webhook {webhook_id!r}")
    test_id = uuid.uuid4().hex
    stmt = (
        insert(OutboxItem)
        .values(
            kind=OutboxKind.WEBHOOK.value,
            # Unique per request: each press of "test" is its own delivery.
            dedupe_key=f"webhook-test:{webhook_id}:{test_id}",
            payload={
                "webhook_id": webhook_id,
                "event_type": "webhook.test",
                "alert_id": None,
                "test_id": test_id,
                "requested_at": datetime.now(UTC).isoformat(),
            },
        )
        .returning(OutboxItem.id)
    )
    outbox_id = (await session.execute(stmt)).scalar_one()
    return WebhookTestQueued(webhook_id=webhook_id, outbox_id=outbox_id)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    summary="Rotate a subscription's signing secret",
    description=(
        "Generates a new signing secret and returns it; it is never shown again. For "
        "ECSWATCH_WEBHOOK_SECRET_OVERLAP_S (24 h by default) after the call, deliveries "
        "carry two `v1,` signatures in `webhook-signature`, one per secret, so a receiver "
        "verifies with either while it switches to the new one. Rotating again within "
        "the overlap ends the older secret's overlap at once."
    ),
    responses=responses(WebhookSecretRotated, errors=(401, 403, 404)),
)
async def rotate_secret(
    request: Request, session: WriteSession, webhook_id: WebhookId
) -> WebhookSecretRotated:
    settings = get_runtime(request).settings
    cipher = cipher_for(settings)
    current = (
        await session.execute(select(W.secret).where(W.id == webhook_id).with_for_update())
    ).scalar()
    if current is None:
        raise NotFoundError(f"no webhook {webhook_id!r}")
    secret = new_secret()
    overlap = settings.webhook_secret_overlap_s
    expires = datetime.now(UTC) + timedelta(seconds=overlap) if overlap > 0 else None
    await session.execute(
        update(W)
        .where(W.id == webhook_id)
        .values(
            secret=cipher.encrypt(secret),
            # The stored token moves as it is: it needs no decrypting.
            previous_secret=current if expires is not None else None,
            previous_secret_expires_at=expires,
        )
    )
    return WebhookSecretRotated(id=webhook_id, secret=secret, previous_secret_expires_at=expires)
