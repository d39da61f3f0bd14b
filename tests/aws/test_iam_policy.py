"""docs/aws.md's least-privilege policy, and the template's runtime task role, allow
exactly what ecswatch calls at run time.

The operations are found in the source, not listed by hand: every
``caller.call("<service>", "<Operation>", ...)`` of the adapters, every call with
the process's own credentials (``_home_call("<service>", "<Operation>", ...)``:
sts:AssumeRole, organizations:ListAccounts) and every ``sqs.<method>(...)`` of the
consumer.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import botocore.session
from botocore import xform_name

from tests.cfn_template import load_template

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Least-privilege IAM policy"

#: boto service name -> IAM action prefix.
IAM_PREFIX = {
    "ecs": "ecs",
    "cloudwatch": "cloudwatch",
    "elbv2": "elasticloadbalancing",
    "codedeploy": "codedeploy",
    "sqs": "sqs",
    "sts": "sts",
    "organizations": "organizations",
    "events": "events",
}
#: Operations every principal may call without a permission.
NEEDS_NO_PERMISSION = {("sts", "GetCallerIdentity")}
#: SQS batch operations are authorised by their single-message action.
IAM_ACTION_OF = {
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "SendMessageBatch": "SendMessage",
}


def policy_actions(markdown: str) -> set[str]:
    """The actions of the one ```json block directly under the policy heading."""
    _, found, rest = markdown.partition(HEADING + "\n")
    assert found, f"docs/aws.md has no heading {HEADING!r}"
    next_heading = re.search(r"^## ", rest, flags=re.MULTILINE)
    section = rest[: next_heading.start()] if next_heading else rest
    blocks = re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "exactly one json block under the heading"
    policy = json.loads(blocks[0])
    assert policy["Version"] == "2012-10-17"
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


def adapter_operations() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (REPO / "service" / "aws").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("call", "_home_call")
                and len(node.args) >= 2
                and all(
                    isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[:2]
                )
            ):
                service, operation = (a.value for a in node.args[:2])  # type: ignore[attr-defined]
                found.add((service, operation))
    return found


def consumer_sqs_operations() -> set[tuple[str, str]]:
    model = botocore.session.get_session().get_service_model("sqs")
    by_method = {xform_name(name): name for name in model.operation_names}
    found: set[tuple[str, str]] = set()
    for path in (REPO / "service" / "consumer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "sqs"
            ):
                found.add(("sqs", by_method[node.func.attr]))
    return found


def iam_actions(operations: set[tuple[str, str]]) -> set[str]:
    return {
        f"{IAM_PREFIX[s]}:{IAM_ACTION_OF.get(op, op)}"
        for s, op in operations
        if (s, op) not in NEEDS_NO_PERMISSION
    }


def test_policy_allows_exactly_the_runtime_calls() -> None:
    operations = adapter_operations() | consumer_sqs_operations()
    # The scan sees what it must (a broken scan would make the comparison vacuous).
    assert ("ecs", "DescribeTasks") in operations
    assert ("sqs", "ReceiveMessage") in operations
    assert ("cloudwatch", "GetMetricData") in operations
    assert ("sts", "AssumeRole") in operations
    assert ("organizations", "ListAccounts") in operations
    documented = policy_actions((REPO / "docs" / "aws.md").read_text())
    assert documented == iam_actions(operations)


def test_setup_permissions_are_kept_out_of_the_runtime_policy() -> None:
    text = (REPO / "docs" / "aws.md").read_text()
    actions = policy_actions(text)
    # The heartbeat's PutEvents is the one EventBridge action at run time.
    assert {a for a in actions if a.startswith("events:")} == {"events:PutEvents"}
    assert "sqs:CreateQueue" not in actions
    assert "## `ecswatch aws setup`" in text


def template_runtime_actions() -> set[str]:
    """The actions deploy/cloudformation.yaml gives the runtime task role."""
    resources = load_template()["Resources"]
    documents = [
        p["PolicyDocument"] for p in resources["RuntimeTaskRole"]["Properties"]["Policies"]
    ]
    # Policies attached to the role on their own, such as the member accounts'
    # (there when an organization is watched): their actions count as the role's.
    documents += [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy"
        and {"Ref": "RuntimeTaskRole"} in r["Properties"].get("Roles", [])
    ]
    actions: set[str] = set()
    for document in documents:
        for statement in document["Statement"]:
            if "Fn::If" in statement:  # a statement there under a condition
                statement = statement["Fn::If"][1]
            assert statement["Effect"] == "Allow"
            value = statement["Action"]
            actions.update([value] if isinstance(value, str) else value)
    return actions


def test_template_task_role_allows_exactly_the_runtime_calls() -> None:
    operations = adapter_operations() | consumer_sqs_operations()
    assert ("ecs", "ListServiceDeployments") in operations
    assert ("ecs", "DescribeServiceDeployments") in operations
    assert template_runtime_actions() == iam_actions(operations)
