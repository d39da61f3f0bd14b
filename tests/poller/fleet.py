"""A small tagged ECS fleet in moto (cluster, task definition, instance, service, tasks,
an ALB with a blue/green pair of target groups) for the enrichment and poller tests."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.session import get_session

REGION = "us-east-1"


@dataclass
class Fleet:
    cluster: str
    cluster_arn: str
    task_definition_arn: str
    service: str
    service_arn: str
    instance_arn: str
    task_arns: list[str] = field(default_factory=list)
    blue_tg_arn: str = ""
    green_tg_arn: str = ""
    load_balancer_arn: str = ""


def _client(name: str, endpoint: str) -> Any:
    session: Any = get_session()
    return session.create_client(
        name,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def build_fleet(
    endpoint: str, *, tasks: int = 3, with_alb: bool = True, native_blue_green: bool = True
) -> Fleet:
    """Create the fleet directly in moto (not through the proxy under test)."""
    suffix = uuid.uuid4().hex[:10]
    cluster = f"fleet{suffix}"
    async with (
        _client("ecs", endpoint) as ecs,
        _client("ec2", endpoint) as ec2,
        _client("elbv2", endpoint) as elbv2,
    ):
        created = await ecs.create_cluster(
            clusterName=cluster,
            tags=[{"key": "team", "value": "platform"}],
            settings=[{"name": "containerInsights", "value": "enabled"}],
        )
        cluster_arn = created["cluster"]["clusterArn"]
        td = await ecs.register_task_definition(
            family=f"web{suffix}",
            networkMode="bridge",
            cpu="256",
            memory="512",
            containerDefinitions=[
                {"name": "app", "image": "nginx:1.27", "cpu": 64, "memory": 128, "essential": True}
            ],
        )
        td_arn = td["taskDefinition"]["taskDefinitionArn"]
        images = await ec2.describe_images()
        image_id = images["Images"][0]["ImageId"]
        reservation = await ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)
        instance_id = reservation["Instances"][0]["InstanceId"]
        document = json.dumps({"instanceId": instance_id, "region": REGION})
        ci = await ecs.register_container_instance(
            cluster=cluster, instanceIdentityDocument=document
        )
        instance_arn = ci["containerInstance"]["containerInstanceArn"]
        fleet = Fleet(
            cluster=cluster,
            cluster_arn=cluster_arn,
            task_definition_arn=td_arn,
            service="web",
            service_arn="",
            instance_arn=instance_arn,
        )
        load_balancers: list[dict[str, Any]] = []
        if with_alb:
            vpc = (await ec2.create_vpc(CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
            subnets = [
                (
                    await ec2.create_subnet(
                        VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}"
                    )
                )["Subnet"]["SubnetId"]
                for i, az in enumerate("ab")
            ]
            sg = (
                await ec2.create_security_group(GroupName=f"sg{suffix}", Description="t", VpcId=vpc)
            )["GroupId"]
            lb = await elbv2.create_load_balancer(
                Name=f"lb{suffix}", Subnets=subnets, SecurityGroups=[sg], Type="application"
            )
            fleet.load_balancer_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
            arns = []
            for colour in ("blue", "green"):
                tg = await elbv2.create_target_group(
                    Name=f"{colour}{suffix}",
                    Protocol="HTTP",
                    Port=80,
                    VpcId=vpc,
                    TargetType="ip",
                )
                arn = tg["TargetGroups"][0]["TargetGroupArn"]
                arns.append(arn)
                await elbv2.create_listener(
                    LoadBalancerArn=fleet.load_balancer_arn,
                    Protocol="HTTP",
                    Port=80 if colour == "blue" else 8080,
                    DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}],
                )
            fleet.blue_tg_arn, fleet.green_tg_arn = arns
            balancer: dict[str, Any] = {
                "targetGroupArn": fleet.blue_tg_arn,
                "containerName": "app",
                "containerPort": 80,
            }
            if native_blue_green:
                balancer["advancedConfiguration"] = {
                    "alternateTargetGroupArn": fleet.green_tg_arn,
                    "productionListenerRule": "x",
                    "roleArn": "arn:aws:iam::123456789012:role/ecs",
                }
            load_balancers = [balancer]
        service = await ecs.create_service(
            cluster=cluster,
            serviceName="web",
            taskDefinition=td_arn,
            desiredCount=tasks,
            tags=[{"key": "team", "value": "web"}],
            loadBalancers=load_balancers,
            deploymentConfiguration={
                "deploymentCircuitBreaker": {"enable": True, "rollback": True},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            },
        )
        fleet.service_arn = service["service"]["serviceArn"]
        if tasks:
            ran = await ecs.run_task(
                cluster=cluster,
                taskDefinition=td_arn,
                count=tasks,
                group="service:web",
                startedBy="ecs-svc/1234",
                tags=[{"key": "owner", "value": "web-team"}],
            )
            fleet.task_arns = [t["taskArn"] for t in ran["tasks"]]
    return fleet


def task_event(
    fleet: Fleet, task_arn: str, *, version: int = 1, status: str = "RUNNING"
) -> dict[str, Any]:
    """An ECS Task State Change for one of the fleet's tasks."""
    return {
        "id": str(uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "123456789012",
        "region": REGION,
        "time": "2026-12-01T10:00:00Z",
        "resources": [task_arn],
        "detail": {
            "taskArn": task_arn,
            "clusterArn": fleet.cluster_arn,
            "taskDefinitionArn": fleet.task_definition_arn,
            "group": "service:web",
            "startedBy": "ecs-svc/1234",
            "lastStatus": status,
            "desiredStatus": "RUNNING",
            "launchType": "EC2",
            "containerInstanceArn": fleet.instance_arn,
            "version": version,
            "containers": [{"name": "app", "lastStatus": status}],
            "updatedAt": "2026-12-01T10:00:00Z",
        },
    }
