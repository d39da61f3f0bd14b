"""docs/aws.md's least-privilege policy allows exactly what ecswatch calls at run time.

The operations are found in the source, not listed by hand: every
``caller.call("<service>", "<Operation>", ...)`` of the adapters, and every
``sqs.<method>(...)`` of the consumer.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import botocore.session
from botocore import xform_name

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Least-privilege IAM policy"

#: boto service name -> IAM action prefix.
IAM_PREFIX = {
    "ecs": "ecs",
    "cloudwatch": "cloudwatch",
    "elbv2": "elasticloadbalancing",
    "codedeploy": "codedeploy",
    "sqs": "sqs",
    "events": "events",
}
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
                and node.func.attr == "call"
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
    return {f"{IAM_PREFIX[s]}:{IAM_ACTION_OF.get(op, op)}" for s, op in operations}


def test_policy_allows_exactly_the_runtime_calls() -> None:
    operations = adapter_operations() | consumer_sqs_operations()
    # The scan sees what it must (a broken scan would make the comparison vacuous).
    assert ("ecs", "DescribeTasks") in operations
    assert ("sqs", "ReceiveMessage") in operations
    assert ("cloudwatch", "GetMetricData") in operations
    documented = policy_actions((REPO / "docs" / "aws.md").read_text())
    assert documented == iam_actions(operations)


def test_setup_permissions_are_kept_out_of_the_runtime_policy() -> None:
    text = (REPO / "docs" / "aws.md").read_text()
    actions = policy_actions(text)
    # The heartbeat's PutEvents is the one EventBridge action at run time.
    assert {a for a in actions if a.startswith("events:")} == {"events:PutEvents"}
    assert "sqs:CreateQueue" not in actions
    assert "## `ecswatch aws setup`" in text
