"""``ecswatch aws setup``: the SQS queue, its DLQ, the queue policy and the EventBridge rule.

With an organization id it also makes the receiving side of an organization
(docs/deploy.md, "An organization"): an event bus that the organization's
accounts may send to, and a rule from it to the same queue.

Every step converges (create, or bring an existing resource in line), so the
command can run again at any time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.literals import QueueAttributeNameType

#: The event sources ecswatch consumes: ECS, CodeDeploy and ecswatch's own heartbeat.
EVENT_PATTERN = {"source": ["aws.ecs", "aws.codedeploy", "ecswatch.heartbeat"]}
#: Messages a consumer may fail to process before SQS moves them to the DLQ.
MAX_RECEIVE_COUNT = 5
#: What the organization's bus passes to the queue, and what deploy/member-account.yaml
#: forwards: AWS's own sources, which no account can send with PutEvents, and each
#: scope's heartbeat (service.poller.heartbeat). The bus admits only the organization's
#: accounts, and the consumer records a scope heartbeat under the account and region
#: EventBridge set on it, so a member account can make only its own scope's heartbeat
#: fresh; ecswatch's own heartbeat (another detail-type) never passes here.
ORGANIZATION_EVENT_PATTERN: dict[str, Any] = {
    "$or": [
        {"source": ["aws.ecs", "aws.codedeploy"]},
        {"source": ["ecswatch.heartbeat"], "detail-type": ["ecswatch scope heartbeat"]},
    ]
}
#: An AWS Organizations id (the Organizations API's own pattern).
ORGANIZATION_ID = re.compile(r"^o-[a-z0-9]{10,32}$")


@dataclass(frozen=True, slots=True)
class PipelineResources:
    """What ``setup_event_pipeline`` created or found."""

    queue_url: str
    queue_arn: str
    dlq_url: str
    rule_arn: str
    #: The organization's event bus and its rule, when an organization id was given.
    organization_bus_arn: str | None = None
    organization_rule_arn: str | None = None


def organization_bus_name(queue_name: str) -> str:
    """The name of the organization's event bus that ``aws setup`` makes for a queue."""
    return f"ecswatch-{queue_name}-organization"


async def setup_event_pipeline(
    sqs: SQSClient,
    events: EventBridgeClient,
    queue_name: str,
    organization_id: str | None = None,
) -> PipelineResources:
    """Queue + DLQ (redrive), a rule for ECS and CodeDeploy events and ecswatch's
    heartbeat, and the policy that lets only that rule send to the queue.

    With ``organization_id``, also the organization's event bus (its policy admits
    that organization alone) and a rule from it to the queue, which the queue
    policy then admits too.
    """
    if organization_id is not None and not ORGANIZATION_ID.match(organization_id):
        raise ValueError("an organization id is o- and 10 to 32 lowercase letters or digits")
    queue_url, dlq_url, _ = await create_queue_with_dlq(sqs, queue_name, MAX_RECEIVE_COUNT)
    attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    queue_arn = attrs["Attributes"]["QueueArn"]
    rule_name = f"ecswatch-{queue_name}"[:64]
    rule = await events.put_rule(
        Name=rule_name,
        EventPattern=json.dumps(EVENT_PATTERN),
        State="ENABLED",
        Description="ECS and CodeDeploy events, and its heartbeat, for ecswatch",
    )
    rule_arn = rule["RuleArn"]
    bus_arn = organization_rule_arn = None
    if organization_id is not None:
        bus_name = organization_bus_name(queue_name)
        bus_arn = await _converge_event_bus(events, bus_name)
        policy_document = organization_bus_policy(bus_arn, organization_id)
        await events.put_permission(EventBusName=bus_name, Policy=json.dumps(policy_document))
        organization_rule = await events.put_rule(
            Name=rule_name,
            EventBusName=bus_name,
            EventPattern=json.dumps(ORGANIZATION_EVENT_PATTERN),
            State="ENABLED",
            Description=(
                "ECS and CodeDeploy events and the scope heartbeats of the organization's"
                " accounts, for ecswatch"
            ),
        )
        organization_rule_arn = organization_rule["RuleArn"]
    more = [organization_rule_arn] if organization_rule_arn else []
    policy = queue_policy(queue_arn, rule_arn, *more)
    await sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    await events.put_targets(Rule=rule_name, Targets=[{"Id": "ecswatch-sqs", "Arn": queue_arn}])
    if organization_id is not None:
        await events.put_targets(
            Rule=rule_name,
            EventBusName=organization_bus_name(queue_name),
            Targets=[{"Id": "ecswatch-sqs", "Arn": queue_arn}],
        )
    return PipelineResources(
        queue_url=queue_url,
        queue_arn=queue_arn,
        dlq_url=dlq_url,
        rule_arn=rule_arn,
        organization_bus_arn=bus_arn,
        organization_rule_arn=organization_rule_arn,
    )


