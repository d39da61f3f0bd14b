"""ECS service deployments served at the wire (moto has none).

``ListServiceDeployments``, ``DescribeServiceDeployments`` and
``DescribeServiceRevisions`` answer from a store the test fills, in the shapes of
the ECS API reference (JSON 1.1, timestamps as epoch seconds): the list is newest
``createdAt`` first, filtered by service (name or ARN, with the cluster), status
and ``createdAt``, paged by ``maxResults``/``nextToken``; the describes take 1 to
20 ARNs and answer an unknown one with a ``MISSING`` failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: The operations this store answers (``X-Amz-Target`` suffixes).
OPERATIONS = frozenset(
    {"ListServiceDeployments", "DescribeServiceDeployments", "DescribeServiceRevisions"}
)
DESCRIBE_LIMIT = 20
LIST_DEFAULT_PAGE = 20
LIST_MAX_PAGE = 100

_SUMMARY_FIELDS = (
    "serviceDeploymentArn",
    "serviceArn",
    "clusterArn",
    "startedAt",
    "createdAt",
    "finishedAt",
    "status",
    "statusReason",
)


class ApiError(Exception):
    """An error answer: its ``__type`` and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass
class ServiceDeploymentStore:
    """Service deployments and service revisions by ARN; what the describes were asked."""

    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    revisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The ARNs of each DescribeServiceDeployments call, in order.
    described: list[list[str]] = field(default_factory=list)
    #: Operation -> the error code every call of it answers (e.g. AccessDeniedException).
    refuse: dict[str, str] = field(default_factory=dict)
    #: Service ARNs ListServiceDeployments answers ServiceNotFoundException for.
    gone: set[str] = field(default_factory=set)
    #: (operation, the region the call was signed for), in order.
    asked: list[tuple[str, str]] = field(default_factory=list)

    def add(
        self,
        arn: str,
        *,
        service_arn: str,
        status: str,
        created_at: datetime,
        task_definition: str,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        updated_at: datetime | None = None,
        status_reason: str | None = None,
        strategy: str = "ROLLING",
        configuration: dict[str, Any] | None = None,
        circuit_breaker: dict[str, Any] | None = None,
        alarms: dict[str, Any] | None = None,
        rollback: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One service deployment and its target service revision (by the API's shapes)."""
        cluster_name, service_name = service_arn.split(":service/", 1)[1].split("/", 1)
        prefix = service_arn.split(":service/", 1)[0]
        revision_arn = (
            f"{prefix}:service-revision/{cluster_name}/{service_name}/{len(self.revisions) + 1000}"
        )
        cluster_arn = f"{prefix}:cluster/{cluster_name}"
        self.revisions[revision_arn] = {
            "serviceRevisionArn": revision_arn,
            "serviceArn": service_arn,
            "clusterArn": cluster_arn,
            "taskDefinition": task_definition,
            "createdAt": epoch(created_at),
        }
        deployment: dict[str, Any] = {
            "serviceDeploymentArn": arn,
            "serviceArn": service_arn,
            "clusterArn": cluster_arn,
            "createdAt": epoch(created_at),
            "startedAt": epoch(started_at or created_at),
            "finishedAt": epoch(finished_at),
            "updatedAt": epoch(updated_at or finished_at or started_at or created_at),
            "sourceServiceRevisions": [],
            "targetServiceRevision": {"arn": revision_arn, "requestedTaskCount": 1},
            "status": status,
            "statusReason": status_reason,
            "deploymentConfiguration": {
                "strategy": strategy,
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
                **(configuration or {}),
            },
            "deploymentCircuitBreaker": circuit_breaker,
            "alarms": alarms,
            "rollback": rollback,
        }
        self.deployments[arn] = {k: v for k, v in deployment.items() if v is not None}
        return self.deployments[arn]

    def answer(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer of one call, or :class:`ApiError`."""
        if operation in self.refuse:
            raise ApiError(
                self.refuse[operation],
                f"User is not authorized to perform: ecs:{operation}",
            )
        if operation == "ListServiceDeployments":
            return self._list(request)
        if operation == "DescribeServiceDeployments":
            arns = _arns(request, "serviceDeploymentArns")
            self.described.append(arns)
            return _described(arns, self.deployments, "serviceDeployments")
        arns = _arns(request, "serviceRevisionArns")
        return _described(arns, self.revisions, "serviceRevisions")

    def _list(self, request: dict[str, Any]) -> dict[str, Any]:
        service = request.get("service")
        if not isinstance(service, str) or not service:
            raise ApiError("InvalidParameterException", "service is required")
        cluster = request.get("cluster") or "default"
        if any(service == arn or arn.endswith(f"/{cluster}/{service}") for arn in self.gone):
            raise ApiError("ServiceNotFoundException", "Service not found.")
        size = int(request.get("maxResults") or LIST_DEFAULT_PAGE)
        if not 1 <= size <= LIST_MAX_PAGE:
            raise ApiError("InvalidParameterException", "maxResults must be 1 to 100")
        statuses = request.get("status") or []
        created = request.get("createdAt") or {}
        found = []
        for item in self.deployments.values():
            arn = item["serviceArn"]
            item_cluster, item_service = arn.split(":service/", 1)[1].split("/", 1)
            if service.startswith("arn:"):
                if arn != service:
                    continue
            elif item_service != service or cluster not in (item_cluster, item["clusterArn"]):
                continue
            if statuses and item["status"] not in statuses:
                continue
            if "after" in created and item["createdAt"] < float(created["after"]):
                continue
            if "before" in created and item["createdAt"] > float(created["before"]):
                continue
            found.append(item)
        found.sort(key=lambda i: i["createdAt"], reverse=True)
        start = int(request.get("nextToken") or 0)
        page = found[start : start + size]
        answer: dict[str, Any] = {
            "serviceDeployments": [
                {
                    **{k: i[k] for k in _SUMMARY_FIELDS if k in i},
                    "targetServiceRevisionArn": i["targetServiceRevision"]["arn"],
                }
                for i in page
            ]
        }
        if start + size < len(found):
            answer["nextToken"] = str(start + size)
        return answer


def _arns(request: dict[str, Any], key: str) -> list[str]:
    arns = request.get(key)
    if not isinstance(arns, list) or not 1 <= len(arns) <= DESCRIBE_LIMIT:
        raise ApiError("InvalidParameterException", f"{key} takes 1 to {DESCRIBE_LIMIT} ARNs")
    return [str(a) for a in arns]


def _described(arns: list[str], store: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    return {
        key: [store[a] for a in arns if a in store],
        "failures": [{"arn": a, "reason": "MISSING"} for a in arns if a not in store],
    }
