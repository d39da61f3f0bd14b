"""The Slack format: escaped, cut to Slack's limits, valid for Slack's own block
models (``slack_sdk.models.blocks``), and a Slack 400 marks only its row dead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from slack_sdk.models.blocks import Block
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.alerts.slack import (
    ELLIPSIS,
    FIELD_TEXT_MAX,
    MESSAGE_MAX,
    SECTION_TEXT_MAX,
    TEXT_MAX,
    slack_message,
)
from service.demo.receiver import WebhookReceiver
from tests.alerts.test_webhook_delivery import (
    ALERT_BODY,
    add_alert,
    add_subscription,
    deliveries,
    make_dispatcher,
    new_secret,
    outbox_row,
)

HOSTILE = "stop <!channel> & <https://evil.example|fix it> now"


def alert(**deployment: Any) -> dict[str, Any]:
    body = dict(ALERT_BODY)
    body["deployment"] = {**ALERT_BODY["deployment"], **deployment}
    return body


def texts(message: dict[str, Any]) -> list[str]:
    """Every text of a message: the top-level one, then each block's."""
    found = [message["text"]]
    for block in message["blocks"]:
        if "text" in block:
            found.append(block["text"]["text"])
        found += [f["text"] for f in block.get("fields", [])]
        found += [e["text"] for e in block.get("elements", [])]
    return found


def validate(message: dict[str, Any]) -> None:
    """Slack's own models accept every block, and the message keeps its limits."""
    assert isinstance(message["text"], str)
    assert len(message["text"]) <= TEXT_MAX
    assert 0 < len(message["blocks"]) <= 50
    for block in message["blocks"]:
        parsed = Block.parse(block)
        assert parsed is not None
        parsed.validate_json()  # raises SlackObjectFormationError past a limit
        assert parsed.to_dict() == block
    assert sum(map(len, texts(message))) <= MESSAGE_MAX


def test_aws_texts_are_escaped_everywhere() -> None:
    body = alert(reason=HOSTILE, rollback_target=HOSTILE, id=HOSTILE)
    body.update(summary=HOSTILE, cluster="<!here>", service="a&b", service_arn=HOSTILE)
    body["id"] = "<@U123>"
    message = slack_message(body)
    validate(message)
    for shown in texts(message):
        assert "<" not in shown
        assert ">" not in shown
        assert "& " not in shown  # every & starts an entity
    assert "&lt;!channel&gt;" in message["text"]
    assert "&lt;!here&gt;/a&amp;b" in str(message["blocks"])


@pytest.mark.parametrize(
    ("field", "size"),
    [
        ("summary", 10),
        ("summary", SECTION_TEXT_MAX),
        ("summary", 50_000),
        ("reason", FIELD_TEXT_MAX - 5),
        ("reason", FIELD_TEXT_MAX),
        ("reason", 100_000),
        ("reason_escaped", 5_000),  # every character grows to a five-character entity
        ("all", 40_000),
    ],
)
def test_every_length_stays_within_slack_limits(field: str, size: int) -> None:
    body = alert()
    if field == "summary":
        body["summary"] = "s" * size
    elif field == "reason":
        body["deployment"]["reason"] = "r" * size
    elif field == "reason_escaped":
        body["deployment"]["reason"] = "&" * size
    else:
        body["summary"] = "x" * size
        body["cluster"] = "c" * size
        body["service_arn"] = "a" * size
        body["deployment"].update(reason="r" * size, id="d" * size, rollback_target="t" * size)
        body["deployment"]["target_groups"] = [{"name": "g" * size}]
    message = slack_message(body)
    validate(message)
    headline = message["blocks"][0]["text"]["text"]
    fields = message["blocks"][1]["fields"]
    assert len(headline) <= SECTION_TEXT_MAX
    assert all(len(f["text"]) <= FIELD_TEXT_MAX for f in fields)
    if size > FIELD_TEXT_MAX:
        assert any(t.endswith((ELLIPSIS, ELLIPSIS + "*")) for t in texts(message))
    if field == "reason_escaped":
        reason = next(f["text"] for f in fields if f["text"].startswith("*Reason*"))
        assert reason.removeprefix("*Reason*\n").removesuffix(ELLIPSIS).endswith("&amp;")


def test_a_short_alert_is_not_cut() -> None:
    message = slack_message(alert())
    validate(message)
    assert ELLIPSIS not in str(message)
    assert message["text"].endswith("Deployment ecs-svc/1 of prod/web failed")


@pytest.fixture
async def slack_refusing() -> AsyncIterator[str]:
    """A local server answering as Slack does to a message it refuses."""

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=400, text="invalid_blocks")

    app = web.Application()
    app.router.add_post("/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/services/T000/B000/XXXX"
    finally:
        await runner.cleanup()


async def test_a_slack_400_is_logged_and_kills_only_its_row(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    webhook_receiver: WebhookReceiver,
    slack_refusing: str,
) -> None:
    refused = await add_subscription(engine, slack_refusing, new_secret(), fmt="slack")
    secret = new_secret()
    fine = await add_subscription(
        engine, webhook_receiver.expect("/slack", secret), secret, fmt="slack"
    )
    dead_row, _ = await add_alert(engine, refused, "alrt_1")
    ok_row, _ = await add_alert(engine, fine, "alrt_1")
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        with structlog.testing.capture_logs() as logs:
            await make_dispatcher(engine, sessionmaker, http).dispatch_once()
    dead = await outbox_row(engine, dead_row)
    assert (dead["status"], dead["last_error"]) == ("dead", "HTTP 400: invalid_blocks")
    assert (await outbox_row(engine, ok_row))["status"] == "delivered"
    [logged] = await deliveries(engine, refused)
    assert (logged["status_code"], logged["error"]) == (400, "HTTP 400: invalid_blocks")
    [line] = [e for e in logs if e["event"] == "slack_rejected"]
    assert (line["webhook_id"], line["error"], line["status"]) == (refused, "invalid_blocks", 400)
    assert "XXXX" not in str(logs)  # the URL's token is never logged
    # The subscription stays active: the next alert is tried.
    next_row, _ = await add_alert(engine, refused, "alrt_2")
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        await make_dispatcher(engine, sessionmaker, http).dispatch_once()
    assert (await outbox_row(engine, next_row))["attempts"] == 1
    [got] = webhook_receiver.verified("/slack")
    validate(got)


async def test_every_delivered_slack_message_is_valid(
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    webhook_receiver: WebhookReceiver,
) -> None:
    secret = new_secret()
    wid = await add_subscription(
        engine, webhook_receiver.expect("/slack", secret), secret, fmt="slack"
    )
    await add_alert(engine, wid, "alrt_1")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE alerts SET payload = jsonb_set(payload, '{deployment,reason}',"
                " to_jsonb(repeat(:r, 3000))) WHERE id = 'alrt_1'"
            ),
            {"r": HOSTILE},
        )
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        await make_dispatcher(engine, sessionmaker, http).dispatch_once()
    await asyncio.wait_for(webhook_receiver.wait_for(1), 10)
    [got] = webhook_receiver.verified("/slack")
    validate(got)
    assert "<!channel>" not in str(got)
