"""Several accounts and regions on moto: every resource described in its own scope.

moto gives each account its own resources when called with credentials from
``sts:AssumeRole`` into that account, separately per region. Each scope here has
a cluster ``prod`` with a service ``web`` and one task, and every resource carries
a ``scope`` tag naming its own account and region: a Describe in the wrong scope
(moto answers it with the same-named resource there) would show as a wrong tag.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiobotocore.session import get_session
from sqlalchemy import text

from service import telemetry
from service.aws.scopes import Scope
from service.config import ServiceRef, Settings
from service.consumer.handler import Handler, Message
from service.demo.aws import MotoServer
from service.deployments.rows import group_key
from service.enrich.describer import Describer
from service.enrich.enricher import Enricher
from service.poller.codedeploy import CodeDeployMapper
from service.poller.metrics import MetricsPoller
from service.poller.reconcile import Reconciler
from service.runtime import Runtime
from tests.poller.org import REGIONS, ROLE, ScopeFleet
from tests.rig.accounts import assumed
from tests.rig.aws_proxy import AwsProxy


def _messages(events: list[dict[str, Any]]) -> list[Message]:
    return [Message(message_id=str(uuid.uuid4()), body=json.dumps(e)) for e in events]


def task_event(fleet: ScopeFleet) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": fleet.scope.account,
        "region": fleet.scope.region,
        "time": "2026-12-01T10:00:00Z",
        "resources": [fleet.task_arn],
        "detail": {
            "taskArn": fleet.task_arn,
            "clusterArn": fleet.cluster_arn,
            "taskDefinitionArn": fleet.task_definition_arn,
            "group": "service:web",
            "startedBy": "ecs-svc/1",
            "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING",
            "launchType": "EC2",
            "version": 1,
            "containers": [{"name": "app", "lastStatus": "RUNNING"}],
            "updatedAt": "2026-12-01T10:00:00Z",
        },
    }


async def _rows(runtime: Runtime, sql: str, **params: Any) -> list[Any]:
    async with runtime.engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def _tag_of(runtime: Runtime, arn: str) -> str | None:
    rows = await _rows(
        runtime,
        "SELECT tags->>'scope' FROM resource_tags WHERE resource_arn = :arn AND known",
        arn=arn,
    )
    return rows[0][0] if rows else None


async def test_same_names_in_four_scopes_each_described_in_its_own(
    org_runtime: Runtime,
    fleets: list[ScopeFleet],
    accounts: tuple[str, str, str],
    org_proxy: AwsProxy,
) -> None:
    """Two accounts x two regions, all with cluster prod / service web: a reconcile of
    every scope writes each scope's resources with that scope's tags, marks nothing
    gone, and a task of an unwatched account (same names) is kept and not marked gone."""
    watched = [f for f in fleets if f.scope.account in accounts[:2]]
    unwatched = [f for f in fleets if f.scope.account == accounts[2]]
    assert len(watched) == 4
    assert len(unwatched) == 2
    scopes = await org_runtime.aws_scopes()
    assert scopes.scopes == sorted(f.scope for f in watched)
    # Every task is known from its events first: the unwatched one is kept as well.
    unmonitored = telemetry.UNMONITORED_EVENTS.labels(accounts[2])._value.get()
    async with Describer(org_runtime.sessionmaker, scopes) as describer:
        reconciler = Reconciler(org_runtime.sessionmaker, scopes, describer)
        enricher = Enricher(describer)
        handler = Handler(
            org_runtime.sessionmaker, after_commit=enricher.submit, monitors=scopes.monitors
        )
        result = await handler.handle(_messages([task_event(f) for f in fleets]))
        assert len(result.done) == len(fleets)
        assert telemetry.UNMONITORED_EVENTS.labels(accounts[2])._value.get() == unmonitored + 2
        report = await reconciler.reconcile_all(datetime.now(UTC) + timedelta(seconds=1))
        # Round two: rows of every scope are now older than the round's start, so any
        # cross-scope doubt would describe (and mark gone) another scope's rows.
        report2 = await reconciler.reconcile_all(datetime.now(UTC) + timedelta(seconds=1))
    assert reconciler.rounds.errors == {}
    assert report.described["tasks"] == 4
    assert report.gone.total() == 0
    assert report2.gone.total() == 0
    for fleet in watched:
        for arn in (fleet.cluster_arn, fleet.service_arn, fleet.task_arn):
            assert await _tag_of(org_runtime, arn) == fleet.tag, arn
    gone = await _rows(
        org_runtime,
        "SELECT arn FROM tasks WHERE gone_at IS NOT NULL UNION ALL"
        " SELECT arn FROM services WHERE gone_at IS NOT NULL UNION ALL"
        " SELECT arn FROM clusters WHERE gone_at IS NOT NULL",
    )
    assert gone == []
    # The unwatched account's tasks: kept, never described, never gone.
    for fleet in unwatched:
        [(gone_at,)] = await _rows(
            org_runtime, "SELECT gone_at FROM tasks WHERE arn = :arn", arn=fleet.task_arn
        )
        assert gone_at is None
        assert await _tag_of(org_runtime, fleet.task_arn) is None
    # AssumeRole only into the watched accounts, never with the home account's keys
    # into the unwatched one; each watched account assumed once (credentials reused).
    assert set(scopes.assumed) == set(accounts[:2])
    assert all(n == 1 for n in scopes.assumed.values())
    # Each scope's calls carry its account and region to the one shared limiter.
    for fleet in watched:
        apis = await scopes.apis(fleet.scope)
        assert apis is not None
        assert (apis.caller.account, apis.caller.region) == (
            fleet.scope.account,
            fleet.scope.region,
        )
        assert apis.caller.limiter is scopes.limiter
    # A metrics round: GetMetricData once in each scope (it is regional).
    org_proxy.reset()
    mapper = CodeDeployMapper(org_runtime.sessionmaker, await org_runtime.aws_apis(), {})
    await MetricsPoller(org_runtime.sessionmaker, scopes, mapper).poll()
    assert org_proxy.count("GetMetricData") == 4
    status = await _rows(
        org_runtime,
        "SELECT account_id, region, last_reconcile_at IS NOT NULL,"
        " last_metrics_at IS NOT NULL, last_error FROM scopes WHERE monitored ORDER BY 1, 2",
    )
    assert status == sorted((f.scope.account, f.scope.region, True, True, None) for f in watched)
    [(monitored,)] = await _rows(
        org_runtime,
        "SELECT monitored FROM scopes WHERE account_id = :a AND region = :r",
        a=unwatched[0].scope.account,
        r=unwatched[0].scope.region,
    )
    assert monitored is False


async def test_a_throttled_scope_is_throttled_alone(
    org_runtime: Runtime,
    fleets: list[ScopeFleet],
    accounts: tuple[str, str, str],
    org_proxy: AwsProxy,
) -> None:
    """AWS throttles one account in one region: only that scope's calls are answered
    with throttling errors, it is reconciled in full after its backoff, and the other
    scopes (its account's other region, the other account's same region) see none."""
    throttled = Scope(accounts[0], REGIONS[1])
    org_proxy.throttle(None, 2, account=throttled.account, region=throttled.region)
    scopes = await org_runtime.aws_scopes()
    async with Describer(org_runtime.sessionmaker, scopes) as describer:
        reconciler = Reconciler(org_runtime.sessionmaker, scopes, describer)
        report = await reconciler.reconcile_all(datetime.now(UTC) + timedelta(seconds=1))
    assert org_proxy.throttled_scopes == {(throttled.account, throttled.region): 2}
    assert reconciler.rounds.errors == {}
    assert report.described["tasks"] == 4  # every watched scope's task, the throttled one's too
    for fleet in fleets:
        if fleet.scope.account in accounts[:2]:
            assert await _tag_of(org_runtime, fleet.task_arn) == fleet.tag


async def test_a_denied_account_is_isolated(
    org_runtime: Runtime,
    fleets: list[ScopeFleet],
    accounts: tuple[str, str, str],
    org_proxy: AwsProxy,
) -> None:
    """AssumeRole into one account answers AccessDenied: its scopes record the error and
    back off, the other account's scopes are reconciled in full, and nothing of the
    denied account is marked gone."""
    denied, healthy = accounts[0], accounts[1]
    org_proxy.deny_account(denied)
    scopes = await org_runtime.aws_scopes()
    async with Describer(org_runtime.sessionmaker, scopes) as describer:
        reconciler = Reconciler(org_runtime.sessionmaker, scopes, describer)
        handler = Handler(org_runtime.sessionmaker)
        denied_fleets = [f for f in fleets if f.scope.account == denied]
        await handler.handle(_messages([task_event(f) for f in denied_fleets]))
        report = await reconciler.reconcile_all(datetime.now(UTC) + timedelta(seconds=1))
        assert set(reconciler.rounds.errors) == {Scope(denied, r) for r in REGIONS}
        assert all("AccessDenied" in e for e in reconciler.rounds.errors.values())
        assert report.described["tasks"] == 2  # the healthy account's two scopes
        # Backing off: the next round does not ask the denied account again.
        assumes = org_proxy.count("AssumeRole")
        await reconciler.reconcile_all(datetime.now(UTC) + timedelta(seconds=1))
        assert org_proxy.count("AssumeRole") == assumes
        assert all(reconciler.rounds.backing_off(Scope(denied, r)) for r in REGIONS)
    for fleet in fleets:
        if fleet.scope.account == healthy:
            assert await _tag_of(org_runtime, fleet.task_arn) == fleet.tag
    for fleet in denied_fleets:
        [(gone_at,)] = await _rows(
            org_runtime, "SELECT gone_at FROM tasks WHERE arn = :arn", arn=fleet.task_arn
        )
        assert gone_at is None
    status = {
        (a, r): (ok, err)
        for a, r, ok, err in await _rows(
            org_runtime,
            "SELECT account_id, region, last_reconcile_at IS NOT NULL, last_error FROM scopes",
        )
    }
    for region in REGIONS:
        ok, err = status[denied, region]
        assert not ok
        assert err is not None
        assert "AccessDenied" in err
        assert status[healthy, region] == (True, None)


async def _deployment_in(
    endpoint: str, scope: Scope, app: str | None = None, service: str = "web"
) -> tuple[str, str]:
    """A CodeDeploy application, group ``dg`` deploying ``prod/<service>`` and a
    deployment in ``scope``: (app, id)."""
    session: Any = get_session()
    creds = await assumed(endpoint, scope.account, ROLE)
    app = app or f"app{uuid.uuid4().hex[:8]}"
    async with session.create_client(
        "codedeploy", endpoint_url=endpoint, region_name=scope.region, **creds
    ) as cd:
        await cd.create_application(applicationName=app, computePlatform="ECS")
        await cd.create_deployment_group(
            applicationName=app,
            deploymentGroupName="dg",
            serviceRoleArn=f"arn:aws:iam::{scope.account}:role/codedeploy",
            ecsServices=[{"clusterName": "prod", "serviceName": service}],
        )
        created = await cd.create_deployment(
            applicationName=app,
            deploymentGroupName="dg",
            revision={"revisionType": "AppSpecContent", "appSpecContent": {"content": "{}"}},
        )
    return app, created["deploymentId"]


def _codedeploy_event(
    scope: Scope, app: str, deployment_id: str, state: str = "START"
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "CodeDeploy Deployment State-change Notification",
        "source": "aws.codedeploy",
        "account": scope.account,
        "time": (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": scope.region,
        "resources": [],
        "detail": {
            "application": app,
            "deploymentGroup": "dg",
            "deploymentId": deployment_id,
            "state": state,
            "region": scope.region,
        },
    }


async def test_codedeploy_jobs_ask_the_deployments_own_scope(
    org_runtime: Runtime,
    moto_server: MotoServer,
    accounts: tuple[str, str, str],
    org_proxy: AwsProxy,
) -> None:
    """GetDeploymentGroup and BatchGetDeployments go to the scope of the deployment's
    event (moto knows the deployment only there); an unwatched scope is never asked."""
    watched = Scope(accounts[1], REGIONS[1])
    unwatched = Scope(accounts[2], REGIONS[0])
    app, deployment_id = await _deployment_in(moto_server.endpoint_url, watched)
    other_app, other_id = await _deployment_in(moto_server.endpoint_url, unwatched)
    handler = Handler(org_runtime.sessionmaker)
    await handler.handle(
        _messages(
            [
                _codedeploy_event(watched, app, deployment_id),
                _codedeploy_event(unwatched, other_app, other_id),
            ]
        )
    )
    scopes = await org_runtime.aws_scopes()
    mapper = CodeDeployMapper(
        org_runtime.sessionmaker, await org_runtime.aws_apis(), {}, scopes=scopes
    )
    org_proxy.reset()
    targets = await mapper.map_known_groups()
    # Found in its own scope (moto answers DeploymentGroupDoesNotExist elsewhere).
    service = targets[group_key(app, "dg", (watched.account, watched.region))].service
    assert service is not None
    assert (service.cluster, service.service) == ("prod", "web")
    assert group_key(other_app, "dg", (unwatched.account, unwatched.region)) not in targets
    assert org_proxy.count("GetDeploymentGroup") == 1

    def succeeded(body: dict[str, Any]) -> dict[str, Any]:
        for info in body.get("deploymentsInfo", []):
            info["status"] = "Succeeded"
            info["completeTime"] = datetime.now(UTC).timestamp()
        return body

    org_proxy.rewrite("BatchGetDeployments", succeeded)
    assert await mapper.check_in_progress() == 1
    assert org_proxy.count("BatchGetDeployments") == 1
    outcomes = dict(
        await _rows(
            org_runtime,
            "SELECT id, outcome FROM deployments WHERE id IN (:a, :b)",
            a=deployment_id,
            b=other_id,
        )
    )
    assert outcomes == {deployment_id: "succeeded", other_id: "in_progress"}


def _service_row(scope: Scope, name: str) -> dict[str, Any]:
    prefix = f"arn:aws:ecs:{scope.region}:{scope.account}"
    return {
        "arn": f"{prefix}:service/prod/{name}",
        "name": name,
        "cluster_arn": f"{prefix}:cluster/prod",
        "cluster_name": "prod",
    }


async def test_one_codedeploy_group_name_in_two_accounts_maps_to_each_ones_service(
    org_runtime: Runtime,
    moto_server: MotoServer,
    accounts: tuple[str, str, str],
    org_proxy: AwsProxy,
) -> None:
    """Application and group names are unique only within a scope: the same names in
    two accounts deploy different services. Each group is asked and stored in its own
    scope, its deployments are filled with its scope's service (never a namesake's of
    another scope), and the consumer names the service of the next event at once."""
    first, second = Scope(accounts[0], REGIONS[0]), Scope(accounts[1], REGIONS[0])
    app = f"shop{uuid.uuid4().hex[:8]}"
    _, first_id = await _deployment_in(moto_server.endpoint_url, first, app, "web")
    _, second_id = await _deployment_in(moto_server.endpoint_url, second, app, "api")
    # prod/api exists in both accounts: only the second account's is its group's.
    services = [_service_row(first, "web"), _service_row(first, "api"), _service_row(second, "api")]
    async with org_runtime.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO services (arn, name, cluster_arn, cluster_name)"
                " VALUES (:arn, :name, :cluster_arn, :cluster_name)"
            ),
            services,
        )
    handler = Handler(org_runtime.sessionmaker)
    await handler.handle(
        _messages(
            [_codedeploy_event(first, app, first_id), _codedeploy_event(second, app, second_id)]
        )
    )
    scopes = await org_runtime.aws_scopes()
    mapper = CodeDeployMapper(
        org_runtime.sessionmaker, await org_runtime.aws_apis(), {}, scopes=scopes
    )
    org_proxy.reset()
    targets = await mapper.map_known_groups()
    assert org_proxy.count("GetDeploymentGroup") == 2
    for scope, name in ((first, "web"), (second, "api")):
        service = targets[group_key(app, "dg", (scope.account, scope.region))].service
        assert service is not None
        assert (service.cluster, service.service) == ("prod", name)
    stored = await _rows(
        org_runtime,
        "SELECT account_id, service_name FROM codedeploy_groups WHERE application = :app"
        " ORDER BY account_id",
        app=app,
    )
    assert sorted(tuple(r) for r in stored) == sorted(
        [(first.account, "web"), (second.account, "api")]
    )
    filled = {
        r[0]: (r[1], r[2], r[3])
        for r in await _rows(
            org_runtime,
            "SELECT id, account_id, service_name, service_arn FROM deployments"
            " WHERE codedeploy_application = :app",
            app=app,
        )
    }
    assert filled == {
        first_id: (first.account, "web", _service_row(first, "web")["arn"]),
        second_id: (second.account, "api", _service_row(second, "api")["arn"]),
    }

    # The next deployment of each: the consumer reads the mapping of its own scope.
    # With an override by service ARN for the first account's group, and one by names
    # for every scope: the ARN's holds in its scope, the names' elsewhere.
    override_arn = _service_row(first, "canary")["arn"]
    overrides = load_settings_groups(f"{app}/dg=prod/names, {app}/dg={override_arn}")
    plain, overridden = (
        Handler(org_runtime.sessionmaker),
        Handler(org_runtime.sessionmaker, codedeploy_groups=overrides),
    )
    await plain.handle(
        _messages(
            [_codedeploy_event(first, app, "d-NEXT1"), _codedeploy_event(second, app, "d-NEXT2")]
        )
    )
    await overridden.handle(
        _messages(
            [_codedeploy_event(first, app, "d-OVER1"), _codedeploy_event(second, app, "d-OVER2")]
        )
    )
    named = {
        r[0]: (r[1], r[2], r[3])
        for r in await _rows(
            org_runtime,
            "SELECT id, account_id, service_name, service_arn FROM deployments"
            " WHERE id LIKE 'd-NEXT%' OR id LIKE 'd-OVER%'",
        )
    }
    assert named == {
        "d-NEXT1": (first.account, "web", None),
        "d-NEXT2": (second.account, "api", None),
        "d-OVER1": (first.account, "canary", override_arn),
        "d-OVER2": (second.account, "names", None),
    }


def load_settings_groups(value: str) -> dict[str, ServiceRef]:
    """``ECSWATCH_CODEDEPLOY_GROUPS`` as the settings parse it."""
    return Settings.model_validate({"codedeploy_groups": value}).codedeploy_groups
