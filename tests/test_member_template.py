"""deploy/member-account.yaml: what ecswatch may do in a member account, and its events.

* **The read role** allows exactly the actions of docs/aws.md's least-privilege
  policy that ecswatch calls inside a watched account: all of them but those on
  the central account's own resources (the SQS queue; assuming roles and listing
  the organization's accounts, when documented there). It trusts the central
  account alone, with the external id, and only one regional stack instance
  creates it (IAM is global).
* **The forwarding rule** sends the region's ECS and CodeDeploy events to the
  central bus with a role of its own that may only put events there.
* **On moto** the template is deployed into a second account in two regions,
  under a central account set up by ``ecswatch aws setup --organization``: the
  role exists once, each region forwards, and an ECS event of the member account
  reaches the central queue. moto evaluates neither the bus policy nor the
  trust policy: those are checked as documents above. The central template is
  deployed too, with an organization: its bus, its rule to the queue, and the
  scope settings of the tasks that call AWS.
"""

from __future__ import annotations

import ast
import json
import urllib.parse
import uuid
from typing import Any

import boto3
import pytest

from service.aws.setup import ORGANIZATION_EVENT_PATTERN
from service.demo.aws import MotoServer
from tests.aws.test_iam_policy import policy_actions
from tests.cfn_template import MEMBER_TEMPLATE, load_template, resources
from tests.conftest import REPO_ROOT
from tests.rig.fixtures import REGION
from tests.test_cli import _run
from tests.test_deploy_template import REGION as CENTRAL_REGION
from tests.test_deploy_template import _deploy, _network, _physical

#: Actions on the central account's own resources, never granted in a member account.
# The heartbeat (events:PutEvents) is put on the central account's default bus.
CENTRAL_ONLY = ("sqs:", "sts:", "organizations:", "events:")
CENTRAL_ACCOUNT = "123456789012"  # moto's default account
MEMBER_REGIONS = ("eu-west-1", "eu-central-1")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(MEMBER_TEMPLATE)


def _in_region(template: dict[str, Any], region: str, **given: str) -> dict[str, Any]:
    parameters = {"RoleRegion": "eu-west-1", "AWS::Region": region, **given}
    return resources(template, **parameters)


def _actions(statements: list[dict[str, Any]]) -> list[str]:
    return [
        a
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ]


def test_the_read_role_allows_exactly_the_documented_reads(template: dict[str, Any]) -> None:
    role = _in_region(template, "eu-west-1")["ReadRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    granted = _actions(statements)
    assert len(granted) == len(set(granted)), "an action granted twice"
    documented = policy_actions((REPO_ROOT / "docs" / "aws.md").read_text())
    central = {a for a in documented if a.startswith(CENTRAL_ONLY)}
    assert "sqs:ReceiveMessage" in central  # the split is not vacuous
    assert set(granted) == documented - central
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] == "*"  # these reads have no resource-level permissions
        assert "Condition" not in statement


def test_the_read_role_trusts_the_central_account_with_the_external_id(
    template: dict[str, Any],
) -> None:
    role = _in_region(template, "eu-west-1")["ReadRole"]["Properties"]
    assert role["RoleName"] == {"Ref": "ReadRoleName"}
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Sid": "TheCentralAccountWithTheExternalId",
        "Effect": "Allow",
        "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccountId}:root"}},
        "Action": "sts:AssumeRole",
        "Condition": {
            "StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}},
            # ecswatch names its sessions ecswatch-<account>.
            "StringLike": {"sts:RoleSessionName": "ecswatch*"},
        },
    }
    assert template["Parameters"]["ExternalId"]["MinLength"] >= 2  # never empty


def test_only_the_role_region_creates_the_read_role(template: dict[str, Any]) -> None:
    # A StackSet deploys the same template to every region; IAM names are global.
    home, other = MEMBER_REGIONS
    assert "ReadRole" in _in_region(template, home)
    assert "ReadRole" not in _in_region(template, other)
    assert template["Outputs"]["ReadRoleArn"]["Condition"] == "CreatesReadRole"
    # Every region forwards, each with a role whose name CloudFormation makes unique.
    for region in MEMBER_REGIONS:
        created = _in_region(template, region)
        assert {"ForwardEventsRule", "ForwardEventsRole"} <= set(created)
        assert "RoleName" not in created["ForwardEventsRole"]["Properties"]


