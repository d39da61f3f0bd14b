"""Reconciliation against moto: what no event named appears; what vanished is marked gone."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from service import telemetry
from service.api.app import create_app
from service.consumer.handler import Handler, Message
from service.enrich.describer import Describer
from service.poller.reconcile import Reconciler
from service.runtime import Runtime
from tests.poller.fleet import Fleet, task_event
from tests.rig.aws_proxy import AwsProxy


@pytest.fixture
async def reconciler(proxied_runtime: Runtime) -> AsyncIterator[Reconciler]:
    scopes = await proxied_runtime.aws_scopes()
    async with Describer(proxied_runtime.sessionmaker, scopes) as describer:
        yield Reconciler(proxied_runtime.sessionmaker, scopes, describer)


async def _scalar(runtime: Runtime, sql: str) -> object:
    async with runtime.engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar()


async def test_reconcile_alone_fills_in_what_no_event_named(
    proxied_runtime: Runtime, reconciler: Reconciler, fleet: Fleet, aws_proxy: AwsProxy
) -> None:
    drift_before = telemetry.DRIFT_REPAIRED.labels("tasks")._value.get()
    report = await reconciler.reconcile_one(fleet.cluster)
    assert report.described["tasks"] == len(fleet.task_arns)
    assert await _scalar(
        proxied_runtime, f"SELECT count(*) FROM tasks WHERE cluster_name = '{fleet.cluster}'"
    ) == len(fleet.task_arns)
    assert (
        await _scalar(
            proxied_runtime,
            f"SELECT tags->>'owner' FROM resource_tags WHERE resource_arn = '{fleet.task_arns[0]}'",
        )
        == "web-team"
    )
    assert (
        await _scalar(
            proxied_runtime,
            f"SELECT status FROM container_instances WHERE arn = '{fleet.instance_arn}'",
        )
        == "ACTIVE"
    )
    assert (
        await _scalar(
            proxied_runtime,
            f"SELECT tags->>'team' FROM resource_tags WHERE resource_arn = '{fleet.cluster_arn}'",
        )
        == "platform"
    )
    assert telemetry.DRIFT_REPAIRED.labels("tasks")._value.get() - drift_before == len(
        fleet.task_arns
    )
    # The API shows it: tags known, details from Describe.
    app = create_app(proxied_runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        tasks = (await client.get(f"/v1/tasks?cluster={fleet.cluster}")).json()["items"]
        assert {t["tags_known"] for t in tasks} == {True}
        assert {t["cpu"] for t in tasks} <= {"256", None}
        service = (await client.get(f"/v1/services/{fleet.cluster}/web")).json()
        assert service["desired_count"] == 3
        assert service["tags"] == {"team": "web"}
        assert service["load_balancers"][0]["alternate_target_group_arn"] == fleet.green_tg_arn
        assert service["current_deployments"][0]["status"] == "PRIMARY"
        clusters = (await client.get("/v1/clusters")).json()["items"]
        mine = next(c for c in clusters if c["name"] == fleet.cluster)
        assert (mine["container_insights"], mine["tags"]) == ("enabled", {"team": "platform"})
        instances = (await client.get(f"/v1/container-instances?cluster={fleet.cluster}")).json()[
            "items"
        ]
        assert instances[0]["ec2_instance_id"].startswith("i-")
        assert instances[0]["registered_resources"]
    # A second reconcile finds no drift.
    again = await reconciler.reconcile_one(fleet.cluster)
    assert sum(again.drift.values()) == 0
    # Full batches: one DescribeTasks per 100 tasks, ListTasks at its largest page.
    assert aws_proxy.count("DescribeTasks") == 2


async def test_a_task_that_vanished_is_marked_gone_not_deleted(
    proxied_runtime: Runtime, reconciler: Reconciler, fleet: Fleet
) -> None:
    vanished = fleet.cluster_arn.replace(":cluster/", ":task/") + "/" + uuid.uuid4().hex
    handler = Handler(proxied_runtime.sessionmaker)
    body = json.dumps(task_event(fleet, vanished))
    await handler.handle([Message(message_id="m1", body=body)])
    assert (
        await _scalar(proxied_runtime, f"SELECT gone_at FROM tasks WHERE arn = '{vanished}'")
        is None
    )
    report = await reconciler.reconcile_all()
    assert report.gone["tasks"] == 1
    gone_at = await _scalar(proxied_runtime, f"SELECT gone_at FROM tasks WHERE arn = '{vanished}'")
    assert gone_at is not None  # still there, marked
    # The live tasks are not.
    assert await _scalar(
        proxied_runtime,
        f"SELECT count(*) FROM tasks WHERE cluster_name = '{fleet.cluster}' AND gone_at IS NULL",
    ) == len(fleet.task_arns)


async def test_a_task_described_again_is_no_longer_gone(
    proxied_runtime: Runtime, reconciler: Reconciler, fleet: Fleet
) -> None:
    await reconciler.reconcile_one(fleet.cluster)
    arn = fleet.task_arns[0]
    async with proxied_runtime.engine.begin() as conn:
        await conn.execute(text(f"UPDATE tasks SET gone_at = now() WHERE arn = '{arn}'"))
    report = await reconciler.reconcile_one(fleet.cluster)
    assert await _scalar(proxied_runtime, f"SELECT gone_at FROM tasks WHERE arn = '{arn}'") is None
    assert report.drift["tasks"] == 1
