"""Every kind of Datadog event ecswatch builds carries its scope: ``aws_account`` and
``region``.

The AWS documentation's samples (tests/fixtures/ecs-events), a few turned into the
states that make an event (a task that failed to start or was killed for memory, a
draining or disconnected instance, a recovery), go through the consumer's real
transaction with Datadog on; the time facts through the Datadog job's own step. Each
stored event row is then built into the client's request model by the real sender
and validated by datadog-api-client, and its tags must hold the sample's account
and region. A builder that dropped either fails here: each kind is listed, and each
must show up.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datadog_api_client import Configuration
from datadog_api_client.model_utils import validate_and_convert_types
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.config import load_settings
from service.consumer.transaction import commit_events
from service.datadog.forwarder import build_senders
from service.datadog.gauges import record_time_facts
from service.events.normalise import parse_message

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

#: Every kind of Datadog event (its title up to the colon) and who builds it.
KINDS = {
    "ECS task failed to start",  # facts.task_facts
    "ECS container killed out of memory",  # facts.task_facts
    "ECS service SERVICE_TASK_PLACEMENT_FAILURE",  # facts.service_action_facts (ERROR)
    "ECS service SERVICE_TASK_START_IMPAIRED",  # facts.service_action_facts (WARN)
    "ECS container instance draining",  # facts.instance_facts
    "ECS container instance impaired",  # facts.instance_facts
    "ECS container instance disconnected",  # gauges.disconnected_fact
    "ECS deployment started",  # facts.deployment_facts (ECS, daemon, CodeDeploy)
    "ECS deployment failed",  # facts.deployment_facts
    "ECS deployment succeeded",  # facts.deployment_facts (ECS and CodeDeploy)
    "ECS deployment recovered",  # facts.deployment_facts
}


def _sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    event["id"] = str(uuid.uuid4())
    return event


def _variant(name: str, **detail: Any) -> dict[str, Any]:
    event = _sample(name)
    event["detail"] = {**copy.deepcopy(event["detail"]), **detail}
    return event


def _task_stopped(**detail: Any) -> dict[str, Any]:
    event = _sample("task_state_change_fargate_running_2025.json")
    body = copy.deepcopy(event["detail"])
    body.update(
        lastStatus="STOPPED",
        desiredStatus="STOPPED",
        stoppedAt=event["time"],
        version=body.get("version", 1) + 5,
        **detail,
    )
    event["detail"] = body
    return event


def _batches() -> list[list[dict[str, Any]]]:
    """The samples as they would arrive, in batches; the recovery needs the failure
    committed first."""
    first = [
        _sample(path.name)
        for path in sorted(SAMPLES.glob("*.json"))
        if not path.name.startswith(("sns_", "deployment_state_change_completed"))
    ]
    oom = _task_stopped(
        stopCode="EssentialContainerExited",
        containers=[
            {
                "name": "app",
                "lastStatus": "STOPPED",
                "exitCode": 137,
                "reason": "OutOfMemoryError: Container killed due to memory usage",
            }
        ],
    )
    failed_to_start = _task_stopped(
        stopCode="TaskFailedToStart", stoppedReason="CannotPullContainerError: not found"
    )
    failed_to_start["detail"]["taskArn"] += "0"
    draining = _variant("container_instance_state_change_active.json", status="DRAINING")
    disconnected = _variant("container_instance_state_change_active.json", agentConnected=False)
    disconnected["detail"]["containerInstanceArn"] += "0"
    first += [oom, failed_to_start, draining, disconnected]
    # A later deployment of the same service succeeds: it recovers from the failure.
    completed = _sample("deployment_state_change_completed.json")
    completed["detail"]["deploymentId"] = "ecs-svc/456"
    completed["time"] = completed["detail"]["updatedAt"] = "2020-05-23T13:31:14Z"
    return [first, [completed]]


async def test_every_datadog_event_carries_its_account_and_region(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    scopes: dict[str, tuple[str, str]] = {}
    for batch in _batches():
        events = [parse_message(json.dumps(e), received_at=NOW) for e in batch]
        for raw, event in zip(batch, events, strict=True):
            scopes[event.envelope.id] = (raw["account"], raw.get("region") or "us-east-1")
        async with sessionmaker() as session, session.begin():
            await commit_events(session, events, datadog=True)
    async with sessionmaker() as session, session.begin():
        await record_time_facts(session, now=NOW)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT dedupe_key, payload FROM outbox WHERE kind = 'datadog_event'")
            )
        ).all()
        alert_series = [
            series
            for (payload,) in await conn.execute(
                text("SELECT payload FROM outbox WHERE kind = 'datadog_metrics'")
            )
            for series in payload["series"]
            if series["metric"] == "alerts"
        ]
        # Alert types whose every alert says its scope (a CodeDeploy deployment's
        # alert says none while its deployment row has no ECS ARN).
        scoped = {
            f"alert_type:{kind}"
            for kind, unscoped in await conn.execute(
                text(
                    "SELECT type, bool_or(payload->>'account_id' IS NULL"
                    " OR payload->>'region' IS NULL) FROM alerts GROUP BY type"
                )
            )
            if not unscoped
        }
    # The alerts the samples raised are counted with their scope too.
    assert len(scoped) >= 4
    checked = [s for s in alert_series if scoped & set(s["tags"])]
    assert checked
    for series in checked:
        assert any(t.startswith("aws_account:") for t in series["tags"]), series
        assert any(t.startswith("region:") for t in series["tags"]), series
    senders = build_senders(load_settings(dd_api_key="k", datadog_url="http://127.0.0.1:9"))
    assert senders is not None
    accounts = {account for account, _ in scopes.values()}
    regions = {region for _, region in scopes.values()}
    seen: set[str] = set()
    try:
        for key, payload in rows:
            request = senders.events.build(payload)
            body = json.loads(json.dumps(request.to_dict()))
            model = validate_and_convert_types(
                body, (EventCreateRequest,), ["body"], True, True, Configuration()
            )
            assert isinstance(model, EventCreateRequest)
            tags = list(model.tags)
            account = [t.partition(":")[2] for t in tags if t.startswith("aws_account:")]
            region = [t.partition(":")[2] for t in tags if t.startswith("region:")]
            assert len(account) == 1, (key, tags)
            assert len(region) == 1, (key, tags)
            assert account[0] in accounts, (key, tags)
            assert region[0] in regions, (key, tags)
            seen.add(model.title.split(":", 1)[0])
    finally:
        await senders.aclose()
    assert seen == KINDS
