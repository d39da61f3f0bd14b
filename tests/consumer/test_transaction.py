"""What one consumer transaction commits (service.consumer.transaction): the
deployments are read back once, after their writes, and alerts and Datadog facts
both come from that one read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.consumer.transaction import commit_events
from service.events.normalise import parse_message

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def _reads_of_deployments(sent: list[str]) -> list[str]:
    return [s for s in sent if s.startswith("SELECT") and "FROM deployments AS d WHERE" in s]


async def test_deployments_are_read_once_after_their_writes(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    events = [
        parse_message(path.read_text(), received_at=NOW)
        for path in sorted(SAMPLES.glob("*.json"))
        if not path.name.startswith("sns_")
    ]
    with statements(engine) as sent:
        async with sessionmaker() as session, session.begin():
            result = await commit_events(session, events, datadog=True)

    [read] = _reads_of_deployments(sent)
    position = sent.index(read)
    writes = [
        i
        for i, s in enumerate(sent)
        if s.startswith(("INSERT INTO deployments", "UPDATE deployments"))
    ]
    assert writes, "the samples carry deployment events"
    assert max(writes) < position  # the snapshot follows every deployment write
    later = sent[position + 1 :]
    assert any(s.startswith("INSERT INTO alerts") for s in later)
    assert any(s.startswith("INSERT INTO datadog_facts") for s in later)
    assert result.alerts, "the samples' failed deployment raises alerts"

    # Both consumers of the snapshot got the same deployments: each deployment with a
    # Datadog outcome fact was in the read that the alerts came from.
    async with engine.connect() as conn:
        facts = {
            row[0].split(":", 1)[1].rsplit(":", 1)[0]
            for row in await conn.execute(
                text("SELECT key FROM datadog_facts WHERE key LIKE 'deployment:%'")
            )
        }
        keys = list(await conn.execute(text("SELECT account_id, region, id FROM deployments")))
    # Deployment ids are unique only within a scope: the fact keys carry it.
    stored = {f"{k.account_id}/{k.region}/{k.id}" if k.account_id else k.id for k in keys}
    assert facts
    assert facts <= stored
    assert {a.deployment_id for a in result.alerts if a.deployment_id} <= {k.id for k in keys}
