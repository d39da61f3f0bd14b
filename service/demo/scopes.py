"""The demo's other scopes: a second account and a second region beside the home one.

``ecswatch demo`` watches two accounts in two regions (docs/aws.md, "Accounts and
regions"): the home scope holds the story (:mod:`service.demo.fleet`); each of the
three others holds a small healthy fleet, one Fargate cluster with one service of
two tasks, built in moto with credentials from ``sts:AssumeRole`` into its account
(moto keeps separate resources per account and region). Their tasks' events reach
the central queue as a cross-account EventBridge rule delivers them: the whole
event, with the ``account`` and ``region`` of the scope it came from.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.demo.events import ACCOUNT, REGION, task_lifecycle

#: The second account and region the demo watches beside the home scope.
SECOND_ACCOUNT = "210987654321"
SECOND_REGION = "us-west-2"
REGIONS = (REGION, SECOND_REGION)
ROLE_NAME = "ecswatch-demo-read"
EXTERNAL_ID = "ecswatch-demo"
EDGE_CLUSTER = "demo-edge"
EDGE_SERVICE = "edge"
EDGE_TASKS = 2


def role_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:role/{ROLE_NAME}"


#: ``ECSWATCH_ACCOUNTS`` of the demo: both accounts, each with the role ecswatch assumes.
ACCOUNTS = {account: role_arn(account) for account in (ACCOUNT, SECOND_ACCOUNT)}


@dataclass(frozen=True, slots=True)
class DemoScope:
    account: str
    region: str

    def __str__(self) -> str:
        return f"{self.account}/{self.region}"


#: Every scope but the home one (``ACCOUNT`` in ``REGION``), which runs the story.
OTHER_SCOPES = tuple(
    DemoScope(a, r) for a in ACCOUNTS for r in REGIONS if (a, r) != (ACCOUNT, REGION)
)


@dataclass
class EdgeFleet:
    """What one other scope holds: its running tasks' ARNs and their task definition."""

    scope: DemoScope
    task_definition: str = ""
    deployment: str = ""
    tasks: list[str] = field(default_factory=list)


def in_scope(event: dict[str, Any], scope: DemoScope) -> dict[str, Any]:
    """``event`` (built for the home scope) with its ARNs, image, zone and envelope in ``scope``.

    Other ids (a deployment's digits, say) are left as they are.
    """
    raw = (
        json.dumps(event)
        .replace(f":{REGION}:{ACCOUNT}:", f":{scope.region}:{scope.account}:")
        .replace(f"{ACCOUNT}.dkr.ecr.{REGION}.", f"{scope.account}.dkr.ecr.{scope.region}.")
    )
    moved: dict[str, Any] = json.loads(raw)
    moved["account"], moved["region"] = scope.account, scope.region
    detail = moved.get("detail") or {}
    zone = str(detail.get("availabilityZone") or "")
    if zone.startswith(REGION):
        detail["availabilityZone"] = scope.region + zone.removeprefix(REGION)
    return moved


async def assume(sts: Any, account: str) -> dict[str, str]:
    """Client keyword arguments signed as ``account`` (``sts:AssumeRole`` of the demo role)."""
    credentials = (
        await sts.assume_role(
            RoleArn=role_arn(account), RoleSessionName="ecswatch-demo", ExternalId=EXTERNAL_ID
        )
    )["Credentials"]
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }


async def build_edge(ec2: Any, ecs: Any, scope: DemoScope) -> EdgeFleet:
    """One Fargate cluster with one tagged service and its tasks, started with RunTask."""
    edge = EdgeFleet(scope)
    vpc = (await ec2.create_vpc(CidrBlock="10.1.0.0/16"))["Vpc"]["VpcId"]
    # moto names an awsvpc task's network interface only with DNS hostnames on.
    await ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = (
        await ec2.create_subnet(
            VpcId=vpc, CidrBlock="10.1.1.0/24", AvailabilityZone=f"{scope.region}a"
        )
    )["Subnet"]["SubnetId"]
    group = (await ec2.create_security_group(GroupName="edge", Description="edge", VpcId=vpc))[
        "GroupId"
    ]
    tags = [
        {"key": "team", "value": "edge"},
        {"key": "env", "value": "demo"},
        {"key": "app", "value": EDGE_SERVICE},
    ]
    await ecs.create_cluster(clusterName=EDGE_CLUSTER, tags=[{"key": "env", "value": "demo"}])
    edge.task_definition = (
        await ecs.register_task_definition(
            family=EDGE_SERVICE,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": "app",
                    "image": f"{scope.account}.dkr.ecr.{scope.region}.amazonaws.com/edge:v1",
                    "cpu": 256,
                    "memory": 512,
                    "essential": True,
                }
            ],
            tags=tags,
        )
    )["taskDefinition"]["taskDefinitionArn"]
    network = {
        "awsvpcConfiguration": {
            "subnets": [subnet],
            "securityGroups": [group],
            "assignPublicIp": "DISABLED",
        }
    }
    created = await ecs.create_service(
        cluster=EDGE_CLUSTER,
        serviceName=EDGE_SERVICE,
        taskDefinition=edge.task_definition,
        desiredCount=EDGE_TASKS,
        launchType="FARGATE",
        networkConfiguration=network,
        tags=tags,
        propagateTags="SERVICE",
    )
    edge.deployment = (created["service"].get("deployments") or [{}])[0].get("id") or "ecs-svc/1"
    started = await ecs.run_task(
        cluster=EDGE_CLUSTER,
        taskDefinition=edge.task_definition,
        count=EDGE_TASKS,
        group=f"service:{EDGE_SERVICE}",
        startedBy=edge.deployment,
        launchType="FARGATE",
        networkConfiguration=network,
        tags=tags,
    )
    edge.tasks = [t["taskArn"] for t in started.get("tasks", [])]
    return edge


def edge_events(edge: EdgeFleet, rng: random.Random) -> list[dict[str, Any]]:
    """Each of the scope's tasks' events up to RUNNING, as its account's EventBridge sends them."""
    events: list[dict[str, Any]] = []
    for arn in edge.tasks:
        events += task_lifecycle(
            rng,
            cluster=EDGE_CLUSTER,
            service=EDGE_SERVICE,
            family=EDGE_SERVICE,
            revision=1,
            deployment_id=edge.deployment,
            start=datetime.now(UTC),
            stop=False,
            task_arn=arn,
            capacity_provider="FARGATE",
        )
    return [in_scope(e, edge.scope) for e in events]


async def build_other_scopes(
    session: Any, sts: Any, client_kwargs: dict[str, Any], send: Any
) -> list[EdgeFleet]:
    """Build every other scope's fleet with its account's credentials; ``send`` its events."""
    rng = random.Random(7)
    edges: list[EdgeFleet] = []
    credentials = {account: await assume(sts, account) for account in ACCOUNTS}
    for scope in OTHER_SCOPES:
        kwargs = {**client_kwargs, **credentials[scope.account], "region_name": scope.region}
        async with (
            session.create_client("ec2", **kwargs) as ec2,
            session.create_client("ecs", **kwargs) as ecs,
        ):
            edge = await build_edge(ec2, ecs, scope)
        await send(edge_events(edge, rng))
        edges.append(edge)
    return edges
