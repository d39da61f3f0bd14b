"""The grants docs/deploy.md gives the replicas' database user are enough to run
ecswatch with ``--no-migrate``, and that user cannot change the schema.

The SQL is read from the documentation itself, so the documented grants are the
ones tested: the schema is migrated by its owner, the grants are applied, and
then the consumer, the API (reads and a webhook subscription), the dispatcher
and the retention job run as the second user.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from service.api.app import create_app
from service.cipher import cipher_for
from service.config import load_settings
from service.consumer.handler import Handler, Message
from service.db import create_engine
from service.demo.events import deployment_events, task_lifecycle
from service.demo.receiver import WebhookReceiver
from service.migrate import current, head_revisions, upgrade
from service.retention import prune
from service.runtime import open_runtime
from tests.alerts.test_webhook_delivery import add_alert, drain, make_dispatcher, new_secret
from tests.conftest import REPO_ROOT

HEADING = "### Migrations with a schema-owning user"


def documented_grants() -> str:
    """The ```sql block of docs/deploy.md under the migrations heading."""
    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    section = doc.split(HEADING, 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sql\n(.*?)```", section, re.S)
    assert match is not None, "no ```sql block under the heading"
    return match.group(1)


@pytest.fixture
async def app_user_url(empty_database_url: str) -> AsyncIterator[str]:
    """The empty database migrated by its owner, and a URL of a user granted as documented."""
    url = make_url(empty_database_url)
    owner = url.username or "postgres"
    role = f"ecswatchapp_{uuid.uuid4().hex[:8]}"
    engine = create_engine(empty_database_url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    sql = (
        documented_grants()
        .replace("ecswatchapp", role)
        .replace("DATABASE ecswatch", f'DATABASE "{url.database}"')
        .replace("FOR ROLE ecswatch", f'FOR ROLE "{owner}"')
        .replace("'…'", "'app-password'")
    )
    conn = await asyncpg.connect(
        user=owner, host=url.host or "127.0.0.1", port=url.port or 5432, database=url.database
    )
    try:
        await conn.execute(sql)
        yield url.set(username=role, password="app-password").render_as_string(hide_password=False)
    finally:
        # Its privileges here, on the database itself and its default privileges
        # go with DROP OWNED; then the role (cluster-wide) can go.
        await conn.execute(f'DROP OWNED BY "{role}"')
        await conn.execute(f'DROP ROLE "{role}"')
        await conn.close()


async def test_the_documented_grants_run_every_role_and_no_migration(
    app_user_url: str, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    settings = load_settings(
        database_url=app_user_url,
        data_dir=tmp_path / "data",
        api_tokens=f"admin:{'a' * 32}",
        webhook_allow_private=True,
    )
    admin = {"Authorization": f"Bearer {'a' * 32}"}
    async with open_runtime(settings, pool_size=2) as runtime:
        assert set(await current(runtime.engine)) == set(head_revisions())
        # A start-up migration at head changes nothing, so it needs no schema right.
        await upgrade(runtime.engine)
        # Consumer: state, raw events, deployments, alerts and outbox rows.
        now = datetime.now(UTC)
        events = [
            *task_lifecycle(random.Random(7), stop=True),
            *deployment_events(
                cluster="prod",
                service="web",
                deployment_id="ecs-svc/1",
                start=now,
                outcome="failed",
            ),
        ]
        messages = [Message(message_id=str(i), body=json.dumps(e)) for i, e in enumerate(events)]
        result = await Handler(runtime.sessionmaker).handle(messages)
        assert not result.retry
        assert "quarantined" not in result.outcomes.values()

        # API: reads, and a subscription written.
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            assert (await api.get("/v1/tasks", headers=admin)).status_code == 200
            secret = new_secret()
            created = await api.post(
                "/v1/webhooks",
                json={
                    "url": webhook_receiver.expect("/hook", secret),
                    "events": ["deployment.failed"],
                    "secret": secret,
                },
                headers=admin,
            )
            assert created.status_code == 201, created.text

        # Dispatcher: claims, sends and marks outbox rows.
        await add_alert(runtime.engine, created.json()["id"])
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as http:
            # The API stored the URL and secret under the runtime's key.
            dispatcher = make_dispatcher(
                runtime.engine, runtime.sessionmaker, http, cipher=cipher_for(runtime.settings)
            )
            await drain(dispatcher)
        assert [d.status for d in webhook_receiver.deliveries] == [204]

        # Retention: deletes what is past it.
        report = await prune(runtime.sessionmaker, 1, now + timedelta(days=400))
        assert report.complete

        # And no schema change.
        with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
            async with runtime.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE tasks ADD COLUMN intruder int"))
