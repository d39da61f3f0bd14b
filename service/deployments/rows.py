"""Pure builders: a deployment-related event (or a polled CodeDeploy state) becomes
the row values of the deployment upsert (:mod:`service.deployments.upsert`).

The ``rank`` key is not a column: the upsert orders events that share a
timestamp by it (:data:`service.deployments.outcome.RANK`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from service.deployments.outcome import (
    RANK,
    DeploymentKind,
    Outcome,
    Step,
    codedeploy_step,
    daemon_deployment_step,
    ecs_deployment_step,
    hook_step,
)
from service.events.arns import parse_arn
from service.events.models import (
    CodeDeployDeploymentStateChange,
    DaemonDeploymentStateChange,
    DeploymentStateChange,
    HookStateChange,
    NormalisedEvent,
    TaskStateChange,
)

if TYPE_CHECKING:  # settings are I/O-free, but their validators reach for sqlalchemy
    from service.config import ServiceRef

Row = dict[str, Any]


def group_key(application: str, group: str, scope: tuple[str, str] | None = None) -> str:
    """The key of a CodeDeploy group in a group -> service mapping: ``application/group``
    for one that holds in every scope (``ECSWATCH_CODEDEPLOY_GROUPS``'
    ``application/group=cluster/service``), ``account/region/application/group`` for
    the group of one scope (account and region, '' where not known)."""
    if scope is None:
        return f"{application}/{group}"
    return f"{scope[0]}/{scope[1]}/{application}/{group}"


def group_service(
    groups: dict[str, ServiceRef], scope: tuple[str, str], application: str, group: str
) -> ServiceRef | None:
    """The service that ``application``/``group`` of ``scope`` deploys in ``groups``
    (keyed by :func:`group_key`): the scope's own entry, else the one of every scope."""
    return groups.get(group_key(application, group, scope)) or groups.get(
        group_key(application, group)
    )


def event_scope(event: NormalisedEvent) -> tuple[str, str]:
    """(account, region) of an event: the scope of the deployment it concerns. The
    envelope's, kept across a cross-account event bus; a part the envelope lacks is
    read from the event's cluster ARN, else its first resource ARN ('' without one)."""
    account, region = event.envelope.account or "", event.envelope.region or ""
    if account and region:
        return account, region
    for arn in (event.cluster_arn, *event.envelope.resources):
        parsed = parse_arn(arn)
        if parsed is not None and parsed.account and parsed.region:
            return account or parsed.account, region or parsed.region
    return account, region


def _base(
    event: NormalisedEvent,
    *,
    deployment_id: str,
    kind: DeploymentKind,
    step: Step,
    at: datetime,
    event_name: str | None,
) -> Row:
    account_id, region = event_scope(event)
    return {
        "account_id": account_id,
        "region": region,
        "id": deployment_id,
        "cluster_arn": None,
        "cluster_name": None,
        "service_arn": None,
        "service_name": None,
        "kind": kind.value,
        "outcome": step.outcome.value,
        "reason": None,
        "rollback_target": None,
        "lifecycle_stage": None,
        "codedeploy_application": None,
        "codedeploy_group": None,
        "task_definition": None,
        "last_event_at": at,
        "last_event_name": event_name,
        "event_ids": [event.envelope.id],
        "started_at": at,
        "updated_at": at,
        "finished_at": at if step.finished else None,
        "rank": RANK[step.outcome],
    }


def codedeploy_deployment_row(
    *,
    scope: tuple[str, str],
    deployment_id: str,
    application: str | None,
    group: str | None,
    state: str | None,
    at: datetime,
    event_ids: list[str],
    codedeploy_groups: dict[str, ServiceRef],
    reason: str | None = None,
) -> Row:
    """The deployment upsert of a CodeDeploy state (``START`` … ``FAILURE``, ``STOP``):
    from its event, or from the poller's BatchGetDeployments check (no event id), in
    ``scope`` (the account and region it was read in). The service is the one that
    ``codedeploy_groups`` maps the group of that scope to (:func:`group_service`)."""
    step = codedeploy_step(state)
    target = (
        group_service(codedeploy_groups, scope, application, group)
        if application and group
        else None
    )
    service_arn = target.arn if target else None
    return {
        "account_id": scope[0],
        "region": scope[1],
        "id": deployment_id,
        "cluster_arn": cluster_of_service(service_arn),
        "cluster_name": target.cluster if target else None,
        "service_arn": service_arn,
        "service_name": target.service if target else None,
        "kind": DeploymentKind.CODEDEPLOY.value,
        "outcome": step.outcome.value,
        "reason": reason or (f"CodeDeploy {state}" if state else None),
        "rollback_target": None,
        "lifecycle_stage": None,
        "codedeploy_application": application,
        "codedeploy_group": group,
        "task_definition": None,
        "last_event_at": at,
        "last_event_name": state,
        "event_ids": event_ids,
        "started_at": at,
        "updated_at": at,
        "finished_at": at if step.finished else None,
        "rank": RANK[step.outcome],
    }


#: A service deployment's ``status`` (DescribeServiceDeployments) -> the step it means.
#: The statuses before an end (PENDING, IN_PROGRESS, STOP_REQUESTED,
#: ROLLBACK_REQUESTED) order nothing: the deployment's events say as much, sooner.
SERVICE_DEPLOYMENT_STEPS: dict[str, Step] = {
    "SUCCESSFUL": Step(Outcome.SUCCEEDED, True),
    "STOPPED": Step(Outcome.STOPPED, True),
    "ROLLBACK_IN_PROGRESS": Step(Outcome.FAILED, False),
    "ROLLBACK_SUCCESSFUL": Step(Outcome.ROLLED_BACK, True),
    "ROLLBACK_FAILED": Step(Outcome.ROLLBACK_FAILED, True),
}


