"""Typed adapter over the ECS API calls ecswatch makes (read-only).

List* use their largest page size; Describe* take at most the API's batch limit
(the batcher fills them) and always ask for tags through ``include``, never one
ListTagsForResource per resource. ``failures`` with reason MISSING are reported
as gone resources.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from service.aws.calls import AwsCaller

if TYPE_CHECKING:
    from types_aiobotocore_ecs import ECSClient
    from types_aiobotocore_ecs.type_defs import (
        ClusterTypeDef,
        ContainerInstanceTypeDef,
        FailureTypeDef,
        ServiceDeploymentBriefTypeDef,
        ServiceDeploymentTypeDef,
        ServiceRevisionTypeDef,
        ServiceTypeDef,
        TaskDefinitionTypeDef,
        TaskTypeDef,
    )

T = TypeVar("T")

#: The API's batch limits of the Describe calls.
DESCRIBE_CLUSTERS_LIMIT = 100
DESCRIBE_SERVICES_LIMIT = 10
DESCRIBE_TASKS_LIMIT = 100
DESCRIBE_CONTAINER_INSTANCES_LIMIT = 100
#: Service deployments (and service revisions) one Describe call takes.
DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT = 20
#: The largest page of the List calls.
LIST_PAGE_SIZE = 100
#: At most this many pages of ListServiceDeployments a service (newest first).
SERVICE_DEPLOYMENT_PAGES = 2


@dataclass
class Described(Generic[T]):
    """What one Describe call returned: the resources, those gone, those failed otherwise."""

    found: list[T] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _sort_failures(described: Described[Any], failures: Sequence[FailureTypeDef]) -> None:
    for failure in failures:
        arn = failure.get("arn", "")
        reason = failure.get("reason", "")
        if reason == "MISSING":
            described.missing.append(arn)
        else:
            described.failed.append((arn, reason))


async def _all_pages(
    page: Callable[[dict[str, Any]], Awaitable[Any]], key: str, **kwargs: Any
) -> list[str]:
    """Every ARN of a List* operation: pages of ``LIST_PAGE_SIZE`` until no ``nextToken``."""
    arns: list[str] = []
    token: str | None = None
    while True:
        request = {**kwargs, "maxResults": LIST_PAGE_SIZE}
        if token:
            request["nextToken"] = token
        response = await page(request)
        arns.extend(response.get(key, []))
        token = response.get("nextToken")
        if not token:
            return arns


class EcsApi:
    """ECS reads, each through the shared :class:`AwsCaller`."""

    def __init__(self, client: ECSClient, caller: AwsCaller) -> None:
        self._client = client
        self._caller = caller

    async def list_clusters(self) -> list[str]:
        async def page(kwargs: dict[str, Any]) -> Any:
            return await self._caller.call(
                "ecs", "ListClusters", partial(self._client.list_clusters, **kwargs)
            )

        return await _all_pages(page, "clusterArns")

    async def list_services(self, cluster: str) -> list[str]:
        async def page(kwargs: dict[str, Any]) -> Any:
            return await self._caller.call(
                "ecs", "ListServices", partial(self._client.list_services, **kwargs)
            )

        return await _all_pages(page, "serviceArns", cluster=cluster)

    async def list_tasks(self, cluster: str, *, service_name: str | None = None) -> list[str]:
        """Tasks whose desired status is RUNNING (ECS's default for ListTasks)."""

        async def page(kwargs: dict[str, Any]) -> Any:
            return await self._caller.call(
                "ecs", "ListTasks", partial(self._client.list_tasks, **kwargs)
            )

        extra = {"serviceName": service_name} if service_name else {}
        return await _all_pages(page, "taskArns", cluster=cluster, **extra)

    async def list_container_instances(self, cluster: str) -> list[str]:
        async def page(kwargs: dict[str, Any]) -> Any:
            return await self._caller.call(
                "ecs",
                "ListContainerInstances",
                partial(self._client.list_container_instances, **kwargs),
            )

        return await _all_pages(page, "containerInstanceArns", cluster=cluster)

    async def describe_clusters(self, clusters: Sequence[str]) -> Described[ClusterTypeDef]:
        _check(clusters, DESCRIBE_CLUSTERS_LIMIT)
        response = await self._caller.call(
            "ecs",
            "DescribeClusters",
            lambda: self._client.describe_clusters(
                clusters=list(clusters), include=["TAGS", "SETTINGS", "STATISTICS"]
            ),
        )
        described: Described[ClusterTypeDef] = Described(found=list(response.get("clusters", [])))
        _sort_failures(described, response.get("failures", []))
        return described

    async def describe_services(
        self, cluster: str, services: Sequence[str]
    ) -> Described[ServiceTypeDef]:
        _check(services, DESCRIBE_SERVICES_LIMIT)
        response = await self._caller.call(
            "ecs",
            "DescribeServices",
            lambda: self._client.describe_services(
                cluster=cluster, services=list(services), include=["TAGS"]
            ),
        )
        described: Described[ServiceTypeDef] = Described(found=list(response.get("services", [])))
        _sort_failures(described, response.get("failures", []))
        return described

    async def describe_tasks(self, cluster: str, tasks: Sequence[str]) -> Described[TaskTypeDef]:
        _check(tasks, DESCRIBE_TASKS_LIMIT)
        response = await self._caller.call(
            "ecs",
            "DescribeTasks",
            lambda: self._client.describe_tasks(
                cluster=cluster, tasks=list(tasks), include=["TAGS"]
            ),
        )
        described: Described[TaskTypeDef] = Described(found=list(response.get("tasks", [])))
        _sort_failures(described, response.get("failures", []))
        return described

    async def describe_container_instances(
        self, cluster: str, instances: Sequence[str]
    ) -> Described[ContainerInstanceTypeDef]:
        _check(instances, DESCRIBE_CONTAINER_INSTANCES_LIMIT)
        response = await self._caller.call(
            "ecs",
            "DescribeContainerInstances",
            lambda: self._client.describe_container_instances(
                cluster=cluster,
                containerInstances=list(instances),
                include=["TAGS", "CONTAINER_INSTANCE_HEALTH"],
            ),
        )
        described: Described[ContainerInstanceTypeDef] = Described(
            found=list(response.get("containerInstances", []))
        )
        _sort_failures(described, response.get("failures", []))
        return described

    async def describe_task_definition(self, arn: str) -> TaskDefinitionTypeDef | None:
        response = await self._caller.call(
            "ecs",
            "DescribeTaskDefinition",
            lambda: self._client.describe_task_definition(taskDefinition=arn),
        )
        return response.get("taskDefinition")

    async def list_service_deployments(
        self, cluster: str, service: str, *, created_after: datetime
    ) -> list[ServiceDeploymentBriefTypeDef]:
        """The service's deployments created after ``created_after``, newest first
        (at most :data:`SERVICE_DEPLOYMENT_PAGES` pages of 100)."""
        found: list[ServiceDeploymentBriefTypeDef] = []
        token: str | None = None
        for _ in range(SERVICE_DEPLOYMENT_PAGES):
            request: dict[str, Any] = {
                "cluster": cluster,
                "service": service,
                "createdAt": {"after": created_after},
                "maxResults": LIST_PAGE_SIZE,
            }
            if token:
                request["nextToken"] = token
            response = await self._caller.call(
                "ecs",
                "ListServiceDeployments",
                partial(self._client.list_service_deployments, **request),
            )
            found.extend(response.get("serviceDeployments", []))
            token = response.get("nextToken")
            if not token:
                break
        return found

    async def describe_service_deployments(
        self, arns: Sequence[str]
    ) -> Described[ServiceDeploymentTypeDef]:
        _check(arns, DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT)
        response = await self._caller.call(
            "ecs",
            "DescribeServiceDeployments",
            lambda: self._client.describe_service_deployments(serviceDeploymentArns=list(arns)),
        )
        described: Described[ServiceDeploymentTypeDef] = Described(
            found=list(response.get("serviceDeployments", []))
        )
        _sort_failures(described, response.get("failures", []))
        return described

    async def describe_service_revisions(
        self, arns: Sequence[str]
    ) -> Described[ServiceRevisionTypeDef]:
        _check(arns, DESCRIBE_SERVICE_DEPLOYMENTS_LIMIT)
        response = await self._caller.call(
            "ecs",
            "DescribeServiceRevisions",
            lambda: self._client.describe_service_revisions(serviceRevisionArns=list(arns)),
        )
        described: Described[ServiceRevisionTypeDef] = Described(
            found=list(response.get("serviceRevisions", []))
        )
        _sort_failures(described, response.get("failures", []))
        return described


def _check(items: Sequence[str], limit: int) -> None:
    if not 0 < len(items) <= limit:
        raise ValueError(f"a Describe call takes 1 to {limit} resources, got {len(items)}")
