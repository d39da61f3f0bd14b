"""``ecswatch aws setup``: the SQS queue, its DLQ, the queue policy and the EventBridge rule.

Every step converges (create, or bring an existing resource in line), so the
command can run again at any time.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True, slots=True)
class PipelineResources:
    """What ``setup_event_pipeline`` created or found."""

    queue_url: str
    queue_arn: str
    dlq_url: str
    rule_arn: str


async def setup_event_pipeline(
    sqs: SQSClient, events: EventBridgeClient, queue_name: str
) -> PipelineResources:
    """Queue + DLQ (redrive), a rule for ECS and CodeDeploy events and ecswatch's
    heartbeat, and the policy
    that lets only that rule send to the queue."""
    queue_url, dlq_url, _ = await create_queue_with_dlq(sqs, queue_name, MAX_RECEIVE_COUNT)
    attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    queue_arn = attrs["Attributes"]["QueueArn"]
    rule = await events.put_rule(
        Name=f"ecswatch-{queue_name}"[:64],
        EventPattern=json.dumps(EVENT_PATTERN),
        State="ENABLED",
        Description="ECS and CodeDeploy events, and its heartbeat, for ecswatch",
    )
    rule_arn = rule["RuleArn"]
    policy = queue_policy(queue_arn, rule_arn)
    await sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    await events.put_targets(
        Rule=f"ecswatch-{queue_name}"[:64], Targets=[{"Id": "ecswatch-sqs", "Arn": queue_arn}]
    )
    return PipelineResources(
        queue_url=queue_url, queue_arn=queue_arn, dlq_url=dlq_url, rule_arn=rule_arn
    )


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