async def _converge_event_bus(events: EventBridgeClient, name: str) -> str:
    try:
        created = await events.create_event_bus(Name=name)
        return created["EventBusArn"]
    except events.exceptions.ResourceAlreadyExistsException:
        return (await events.describe_event_bus(Name=name))["Arn"]


def organization_bus_policy(bus_arn: str, organization_id: str) -> dict[str, Any]:
    """The organization bus's resource policy; deploy/cloudformation.yaml writes the same.

    Any principal may put events, on the condition that its account belongs to
    the organization (``aws:PrincipalOrgID``): the member accounts' forwarding
    roles, and nobody outside the organization. It is the bus's only statement.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ecswatch-organization",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": bus_arn,
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": organization_id}},
            }
        ],
    }


def queue_policy(queue_arn: str, rule_arn: str, *more_rule_arns: str) -> dict[str, Any]:
    """The event queue's resource policy; deploy/cloudformation.yaml writes the same.

    The Allow lets EventBridge deliver for ecswatch's rule (or rules: an
    organization bus has one of its own). The Deny refuses ``sqs:SendMessage``
    to everyone (an IAM user or role of the account with ``sqs:*`` included)
    unless the request comes from one of them: a direct send carries no
    ``aws:SourceArn``, and a negated condition on a missing key matches, so the
    Deny applies; with several ARNs, a negated operator matches a value equal to
    none of them. An explicit Deny beats any Allow.
    """
    rules: str | list[str] = [rule_arn, *more_rule_arns] if more_rule_arns else rule_arn
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ecswatch-eventbridge",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rules}},
            },
            {
                "Sid": "ecswatch-only-the-rule",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnNotEquals": {"aws:SourceArn": rules}},
            },
        ],
    }


async def create_queue_with_dlq(
    sqs_client: SQSClient, name: str, max_receive_count: int = 3
) -> tuple[str, str, str]:
    """Create (or converge) queue ``name`` and its DLQ ``name-dlq``; idempotent.

    Returns ``(queue_url, dlq_url, dlq_arn)``. ``name`` must leave room for the
    ``-dlq`` suffix within SQS's 80-character limit.
    """
    # Keep failed messages as long as SQS allows, so there is time to inspect them.
    dlq_url = await _create_or_update(
        sqs_client, f"{name}-dlq", {"MessageRetentionPeriod": "1209600"}
    )
    attributes = await sqs_client.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["QueueArn"]
    )
    dlq_arn = attributes["Attributes"]["QueueArn"]
    # maxReceiveCount as a number: the form SQS echoes back, so a re-run compares equal.
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
    queue_url = await _create_or_update(sqs_client, name, {"RedrivePolicy": redrive})
    return queue_url, dlq_url, dlq_arn


async def _create_or_update(
    sqs_client: SQSClient, name: str, attributes: dict[QueueAttributeNameType, str]
) -> str:
    # create_queue is idempotent only with identical attributes; an existing queue
    # created with other values is brought in line instead of failing the setup.
    try:
        response = await sqs_client.create_queue(QueueName=name, Attributes=attributes)
        return response["QueueUrl"]
    except sqs_client.exceptions.QueueNameExists:
        queue_url = (await sqs_client.get_queue_url(QueueName=name))["QueueUrl"]
        await sqs_client.set_queue_attributes(QueueUrl=queue_url, Attributes=attributes)
        return queue_url
