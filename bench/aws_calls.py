"""AWS calls benchmark: calls per minute and per 1,000 task events, next to the minimum.

A simulated fleet is built in moto (clusters, services, tasks, container
instances, an ALB with target groups for some services); ecswatch talks to moto
through a counting HTTP proxy (tests/rig/aws_proxy.py). The run:

1. one full reconcile (the steady-state cost of ``ECSWATCH_RECONCILE_INTERVAL_S``);
2. two metrics polls (the first fills the target group cache; the second is the
   steady state of every ``ECSWATCH_METRICS_INTERVAL_S``);
3. one task event per task through the handler with the enricher wired as the
   consumer wires it, timing commit -> ``tags_known`` per task (new tasks: their
   tags are unknown until a Describe), on an unthrottled endpoint.

Each count is printed next to the theoretical minimum from the batch limits.
Prints a table and writes bench/results/aws_calls.json. Usage:

    .venv/bin/python bench/aws_calls.py [--size small|medium|large]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

Sizes: small 2 clusters / 20 services / 200 tasks (about a minute here);
medium 5 / 100 / 1,000; large 20 / 2,000 / 20,000 (moto itself gets slow).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchdb  # bench/ is the script's directory, so first on sys.path

from service.config import load_settings
from service.consumer.handler import Handler, Message
from service.db import create_engine
from service.demo.aws import MotoServer
from service.enrich.describer import Describer
from service.enrich.enricher import Enricher
from service.logging import configure_logging
from service.migrate import upgrade
from service.poller.codedeploy import CodeDeployMapper
from service.poller.metrics import ALB_METRICS, ECS_METRICS, INSIGHTS_METRICS, MetricsPoller
from service.poller.reconcile import Reconciler
from service.runtime import open_runtime
from tests.rig.aws_proxy import AwsProxy

REGION = "us-east-1"
SIZES = {
    "small": (2, 20, 200),
    "medium": (5, 100, 1_000),
    "large": (20, 2_000, 20_000),
}
#: One ALB target group for every this many services.
SERVICES_PER_TARGET_GROUP = 10
INSTANCES_PER_CLUSTER = 2
RECONCILE_INTERVAL_S = 600
METRICS_INTERVAL_S = 60


def _client(name: str, endpoint: str) -> Any:
    from aiobotocore.session import get_session

    session: Any = get_session()
    return session.create_client(
        name,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


async def build_fleet(endpoint: str, clusters: int, services: int, tasks: int) -> dict[str, Any]:
    """The fleet in moto, created directly (not through the proxy)."""
    suffix = uuid.uuid4().hex[:6]
    fleet: dict[str, Any] = {"clusters": [], "tasks": [], "target_groups": 0}
    async with (
        _client("ecs", endpoint) as ecs,
        _client("ec2", endpoint) as ec2,
        _client("elbv2", endpoint) as elbv2,
    ):
        image = (await ec2.describe_images())["Images"][0]["ImageId"]
        td = await ecs.register_task_definition(
            family=f"bench{suffix}",
            networkMode="bridge",
            containerDefinitions=[{"name": "app", "image": "app:1", "cpu": 1, "memory": 4}],
        )
        td_arn = td["taskDefinition"]["taskDefinitionArn"]
        vpc = (await ec2.create_vpc(CidrBlock="10.1.0.0/16"))["Vpc"]["VpcId"]
        subnets = [
            (
                await ec2.create_subnet(
                    VpcId=vpc, CidrBlock=f"10.1.{i}.0/24", AvailabilityZone=f"{REGION}{az}"
                )
            )["Subnet"]["SubnetId"]
            for i, az in enumerate("ab")
        ]
        sg = (await ec2.create_security_group(GroupName=f"b{suffix}", Description="b", VpcId=vpc))[
            "GroupId"
        ]
        lb = await elbv2.create_load_balancer(
            Name=f"b{suffix}", Subnets=subnets, SecurityGroups=[sg], Type="application"
        )
        lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        service_index = 0
        for c in range(clusters):
            name = f"bench{suffix}c{c:02d}"
            await ecs.create_cluster(
                clusterName=name,
                tags=[{"key": "fleet", "value": "bench"}],
                settings=[
                    {"name": "containerInsights", "value": "enabled" if c % 2 else "disabled"}
                ],
            )
            fleet["clusters"].append(name)
            for _ in range(INSTANCES_PER_CLUSTER):
                instance = (await ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1))[
                    "Instances"
                ][0]["InstanceId"]
                await ecs.register_container_instance(
                    cluster=name,
                    instanceIdentityDocument=json.dumps({"instanceId": instance, "region": REGION}),
                )
            per_cluster = services // clusters
            for s in range(per_cluster):
                balancers: list[dict[str, Any]] = []
                if service_index % SERVICES_PER_TARGET_GROUP == 0:
                    tg = await elbv2.create_target_group(
                        Name=f"b{suffix}t{service_index}",
                        Protocol="HTTP",
                        Port=80,
                        VpcId=vpc,
                        TargetType="ip",
                    )
                    tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
                    await elbv2.create_listener(
                        LoadBalancerArn=lb_arn,
                        Protocol="HTTP",
                        Port=1000 + service_index,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
                    )
                    balancers = [
                        {"targetGroupArn": tg_arn, "containerName": "app", "containerPort": 80}
                    ]
                    fleet["target_groups"] += 1
                service_index += 1
                await ecs.create_service(
                    cluster=name,
                    serviceName=f"s{s}",
                    taskDefinition=td_arn,
                    desiredCount=0,
                    tags=[{"key": "team", "value": f"t{s % 7}"}],
                    loadBalancers=balancers,
                )
            per_service = tasks // services
            for s in range(per_cluster):
                left = per_service
                while left > 0:
                    ran = await ecs.run_task(
                        cluster=name,
                        taskDefinition=td_arn,
                        count=min(10, left),
                        group=f"service:s{s}",
                        startedBy="ecs-svc/1",
                        tags=[{"key": "owner", "value": f"s{s}"}],
                    )
                    fleet["tasks"].extend(
                        (name, t["taskArn"], f"s{s}", t["containerInstanceArn"])
                        for t in ran["tasks"]
                    )
                    left -= 10
    fleet["task_definition"] = td_arn
    return fleet


def task_event(cluster: str, arn: str, service: str, instance: str, td: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "time": datetime.now(UTC).isoformat(),
        "detail": {
            "taskArn": arn,
            "clusterArn": f"arn:aws:ecs:{REGION}:123456789012:cluster/{cluster}",
            "taskDefinitionArn": td,
            "group": f"service:{service}",
            "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING",
            "containerInstanceArn": instance,
            "version": 2,
            "updatedAt": datetime.now(UTC).isoformat(),
        },
    }


def reconcile_minimum(clusters: int, services: int, tasks: int) -> dict[str, int]:
    per_c_services = services // clusters
    per_c_tasks = (tasks // services) * per_c_services
    per_cluster = (
        math.ceil(per_c_services / 100)  # ListServices
        + math.ceil(per_c_services / 10)  # DescribeServices
        + 2 * math.ceil(per_c_tasks / 100)  # ListTasks + DescribeTasks
        + 2 * math.ceil(INSTANCES_PER_CLUSTER / 100)  # List + DescribeContainerInstances
    )
    return {"ecs": 2 * math.ceil(clusters / 100) + clusters * per_cluster}


def metrics_minimum(clusters: int, services: int, insight_services: int, tgs: int) -> int:
    queries = (
        len(ECS_METRICS) * (clusters + services)
        + len(INSIGHTS_METRICS) * insight_services
        + len(ALB_METRICS) * tgs
    )
    return math.ceil(queries / 500)


def events_minimum(clusters: int, tasks_per_cluster: int) -> int:
    # Services and clusters were described by the reconcile moments before (the
    # enricher re-describes them at most every 30 s); new tasks need DescribeTasks.
    return clusters * math.ceil(tasks_per_cluster / 100)


def _by_service(proxy: AwsProxy) -> Counter[str]:
    out: Counter[str] = Counter()
    for (service, op), n in proxy.calls.items():
        if op not in ("ReceiveMessage",):
            out[service] += n
    return out


async def run(size: str, database_url: str) -> dict[str, Any]:
    clusters, services, tasks = SIZES[size]
    db_url = await benchdb.fresh_database(database_url, "bench_aws")
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        with MotoServer() as moto:
            moto.pin_ecs_tasks()
            started = time.perf_counter()
            fleet = await build_fleet(moto.endpoint_url, clusters, services, tasks)
            build_s = time.perf_counter() - started
            async with AwsProxy(moto.endpoint_url) as proxy:
                settings = load_settings(
                    database_url=db_url, aws_endpoint_url=proxy.url, aws_region=REGION
                )
                async with open_runtime(settings, pool_size=8) as runtime:
                    return await measure(runtime, proxy, fleet, clusters, services, tasks, build_s)
    finally:
        await benchdb.drop_database(db_url)


async def measure(
    runtime: Any,
    proxy: AwsProxy,
    fleet: dict[str, Any],
    clusters: int,
    services: int,
    tasks: int,
    build_s: float,
) -> dict[str, Any]:
    apis = await runtime.aws_apis()
    scopes = await runtime.aws_scopes()
    results: dict[str, Any] = {
        "size": [clusters, services, tasks],
        "fleet_build_s": round(build_s, 1),
    }
    async with Describer(runtime.sessionmaker, scopes) as describer:
        reconciler = Reconciler(runtime.sessionmaker, scopes, describer, clusters=fleet["clusters"])
        # 1. A full reconcile (ListClusters is skipped: ECSWATCH_CLUSTERS names them).
        started = time.perf_counter()
        await reconciler.reconcile_all()
        results["reconcile_s"] = round(time.perf_counter() - started, 2)
        reconcile_calls = dict(Counter({op: n for (_, op), n in proxy.calls.items()}))
        definitions = reconcile_calls.pop("DescribeTaskDefinition", 0)
        ecs_reconcile = sum(reconcile_calls.values())
        minimum = reconcile_minimum(clusters, services, tasks)["ecs"] - 1  # no ListClusters
        results["reconcile"] = {
            "calls": reconcile_calls,
            "ecs_calls": ecs_reconcile,
            "ecs_minimum": minimum,
            "task_definitions_described_once": definitions,
        }
        # Let the fire-and-forget task definition lookups finish before counting on.
        async with asyncio.timeout(30):
            while describer.batcher.pending:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        # 2. Metrics: first poll fills the target group cache, the second is steady.
        proxy.reset()
        codedeploy = CodeDeployMapper(runtime.sessionmaker, apis, {})
        poller = MetricsPoller(runtime.sessionmaker, scopes, codedeploy)
        await poller.poll()
        first = Counter({op: n for (_, op), n in proxy.calls.items()})
        proxy.reset()
        await poller.poll()
        steady = Counter({op: n for (_, op), n in proxy.calls.items()})
        insight_services = sum(services // clusters for c in range(clusters) if c % 2)
        results["metrics"] = {
            "first_poll": dict(first),
            "steady_poll": dict(steady),
            "get_metric_data_minimum": metrics_minimum(
                clusters, services, insight_services, fleet["target_groups"]
            ),
            "describe_target_groups_minimum_first": math.ceil(fleet["target_groups"] / 20),
        }
        # 3. One event per task, as new tasks (their tags unknown: forget them first).
        async with runtime.engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(
                text("DELETE FROM resource_tags WHERE strpos(resource_arn, :t) > 0"),
                {"t": ":task/"},
            )
            await conn.execute(text("DELETE FROM tasks"))
        enricher = Enricher(describer, reconcile_one=reconciler.reconcile_one)
        handler = Handler(runtime.sessionmaker, after_commit=enricher.submit)
        events = [task_event(c, a, s, i, fleet["task_definition"]) for c, a, s, i in fleet["tasks"]]
        # Every other task warms the enricher up (a consumer that has run a while has
        # seen its services and clusters); the other half is measured.
        await _feed(runtime, handler, events[::2])
        await asyncio.sleep(0.3)
        proxy.reset()
        events = events[1::2]
        committed, known = await _feed(runtime, handler, events)
        await enricher.close()
        latencies = sorted(known[a] - committed[a] for a in committed)
        event_calls = Counter({op: n for (_, op), n in proxy.calls.items()})
        describe_tasks = event_calls.get("DescribeTasks", 0)
        results["task_events"] = {
            "events": len(events),
            "calls": dict(event_calls),
            "describe_tasks": describe_tasks,
            "describe_tasks_minimum": events_minimum(clusters, math.ceil(len(events) / clusters)),
            "describe_tasks_per_1000_events": round(describe_tasks * 1000 / len(events), 2),
            "tags_known_p50_s": round(statistics.median(latencies), 3),
            "tags_known_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
            "tags_known_max_s": round(latencies[-1], 3),
        }
    steady_ecs = ecs_reconcile * 60 / RECONCILE_INTERVAL_S
    steady_cw = steady.get("GetMetricData", 0) * 60 / METRICS_INTERVAL_S
    results["per_minute_steady"] = {
        "ecs": round(steady_ecs, 2),
        "ecs_minimum": round(minimum * 60 / RECONCILE_INTERVAL_S, 2),
        "cloudwatch": round(steady_cw, 2),
        "cloudwatch_minimum": results["metrics"]["get_metric_data_minimum"],
        "elbv2": steady.get("DescribeTargetGroups", 0),
        "elbv2_minimum": 0,
    }
    return results


async def _feed(
    runtime: Any, handler: Handler, events: list[dict[str, Any]]
) -> tuple[dict[str, float], dict[str, float]]:
    """Commit ``events`` in the consumer's batches; time commit -> tags known per task."""
    committed: dict[str, float] = {}
    known: dict[str, float] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_tags(runtime, committed, known, stop))
    for start in range(0, len(events), 100):
        chunk = events[start : start + 100]
        await handler.handle([Message(message_id=e["id"], body=json.dumps(e)) for e in chunk])
        now = time.perf_counter()
        for e in chunk:
            committed[e["detail"]["taskArn"]] = now
    async with asyncio.timeout(120):
        while len(known) < len(committed):
            await asyncio.sleep(0.05)
    stop.set()
    await watcher
    return committed, known


