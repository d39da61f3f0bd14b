"""Typed adapter over ELBv2 DescribeTargetGroups (by ARN or by name, batched)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service.aws.calls import AwsCaller, AwsCallFailed

if TYPE_CHECKING:
    from types_aiobotocore_elbv2 import ElasticLoadBalancingv2Client
    from types_aiobotocore_elbv2.type_defs import TargetGroupTypeDef

#: DescribeTargetGroups takes at most this many ARNs or names, and pages at 400.
DESCRIBE_TARGET_GROUPS_LIMIT = 20


class Elbv2Api:
    """ELBv2 reads, each through the shared :class:`AwsCaller`."""

    def __init__(self, client: ElasticLoadBalancingv2Client, caller: AwsCaller) -> None:
        self._client = client
        self._caller = caller

    async def describe_target_groups(
        self, *, arns: Sequence[str] = (), names: Sequence[str] = ()
    ) -> list[TargetGroupTypeDef]:
        """The target groups among ``arns`` (or ``names``); unknown ones are left out."""
        if bool(arns) == bool(names):
            raise ValueError("pass arns or names")
        if len(arns or names) > DESCRIBE_TARGET_GROUPS_LIMIT:
            raise ValueError(f"at most {DESCRIBE_TARGET_GROUPS_LIMIT} target groups a call")
        kwargs: dict[str, Any] = {"TargetGroupArns": list(arns)} if arns else {"Names": list(names)}
        try:
            response = await self._caller.call(
                "elbv2",
                "DescribeTargetGroups",
                lambda: self._client.describe_target_groups(**kwargs),
            )
        except AwsCallFailed as exc:
            if exc.code == "TargetGroupNotFound" and len(arns or names) > 1:
                # One unknown group fails the whole call: ask for each alone.
                found: list[TargetGroupTypeDef] = []
                for one in arns or names:
                    single = {"arns": [one]} if arns else {"names": [one]}
                    found.extend(await self.describe_target_groups(**single))
                return found
            if exc.code == "TargetGroupNotFound":
                return []
            raise
        return list(response.get("TargetGroups", []))
