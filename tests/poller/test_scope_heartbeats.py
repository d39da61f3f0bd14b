"""Each watched scope's own heartbeat, through its forwarding rule, on moto.

Two member accounts in two regions each forward to the organization's bus of a
central ``aws setup --organization`` pipeline (rules made as
deploy/member-account.yaml makes them, with its pattern). The leader puts one
heartbeat per scope with that scope's assumed credentials; the consumer records
each under the account and region EventBridge set; ``GET /v1/accounts`` and
``/metrics`` show each scope's own.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import get_session
from fastapi import FastAPI

from service.api.app import create_app
from service.aws.events import EventsApi
from service.aws.scopes import Scope
from service.aws.setup import ORGANIZATION_EVENT_PATTERN, setup_event_pipeline
from service.config import Settings, load_settings
from service.consumer.handler import Handler, Message
from service.demo.aws import MotoServer
from service.poller.heartbeat import Heartbeat
from service.poller.scopes import record_watched
from service.runtime import Runtime
from service.state.heartbeats import scope_heartbeat_ages_s
from tests.poller.org import REGIONS, ROLE
from tests.rig.accounts import assumed
from tests.rig.aws_proxy import AwsProxy

READ_TOKEN = "read-token-0123456789abcdef"
ORGANIZATION = "o-a1b2c3d4e5"
FORWARD_RULE = "ecswatch-forward"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Test settings with a read token, so the API answers."""
    return load_settings(
        database_url=database_url, data_dir=tmp_path / "data", api_tokens=f"read:{READ_TOKEN}"
    )


