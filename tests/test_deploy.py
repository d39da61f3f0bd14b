"""deploy/cloudformation.yaml against docs/aws.md, the CLI's own setup, and the linters."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.aws.setup import (
    EVENT_PATTERN,
    MAX_RECEIVE_COUNT,
    ORGANIZATION_EVENT_PATTERN,
    ORGANIZATION_ID,
    organization_bus_policy,
    queue_policy,
)
from service.roles import ALL_ROLES
from tests.cfn_template import MEMBER_TEMPLATE, CfnLoader
from tests.cfn_template import resources as cfn_resources
from tests.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / "deploy" / "cloudformation.yaml"
AWS_DOC = REPO_ROOT / "docs" / "aws.md"
POLICY_HEADING = "## Least-privilege IAM policy"
# The services' secrets; DD_APP_KEY (dashboards and monitors) goes to the one-off
# `datadog install` task alone.
SECRET_VARIABLES = {
    "ECSWATCH_DATABASE_URL",
    "ECSWATCH_API_TOKENS",
    "ECSWATCH_SECRET_KEY",
    "DD_API_KEY",
}
INSTALL_SECRETS = {"DD_API_KEY", "DD_APP_KEY"}
INSTALL_TASK = "DatadogInstallTaskDefinition"
ORGANIZATION = "o-a1b2c3d4e5"
#: The organization's parts of the template, made only with OrganizationId (the
#: bus and its rule) or MemberRoleName (the runtime role's access to other accounts).
ORGANIZATION_RESOURCES = {"OrganizationEventBus", "OrganizationEventsRule"}
MEMBER_ROLE_RESOURCES = {"OrganizationAccessPolicy"}
#: The settings of the accounts and regions watched, for the roles that call AWS.
SCOPE_VARIABLES = {
    "ECSWATCH_REGIONS",
    "ECSWATCH_ACCOUNTS",
    "ECSWATCH_ORGANIZATION_ROLE_NAME",
    "ECSWATCH_EXTERNAL_ID",
}
#: The one-off migration task (`ecswatch db upgrade`): the database URL and the key that
#: migration 0011 encrypts webhook secrets with.
MIGRATE_TASK = "MigrationTaskDefinition"
MIGRATE_SECRETS = {"ECSWATCH_DATABASE_URL", "ECSWATCH_SECRET_KEY"}


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


def _runtime_statements(template: dict[str, Any], **given: str) -> list[dict[str, Any]]:
    """The runtime role's statements for parameters ``given`` (the others at their default)."""
    created = cfn_resources(template, **given)
    role = created["RuntimeTaskRole"]
    statements = [
        s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
    ]
    # Policies attached from outside the role count too (when their condition holds).
    for policy in created.values():
        if policy["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and {
            "Ref": "RuntimeTaskRole"
        } in policy["Properties"].get("Roles", []):
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
        MIGRATE_TASK: None,
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
    queue_arn: Any = {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    rule_arn: Any = {"Fn::GetAtt": ["EcsEventsRule", "Arn"]}
    organization_rule_arn: Any = {"Fn::GetAtt": ["OrganizationEventsRule", "Arn"]}
    # Without an organization the queue admits the one rule; with one, both rules.
    alone = cfn_resources(template)["EventsQueuePolicy"]["Properties"]["PolicyDocument"]
    assert alone == queue_policy(queue_arn, rule_arn)
    with_organization = cfn_resources(template, OrganizationId=ORGANIZATION)
    document = with_organization["EventsQueuePolicy"]["Properties"]["PolicyDocument"]
    assert document == queue_policy(queue_arn, rule_arn, organization_rule_arn)


def test_queue_policy_admits_an_organization_rule_too() -> None:
    rules = ["arn:aws:events:eu-west-1:1:rule/r", "arn:aws:events:eu-west-1:1:rule/org/r"]
    allow, deny = queue_policy("arn:aws:sqs:eu-west-1:1:q", *rules)["Statement"]
    assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": rules}}
    # Negated with several values: denied unless the source is one of them.
    assert deny["Condition"] == {"ArnNotEquals": {"aws:SourceArn": rules}}


def test_queue_policy_admits_only_the_rule() -> None:
    # moto stores queue policies without evaluating them: check the document.
    allow, deny = queue_policy("arn:aws:sqs:eu-west-1:1:q", "arn:aws:events:eu-west-1:1:rule/r")[
        "Statement"
    ]
    assert allow == {
        "Sid": "ecswatch-eventbridge",
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": "arn:aws:sqs:eu-west-1:1:q",
        "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:events:eu-west-1:1:rule/r"}},
    }
    # Every principal, for SendMessage, unless the request comes from the rule
    # (a direct send has no aws:SourceArn, and a negated operator matches that).
    assert deny == {
        "Sid": "ecswatch-only-the-rule",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "sqs:SendMessage",
        "Resource": "arn:aws:sqs:eu-west-1:1:q",
        "Condition": {"ArnNotEquals": {"aws:SourceArn": "arn:aws:events:eu-west-1:1:rule/r"}},
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
        one_off = MIGRATE_SECRETS if name == MIGRATE_TASK else INSTALL_SECRETS
        assert secrets == (SECRET_VARIABLES if name in services else one_off), name
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


@pytest.mark.parametrize("path", [TEMPLATE, MEMBER_TEMPLATE], ids=lambda p: p.name)
def test_cfn_lint_passes(path: Path) -> None:
    result = subprocess.run(
        [_tool("cfn-lint"), str(path)], capture_output=True, text=True, timeout=300
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


# ---------------------------------------------------------------- the edge


def _evaluate(node: Any, parameters: dict[str, str]) -> Any:
    """The value of a Rules expression (Ref, Fn::Equals, Fn::Not) for ``parameters``."""
    if isinstance(node, dict):
        ((name, value),) = node.items()
        if name == "Ref":
            return parameters[value]
        if name == "Fn::Equals":
            left, right = (_evaluate(v, parameters) for v in value)
            return str(left) == str(right)
        if name == "Fn::Not":
            return not _evaluate(value[0], parameters)
        raise AssertionError(f"no evaluator for {name}")
    return node


def _rules_refuse(template: dict[str, Any], **given: str) -> list[str]:
    """The rules whose assertions fail for these parameters (others at their defaults)."""
    parameters = {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}
    parameters.update(given)
    refused = []
    for name, rule in template["Rules"].items():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], parameters):
            continue
        if not all(_evaluate(a["Assert"], parameters) for a in rule["Assertions"]):
            refused.append(name)
    return refused


