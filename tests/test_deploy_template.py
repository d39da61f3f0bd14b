"""deploy/cloudformation.yaml as the tools that deploy it read it.

* **cfn-lint, every size written in.** cfn-lint checks a Fargate task definition's
  CPU and memory pair (E3047) only where both are written as values, not through a
  parameter: each allowed ``TaskSize`` is written into a copy of a task definition
  and the whole is linted, and a wrong pair written the same way must fail.
* **moto's CloudFormation.** The template is deployed with its default parameters
  (only those without a default are given) and must reach ``CREATE_COMPLETE``.
  moto implements no CloudFormation model for a few resource types in it
  (:data:`MOTO_UNSUPPORTED`, read from moto's own model map): those are named
  here, left out, and the rest is deployed. What it proves: the template's
  intrinsic functions, conditions, parameters and references resolve, and every
  supported resource is created with them (the task definitions' memory from
  ``TaskSize``, the install task only with a Datadog secret, kms:Decrypt only with
  a key); and that the queues and the log group survive the stack's deletion. It
  does not prove AWS accepts every property value: moto validates few of them, and
  keeps no CPU on a task definition created through CloudFormation.
"""

from __future__ import annotations

import ast
import copy
import json
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.cloudformation.parsing import get_model_map

from service.demo.aws import MotoServer
from tests.cfn_template import load_template

REGION = "ap-southeast-2"  # a region of its own in the session's moto server
MOTO_UNSUPPORTED = frozenset(
    {
        "AWS::ApplicationAutoScaling::ScalableTarget",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        "AWS::CloudWatch::Alarm",
        "AWS::SQS::QueuePolicy",
    }
)


def _cfn_lint(tmp_path: Path, template: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    beside = Path(sys.executable).parent / "cfn-lint"
    tool = str(beside) if beside.exists() else shutil.which("cfn-lint")
    assert tool, "cfn-lint is not installed: pip install -e '.[dev]'"
    return subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=300)


def _with_sizes(sizes: list[tuple[str, str]]) -> dict[str, Any]:
    """The template plus one copy of the consumer task definition per written-in size."""
    template = load_template()
    resources = template["Resources"]
    for i, (cpu, memory) in enumerate(sizes):
        task = copy.deepcopy(resources["ConsumerTaskDefinition"])
        task["Properties"]["Cpu"] = cpu
        task["Properties"]["Memory"] = memory
        task["Properties"]["Family"] = f"size-check-{i}"
        resources[f"SizeCheck{i}TaskDefinition"] = task
    return template


def _allowed_sizes() -> list[tuple[str, str]]:
    parameter = load_template()["Parameters"]["TaskSize"]
    assert parameter["Default"] in parameter["AllowedValues"]
    pairs = [tuple(str(v).split("-")) for v in parameter["AllowedValues"]]
    assert all(len(p) == 2 for p in pairs)
    return [(cpu, memory) for cpu, memory in pairs]


def test_every_allowed_task_size_passes_cfn_lint(tmp_path: Path) -> None:
    sizes = _allowed_sizes()
    assert len(sizes) >= 10
    result = _cfn_lint(tmp_path, _with_sizes(sizes))
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_refuses_a_size_fargate_does_not_run(tmp_path: Path) -> None:
    # 1024 CPU units take 2 to 8 GiB of memory: 1024 with 1024 MiB is no Fargate size.
    result = _cfn_lint(tmp_path, _with_sizes([("1024", "1024")]))
    assert result.returncode != 0
    assert "E3047" in result.stdout


def _references(value: Any) -> set[str]:
    if isinstance(value, dict):
        found: set[str] = set()
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                found.add(item)
            elif key == "Fn::GetAtt":
                found.add(str(item[0]))
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                found |= {part.split("}")[0].split(".")[0] for part in text.split("${")[1:]}
            found |= _references(item)
        return found
    if isinstance(value, list):
        return {r for item in value for r in _references(item)}
    return set()


def _deployable() -> dict[str, Any]:
    """The template without the resource types moto cannot create (named, checked)."""
    template = load_template()
    types = {r["Type"] for r in template["Resources"].values()}
    unsupported = {t for t in types if t not in get_model_map()}
    # When moto learns one of these types, take it off the list: it is then deployed.
    assert unsupported == MOTO_UNSUPPORTED
    dropped = {n for n, r in template["Resources"].items() if r["Type"] in unsupported}
    template["Resources"] = {n: r for n, r in template["Resources"].items() if n not in dropped}
    for name, resource in template["Resources"].items():
        depends = resource.get("DependsOn", [])
        assert (
            not (_references(resource) | set(depends if isinstance(depends, list) else [depends]))
            & dropped
        ), name
    assert not _references(template.get("Outputs", {})) & dropped
    return template


