"""Query plans of the list routes on 100,000 tasks: indexes, never a Seq Scan on tasks.

The statements are the ones the routes really send (captured on the engine),
explained with their own parameters after ANALYZE. Timing decides nothing here;
only the shape of the plan does. (``resource_tags`` may still be read whole to
check a tag filter against many candidate tasks, when the planner finds a hash
join cheaper than one probe per task.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.queries import DIRECT_READ_LISTENERS
from service.runtime import Runtime
from tests.api import seed

TASKS = 100_000

# Spreads tasks over 10 clusters, 200 services, all launch types and statuses;
# a third run on container instances; updated_at covers about 29 days.
SEED_TASKS = f"""
INSERT INTO tasks (
    arn, id, cluster_arn, cluster_name, service_name, "group", family, revision,
    launch_type, last_status, desired_status, stop_code, version,
    container_instance_arn, availability_zone, containers,
    created_at, started_at, updated_at, seen_at
)
SELECT
    'arn:aws:ecs:us-east-1:123456789012:task/c' || (g % 10) || '/' || md5(g::text),
    md5(g::text),
    'arn:aws:ecs:us-east-1:123456789012:cluster/c' || (g % 10),
    'c' || (g % 10),
    'svc-' || (g % 200),
    'service:svc-' || (g % 200),
    'svc-' || (g % 200),
    1 + g % 5,
    (ARRAY['FARGATE', 'EC2', 'EXTERNAL'])[1 + g % 3],
    CASE WHEN g % 10 < 7 THEN 'RUNNING' WHEN g % 10 < 9 THEN 'STOPPED' ELSE 'PENDING' END,
    CASE WHEN g % 10 BETWEEN 7 AND 8 THEN 'STOPPED' ELSE 'RUNNING' END,
    CASE WHEN g % 10 BETWEEN 7 AND 8 THEN
        (ARRAY['EssentialContainerExited', 'TaskFailedToStart', 'UserInitiated',
               'ServiceSchedulerInitiated'])[1 + g % 4]
    END,
    1 + g % 7,
    CASE WHEN g % 3 = 1 THEN
        'arn:aws:ecs:us-east-1:123456789012:container-instance/c' || (g % 10) || '/ci' || (g % 500)
    END,
    'us-east-1a',
    jsonb_build_array(jsonb_build_object(
        'name', 'app', 'last_status', 'RUNNING', 'exit_code', NULL, 'image', 'web:1')),
    now() - make_interval(secs => g * 25 + 60),
    now() - make_interval(secs => g * 25 + 30),
    now() - make_interval(secs => g * 25),
    now()
FROM generate_series(1, {TASKS}) AS g
"""

# 500 teams: a team tag selects about 0.2% of tasks. Each tag object also holds
# a per-task value, so no tag object is common enough to enter the column's
# statistics and the planner's estimate for `@>` is the same on every run. (A tag
# on a large share of all tasks is cheaper to check per row while scanning
# another index; that is the planner's call.)
SEED_TAGS = """
INSERT INTO resource_tags (resource_arn, tags, known)
SELECT arn,
       jsonb_build_object('team', 'team-' || (abs(hashtext(arn)) % 500), 'env', 'prod', 'task', id),
       true