def test_an_internet_facing_load_balancer_needs_a_certificate(template: dict[str, Any]) -> None:
    arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
    assert _rules_refuse(template, LoadBalancerScheme="internet-facing") == [
        "InternetFacingNeedsCertificate"
    ]
    assert _rules_refuse(template, LoadBalancerScheme="internet-facing", CertificateArn=arn) == []
    assert _rules_refuse(template, LoadBalancerScheme="internal") == []
    assert _rules_refuse(template, MetricsPort="8000") == ["MetricsPortIsNotTheApiPort"]


def test_port_80_only_redirects_when_there_is_a_certificate(template: dict[str, Any]) -> None:
    assert template["Conditions"]["HasCertificate"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CertificateArn"}, ""]}]
    }
    listeners = _resources(template, "AWS::ElasticLoadBalancingV2::Listener")
    redirect = listeners["HttpRedirectListener"]
    assert redirect["Condition"] == "HasCertificate"
    assert (redirect["Properties"]["Protocol"], redirect["Properties"]["Port"]) == ("HTTP", 80)
    (action,) = redirect["Properties"]["DefaultActions"]
    assert action == {
        "Type": "redirect",
        "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
    }
    api = listeners["ApiListener"]["Properties"]
    assert api["Protocol"] == {"Fn::If": ["HasCertificate", "HTTPS", "HTTP"]}
    assert api["Port"] == {"Fn::If": ["HasCertificate", 443, 80]}
    ingress = _resources(template, "AWS::EC2::SecurityGroupIngress")["LoadBalancerRedirectIngress"]
    assert ingress["Condition"] == "HasCertificate"


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {e["Name"]: e["Value"] for e in container["Environment"] if "Name" in e}