def cluster_of_service(service_arn: str | None) -> str | None:
    """``arn:…:cluster/<cluster>`` of ``arn:…:service/<cluster>/<service>``."""
    parsed = parse_arn(service_arn)
    if parsed is None or parsed.resource_type != "service" or len(parsed.path) != 2:
        return None
    return parsed.sibling(f"cluster/{parsed.path[0]}")


def service_deployment_row(
    *,
    scope: tuple[str, str],
    deployment_id: str,
    arn: str,
    status: str,
    at: datetime | None,
    started_at: datetime | None,
    reason: str | None,
    strategy: str | None,
    triggered_alarms: list[str] | None,
    lifecycle_stage: str | None,
    task_definition: str | None,
    cluster_arn: str | None,
    service_arn: str | None,
    now: datetime,
) -> Row:
    """The deployment upsert of what ECS's service deployment ``arn`` says about the
    deployment ``deployment_id`` (matched to it: docs/events.md, "Service deployments").

    A status of :data:`SERVICE_DEPLOYMENT_STEPS` is ordered like an event stamped
    ``at`` (the service deployment's ``updatedAt``); any other status has no ordering
    key, so it never changes the outcome and only adds the strategy, the triggered
    alarms and the matched ARN.
    """
    step = SERVICE_DEPLOYMENT_STEPS.get(status)
    ordered = step is not None and at is not None
    step = step or Step(Outcome.IN_PROGRESS, False)
    return {
        "account_id": scope[0],
        "region": scope[1],
        "id": deployment_id,
        "cluster_arn": cluster_arn,
        "service_arn": service_arn,
        "outcome": step.outcome.value,
        "reason": reason,
        "lifecycle_stage": lifecycle_stage,
        "task_definition": task_definition,
        "service_deployment_arn": arn,
        "strategy": strategy,
        "triggered_alarms": triggered_alarms,
        "last_event_at": at if ordered else None,
        "last_event_name": status if ordered else None,
        "event_ids": [],
        "started_at": started_at,
        "updated_at": at or now,
        "finished_at": at if ordered and step.finished else None,
        "rank": RANK[step.outcome],
    }


def deployment_row(event: NormalisedEvent, codedeploy_groups: dict[str, ServiceRef]) -> Row | None:
    """The deployment upsert of a deployment-related event, or None for other types.

    The ``rank`` key is not a column: the upsert uses it to order events that
    share a timestamp.
    """
    detail = event.detail
    time = event.envelope.time
    if isinstance(detail, DeploymentStateChange):
        row = _base(
            event,
            deployment_id=detail.deployment_id,
            kind=DeploymentKind.ROLLING,
            step=ecs_deployment_step(detail.event_name, detail.rollback_target),
            at=detail.updated_at or time,
            event_name=detail.event_name,
        )
        row.update(
            cluster_arn=detail.cluster_arn,
            cluster_name=detail.cluster_name,
            service_arn=detail.service_arn,
            service_name=detail.service_name,
            reason=detail.reason,
            rollback_target=detail.rollback_target,
        )
        return row
    if isinstance(detail, HookStateChange):
        deployment_id = detail.service_deployment_arn or (
            f"{detail.service_arn}/{detail.hook_id}" if detail.service_arn else detail.hook_id
        )
        row = _base(
            event,
            deployment_id=deployment_id,
            kind=DeploymentKind.BLUE_GREEN,
            step=hook_step(detail.event_name),
            at=detail.updated_at or time,
            event_name=detail.event_name,
        )
        stage = detail.lifecycle_stage
        row.update(
            cluster_arn=detail.cluster_arn,
            cluster_name=detail.cluster_name,
            service_arn=detail.service_arn,
            service_name=detail.service_name,
            lifecycle_stage=stage,
            reason=f"{detail.event_name} at {stage}" if detail.event_name and stage else None,
        )
        return row
    if isinstance(detail, CodeDeployDeploymentStateChange):
        return codedeploy_deployment_row(
            scope=event_scope(event),
            deployment_id=detail.deployment_id,
            application=detail.application,
            group=detail.deployment_group,
            state=detail.state,
            at=time,
            event_ids=[event.envelope.id],
            codedeploy_groups=codedeploy_groups,
        )
    if isinstance(detail, DaemonDeploymentStateChange):
        row = _base(
            event,
            deployment_id=detail.daemon_deployment_arn,
            kind=DeploymentKind.ROLLING,
            step=daemon_deployment_step(detail.event_name),
            at=detail.updated_at or time,
            event_name=detail.event_name,
        )
        row.update(
            cluster_arn=detail.cluster_arn,
            cluster_name=detail.cluster_name,
            service_arn=detail.daemon_arn,
            service_name=detail.daemon_name,
            reason=detail.reason,
            task_definition=detail.target_daemon_revision_arn,
        )
        return row
    return None


def task_deployment_row(event: NormalisedEvent) -> Row | None:
    """A deployment seen only through its tasks' ``startedBy`` (no deployment events
    yet), in the scope of the task's event."""
    task = event.detail
    if not isinstance(task, TaskStateChange) or not task.deployment_id:
        return None
    at = event.envelope.time
    account_id, region = event_scope(event)
    return {
        "account_id": account_id,
        "region": region,
        "id": task.deployment_id,
        "cluster_arn": task.cluster_arn,
        "cluster_name": task.cluster_name,
        "service_name": task.service_name,
        "kind": DeploymentKind.ROLLING.value,
        "outcome": Outcome.IN_PROGRESS.value,
        "task_definition": task.task_definition_arn,
        "started_at": task.created_at or at,
        "updated_at": at,
    }