@pytest.fixture
async def api(org_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(org_runtime)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {READ_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as c:
        yield c


def _central_kwargs(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "region_name": REGIONS[0],
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


async def _central(endpoint: str) -> tuple[str, str]:
    """The central queue and the organization's bus (``aws setup --organization``)."""
    session: Any = get_session()
    kwargs = _central_kwargs(endpoint)
    async with (
        session.create_client("sqs", **kwargs) as sqs,
        session.create_client("events", **kwargs) as events,
    ):
        made = await setup_event_pipeline(
            sqs, events, f"hb-{uuid.uuid4().hex[:8]}", organization_id=ORGANIZATION
        )
    assert made.organization_bus_arn is not None
    return made.queue_url, made.organization_bus_arn


async def _member_events(endpoint: str, scope: Scope) -> Any:
    creds = await assumed(endpoint, scope.account, ROLE)
    session: Any = get_session()
    return session.create_client("events", endpoint_url=endpoint, region_name=scope.region, **creds)


async def _forward(endpoint: str, scope: Scope, bus_arn: str) -> None:
    """The member template's forwarding rule in ``scope``: its pattern, to the central bus."""
    async with await _member_events(endpoint, scope) as events:
        await events.put_rule(
            Name=FORWARD_RULE,
            EventPattern=json.dumps(ORGANIZATION_EVENT_PATTERN),
            State="ENABLED",
        )
        await events.put_targets(
            Rule=FORWARD_RULE,
            Targets=[
                {
                    "Id": "ecswatch-central-bus",
                    "Arn": bus_arn,
                    "RoleArn": f"arn:aws:iam::{scope.account}:role/forward",
                }
            ],
        )


async def _consume(endpoint: str, queue_url: str, runtime: Runtime) -> int:
    """Take every message off the queue through the consumer's handler; how many."""
    session: Any = get_session()
    handler = Handler(runtime.sessionmaker)
    taken = 0
    async with session.create_client("sqs", **_central_kwargs(endpoint)) as sqs:
        while True:
            answer = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            got = answer.get("Messages", [])
            if not got:
                return taken
            messages = [Message(message_id=m["MessageId"], body=m["Body"]) for m in got]
            result = await handler.handle(messages)
            assert len(result.done) == len(messages)
            assert set(result.outcomes.values()) == {"heartbeat"}
            for m in got:
                await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            taken += len(got)


async def _heartbeat(runtime: Runtime) -> Heartbeat:
    scopes = await runtime.aws_scopes()
    apis = await runtime.aws_apis()
    await record_watched(runtime.sessionmaker, scopes.scopes)
    return Heartbeat(
        EventsApi(await runtime.events(), apis.caller),
        scopes=lambda: scopes.scopes,
        home=lambda: None,
        scope_events=scopes.events,
    )


async def _last_heartbeats(api: httpx.AsyncClient) -> dict[tuple[str, str], str | None]:
    answer = await api.get("/v1/accounts")
    assert answer.status_code == 200, answer.text
    return {(r["account_id"], r["region"]): r["last_heartbeat_at"] for r in answer.json()["items"]}


async def test_each_scope_heartbeat_comes_through_its_own_forwarding_rule(
    moto_server: MotoServer,
    org_runtime: Runtime,
    accounts: tuple[str, str, str],
    api: httpx.AsyncClient,
) -> None:
    """Four scopes forward their heartbeats to the central queue: each shows its own
    time in /v1/accounts. Once one scope's forwarding rule is broken, its heartbeat
    goes stale while the other three stay fresh, in /v1/accounts and in /metrics."""
    endpoint = moto_server.endpoint_url
    queue_url, bus_arn = await _central(endpoint)
    watched = [Scope(a, r) for a in accounts[:2] for r in REGIONS]
    for scope in watched:
        await _forward(endpoint, scope, bus_arn)
    heartbeat = await _heartbeat(org_runtime)

    assert await _last_heartbeats(api) == {(s.account, s.region): None for s in watched}
    sent = await heartbeat.beat_scopes(datetime.now(UTC))
    assert set(sent) == set(watched)
    assert await _consume(endpoint, queue_url, org_runtime) == len(watched)
    first = await _last_heartbeats(api)
    assert set(first) == {(s.account, s.region) for s in watched}
    assert all(at is not None for at in first.values())

    broken = watched[-1]
    async with await _member_events(endpoint, broken) as events:
        # Broken as an edit breaks it: the rule loses its target (moto still
        # delivers through a disabled rule, so disabling would prove nothing here).
        await events.remove_targets(Rule=FORWARD_RULE, Ids=["ecswatch-central-bus"])
    # EventBridge stamps whole seconds: the next heartbeats carry a later time.
    await asyncio.sleep(1.1)
    assert set(await heartbeat.beat_scopes(datetime.now(UTC))) == set(watched)  # all put
    assert await _consume(endpoint, queue_url, org_runtime) == len(watched) - 1
    second = await _last_heartbeats(api)
    key = (broken.account, broken.region)
    assert second[key] == first[key]
    for scope in watched:
        if scope != broken:
            fresh = second[scope.account, scope.region]
            assert fresh is not None
            assert fresh > str(first[scope.account, scope.region])

    async with org_runtime.engine.connect() as conn:
        ages = await scope_heartbeat_ages_s(conn)
    assert set(ages) >= set(second)
    for scope in watched:
        if scope != broken:
            assert ages[key] > ages[scope.account, scope.region]
    scrape = (await api.get("/metrics")).text
    line = (
        f'ecswatch_scope_heartbeat_age_seconds{{account_id="{broken.account}",'
        f'region="{broken.region}"}}'
    )
    assert line in scrape


async def test_a_scope_refused_put_events_is_skipped_without_failing(
    org_runtime: Runtime,
    accounts: tuple[str, str, str],
    org_proxy: AwsProxy,
) -> None:
    """PutEvents denied in one region: those scopes' heartbeats are skipped (and not
    asked again), the others are put, and no scope is marked failed."""
    org_proxy.deny_operation("PutEvents", REGIONS[1])
    heartbeat = await _heartbeat(org_runtime)
    watched = [Scope(a, r) for a in accounts[:2] for r in REGIONS]
    refused = {s for s in watched if s.region == REGIONS[1]}

    now = datetime.now(UTC)
    sent = await heartbeat.beat_scopes(now)
    assert set(sent) == set(watched) - refused
    assert heartbeat.refused == refused
    puts = org_proxy.count("PutEvents")
    assert set(await heartbeat.beat_scopes(now)) == set(watched) - refused
    assert org_proxy.count("PutEvents") == puts + len(watched) - len(refused)

    async with org_runtime.engine.connect() as conn:
        rows = (
            await conn.exec_driver_sql("SELECT account_id, region, last_error FROM scopes")
        ).all()
    assert {(a, r) for a, r, _ in rows} == {(s.account, s.region) for s in watched}
    assert all(error is None for _, _, error in rows)


async def test_a_scope_heartbeat_counts_for_the_account_eventbridge_set(
    org_runtime: Runtime,
) -> None:
    """The detail names another account: the heartbeat counts for the event's own
    account and region (as EventBridge sets them), and never for ecswatch's own."""
    sender, named = "111111111111", "222222222222"
    at = datetime.now(UTC).replace(microsecond=0)
    body = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "ecswatch scope heartbeat",
        "source": "ecswatch.heartbeat",
        "account": sender,
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGIONS[1],
        "resources": [],
        "detail": {"sent_at": at.isoformat(), "account_id": named, "region": REGIONS[0]},
    }
    result = await Handler(org_runtime.sessionmaker).handle(
        [Message(message_id="m-1", body=json.dumps(body))], now=at
    )
    assert result.outcomes == {"m-1": "heartbeat"}
    async with org_runtime.engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT scope, last_at FROM heartbeats")).all()
    # "self" is the migration's seed row, left as it was.
    assert {scope: last for scope, last in rows if scope != "self"} == {
        f"{sender}/{REGIONS[1]}": at
    }
    (self_at,) = [last for scope, last in rows if scope == "self"] or [None]
    assert self_at != at
