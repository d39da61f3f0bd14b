"""The demo's fleet as real moto resources, so enrichment and the poller find it.

Built through the AWS APIs (moto in server mode), exactly what a small account
would hold:

* ``demo-ec2``: an EC2 cluster of three container instances (one of them is
  drained during the demo, one loses its agent) running ``worker`` (steady) and
  ``batch`` (no circuit breaker: its next deployment crash-loops);
* ``demo-fargate``: Fargate with Fargate Spot as capacity providers, running
  ``web`` (circuit breaker with rollback: its next deployment fails and rolls
  back), ``api`` (mostly on Spot; its next deployment succeeds) and ``checkout``
  (CodeDeploy blue/green behind an ALB with a blue and a green target group);
* a CodeDeploy application and deployment group for ``checkout``;
* every service and task tagged (``team``, ``env``).

Tasks are started with ``run_task`` (moto's services never launch any), pinned
so that describing them does not move them on. :class:`Fleet` records the ARNs
so the simulator's events name the same resources the Describe calls return.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

EC2_CLUSTER = "demo-ec2"
FARGATE_CLUSTER = "demo-fargate"
CODEDEPLOY_APP = "demo-checkout"
CODEDEPLOY_GROUP = "demo-checkout-bg"


@dataclass(frozen=True, slots=True)
class DemoService:
    cluster: str
    name: str
    launch: str  # FARGATE or EC2
    team: str
    circuit_breaker: bool
    spot: bool = False
    codedeploy: bool = False
    tasks: int = 2


SERVICES: tuple[DemoService, ...] = (
    DemoService(FARGATE_CLUSTER, "web", "FARGATE", "frontend", circuit_breaker=True),
    DemoService(FARGATE_CLUSTER, "api", "FARGATE", "backend", circuit_breaker=True, spot=True),
    DemoService(
        FARGATE_CLUSTER, "checkout", "FARGATE", "payments", circuit_breaker=False, codedeploy=True
    ),
    DemoService(EC2_CLUSTER, "worker", "EC2", "backend", circuit_breaker=True),
    DemoService(EC2_CLUSTER, "batch", "EC2", "data", circuit_breaker=False, tasks=1),
)


@dataclass
class Fleet:
    """What was built: the ARNs and ids the simulator's events must name."""

    subnets: list[str] = field(default_factory=list)
    security_group: str = ""
    #: container instance ARN -> EC2 instance id
    instances: dict[str, str] = field(default_factory=dict)
    #: service name -> its primary (stable) deployment id, as moto made it
    deployments: dict[str, str] = field(default_factory=dict)
    #: service name -> task definition ARN
    task_definitions: dict[str, str] = field(default_factory=dict)
    load_balancer: str = ""  # CloudWatch dimension: app/<name>/<id>
    target_groups: dict[str, str] = field(default_factory=dict)  # colour -> targetgroup/<n>/<id>
    target_group_arns: dict[str, str] = field(default_factory=dict)

    def service(self, name: str) -> DemoService:
        return next(s for s in SERVICES if s.name == name)


def _tags(svc: DemoService) -> list[dict[str, str]]:
    return [
        {"key": "team", "value": svc.team},
        {"key": "env", "value": "demo"},
        {"key": "app", "value": svc.name},
    ]


