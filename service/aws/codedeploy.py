"""Typed adapter over CodeDeploy GetDeploymentGroup (which ECS service a group deploys)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.aws.calls import AwsCaller, AwsCallFailed

if TYPE_CHECKING:
    from types_aiobotocore_codedeploy import CodeDeployClient
    from types_aiobotocore_codedeploy.type_defs import DeploymentGroupInfoTypeDef


_UNKNOWN = ("DeploymentGroupDoesNotExistException", "ApplicationDoesNotExistException")


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