async def _watch_tags(
    runtime: Any, committed: dict[str, float], known: dict[str, float], stop: asyncio.Event
) -> None:
    from sqlalchemy import text

    while not stop.is_set():
        pending = [a for a in committed if a not in known]
        if pending:
            async with runtime.engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT resource_arn FROM resource_tags"
                        " WHERE resource_arn = ANY(:arns) AND known"
                    ),
                    {"arns": pending},
                )
                now = time.perf_counter()
                for row in rows:
                    known[row[0]] = now
        await asyncio.sleep(0.02)


def report(results: dict[str, Any]) -> None:
    c, s, t = results["size"]
    rec = results["reconcile"]
    met = results["metrics"]
    ev = results["task_events"]
    pm = results["per_minute_steady"]
    ratio = rec["ecs_calls"] / max(1, rec["ecs_minimum"])
    per_1000_min = round(ev["describe_tasks_minimum"] * 1000 / ev["events"], 2)
    rows = [
        ("fleet", f"{c} clusters, {s} services, {t} tasks"),
        (
            "reconcile: ECS calls",
            f"{rec['ecs_calls']} (minimum {rec['ecs_minimum']}, ratio {ratio:.2f})",
        ),
        ("reconcile: by operation", json.dumps(rec["calls"], sort_keys=True)),
        ("metrics, first poll", json.dumps(met["first_poll"], sort_keys=True)),
        ("metrics, steady poll", json.dumps(met["steady_poll"], sort_keys=True)),
        ("GetMetricData minimum", str(met["get_metric_data_minimum"])),
        ("steady ECS calls/min", f"{pm['ecs']} (minimum {pm['ecs_minimum']})"),
        ("steady CloudWatch calls/min", f"{pm['cloudwatch']} (minimum {pm['cloudwatch_minimum']})"),
        ("steady ELBv2 calls/min", f"{pm['elbv2']} (minimum {pm['elbv2_minimum']})"),
        ("task events: calls", json.dumps(ev["calls"], sort_keys=True)),
        (
            "DescribeTasks per 1,000 events",
            f"{ev['describe_tasks_per_1000_events']} (minimum {per_1000_min})",
        ),
        (
            "commit -> tags_known p50 / p95 / max",
            f"{ev['tags_known_p50_s']} / {ev['tags_known_p95_s']} / {ev['tags_known_max_s']} s",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "aws_calls.json").write_text(json.dumps(results, indent=2, sort_keys=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    configure_logging("json", "warning")
    # moto accepts any credentials; botocore still wants some in its chain.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    report(asyncio.run(run(args.size, args.database_url)))


if __name__ == "__main__":
    main()
