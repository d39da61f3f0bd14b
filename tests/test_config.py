"""Settings: defaults as documented, and one clear line for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ServiceRef, load_settings
from service.deployments.rows import group_key, group_service
from service.errors import ConfigError


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.database_url is None
    assert s.data_dir == Path(".ecswatch")
    assert s.queue_url is None
    assert s.metric_prefix == "ecswatch."
    assert s.api_tokens == ()
    assert s.webhook_allow_private is False
    assert (s.metrics_interval_s, s.reconcile_interval_s) == (60, 600)
    assert s.clusters == ()
    assert s.codedeploy_groups == {}
    assert s.log_format is None
    assert s.datadog_enabled is False
    assert s.datadog_base_url == "https://api.datadoghq.com"


def test_values_are_parsed(clean_env: pytest.MonkeyPatch) -> None:
    env = clean_env
    env.setenv("ECSWATCH_DATABASE_URL", "postgresql://u@h:5432/db")
    env.setenv("ECSWATCH_API_TOKENS", "read:rrrrrrrrrrrrrrrrrr, admin:aaaaaaaaaaaaaaaaaa")
    env.setenv("ECSWATCH_CLUSTERS", "prod, staging,")
    env.setenv("ECSWATCH_CODEDEPLOY_GROUPS", "app/blue=prod/web,app2/g=c/s")
    env.setenv("ECSWATCH_WEBHOOK_ALLOW_PRIVATE", "true")
    env.setenv("DD_API_KEY", "k")
    env.setenv("DD_SITE", "datadoghq.eu")
    env.setenv("AWS_REGION", "eu-west-1")
    s = load_settings()
    assert [t.scope for t in s.api_tokens] == ["read", "admin"]
    assert s.api_tokens[1].token.get_secret_value() == "aaaaaaaaaaaaaaaaaa"
    assert s.clusters == ("prod", "staging")
    assert s.codedeploy_groups["app/blue"] == ServiceRef(cluster="prod", service="web")
    assert len(s.codedeploy_groups) == 2
    assert s.webhook_allow_private is True
    assert s.datadog_enabled is True
    assert s.datadog_base_url == "https://api.datadoghq.eu"
    assert s.aws_region == "eu-west-1"
    env.setenv("ECSWATCH_DATADOG_URL", "http://127.0.0.1:9/")
    assert load_settings().datadog_base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ECSWATCH_DATABASE_URL", "mysql://x", "invalid ECSWATCH_DATABASE_URL: must be a"),
        ("ECSWATCH_QUEUE_URL", "sqs-queue", "invalid ECSWATCH_QUEUE_URL: must be an http"),
        ("ECSWATCH_DATADOG_URL", "ftp://x", "invalid ECSWATCH_DATADOG_URL"),
        ("AWS_ENDPOINT_URL", "localhost:5000", "invalid AWS_ENDPOINT_URL"),
        ("ECSWATCH_METRIC_PREFIX", "bad prefix!", "invalid ECSWATCH_METRIC_PREFIX"),
        ("ECSWATCH_METRIC_PREFIX", "", "invalid ECSWATCH_METRIC_PREFIX: must not be empty"),
        ("ECSWATCH_METRIC_PREFIX", "ecswatch", "must end with a dot (e.g. ecswatch.)"),
        ("ECSWATCH_METRIC_PREFIX", "aws.ecs.", "must not start with aws."),
        ("ECSWATCH_METRIC_PREFIX", "AWS.", "must not start with aws."),
        ("ECSWATCH_METRIC_PREFIX", "ecs.", "must not start with ecs."),
        ("ECSWATCH_METRIC_PREFIX", "datadog.ecs.", "must not start with datadog."),
        ("ECSWATCH_METRIC_PREFIX", "kubernetes.", "must not start with kubernetes."),
        ("ECSWATCH_METRIC_PREFIX", "acme..", "empty part"),
        ("ECSWATCH_METRIC_PREFIX", "1acme.", "must start with a letter"),
        ("ECSWATCH_API_TOKENS", "read", "invalid ECSWATCH_API_TOKENS: expected scope:token"),
        ("ECSWATCH_API_TOKENS", "root:xxxxxxxxxxxxxxxxxxxx", "unknown scope 'root'"),
        ("ECSWATCH_API_TOKENS", "read:short", "at least 16 characters"),
        ("ECSWATCH_WEBHOOK_ALLOW_PRIVATE", "maybe", "invalid ECSWATCH_WEBHOOK_ALLOW_PRIVATE"),
        ("ECSWATCH_METRICS_INTERVAL_S", "0", "invalid ECSWATCH_METRICS_INTERVAL_S"),
        ("ECSWATCH_RECONCILE_INTERVAL_S", "soon", "invalid ECSWATCH_RECONCILE_INTERVAL_S"),
        ("ECSWATCH_CODEDEPLOY_GROUPS", "app=web", "invalid ECSWATCH_CODEDEPLOY_GROUPS"),
        (
            "ECSWATCH_CODEDEPLOY_GROUPS",
            "app/g=arn:aws:ecs:us-east-1:1234:service/prod/web",
            "malformed service ARN for app/g",
        ),
        (
            "ECSWATCH_CODEDEPLOY_GROUPS",
            "app/g=arn:aws:ecs:us-east-1:123456789012:cluster/prod",
            "malformed service ARN for app/g",
        ),
        (
            "ECSWATCH_CODEDEPLOY_GROUPS",
            "app/g=arn:aws:ecs:mars-north-1:123456789012:service/prod/web",
            "unknown region 'mars-north-1'",
        ),
        ("ECSWATCH_CODEDEPLOY_GROUPS", "app/g=a/b,app/g=c/d", "app/g is listed twice"),
        ("ECSWATCH_LOG_FORMAT", "xml", "invalid ECSWATCH_LOG_FORMAT"),
    ],
)
def test_invalid_value_names_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = info.value.detail
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("prefix", ["ecswatch.", "acme.ecs.", "awsome.", "my_team.ecswatch."])
def test_prefixes_of_ones_own_are_accepted(clean_env: pytest.MonkeyPatch, prefix: str) -> None:
    clean_env.setenv("ECSWATCH_METRIC_PREFIX", prefix)
    assert load_settings().metric_prefix == prefix


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # asyncpg would pick a database named after the OS user and migrate it.
        ("postgresql+asyncpg://", "name the database"),
        ("postgresql+asyncpg://u@h:5432", "name the database"),
        ("postgresql://u@h:5432/", "name the database"),
        ("postgresql://u@h:notaport/db", "not a valid database URL"),
        ("postgres://u@h:5432x/db", "not a valid database URL"),
        ("postgresql+asyncpg://u@h:0/db", "the port must be 1 to 65535"),
        ("postgresql+asyncpg://u@h:70000/db", "the port must be 1 to 65535"),
    ],
)
def test_database_url_must_name_server_port_and_database(
    clean_env: pytest.MonkeyPatch, value: str, message: str
) -> None:
    clean_env.setenv("ECSWATCH_DATABASE_URL", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = info.value.detail
    assert text.startswith("invalid ECSWATCH_DATABASE_URL: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "value",
    [
        "postgresql+asyncpg://u:p@db.example:5432/ecswatch",
        "postgresql://u@h/db",
        "postgres://u@h:65535/db",
        "postgresql+asyncpg://u@/db?host=/run/postgresql",
        "postgresql:///ecswatch",  # the local socket, as psql takes it
    ],
)
def test_database_url_accepted_forms(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("ECSWATCH_DATABASE_URL", value)
    assert load_settings().database_url == value


def test_edge_settings(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert (s.api_max_body_bytes, s.api_limit_concurrency) == (65_536, 1000)
    assert (s.metrics_port, s.database_sslmode) == (None, None)
    clean_env.setenv("ECSWATCH_METRICS_PORT", "")  # as a template leaves it when unset
    assert load_settings().metrics_port is None
    clean_env.setenv("ECSWATCH_METRICS_PORT", "9464")
    clean_env.setenv("ECSWATCH_API_MAX_BODY_BYTES", "1048576")
    s = load_settings()
    assert (s.metrics_port, s.api_max_body_bytes) == (9464, 1_048_576)
    for name, value in [
        ("ECSWATCH_METRICS_PORT", "70000"),
        ("ECSWATCH_API_MAX_BODY_BYTES", "10"),
        ("ECSWATCH_API_LIMIT_CONCURRENCY", "1"),
    ]:
        with pytest.MonkeyPatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ConfigError, match=f"invalid {name}:"):
                load_settings()


def test_a_codedeploy_group_override_by_service_arn_holds_in_its_scope(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """``application/group=<service ARN>`` names the group of the ARN's scope only, and
    comes first there; ``application/group=cluster/service`` holds in every scope."""
    arn = "arn:aws:ecs:eu-west-1:210987654321:service/prod/web-eu"
    clean_env.setenv("ECSWATCH_CODEDEPLOY_GROUPS", f"app/blue=prod/web, app/blue={arn}")
    groups = load_settings().codedeploy_groups
    scoped = ServiceRef(cluster="prod", service="web-eu", arn=arn)
    assert groups == {
        "app/blue": ServiceRef(cluster="prod", service="web"),
        group_key("app", "blue", ("210987654321", "eu-west-1")): scoped,
    }
    assert group_service(groups, ("210987654321", "eu-west-1"), "app", "blue") == scoped
    for elsewhere in (("210987654321", "us-east-1"), ("123456789012", "eu-west-1")):
        assert group_service(groups, elsewhere, "app", "blue") == groups["app/blue"]
    assert group_service(groups, ("210987654321", "eu-west-1"), "app", "green") is None
