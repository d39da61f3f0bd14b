"""The bundle of AWS adapters one process shares (one limiter for all of them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.aws.calls import AwsCaller
from service.aws.cloudwatch import CloudWatchApi
from service.aws.codedeploy import CodeDeployApi
from service.aws.ecs import EcsApi
from service.aws.elbv2 import Elbv2Api
from service.aws.limiter import Limiter


@dataclass(frozen=True)
class AwsApis:
    """ECS, CloudWatch, ELBv2 and CodeDeploy adapters behind one :class:`AwsCaller`."""

    caller: AwsCaller
    ecs: EcsApi
    cloudwatch: CloudWatchApi
    elbv2: Elbv2Api
    codedeploy: CodeDeployApi


def build_aws_apis(
    clients: dict[str, Any], *, region: str | None, caller: AwsCaller | None = None
) -> AwsApis:
    """Adapters over open clients keyed ecs, cloudwatch, elbv2 and codedeploy."""
    caller = caller or AwsCaller(Limiter(), region=region or "default")
    return AwsApis(
        caller=caller,
        ecs=EcsApi(clients["ecs"], caller),
        cloudwatch=CloudWatchApi(clients["cloudwatch"], caller),
        elbv2=Elbv2Api(clients["elbv2"], caller),
        codedeploy=CodeDeployApi(clients["codedeploy"], caller),
    )
