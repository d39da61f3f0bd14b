"""Every log line of a whole webhook lifecycle, read for secrets.

A subscription is created through the API, an alert is delivered, fails, is
retried and delivered, and a database error interrupts a second POST
/v1/webhooks. Everything any logger wrote meanwhile (ecswatch's, httpx's,
SQLAlchemy's, at debug level) is rendered by ecswatch's own JSON formatter and
searched for the signing secrets, the API tokens and the webhook URL's path,
which carries the credential of a Slack webhook.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.cipher import cipher_for
from service.config import Settings, load_settings
from service.demo.receiver import WebhookReceiver
from service.logging import configure_logging
from service.runtime import Runtime
from tests.alerts.test_webhook_delivery import add_alert, drain, make_dispatcher

READ_TOKEN = "read-" + secrets.token_hex(16)
ADMIN_TOKEN = "admin-" + secrets.token_hex(16)


class _Lines(logging.Handler):
    """Keeps every record, rendered as the production handler renders it."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    configure_logging("json", "debug")
    (production,) = root.handlers
    assert production.formatter is not None
    capture = _Lines(production.formatter)
    root.addHandler(capture)
    try:
        yield capture.lines
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name in logging.root.manager.loggerDict:
            logging.getLogger(name).setLevel(saved_levels.get(name, logging.NOTSET))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        api_tokens=f"read:{READ_TOKEN},admin:{ADMIN_TOKEN}",
        webhook_allow_private=True,
    )


def _secret() -> tuple[str, bytes]:
    key = secrets.token_bytes(24)
    return "whsec_" + base64.b64encode(key).decode(), key


async def test_no_secret_token_or_webhook_path_in_any_log_line(
    log_lines: list[str],
    runtime: Runtime,
    engine: AsyncEngine,
    webhook_receiver: WebhookReceiver,
) -> None:
    secret, key = _secret()
    # Shaped as a Slack incoming webhook: the path is the credential.
    path = f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/"
    path += secrets.token_urlsafe(18)
    url = webhook_receiver.expect(path, secret)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        created = await api.post(
            "/v1/webhooks",
            json={"url": url, "events": ["deployment.failed"], "secret": secret},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        wid = created.json()["id"]
        read = await api.get("/v1/webhooks", headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert read.status_code == 403

        # Deliver: a 500 first, then the retry succeeds.
        await add_alert(engine, wid)
        webhook_receiver.fail_next(500, count=1)
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as http:
            # The API stored the URL and secret under the runtime's key.
            dispatcher = make_dispatcher(
                runtime.engine, runtime.sessionmaker, http, cipher=cipher_for(runtime.settings)
            )
            await drain(dispatcher)
        assert [d.status for d in webhook_receiver.deliveries] == [500, 204]

        # A database error while the next subscription, with its secret, is inserted.
        second_secret, second_key = _secret()
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_insert BEFORE INSERT ON webhook_subscriptions"
                    " FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
                )
            )
        try:
            failed = await api.post(
                "/v1/webhooks",
                json={"url": url, "events": ["deployment.failed"], "secret": second_secret},
                headers=admin,
            )
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("DROP TRIGGER refuse_insert ON webhook_subscriptions"))
                await conn.execute(text("DROP FUNCTION refuse_insert()"))
        assert failed.status_code == 500

    logged = "\n".join(log_lines)
    # The run did log: the database error, with its statement but not its values.
    assert "refused by the test" in logged
    forbidden = {
        "signing secret": secret,
        "signing key": base64.b64encode(key).decode(),
        "second signing secret": second_secret,
        "second signing key": base64.b64encode(second_key).decode(),
        "admin token": ADMIN_TOKEN,
        "read token": READ_TOKEN,
        "webhook path": path,
        "webhook token": path.rsplit("/", 1)[1],
    }
    found = [what for what, value in forbidden.items() if value in logged]
    assert not found, f"{found} found in the log:\n{logged[:4000]}"