def test_metrics_are_served_apart_from_what_the_load_balancer_reaches(
    template: dict[str, Any],
) -> None:
    metrics_port = {"Ref": "MetricsPort"}
    assert int(template["Parameters"]["MetricsPort"]["Default"]) != 8000
    for task in _service_tasks(template).values():
        container = _container(task)
        assert _environment(container)["ECSWATCH_METRICS_PORT"] == metrics_port
        ports = [m["ContainerPort"] for m in container["PortMappings"]]
        assert ports == [8000, metrics_port]
    # The load balancer reaches port 8000 only; the scraper the metrics port only.
    (service,) = [
        s
        for s in _resources(template, "AWS::ECS::Service").values()
        if "LoadBalancers" in s["Properties"]
    ]
    assert [lb["ContainerPort"] for lb in service["Properties"]["LoadBalancers"]] == [8000]
    assert template["Resources"]["ApiTargetGroup"]["Properties"]["Port"] == 8000
    (from_lb,) = template["Resources"]["TaskSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (from_lb["FromPort"], from_lb["ToPort"]) == (8000, 8000)
    assert from_lb["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    scraper = template["Resources"]["MetricsScraperIngress"]["Properties"]
    assert (scraper["FromPort"], scraper["ToPort"]) == (metrics_port, metrics_port)
    assert scraper["GroupId"] == {"Ref": "TaskSecurityGroup"}


def test_docs_are_off_and_database_tls_is_verified_by_default(template: dict[str, Any]) -> None:
    from typing import get_args

    from service.config import Settings

    sslmode = template["Parameters"]["DatabaseSslMode"]
    assert sslmode["Default"] == "verify-full"
    (modes, _) = get_args(Settings.model_fields["database_sslmode"].annotation)
    assert sorted(sslmode["AllowedValues"]) == sorted(get_args(modes))
    for task in _service_tasks(template).values():
        assert _environment(_container(task))["ECSWATCH_API_DOCS"] == "false"
    for task in _resources(template, "AWS::ECS::TaskDefinition").values():
        container = _container(task)
        secrets = {_unless_if(entry)["Name"] for entry in container["Secrets"]}
        if "ECSWATCH_DATABASE_URL" in secrets:  # every task that reaches the database
            env = _environment(container)
            assert env["ECSWATCH_DATABASE_SSLMODE"] == {"Ref": "DatabaseSslMode"}


def test_the_image_trusts_the_rds_certificate_authorities() -> None:
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    added = [i for i, line in enumerate(final) if line.startswith("ADD ")]
    (add,) = added
    source, target = final[add].split()[-2:]
    assert source == "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
    assert target.startswith("/usr/local/share/ca-certificates/")
    assert target.endswith(".crt")  # update-ca-certificates reads only *.crt there
    assert final[add + 1] == "RUN update-ca-certificates"
    user = next(i for i, line in enumerate(final) if line.startswith("USER "))
    assert add < user


def test_migrations_can_run_apart_as_the_schema_owner(template: dict[str, Any]) -> None:
    migrate = template["Resources"]["MigrationTaskDefinition"]
    assert "TaskRoleArn" not in migrate["Properties"]  # it calls no AWS API
    container = _container(migrate)
    assert container["Command"] == ["db", "upgrade"]
    # The schema owner's URL when one is given, else the services' own.
    owner = {"Ref": "MigrationDatabaseUrlSecretArn"}
    assert container["Secrets"] == [
        {
            "Name": "ECSWATCH_DATABASE_URL",
            "ValueFrom": {"Fn::If": ["HasMigrationUser", owner, {"Ref": "DatabaseUrlSecretArn"}]},
        },
        # Migration 0011 encrypts webhook secrets and URLs.
        {"Name": "ECSWATCH_SECRET_KEY", "ValueFrom": {"Ref": "SecretKeySecretArn"}},
    ]
    # No service runs it: it is run once per update, before the services change.
    services = _resources(template, "AWS::ECS::Service").values()
    assert {"Ref": "MigrationTaskDefinition"} not in [
        s["Properties"]["TaskDefinition"] for s in services
    ]
    execution = template["Resources"]["TaskExecutionRole"]["Properties"]
    (statement,) = [
        s
        for p in execution["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if "Fn::If" not in s and s["Action"] == "secretsmanager:GetSecretValue"
    ]
    assert {
        "Fn::If": [
            "HasMigrationUser",
            {"Fn::Sub": "${MigrationDatabaseUrlSecretArn}*"},
            {"Ref": "AWS::NoValue"},
        ]
    } in statement["Resource"]
    output = template["Outputs"]["MigrationTaskDefinition"]["Value"]
    assert output == {"Ref": "MigrationTaskDefinition"}


# ---------------------------------------------------------------- an organization


def test_an_organization_is_off_by_default(template: dict[str, Any]) -> None:
    created = cfn_resources(template)
    assert not (ORGANIZATION_RESOURCES | MEMBER_ROLE_RESOURCES) & set(created)
    assert set(template["Resources"]) >= ORGANIZATION_RESOURCES | MEMBER_ROLE_RESOURCES
    for name, task in created.items():
        if task["Type"] == "AWS::ECS::TaskDefinition":
            assert not SCOPE_VARIABLES & set(_environment(_container(task))), name


def test_the_organization_bus_admits_the_organization_and_nothing_wider(
    template: dict[str, Any],
) -> None:
    created = cfn_resources(template, OrganizationId=ORGANIZATION)
    assert set(created) >= ORGANIZATION_RESOURCES
    assert not MEMBER_ROLE_RESOURCES & set(created)  # receiving events assumes no role
    bus = created["OrganizationEventBus"]["Properties"]
    name = "${AWS::StackName}-organization"
    assert bus["Name"] == {"Fn::Sub": name}
    bus_arn: Any = {
        "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/" + name
    }
    organization: Any = {"Ref": "OrganizationId"}
    # The document `ecswatch aws setup --organization` writes: one statement,
    # PutEvents for the organization's principals only.
    assert bus["Policy"] == organization_bus_policy(bus_arn, organization)

    rule = created["OrganizationEventsRule"]["Properties"]
    assert rule["EventBusName"] == {"Fn::GetAtt": ["OrganizationEventBus", "Name"]}
    assert rule["EventPattern"] == ORGANIZATION_EVENT_PATTERN
    default_rule = created["EcsEventsRule"]["Properties"]
    # The same delivery to the queue as the default bus's rule.
    assert rule["Targets"] == default_rule["Targets"]
    assert template["Outputs"]["OrganizationEventBusArn"] == {
        "Condition": "HasOrganization",
        "Description": "deploy/member-account.yaml's CentralEventBusArn",
        "Value": {"Fn::GetAtt": ["OrganizationEventBus", "Arn"]},
    }


def test_the_runtime_role_may_assume_the_member_roles_only(template: dict[str, Any]) -> None:
    base = _runtime_statements(template)
    member_role = {"MemberRoleName": "ecswatch-read", "ExternalId": "ecswatch-7f3a"}
    assume: dict[str, Any] = {
        "Sid": "AssumeMemberRoles",
        "Effect": "Allow",
        "Action": "sts:AssumeRole",
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"},
    }
    in_organization = {
        **assume,
        "Condition": {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}},
    }
    list_accounts = {
        "Sid": "ListOrganizationAccounts",
        "Effect": "Allow",
        "Action": "organizations:ListAccounts",
        "Resource": "*",
    }
    # A list of accounts, no organization: roles of that name, in any account.
    assert _runtime_statements(template, **member_role) == [*base, assume]
    # In an organization: only its accounts' roles of that name.
    assert _runtime_statements(template, **member_role, OrganizationId=ORGANIZATION) == [
        *base,
        in_organization,
    ]
    # Discovery adds ListAccounts, and nothing else.
    discovery = _runtime_statements(
        template, **member_role, OrganizationId=ORGANIZATION, DiscoverAccounts="true"
    )
    assert discovery == [*base, in_organization, list_accounts]


def _scope_environment(template: dict[str, Any], **given: str) -> dict[str, dict[str, Any]]:
    created = cfn_resources(template, **given)
    return {
        name: {k: v for k, v in _environment(_container(task)).items() if k in SCOPE_VARIABLES}
        for name, task in created.items()
        if task["Type"] == "AWS::ECS::TaskDefinition"
    }


def test_the_scope_settings_reach_the_roles_that_call_aws(template: dict[str, Any]) -> None:
    aws_roles = {"ConsumerTaskDefinition", "PollerTaskDefinition"}
    listed = {
        "MemberRoleName": "ecswatch-read",
        "ExternalId": "ecswatch-7f3a",
        "WatchedAccounts": "222222222222=arn:aws:iam::222222222222:role/ecswatch-read",
        "WatchedRegions": "eu-west-1,us-east-1",
    }
    for name, env in _scope_environment(template, **listed).items():
        expected = {
            "ECSWATCH_REGIONS": {"Ref": "WatchedRegions"},
            "ECSWATCH_ACCOUNTS": {"Ref": "WatchedAccounts"},
            "ECSWATCH_EXTERNAL_ID": {"Ref": "ExternalId"},
        }
        assert env == (expected if name in aws_roles else {}), name
    discovered = {
        "MemberRoleName": "ecswatch-read",
        "ExternalId": "ecswatch-7f3a",
        "DiscoverAccounts": "true",
    }
    for name, env in _scope_environment(template, **discovered).items():
        expected = {
            "ECSWATCH_ORGANIZATION_ROLE_NAME": {"Ref": "MemberRoleName"},
            "ECSWATCH_EXTERNAL_ID": {"Ref": "ExternalId"},
        }
        assert env == (expected if name in aws_roles else {}), name


def test_scope_settings_ecswatch_refuses_are_refused_before_deploying(
    template: dict[str, Any],
) -> None:
    role = {"MemberRoleName": "ecswatch-read"}
    assert _rules_refuse(template, **role) == ["MemberRoleNeedsExternalId"]
    assert _rules_refuse(template, **role, ExternalId="ecswatch-7f3a") == []
    assert _rules_refuse(template, DiscoverAccounts="true") == ["DiscoveryNeedsMemberRoleAndNoList"]
    accounts = "222222222222=arn:aws:iam::222222222222:role/ecswatch-read"
    assert _rules_refuse(template, WatchedAccounts=accounts) == ["WatchedAccountsNeedMemberRole"]
    both = {**role, "ExternalId": "x-1", "DiscoverAccounts": "true", "WatchedAccounts": accounts}
    assert _rules_refuse(template, **both) == ["DiscoveryNeedsMemberRoleAndNoList"]
    # The organization id has AWS Organizations' own format.
    pattern = re.compile(template["Parameters"]["OrganizationId"]["AllowedPattern"])
    assert [bool(pattern.match(v)) for v in ("", ORGANIZATION, "o-short", "O-A1B2C3D4E5")] == [
        True,
        True,
        False,
        False,
    ]
    assert pattern.pattern.removeprefix("^$|") == ORGANIZATION_ID.pattern