FROM tasks
"""

INSTANCE = "arn:aws:ecs:us-east-1:123456789012:container-instance/c1/ci7"

QUERIES = [
    "/v1/tasks",
    "/v1/tasks?cluster=c3",
    "/v1/tasks?cluster=c8",
    "/v1/tasks?cluster=c3&last_status=PENDING",
    f"/v1/tasks?cluster={quote(seed.cluster_arn('c3'))}",
    "/v1/tasks?service=svc-17",
    "/v1/tasks?cluster=c7&service=svc-17",
    f"/v1/tasks?service={quote(seed.service_arn('c7', 'svc-17'))}",
    "/v1/tasks?family=svc-42",
    "/v1/tasks?last_status=PENDING",
    "/v1/tasks?last_status=STOPPED&cluster=c8",
    "/v1/tasks?desired_status=STOPPED",
    "/v1/tasks?launch_type=EXTERNAL",
    f"/v1/tasks?container_instance={quote(INSTANCE)}",
    "/v1/tasks?stop_code=TaskFailedToStart",
    "/v1/tasks?stop_code=EssentialContainerExited&service=svc-7",
    "/v1/tasks?tag=team:team-3",
    "/v1/tasks?tag=team:team-3&cluster=c2",
    f"/v1/tasks?tag=team:team-3&cluster={quote(seed.cluster_arn('c2'))}",
    "/v1/tasks?since=2099-01-01T00:00:00Z",
    "/v1/tasks?cluster=c1&last_status=RUNNING&launch_type=EC2&limit=500",
    "/v1/tasks/" + "0" * 32,
    # Scope filters: a filter on the ARN's parts, over the same ARN-ordered scan.
    f"/v1/tasks?account_id={seed.ACCOUNT}",
    f"/v1/tasks?account_id={seed.ACCOUNT}&region={seed.REGION}&cluster=c3",
    "/v1/tasks?region=eu-west-1",
]


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def test_task_queries_use_indexes(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    # Clusters c0..c4 are known (the route looks their ARN up), c5..c9 are not.
    await seed.insert_rows(engine, "clusters", [seed.cluster(f"c{i}") for i in range(5)])
    async with engine.begin() as conn:
        await conn.execute(text(SEED_TASKS))
        await conn.execute(text(SEED_TAGS))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        # Statistics from every row (300 x target >= 100,000), not a random
        # sample: the same estimates, so the same plans, on every run.
        await conn.execute(text("SET default_statistics_target = 1000"))
        await conn.execute(text("ANALYZE tasks, resource_tags"))

    captured: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, parameters))

    def record_direct(statement: str, args: Sequence[Any]) -> None:
        captured.append((statement, tuple(args)))

    sync_engine = runtime.read_engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    DIRECT_READ_LISTENERS.append(record_direct)
    try:
        for path in QUERIES:
            response = await client.get(path)
            assert response.status_code in (200, 404), (path, response.text)
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
        DIRECT_READ_LISTENERS.remove(record_direct)
    # One statement per request, plus the cluster lookup of a known cluster name.
    captured = [(s, p) for s, p in captured if "FROM clusters" not in s]
    assert len(captured) == len(QUERIES)

    async with runtime.engine.connect() as conn:
        for path, (statement, parameters) in zip(QUERIES, captured, strict=True):
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            plan = result.scalar_one()[0]["Plan"]
            nodes = list(plan_nodes(plan))
            task_scans = [n["Node Type"] for n in nodes if n.get("Relation Name") == "tasks"]
            assert task_scans, (path, plan)
            assert set(task_scans) <= {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}, (
                path,
                task_scans,
                plan,
            )
            # The tag filter is an EXISTS probe into resource_tags. Whether PostgreSQL
            # drives it from the GIN index, probes the primary key per candidate
            # task, or hashes the tag table for a large candidate set is its cost
            # call; what must not happen is a scan of tasks (asserted above).
            probes = [n["Node Type"] for n in nodes if n.get("Alias") == "tag_probe"]
            assert bool(probes) == ("tag=" in path), (path, plan)


# Deployments of three scopes (two accounts), newest first: /v1/deployments pages them.
# One large scope and two small ones with the same ids (an organization's main account
# beside smaller ones).
# (chr(58) is ':', which text() would read as a bound parameter.)
SEED_DEPLOYMENTS = """
INSERT INTO deployments (account_id, region, id, cluster_arn, cluster_name, service_name,
                         kind, outcome, started_at, updated_at)
SELECT s.account, s.region, 'ecs-svc/' || g,
       concat_ws(chr(58), 'arn', 'aws', 'ecs', s.region, s.account, 'cluster/c' || (g % 10)),
       'c' || (g % 10), 'svc-' || (g % 200), 'rolling',
       (ARRAY['succeeded', 'failed', 'in_progress'])[1 + g % 3],
       now() - make_interval(secs => g * 60), now() - make_interval(secs => g * 60)
FROM generate_series(1, 20000) AS g,
     (VALUES ('123456789012', 'us-east-1'), ('123456789012', 'eu-west-1'),
             ('210987654321', 'us-east-1')) AS s(account, region)
WHERE (s.account, s.region) = ('123456789012', 'us-east-1') OR g % 50 = 0
"""
DEPLOYMENT_QUERIES = [
    "/v1/deployments?account_id=210987654321",
    "/v1/deployments?region=eu-west-1",
    "/v1/deployments?account_id=123456789012&region=eu-west-1",
    "/v1/deployments?account_id=123456789012&region=eu-west-1&outcome=failed",
]


async def test_deployment_scope_filters_use_their_index(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    """The same deployment ids in three scopes: ``account_id=`` (with ``region=``) pages
    a small scope's through the index of its account (or its region), in order,
    rather than walking every scope's deployments by time and filtering."""
    async with engine.begin() as conn:
        await conn.execute(text(SEED_DEPLOYMENTS))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE deployments"))
    captured: list[tuple[str, Any]] = []

    def record_direct(statement: str, args: Sequence[Any]) -> None:
        captured.append((statement, tuple(args)))

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, parameters))

    sync_engine = runtime.read_engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    DIRECT_READ_LISTENERS.append(record_direct)
    try:
        for path in DEPLOYMENT_QUERIES:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
            items = response.json()["items"]
            assert items, path
            assert {(i["account_id"], i["region"]) for i in items} <= {
                ("210987654321", "us-east-1"),
                ("123456789012", "eu-west-1"),
            }
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
        DIRECT_READ_LISTENERS.remove(record_direct)
    assert len(captured) == len(DEPLOYMENT_QUERIES)
    async with runtime.engine.connect() as conn:
        for path, (statement, parameters) in zip(DEPLOYMENT_QUERIES, captured, strict=True):
            result = await conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
            nodes = list(plan_nodes(result.scalar_one()[0]["Plan"]))
            scans = {
                (n["Node Type"], n.get("Index Name"))
                for n in nodes
                if n.get("Relation Name") == "deployments"
            }
            assert scans <= {
                ("Index Scan", "ix_deployments_account_id_started_at_id"),
                ("Index Scan", "ix_deployments_region_started_at_id"),
            }, (path, nodes)
            assert scans, (path, nodes)