async def build_fleet(
    ec2: Any, ecs: Any, elbv2: Any, codedeploy: Any, *, region: str = "us-east-1"
) -> Fleet:
    """Create the fleet in moto (a fresh moto: names are fixed)."""
    fleet = Fleet()
    vpc = (await ec2.create_vpc(CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
    # moto names a task's network interface only in a VPC with DNS hostnames on
    # (RunTask of an awsvpc task fails with HTTP 500 otherwise).
    await ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    for n, az in enumerate(("a", "b")):
        subnet = await ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.0.{n + 1}.0/24", AvailabilityZone=f"{region}{az}"
        )
        fleet.subnets.append(subnet["Subnet"]["SubnetId"])
    fleet.security_group = (
        await ec2.create_security_group(GroupName="demo", Description="demo", VpcId=vpc)
    )["GroupId"]

    await ecs.create_cluster(
        clusterName=EC2_CLUSTER,
        tags=[{"key": "env", "value": "demo"}],
        settings=[{"name": "containerInsights", "value": "disabled"}],
    )
    await ecs.create_cluster(
        clusterName=FARGATE_CLUSTER,
        tags=[{"key": "env", "value": "demo"}],
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[
            {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
            {"capacityProvider": "FARGATE_SPOT", "weight": 3},
        ],
    )
    reservation = await ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=3,
        MaxCount=3,
        InstanceType="m5.large",
        SubnetId=fleet.subnets[0],
    )
    for instance in reservation["Instances"]:
        document = json.dumps({"instanceId": instance["InstanceId"], "region": region})
        registered = await ecs.register_container_instance(
            cluster=EC2_CLUSTER, instanceIdentityDocument=document
        )
        arn = registered["containerInstance"]["containerInstanceArn"]
        fleet.instances[arn] = instance["InstanceId"]

    await _load_balancer(elbv2, fleet)

    for svc in SERVICES:
        fargate = svc.launch == "FARGATE"
        definition = await ecs.register_task_definition(
            family=svc.name,
            networkMode="awsvpc" if fargate else "bridge",
            requiresCompatibilities=[svc.launch],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": "app",
                    "image": f"123456789012.dkr.ecr.{region}.amazonaws.com/{svc.name}:v1",
                    "cpu": 256,
                    "memory": 512,
                    "essential": True,
                    "portMappings": [{"containerPort": 8080}],
                }
            ],
            tags=_tags(svc),
        )
        fleet.task_definitions[svc.name] = definition["taskDefinition"]["taskDefinitionArn"]
        kwargs: dict[str, Any] = {
            "cluster": svc.cluster,
            "serviceName": svc.name,
            "taskDefinition": fleet.task_definitions[svc.name],
            "desiredCount": svc.tasks,
            "tags": _tags(svc),
            "propagateTags": "SERVICE",
            "deploymentConfiguration": {
                "deploymentCircuitBreaker": {
                    "enable": svc.circuit_breaker,
                    "rollback": svc.circuit_breaker,
                },
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
        }
        if fargate:
            kwargs["networkConfiguration"] = _network(fleet)
            if svc.spot:
                kwargs["capacityProviderStrategy"] = [
                    {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
                    {"capacityProvider": "FARGATE_SPOT", "weight": 3},
                ]
            else:
                kwargs["launchType"] = "FARGATE"
        else:
            kwargs["launchType"] = "EC2"
        if svc.codedeploy:
            kwargs["deploymentController"] = {"type": "CODE_DEPLOY"}
            kwargs["loadBalancers"] = [
                {
                    "targetGroupArn": fleet.target_group_arns["blue"],
                    "containerName": "app",
                    "containerPort": 8080,
                }
            ]
            kwargs.pop("deploymentConfiguration")
        created = (await ecs.create_service(**kwargs))["service"]
        primary = (created.get("deployments") or [{}])[0].get("id")
        fleet.deployments[svc.name] = primary or f"ecs-svc/{abs(hash(svc.name)) % 10**19:019d}"

    await codedeploy.create_application(applicationName=CODEDEPLOY_APP, computePlatform="ECS")
    await codedeploy.create_deployment_group(
        applicationName=CODEDEPLOY_APP,
        deploymentGroupName=CODEDEPLOY_GROUP,
        serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
        deploymentStyle={
            "deploymentType": "BLUE_GREEN",
            "deploymentOption": "WITH_TRAFFIC_CONTROL",
        },
        ecsServices=[{"serviceName": "checkout", "clusterName": FARGATE_CLUSTER}],
        loadBalancerInfo={
            "targetGroupPairInfoList": [
                {
                    "targetGroups": [
                        {"name": "demo-checkout-blue"},
                        {"name": "demo-checkout-green"},
                    ],
                    "prodTrafficRoute": {"listenerArns": []},
                }
            ]
        },
    )
    return fleet


def _network(fleet: Fleet) -> dict[str, Any]:
    return {
        "awsvpcConfiguration": {
            "subnets": fleet.subnets,
            "securityGroups": [fleet.security_group],
            "assignPublicIp": "DISABLED",
        }
    }


async def _load_balancer(elbv2: Any, fleet: Fleet) -> None:
    """An ALB with a blue and a green target group, each behind a listener."""
    lb = (
        await elbv2.create_load_balancer(
            Name="demo-checkout",
            Subnets=fleet.subnets,
            SecurityGroups=[fleet.security_group],
            Type="application",
        )
    )["LoadBalancers"][0]
    lb_arn = lb["LoadBalancerArn"]
    fleet.load_balancer = lb_arn.split(":loadbalancer/", 1)[1]
    vpc = lb["VpcId"]
    for port, colour in ((80, "blue"), (8080, "green")):
        tg = (
            await elbv2.create_target_group(
                Name=f"demo-checkout-{colour}",
                Protocol="HTTP",
                Port=8080,
                VpcId=vpc,
                TargetType="ip",
            )
        )["TargetGroups"][0]
        fleet.target_group_arns[colour] = tg["TargetGroupArn"]
        fleet.target_groups[colour] = tg["TargetGroupArn"].rsplit(":", 1)[1]
        await elbv2.create_listener(
            LoadBalancerArn=lb_arn,
            Protocol="HTTP",
            Port=port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
        )


async def run_tasks(
    ecs: Any, fleet: Fleet, svc: DemoService, count: int, *, started_by: str
) -> list[dict[str, Any]]:
    """Start ``count`` tasks of ``svc`` in moto; return them as RunTask does."""
    kwargs: dict[str, Any] = {
        "cluster": svc.cluster,
        "taskDefinition": fleet.task_definitions[svc.name],
        "count": count,
        "group": f"service:{svc.name}",
        "startedBy": started_by,
        "tags": _tags(svc),
    }
    if svc.launch == "FARGATE":
        kwargs["launchType"] = "FARGATE"
        kwargs["networkConfiguration"] = _network(fleet)
    else:
        kwargs["launchType"] = "EC2"
    response = await ecs.run_task(**kwargs)
    tasks: list[dict[str, Any]] = response.get("tasks", [])
    return tasks


async def stop_tasks(ecs: Any, cluster: str, arns: list[str], reason: str) -> None:
    for arn in arns:
        await ecs.stop_task(cluster=cluster, task=arn, reason=reason)


def metric_data(
    fleet: Fleet, at: datetime, *, minutes: int = 1, seed: int = 0
) -> list[tuple[str, list[dict[str, Any]]]]:
    """CloudWatch points for the last ``minutes`` whole minutes before ``at`` (pure).

    ``AWS/ECS`` CPU and memory per cluster and service, and ``AWS/ApplicationELB``
    per target group of the blue/green pair; values wave gently with the minute.
    Returns (namespace, MetricData) pairs, each within PutMetricData's limits.
    """
    end = at.astimezone(UTC).replace(second=0, microsecond=0)
    ecs: list[dict[str, Any]] = []
    alb: list[dict[str, Any]] = []
    for back in range(minutes, 0, -1):
        stamp = end - timedelta(minutes=back)
        wave = (stamp.minute + seed) % 10
        dims_list: list[list[dict[str, str]]] = [
            [{"Name": "ClusterName", "Value": c}] for c in (EC2_CLUSTER, FARGATE_CLUSTER)
        ] + [
            [{"Name": "ClusterName", "Value": s.cluster}, {"Name": "ServiceName", "Value": s.name}]
            for s in SERVICES
        ]
        for n, dims in enumerate(dims_list):
            for name, base in (("CPUUtilization", 20.0), ("MemoryUtilization", 45.0)):
                ecs.append(
                    {
                        "MetricName": name,
                        "Dimensions": dims,
                        "Timestamp": stamp,
                        "Value": base + 3 * n + 2 * wave,
                        "Unit": "Percent",
                    }
                )
        for colour, target_group in fleet.target_groups.items():
            dims = [
                {"Name": "LoadBalancer", "Value": fleet.load_balancer},
                {"Name": "TargetGroup", "Value": target_group},
            ]
            live = colour == "blue"
            for name, value, unit in (
                ("RequestCount", 600.0 + 40 * wave if live else 0.0, "Count"),
                ("HTTPCode_Target_5XX_Count", float(wave % 3) if live else 0.0, "Count"),
                ("HealthyHostCount", 2.0 if live else 0.0, "Count"),
                ("UnHealthyHostCount", 0.0, "Count"),
                ("TargetResponseTime", 0.05 + wave / 200 if live else 0.0, "Seconds"),
            ):
                alb.append(
                    {
                        "MetricName": name,
                        "Dimensions": dims,
                        "Timestamp": stamp,
                        "Value": value,
                        "Unit": unit,
                    }
                )
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for namespace, data in (("AWS/ECS", ecs), ("AWS/ApplicationELB", alb)):
        for start in range(0, len(data), 500):
            out.append((namespace, data[start : start + 500]))
    return out
