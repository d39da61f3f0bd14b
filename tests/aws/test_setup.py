"""``ecswatch aws setup`` against moto: queue, DLQ, policy, rule; idempotent; events flow."""

from __future__ import annotations

import json
import uuid

from aiobotocore.session import get_session

from service.aws.setup import queue_policy
from tests.rig.fixtures import REGION
from tests.test_cli import _run


async def test_setup_creates_everything_and_events_arrive(aws_env: str) -> None:
    name = f"ecswatch-{uuid.uuid4().hex[:8]}"
    env = {
        "AWS_ENDPOINT_URL": aws_env,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    first = _run("aws", "setup", "--queue-name", name, **env)
    assert first.returncode == 0, first.stderr
    queue_url = first.stdout.strip()
    assert queue_url.endswith(f"/{name}")
    again = _run("aws", "setup", "--queue-name", name, **env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == queue_url

    session = get_session()
    async with (
        session.create_client("sqs", endpoint_url=aws_env, region_name=REGION) as sqs,
        session.create_client("events", endpoint_url=aws_env, region_name=REGION) as events,
    ):
        attrs = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))[
            "Attributes"
        ]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(f":{name}-dlq")
        assert int(redrive["maxReceiveCount"]) == 5
        rule = await events.describe_rule(Name=f"ecswatch-{name}")
        assert json.loads(rule["EventPattern"]) == {
            "source": ["aws.ecs", "aws.codedeploy", "ecswatch.heartbeat"]
        }
        # The Allow for the rule and the Deny for everyone else, as the template has them.
        assert json.loads(attrs["Policy"]) == queue_policy(attrs["QueueArn"], rule["Arn"])
        targets = (await events.list_targets_by_rule(Rule=f"ecswatch-{name}"))["Targets"]
        assert [t["Arn"] for t in targets] == [attrs["QueueArn"]]

        await events.put_events(
            Entries=[
                {
                    "Source": "aws.ecs",
                    "DetailType": "ECS Service Action",
                    "Detail": json.dumps({"eventName": "SERVICE_STEADY_STATE"}),
                    "Resources": ["arn:aws:ecs:us-east-1:123456789012:service/prod/web"],
                },
                {"Source": "aws.s3", "DetailType": "Object Created", "Detail": "{}"},
            ]
        )
        received = await sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2
        )
        bodies = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    assert [b["detail-type"] for b in bodies] == ["ECS Service Action"]


def test_setup_refuses_a_bad_queue_name() -> None:
    result = _run("aws", "setup", "--queue-name", "bad name!")
    assert result.returncode == 2
    assert result.stderr.startswith("ecswatch: --queue-name:")
