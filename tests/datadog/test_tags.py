"""Datadog tag normalisation and the ECS conventions, as tables of cases."""

from __future__ import annotations

import pytest

from service.datadog.tags import (
    EcsContext,
    arn_parts,
    ecs_tags,
    merge_tags,
    normalise_tag,
    resource_tags,
)
from service.events.arns import family_and_revision


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("env:Prod", "env:prod"),
        ("Team Name:Platform Ops", "team_name:platform_ops"),
        ("cost-center:1234", "cost-center:1234"),
        ("path:/a/b.c", "path:/a/b.c"),
        ("weird!!key:va$$lue", "weird_key:va_lue"),
        ("1starts:with-digit", "starts:with-digit"),
        ("__x__:y__", "x_:y"),
        ("trailing:under_", "trailing:under"),
        ("123:456", None),
        ("", None),
        ("ÉQUIPE:Données", "équipe:données"),
        ("k:" + "v" * 300, "k:" + "v" * 198),
    ],
)
def test_normalise_tag(raw: str, expected: str | None) -> None:
    assert normalise_tag(raw) == expected


def test_normalised_tags_are_at_most_200_characters() -> None:
    out = normalise_tag("a" * 500)
    assert out is not None
    assert len(out) == 200


@pytest.mark.parametrize(
    ("arn", "region", "account"),
    [
        ("arn:aws:ecs:eu-west-1:123456789012:cluster/prod", "eu-west-1", "123456789012"),
        ("arn:aws-cn:ecs:cn-north-1:111:service/c/s", "cn-north-1", "111"),
        ("prod", None, None),
        (None, None, None),
        ("arn:aws:ecs", None, None),
    ],
)
def test_arn_parts(arn: str | None, region: str | None, account: str | None) -> None:
    parts = arn_parts(arn)
    assert (parts.region, parts.account) == (region, account)


@pytest.mark.parametrize(
    ("task_definition", "expected"),
    [
        ("arn:aws:ecs:us-east-1:1:task-definition/web:42", ("web", "42")),
        ("web:7", ("web", "7")),
        ("web", ("web", None)),
        (None, (None, None)),
    ],
)
def test_family_and_revision(
    task_definition: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert family_and_revision(task_definition) == expected


def test_ecs_convention_tags() -> None:
    context = EcsContext(
        cluster_arn="arn:aws:ecs:us-east-1:123456789012:cluster/Prod",
        cluster_name="Prod",
        service_name="Web-API",
        launch_type="FARGATE",
        task_family="web",
        task_version=12,
    )
    assert ecs_tags(context) == [
        "ecs_cluster_name:prod",
        "clustername:prod",
        "ecs_service:web-api",
        "servicename:web-api",
        "task_family:web",
        "task_version:12",
        "launch_type:fargate",
        "region:us-east-1",
        "aws_account:123456789012",
    ]


def test_ecs_tags_leave_out_what_is_unknown_and_never_name_a_task() -> None:
    tags = ecs_tags(EcsContext(cluster_name="prod"))
    assert tags == ["ecs_cluster_name:prod", "clustername:prod"]
    assert not any(t.startswith(("task_arn", "task_id", "arn")) for t in tags)


@pytest.mark.parametrize(
    ("tags", "keys", "expected"),
    [
        ({"Team": "Payments", "env": "prod"}, None, ["env:prod", "team:payments"]),
        ({"Team": "Payments", "env": "prod"}, ["env"], ["env:prod"]),
        ({"Team": "Payments"}, ["team"], []),  # keys compare as written in ECS
        ({"region": "x", "ecs_service": "y", "ok": "1"}, None, ["ok:1"]),
        ({"empty": ""}, None, []),
        ({}, None, []),
    ],
)
def test_resource_tags(tags: dict[str, str], keys: list[str] | None, expected: list[str]) -> None:
    assert resource_tags(tags, keys) == expected


def test_merge_tags_keeps_first_and_drops_none() -> None:
    assert merge_tags(["a:1", None, "b:2"], ["a:1", "c:3"]) == ["a:1", "b:2", "c:3"]


def test_tag_keys_setting_is_a_comma_separated_list(clean_env: pytest.MonkeyPatch) -> None:
    from service.config import load_settings

    clean_env.setenv("ECSWATCH_DATADOG_TAG_KEYS", "team, env ,,cost-center")
    assert load_settings().datadog_tag_keys == ("team", "env", "cost-center")
    clean_env.delenv("ECSWATCH_DATADOG_TAG_KEYS")
    assert load_settings().datadog_tag_keys == ()
