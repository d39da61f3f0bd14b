"""Typed adapter over CodeDeploy: GetDeploymentGroup (which ECS service a group
deploys) and BatchGetDeployments (the status of in-progress deployments)."""

from __future__ import annotations

from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING

from service.aws.calls import AwsCaller, AwsCallFailed

if TYPE_CHECKING:
    from types_aiobotocore_codedeploy import CodeDeployClient
    from types_aiobotocore_codedeploy.type_defs import (
        BatchGetDeploymentsOutputTypeDef,
        DeploymentGroupInfoTypeDef,
        DeploymentInfoTypeDef,
    )


_UNKNOWN = ("DeploymentGroupDoesNotExistException", "ApplicationDoesNotExistException")
#: Deployment ids one BatchGetDeployments call takes.
BATCH_GET_DEPLOYMENTS_LIMIT = 25


class CodeDeployApi:
    """CodeDeploy reads, each through the shared :class:`AwsCaller`."""

    def __init__(self, client: CodeDeployClient, caller: AwsCaller) -> None:
        self._client = client
        self._caller = caller

    async def get_deployment_group(
        self, application: str, group: str
    ) -> DeploymentGroupInfoTypeDef | None:
        """The group, or None when CodeDeploy does not know it."""
        try:
            response = await self._caller.call(
                "codedeploy",
                "GetDeploymentGroup",
                lambda: self._client.get_deployment_group(
                    applicationName=application, deploymentGroupName=group
                ),
            )
        except AwsCallFailed as exc:
            if exc.code in _UNKNOWN:
                return None
            raise
        return response.get("deploymentGroupInfo")

    async def batch_get_deployments(self, ids: list[str]) -> list[DeploymentInfoTypeDef]:
        """The deployments CodeDeploy knows among ``ids``, 25 a call."""
        found: list[DeploymentInfoTypeDef] = []
        for start in range(0, len(ids), BATCH_GET_DEPLOYMENTS_LIMIT):
            chunk = ids[start : start + BATCH_GET_DEPLOYMENTS_LIMIT]
            response = await self._caller.call(
                "codedeploy", "BatchGetDeployments", partial(self._batch, chunk)
            )
            found.extend(response.get("deploymentsInfo") or [])
        return found

    def _batch(self, ids: list[str]) -> Awaitable[BatchGetDeploymentsOutputTypeDef]:
        return self._client.batch_get_deployments(deploymentIds=ids)