def test_the_scope_heartbeat_permission_is_put_events_on_its_own_default_bus_only(
    template: dict[str, Any],
) -> None:
    # On by default, in the role's region only (IAM is global), and off on request.
    policy = _in_region(template, "eu-west-1")["ScopeHeartbeatPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "ReadRole"}]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "events:PutEvents"
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:events:*:${AWS::AccountId}:event-bus/default"
    }
    assert statement["Condition"] == {"StringEquals": {"events:source": "ecswatch.heartbeat"}}
    assert "ScopeHeartbeatPolicy" not in _in_region(template, "eu-central-1")
    off = _in_region(template, "eu-west-1", ScopeHeartbeat="false")
    assert "ReadRole" in off
    assert "ScopeHeartbeatPolicy" not in off
    # The template says what the permission adds.
    assert "ecswatch.heartbeat only" in " ".join(template["Description"].split())


def test_the_rule_forwards_ecs_and_codedeploy_events_to_the_central_bus(
    template: dict[str, Any],
) -> None:
    created = _in_region(template, "eu-central-1")
    rule = created["ForwardEventsRule"]["Properties"]
    assert "EventBusName" not in rule  # the account's default bus, where AWS sends its events
    assert rule["EventPattern"] == ORGANIZATION_EVENT_PATTERN
    assert rule["Targets"] == [
        {
            "Id": "ecswatch-central-bus",
            "Arn": {"Ref": "CentralEventBusArn"},
            "RoleArn": {"Fn::GetAtt": ["ForwardEventsRole", "Arn"]},
        }
    ]
    role = created["ForwardEventsRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        ("events:PutEvents", {"Ref": "CentralEventBusArn"})
    ]


# ---------------------------------------------------------------- on moto


