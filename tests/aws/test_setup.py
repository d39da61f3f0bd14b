"""``ecswatch aws setup`` against moto: queue, DLQ, policy, rule; idempotent; events flow.

With ``--organization``: the organization's event bus, its policy, its rule to the
queue and the queue policy admitting both rules. moto stores resource policies
without evaluating them, so the documents are checked as written.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiobotocore.session import get_session

from service.aws.setup import organization_bus_policy, queue_policy
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


ORGANIZATION = "o-a1b2c3d4e5"


async def _organization_state(endpoint: str, name: str) -> dict[str, Any]:
    """Everything ``aws setup --organization`` makes, as moto now has it."""
    session = get_session()
    bus_name = f"ecswatch-{name}-organization"
    async with (
        session.create_client("sqs", endpoint_url=endpoint, region_name=REGION) as sqs,
        session.create_client("events", endpoint_url=endpoint, region_name=REGION) as events,
    ):
        queue_url = (await sqs.get_queue_url(QueueName=name))["QueueUrl"]
        attrs = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]))[
            "Attributes"
        ]
        bus = await events.describe_event_bus(Name=bus_name)
        rules = {
            bus: (await events.describe_rule(Name=f"ecswatch-{name}", EventBusName=bus))
            for bus in ("default", bus_name)
        }
        targets = {
            bus: (await events.list_targets_by_rule(Rule=f"ecswatch-{name}", EventBusName=bus))[
                "Targets"
            ]
            for bus in ("default", bus_name)
        }
        buses = [
            b["Name"] for b in (await events.list_event_buses(NamePrefix="ecswatch-"))["EventBuses"]
        ]
    return {
        "queue_arn": attrs["QueueArn"],
        "queue_policy": json.loads(attrs["Policy"]),
        "redrive": json.loads(attrs["RedrivePolicy"]),
        "bus_arn": bus["Arn"],
        "bus_policy": json.loads(bus["Policy"]),
        "rules": {
            k: (r["Arn"], json.loads(r["EventPattern"]), r["State"]) for k, r in rules.items()
        },
        "targets": {k: [(t["Id"], t["Arn"]) for t in v] for k, v in targets.items()},
        "buses": sorted(b for b in buses if name in b),
    }


async def test_setup_with_an_organization_adds_its_bus_and_rule(aws_env: str) -> None:
    name = f"ecswatch-{uuid.uuid4().hex[:8]}"
    bus_name = f"ecswatch-{name}-organization"
    env = {
        "AWS_ENDPOINT_URL": aws_env,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    first = _run("aws", "setup", "--queue-name", name, "--organization", ORGANIZATION, **env)
    assert first.returncode == 0, first.stderr
    queue_url, bus_arn = first.stdout.split()
    assert queue_url.endswith(f"/{name}")
    assert bus_arn.endswith(f":event-bus/{bus_name}")
    state = await _organization_state(aws_env, name)
    assert state["buses"] == [bus_name]
    assert state["bus_arn"] == bus_arn

    # The bus admits the organization's principals and nobody wider: one statement,
    # every principal on the condition of their organization, PutEvents alone.
    assert state["bus_policy"] == organization_bus_policy(bus_arn, ORGANIZATION)
    (statement,) = state["bus_policy"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "events:PutEvents"
    assert statement["Resource"] == bus_arn
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ORGANIZATION}}

    # A rule on each bus, both to the queue, and the queue admits exactly those two.
    default_rule, organization_rule = (state["rules"][b][0] for b in ("default", bus_name))
    assert f":rule/{bus_name}/" in organization_rule
    assert state["rules"][bus_name][1:] == (
        {
            "$or": [
                {"source": ["aws.ecs", "aws.codedeploy"]},
                {"source": ["ecswatch.heartbeat"], "detail-type": ["ecswatch scope heartbeat"]},
            ]
        },
        "ENABLED",
    )
    assert state["targets"] == {
        "default": [("ecswatch-sqs", state["queue_arn"])],
        bus_name: [("ecswatch-sqs", state["queue_arn"])],
    }
    assert state["queue_policy"] == queue_policy(
        state["queue_arn"], default_rule, organization_rule
    )
    assert state["redrive"]["deadLetterTargetArn"].endswith(f":{name}-dlq")

    # Running it again changes nothing.
    again = _run("aws", "setup", "--queue-name", name, "--organization", ORGANIZATION, **env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert await _organization_state(aws_env, name) == state

    # An event of a member account, forwarded to the bus, reaches the queue.
    session = get_session()
    async with (
        session.create_client("sqs", endpoint_url=aws_env, region_name=REGION) as sqs,
        session.create_client("events", endpoint_url=aws_env, region_name=REGION) as events,
    ):
        await events.put_events(
            Entries=[
                {
                    "EventBusName": bus_name,
                    "Source": "aws.ecs",
                    "DetailType": "ECS Task State Change",
                    "Detail": json.dumps({"lastStatus": "RUNNING"}),
                },
                {"EventBusName": bus_name, "Source": "acme.app", "DetailType": "x", "Detail": "{}"},
            ]
        )
        received = await sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2
        )
    bodies = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    assert [b["detail-type"] for b in bodies] == ["ECS Task State Change"]


def test_setup_refuses_a_bad_organization_id() -> None:
    for bad in ("o-short", "O-A1B2C3D4E5", "r-a1b2c3d4e5", "o-a1b2c3d4e5!"):
        result = _run("aws", "setup", "--queue-name", "q", "--organization", bad)
        assert result.returncode == 2, bad
        assert result.stderr.strip().splitlines() == [
            "ecswatch: --organization: an organization id is o- and 10 to 32 lowercase "
            "letters or digits"
        ]
