"""Several accounts and regions on moto: the fleets and settings the multi-account
poller tests share (their fixtures are in conftest.py).

moto gives each account its own resources when called with credentials from
``sts:AssumeRole`` into that account, separately per region. Each scope here has
a cluster ``prod`` with a service ``web`` and one task, and every resource carries
a ``scope`` tag naming its own account and region.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from aiobotocore.session import get_session

from service.aws.scopes import Scope
from service.config import Settings
from tests.rig.accounts import assumed
from tests.rig.aws_proxy import AwsProxy

REGIONS = ("us-east-1", "eu-west-1")
ROLE = "ecswatch-read"


@dataclass
class ScopeFleet:
    scope: Scope
    cluster_arn: str
    service_arn: str
    task_arn: str
    task_definition_arn: str

    @property
    def tag(self) -> str:
        return f"{self.scope.account}-{self.scope.region}"


def random_account() -> str:
    return str(random.randrange(10**11, 10**12))


async def build_scope(endpoint: str, scope: Scope) -> ScopeFleet:
    """Cluster ``prod``, service ``web`` and one task in ``scope``, tagged with the scope."""
    session: Any = get_session()
    creds = await assumed(endpoint, scope.account, ROLE)
    tag = [{"key": "scope", "value": f"{scope.account}-{scope.region}"}]
    kwargs = {"endpoint_url": endpoint, "region_name": scope.region, **creds}
    async with (
        session.create_client("ecs", **kwargs) as ecs,
        session.create_client("ec2", **kwargs) as ec2,
    ):
        cluster = (await ecs.create_cluster(clusterName="prod", tags=tag))["cluster"]
        td = await ecs.register_task_definition(
            family="web",
            networkMode="bridge",
            containerDefinitions=[{"name": "app", "image": "nginx", "memory": 128}],
        )
        td_arn = td["taskDefinition"]["taskDefinitionArn"]
        images = await ec2.describe_images()
        instance = await ec2.run_instances(
            ImageId=images["Images"][0]["ImageId"], MinCount=1, MaxCount=1
        )
        document = json.dumps(
            {"instanceId": instance["Instances"][0]["InstanceId"], "region": scope.region}
        )
        await ecs.register_container_instance(cluster="prod", instanceIdentityDocument=document)
        service = await ecs.create_service(
            cluster="prod", serviceName="web", taskDefinition=td_arn, desiredCount=1, tags=tag
        )
        ran = await ecs.run_task(
            cluster="prod",
            taskDefinition=td_arn,
            count=1,
            group="service:web",
            startedBy="ecs-svc/1",
            tags=tag,
        )
    return ScopeFleet(
        scope,
        cluster["clusterArn"],
        service["service"]["serviceArn"],
        ran["tasks"][0]["taskArn"],
        td_arn,
    )


def org_settings(settings: Settings, proxy: AwsProxy, watched: tuple[str, ...]) -> Settings:
    return settings.model_copy(
        update={
            "aws_endpoint_url": proxy.url,
            "aws_region": REGIONS[0],
            "regions": REGIONS,
            "accounts": {a: f"arn:aws:iam::{a}:role/{ROLE}" for a in watched},
            "external_id": "ecswatch-test-external-id",
        }
    )