def _member_session(endpoint: str, account: str) -> boto3.Session:
    """Credentials of ``account``: moto runs the calls signed with them in that account."""
    sts = boto3.client(
        "sts",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/stackset-execution", RoleSessionName="stackset"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def test_a_member_account_forwards_from_every_region_to_the_central_queue(
    moto_server: MotoServer,
) -> None:
    endpoint = moto_server.endpoint_url
    queue_name = f"ecswatch-{uuid.uuid4().hex[:8]}"
    central = _run(
        "aws",
        "setup",
        "--queue-name",
        queue_name,
        "--organization",
        "o-a1b2c3d4e5",
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    assert central.returncode == 0, central.stderr
    queue_url, bus_arn = central.stdout.split()

    account = f"{uuid.uuid4().int % 10**12:012d}"
    member = _member_session(endpoint, account)
    role_name = f"ecswatch-read-{uuid.uuid4().hex[:6]}"
    parameters = {
        "CentralAccountId": CENTRAL_ACCOUNT,
        "CentralEventBusArn": bus_arn,
        "ReadRoleName": role_name,
        "ExternalId": "ecswatch-7f3a",
        "RoleRegion": MEMBER_REGIONS[0],
    }
    body = json.dumps(load_template(MEMBER_TEMPLATE))
    stack = f"ecswatch-member-{uuid.uuid4().hex[:8]}"
    physical: dict[str, dict[str, str]] = {}
    for region in MEMBER_REGIONS:
        cfn = member.client("cloudformation", endpoint_url=endpoint, region_name=region)
        cfn.create_stack(
            StackName=stack,
            TemplateBody=body,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        (described,) = cfn.describe_stacks(StackName=stack)["Stacks"]
        assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
        summaries = cfn.list_stack_resources(StackName=stack)["StackResourceSummaries"]
        physical[region] = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries}

    # The read role once, by its name, in the member account; a forwarder per region.
    assert "ReadRole" in physical[MEMBER_REGIONS[0]]
    assert "ReadRole" not in physical[MEMBER_REGIONS[1]]
    iam = member.client("iam", endpoint_url=endpoint, region_name=REGION)
    read = iam.get_role(RoleName=role_name)["Role"]
    assert read["Arn"] == f"arn:aws:iam::{account}:role/{role_name}"
    forwarders = {physical[r]["ForwardEventsRole"] for r in MEMBER_REGIONS}
    assert len(forwarders) == 2

    for region in MEMBER_REGIONS:
        events = member.client("events", endpoint_url=endpoint, region_name=region)
        (target,) = events.list_targets_by_rule(Rule=physical[region]["ForwardEventsRule"])[
            "Targets"
        ]
        assert target["Arn"] == bus_arn
        assert target["RoleArn"].endswith("/" + physical[region]["ForwardEventsRole"])
        events.put_events(
            Entries=[
                {
                    "Source": "aws.ecs",
                    "DetailType": "ECS Task State Change",
                    "Detail": json.dumps({"region": region}),
                },
                {"Source": "acme.app", "DetailType": "not ours", "Detail": "{}"},
            ]
        )

    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    # moto delivers while answering PutEvents: the messages are in the queue already.
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    assert sorted((b["detail-type"], b["detail"]["region"]) for b in bodies) == [
        ("ECS Task State Change", region) for region in sorted(MEMBER_REGIONS)
    ]


def test_the_central_template_deploys_with_an_organization(moto_server: MotoServer) -> None:
    # The central side on moto's CloudFormation, as tests/test_deploy_template.py
    # deploys it (moto cannot create the queue policy: its document is checked in
    # tests/test_deploy.py).
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=CENTRAL_REGION
    )

    def aws(service: str) -> Any:
        return session.client(service, endpoint_url=moto_server.endpoint_url)

    parameters = {
        **_network(aws),
        "OrganizationId": "o-a1b2c3d4e5",
        "MemberRoleName": "ecswatch-read",
        "ExternalId": "ecswatch-7f3a",
        "DiscoverAccounts": "true",
        "WatchedRegions": f"{CENTRAL_REGION},eu-west-1",
    }
    stack = _deploy(aws, parameters)
    created = _physical(aws, stack)
    events = aws("events")
    bus = events.describe_event_bus(Name=f"{stack}-organization")
    rules = events.list_rules(EventBusName=bus["Name"])["Rules"]
    (rule,) = [r for r in rules if r["Name"] == created["OrganizationEventsRule"]]
    assert json.loads(rule["EventPattern"]) == ORGANIZATION_EVENT_PATTERN
    (target,) = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=bus["Name"])["Targets"]
    queue_url = aws("sqs").get_queue_url(QueueName=f"{stack}-events")["QueueUrl"]
    queue_arn = aws("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    assert target["Arn"] == queue_arn["Attributes"]["QueueArn"]

    # The runtime role may assume the organization's member roles, and list accounts.
    role = created["RuntimeTaskRole"].split("/")[-1]
    found = aws("iam").get_role_policy(RoleName=role, PolicyName="ecswatch-member-accounts")
    document = found["PolicyDocument"]
    if not isinstance(document, dict):  # moto keeps CloudFormation's mapping as text
        text = urllib.parse.unquote(str(document))
        document = json.loads(text) if text.startswith('{"') else ast.literal_eval(text)
    assert document["Statement"] == [
        {
            "Sid": "AssumeMemberRoles",
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": "arn:aws:iam::*:role/ecswatch-read",
            "Condition": {"StringEquals": {"aws:ResourceOrgID": "o-a1b2c3d4e5"}},
        },
        {
            "Sid": "ListOrganizationAccounts",
            "Effect": "Allow",
            "Action": "organizations:ListAccounts",
            "Resource": "*",
        },
    ]

    # The consumer and the poller get the scope settings; the API does not.
    ecs = aws("ecs")
    for name, expected in (
        (
            "ConsumerTaskDefinition",
            {
                "ECSWATCH_REGIONS": f"{CENTRAL_REGION},eu-west-1",
                "ECSWATCH_ORGANIZATION_ROLE_NAME": "ecswatch-read",
                "ECSWATCH_EXTERNAL_ID": "ecswatch-7f3a",
            },
        ),
        ("ApiTaskDefinition", {}),
    ):
        task = ecs.describe_task_definition(taskDefinition=created[name])["taskDefinition"]
        (container,) = task["containerDefinitions"]
        env = {e["name"]: e["value"] for e in container["environment"] if e is not None}
        assert {k: v for k, v in env.items() if k in expected or "ACCOUNTS" in k} == expected