@pytest.fixture
def aws(moto_server: MotoServer) -> Any:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    return lambda service: session.client(service, endpoint_url=moto_server.endpoint_url)


def _network(aws: Any) -> dict[str, str]:
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    return {
        "ImageUri": "123456789012.dkr.ecr.ap-southeast-2.amazonaws.com/ecswatch:test",
        "VpcId": vpc,
        "TaskSubnetIds": ",".join(subnets),
        "LoadBalancerSubnetIds": ",".join(subnets),
        "DatabaseUrlSecretArn": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:db-AbCdEf",
        "ApiTokensSecretArn": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:tok-AbCdEf",
        "SecretKeySecretArn": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:key-GhIjKl",
    }


def _deploy(aws: Any, parameters: dict[str, str]) -> str:
    name = f"ecswatch-{uuid.uuid4().hex[:8]}"
    cfn = aws("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=json.dumps(_deployable()),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return name


def _physical(aws: Any, stack: str) -> dict[str, str]:
    summaries = aws("cloudformation").list_stack_resources(StackName=stack)
    return {
        r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries["StackResourceSummaries"]
    }


def _secrets(container: dict[str, Any]) -> set[str]:
    # moto keeps an entry that AWS::NoValue removes as a null: leave those out.
    return {s["name"] for s in container.get("secrets") or [] if s is not None}


def _policy(aws: Any, role: str) -> dict[str, Any]:
    """The execution role's inline policy.

    moto keeps the policy of a role made through CloudFormation as the Python text
    of the template's mapping (AWS answers JSON): read either.
    """
    found = aws("iam").get_role_policy(RoleName=role, PolicyName="ecswatch-secrets")
    document = found["PolicyDocument"]
    if isinstance(document, dict):
        return document
    text = urllib.parse.unquote(str(document))
    parsed = json.loads(text) if text.startswith('{"') else ast.literal_eval(text)
    assert isinstance(parsed, dict)
    return parsed


def _task_definition(aws: Any, arn: str) -> dict[str, Any]:
    found: dict[str, Any] = aws("ecs").describe_task_definition(taskDefinition=arn)
    return found["taskDefinition"]


def test_the_template_deploys_with_its_defaults(aws: Any) -> None:
    stack = _deploy(aws, _network(aws))
    resources = _physical(aws, stack)
    consumer = _task_definition(aws, resources["ConsumerTaskDefinition"])
    # TaskSize's default, split: moto keeps a task definition's memory (not its CPU).
    assert consumer["memory"] == "1024"
    (container,) = consumer["containerDefinitions"]
    assert _secrets(container) == {
        "ECSWATCH_DATABASE_URL",
        "ECSWATCH_API_TOKENS",
        "ECSWATCH_SECRET_KEY",
    }
    # No Datadog secret: no install task, and no KMS grant without a key.
    assert "DatadogInstallTaskDefinition" not in resources
    role = resources["TaskExecutionRole"].split("/")[-1]
    assert "kms:Decrypt" not in json.dumps(_policy(aws, role))
    services = aws("ecs").list_services(cluster=resources["Cluster"])["serviceArns"]
    assert len(services) == 4

    # Deleting the stack keeps the queued events and the logs.
    aws("cloudformation").delete_stack(StackName=stack)
    queues = aws("sqs").list_queues(QueueNamePrefix=stack).get("QueueUrls", [])
    assert sorted(q.rsplit("/", 1)[1] for q in queues) == [f"{stack}-events", f"{stack}-events-dlq"]
    groups = aws("logs").describe_log_groups(logGroupNamePrefix=f"/ecswatch/{stack}")
    assert [g["logGroupName"] for g in groups["logGroups"]] == [f"/ecswatch/{stack}"]


def test_datadog_and_a_kms_key_add_the_install_task_and_the_grant(aws: Any) -> None:
    key = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    parameters = {
        **_network(aws),
        "DatadogSecretArn": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:dd-AbCdEf",
        "SecretsKmsKeyArn": key,
        "TaskSize": "1024-2048",
    }
    stack = _deploy(aws, parameters)
    resources = _physical(aws, stack)
    install = _task_definition(aws, resources["DatadogInstallTaskDefinition"])
    (container,) = install["containerDefinitions"]
    assert container["command"] == ["datadog", "install"]
    assert _secrets(container) == {"DD_API_KEY", "DD_APP_KEY"}
    for name in ("ConsumerTaskDefinition", "PollerTaskDefinition", "DispatcherTaskDefinition"):
        task = _task_definition(aws, resources[name])
        assert task["memory"] == "2048"
        (container,) = task["containerDefinitions"]
        assert "DD_APP_KEY" not in _secrets(container)
        assert "DD_API_KEY" in _secrets(container)
    role = resources["TaskExecutionRole"].split("/")[-1]
    statements = _policy(aws, role)["Statement"]
    (kms,) = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert kms["Resource"] == key
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    }
