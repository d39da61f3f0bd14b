"""deploy/cloudformation.yaml against docs/aws.md, the CLI's own setup, and the linters."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.aws.setup import EVENT_PATTERN, MAX_RECEIVE_COUNT
from service.roles import ALL_ROLES
from tests.cfn_template import CfnLoader
from tests.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / "deploy" / "cloudformation.yaml"
AWS_DOC = REPO_ROOT / "docs" / "aws.md"
POLICY_HEADING = "## Least-privilege IAM policy"
# The services' secrets; DD_APP_KEY (dashboards and monitors) goes to the one-off
# `datadog install` task alone.
SECRET_VARIABLES = {"ECSWATCH_DATABASE_URL", "ECSWATCH_API_TOKENS", "DD_API_KEY"}
INSTALL_SECRETS = {"DD_API_KEY", "DD_APP_KEY"}
INSTALL_TASK = "DatadogInstallTaskDefinition"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    assert isinstance(loaded, dict)
    return loaded


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def documented_policy(text: str) -> dict[str, Any]:
    """The one ```json block directly under the policy heading of docs/aws.md."""
    lines = text.splitlines()
    assert lines.count(POLICY_HEADING) == 1, f"docs/aws.md needs one {POLICY_HEADING!r}"
    i = lines.index(POLICY_HEADING) + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    assert i < len(lines), "nothing under the policy heading"
    assert lines[i].strip() == "```json", "the policy must be a ```json block right under it"
    end = lines.index("```", i + 1)
    policy = json.loads("\n".join(lines[i + 1 : end]))
    assert isinstance(policy, dict)
    return policy


def _unless_if(value: Any) -> Any:
    """The value a ``Fn::If`` gives when its condition holds (or ``value`` itself)."""
    return value["Fn::If"][1] if isinstance(value, dict) and "Fn::If" in value else value


def _actions(statements: list[dict[str, Any]]) -> list[str]:
    return [a for s in map(_unless_if, statements) for a in _as_list(s["Action"])]


def _service_tasks(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The task definitions the ECS services run."""
    tasks = _resources(template, "AWS::ECS::TaskDefinition")
    names = {
        s["Properties"]["TaskDefinition"]["Ref"]
        for s in _resources(template, "AWS::ECS::Service").values()
    }
    return {n: t for n, t in tasks.items() if n in names}


def _runtime_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"]["RuntimeTaskRole"]
    statements = [
        s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
    ]
    # Policies attached from outside the role count too.
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in _resources(template, kind).values():
            if {"Ref": "RuntimeTaskRole"} in policy["Properties"].get("Roles", []):
                statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_policy_heading_is_followed_by_one_json_block() -> None:
    broken = "# x\n\n## Least-privilege IAM policy\n\nSome prose first.\n\n```json\n{}\n```\n"
    with pytest.raises(AssertionError, match="right under it"):
        documented_policy(broken)
    policy = documented_policy(AWS_DOC.read_text())
    assert policy["Version"] == "2012-10-17"


#: Statements of docs/aws.md's policy that only a multi-account setup needs
#: (ECSWATCH_ACCOUNTS or ECSWATCH_ORGANIZATION_ROLE_NAME); the single-account
#: template does not grant them.
MULTI_ACCOUNT_SIDS = {"AssumeTheMemberRoles", "DiscoverTheOrganizationsAccounts"}


def test_runtime_role_actions_are_exactly_the_documented_ones(template: dict[str, Any]) -> None:
    statements = documented_policy(AWS_DOC.read_text())["Statement"]
    assert {s.get("Sid") for s in statements} >= MULTI_ACCOUNT_SIDS
    documented = _actions([s for s in statements if s.get("Sid") not in MULTI_ACCOUNT_SIDS])
    granted = _actions(_runtime_statements(template))
    assert len(documented) == len(set(documented)), "an action listed twice in docs/aws.md"
    assert len(granted) == len(set(granted)), "an action granted twice in the template"
    assert set(granted) == set(documented)
    assert not [a for a in granted if "*" in a], "no wildcard actions"


def test_runtime_role_allows_only_and_reads_only_the_event_queue(
    template: dict[str, Any],
) -> None:
    for statement in _runtime_statements(template):
        assert statement["Effect"] == "Allow"
        actions = _as_list(statement["Action"])
        if any(a.startswith("sqs:") for a in actions):
            assert all(a.startswith("sqs:") for a in actions)
            assert statement["Resource"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
        else:
            assert not any(
                a.startswith(("sqs:", "iam:", "sts:", "secretsmanager:")) for a in actions
            )
    documented = documented_policy(AWS_DOC.read_text())["Statement"]
    sqs = [s for s in documented if any(a.startswith("sqs:") for a in _as_list(s["Action"]))]
    assert [s["Resource"] for s in sqs] == ["arn:aws:sqs:REGION:ACCOUNT_ID:QUEUE_NAME"]


def test_only_consumers_and_pollers_run_with_the_runtime_role(template: dict[str, Any]) -> None:
    roles_by_family: dict[str, Any] = {}
    for name, task in _resources(template, "AWS::ECS::TaskDefinition").items():
        roles_by_family[name] = task["Properties"].get("TaskRoleArn")
    runtime = {"Fn::GetAtt": ["RuntimeTaskRole", "Arn"]}
    assert roles_by_family == {
        "ConsumerTaskDefinition": runtime,
        "PollerTaskDefinition": runtime,
        "DispatcherTaskDefinition": None,
        "ApiTaskDefinition": None,
        INSTALL_TASK: None,
    }
    # The only other role is ECS's execution role: image, logs and the secrets.
    others = set(_resources(template, "AWS::IAM::Role")) - {"RuntimeTaskRole"}
    assert others == {"TaskExecutionRole"}
    execution = template["Resources"]["TaskExecutionRole"]["Properties"]
    statements = [s for p in execution["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert _actions(statements) == ["secretsmanager:GetSecretValue", "kms:Decrypt"]
    # kms:Decrypt only with a key given, on that key, and only through Secrets Manager.
    (kms,) = [s for s in statements if "Fn::If" in s]
    condition, allowed, otherwise = kms["Fn::If"]
    assert condition == "HasSecretsKmsKey"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert allowed["Resource"] == {"Ref": "SecretsKmsKeyArn"}
    assert allowed["Condition"]["StringEquals"]["kms:ViaService"] == {
        "Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"
    }


def test_event_pipeline_matches_ecswatch_aws_setup(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    queue = resources["EventsQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": MAX_RECEIVE_COUNT,
    }
    rule = resources["EcsEventsRule"]["Properties"]
    assert rule["EventPattern"] == EVENT_PATTERN
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["EventsQueue", "Arn"]}]
    (statement,) = resources["EventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["EcsEventsRule", "Arn"]}}
    }


def _container(task: dict[str, Any]) -> dict[str, Any]:
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert isinstance(container, dict)
    return container


def _roles_of(container: dict[str, Any]) -> list[str]:
    command = container["Command"]
    assert command[:2] == ["run", "--roles"]
    return str(command[2]).split(",")


def test_roles_are_split_across_services(template: dict[str, Any]) -> None:
    tasks = _resources(template, "AWS::ECS::TaskDefinition")
    services = _resources(template, "AWS::ECS::Service")
    main_role: dict[str, str] = {}
    for name, service in services.items():
        task_name = service["Properties"]["TaskDefinition"]["Ref"]
        roles = _roles_of(_container(tasks[task_name]))
        # Each task runs one role, plus the api role for its own /healthz and /metrics.
        worker = [r for r in roles if r != "api"] or ["api"]
        assert len(worker) == 1, roles
        main_role[worker[0]] = name
    assert sorted(main_role) == sorted(ALL_ROLES)

    # Only the api service is behind the load balancer.
    behind_alb = [n for n, s in services.items() if "LoadBalancers" in s["Properties"]]
    assert behind_alb == [main_role["api"]]

    # Consumers scale on the queue's depth, the API on CPU; pollers and dispatchers do not.
    targets = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    scaled = {t["Properties"]["ResourceId"]["Fn::Sub"].split(".")[0] for t in targets.values()}
    assert scaled == {
        f"service/${{Cluster}}/${{{main_role['consumer']}",
        f"service/${{Cluster}}/${{{main_role['api']}",
    }
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    consumer_policies = {
        n
        for n, p in _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").items()
        if p["Properties"]["PolicyType"] == "StepScaling"
    }
    triggers = [
        a["Properties"]
        for a in alarms.values()
        if isinstance(a["Properties"]["AlarmActions"], list)
        and any(act.get("Ref") in consumer_policies for act in a["Properties"]["AlarmActions"])
    ]
    assert len(triggers) == 2
    for alarm in triggers:
        assert alarm["Namespace"] == "AWS/SQS"
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"] == [
            {"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}}
        ]


def test_secrets_come_from_secrets_manager(template: dict[str, Any]) -> None:
    services = _service_tasks(template)
    for name, task in _resources(template, "AWS::ECS::TaskDefinition").items():
        container = _container(task)
        env = {e["Name"] for e in container["Environment"] if isinstance(e, dict) and "Name" in e}
        # An Fn::If entry is a Datadog key, there when a Datadog secret is given.
        secrets = {_unless_if(entry)["Name"] for entry in container["Secrets"]}
        assert secrets == (SECRET_VARIABLES if name in services else INSTALL_SECRETS), name
        assert not env & (SECRET_VARIABLES | INSTALL_SECRETS), name
        if name in services:
            assert "ECSWATCH_RETENTION_DAYS" in env


def test_only_the_install_task_gets_the_application_key(template: dict[str, Any]) -> None:
    install = template["Resources"][INSTALL_TASK]
    assert install["Condition"] == "HasDatadog"
    assert _container(install)["Command"] == ["datadog", "install"]
    assert INSTALL_TASK not in _service_tasks(template)
    assert "TaskRoleArn" not in install["Properties"]
    assert "DD_APP_KEY" not in json.dumps(
        {k: v for k, v in template["Resources"].items() if k != INSTALL_TASK}
    )
    assert template["Outputs"][INSTALL_TASK]["Value"] == {"Ref": INSTALL_TASK}


def test_queues_and_log_group_outlive_the_stack(template: dict[str, Any]) -> None:
    for name in ("EventsQueue", "EventsDeadLetterQueue", "LogGroup"):
        resource = template["Resources"][name]
        assert resource["DeletionPolicy"] == "Retain", name
        assert resource["UpdateReplacePolicy"] == "Retain", name


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[dev]'"
    return found


def test_cfn_lint_passes() -> None:
    result = subprocess.run(
        [_tool("cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint_and_installs_the_wheel() -> None:
    dockerfile = REPO_ROOT / "Dockerfile"
    result = subprocess.run(
        [_tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    final_stage = text.split("\nFROM ")[-1]
    assert "pip wheel" in text.split("\nFROM ")[-2]
    assert "/wheels/ecswatch-" in final_stage
    assert "PYTHONPATH" not in final_stage
    assert "COPY service" not in final_stage
    assert "COPY alembic" not in final_stage


# Series the runbook relies on that other roles register once they are built
# (the poller). When one appears in the registry the test below fails:
# drop it from this set and check that the runbook uses the registered name.
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _registered_families() -> set[str]:
    from service import telemetry

    return {family.name for family in telemetry.REGISTRY.collect()}


def _family_of(series: str, families: set[str]) -> str | None:
    if series in families:
        return series
    for suffix in _SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in families:
            return series.removesuffix(suffix)
    return None


@pytest.mark.parametrize("doc", ["runbook.md", "deploy.md"])
def test_docs_name_only_registered_series(doc: str) -> None:
    import re

    families = _registered_families()
    named = set(re.findall(r"\becswatch_[a-z_]*[a-z]", (REPO_ROOT / "docs" / doc).read_text()))
    unknown = {s for s in named if _family_of(s, families) is None}
    assert unknown == set(), f"docs/{doc} names series that /metrics does not have"


def test_template_defaults_agree_with_the_settings(
    template: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    from service.config import load_settings

    defaults = load_settings()
    assert int(template["Parameters"]["RetentionDays"]["Default"]) == defaults.retention_days
    for task in _service_tasks(template).values():
        container = _container(task)
        env = {
            e["Name"]: e["Value"]
            for e in container["Environment"]
            if isinstance(e, dict) and "Name" in e
        }
        # SIGTERM's grace period must end before ECS kills the container.
        assert float(env["ECSWATCH_SHUTDOWN_GRACE_S"]) < container["StopTimeout"]
        assert env["ECSWATCH_LOG_FORMAT"] == "json"
