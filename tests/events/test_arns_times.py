"""The one ARN parser, the one ``family:revision`` parser and the one time formatter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.events.arns import (
    Arn,
    family_and_revision,
    parse_arn,
    resource_name,
    target_group_name,
)
from service.events.times import iso


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "arn:aws:ecs:us-east-1:111122223333:task/prod/0abc",
            Arn("aws", "ecs", "us-east-1", "111122223333", "task", ("prod", "0abc")),
        ),
        (
            "arn:aws:ecs:us-east-1:111122223333:task-definition/web:42",
            Arn("aws", "ecs", "us-east-1", "111122223333", "task-definition", ("web:42",)),
        ),
        (
            "arn:aws:codedeploy:eu-west-1:1:deploymentgroup:app/group",
            Arn("aws", "codedeploy", "eu-west-1", "1", "deploymentgroup", ("app", "group")),
        ),
        (
            "arn:aws-cn:elasticloadbalancing:cn-north-1:1:targetgroup/web-blue/0123",
            Arn(
                "aws-cn",
                "elasticloadbalancing",
                "cn-north-1",
                "1",
                "targetgroup",
                ("web-blue", "0123"),
            ),
        ),
        ("arn:aws:ecs:us-east-1:1:cluster", Arn("aws", "ecs", "us-east-1", "1", "cluster", ())),
        ("arn:aws:ecs:us-east-1:1:cluster/", None),  # an empty segment
        ("arn:aws:ecs", None),
        ("prod", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_arn(value: str | None, expected: Arn | None) -> None:
    assert parse_arn(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("arn:aws:ecs:us-east-1:1:task-definition/web:42", ("web", "42")),
        ("arn:aws:ecs:us-east-1:1:task-definition/web", ("web", None)),
        ("web:7", ("web", "7")),
        ("web", ("web", None)),
        (None, (None, None)),
        ("", (None, None)),
    ],
)
def test_family_and_revision(value: str | None, expected: tuple[str | None, str | None]) -> None:
    assert family_and_revision(value) == expected


def test_names_out_of_arns() -> None:
    assert resource_name("arn:aws:ecs:us-east-1:1:cluster/prod") == "prod"
    assert resource_name("arn:aws:ecs:us-east-1:1:service/prod/web") == "web"
    assert resource_name("prod") == "prod"
    assert target_group_name("arn:aws:elasticloadbalancing:r:1:targetgroup/web-blue/0123") == (
        "web-blue"
    )
    assert target_group_name("arn:aws:elasticloadbalancing:r:1:loadbalancer/app/x/1") is None


def test_iso_writes_utc_with_z() -> None:
    assert iso(datetime(2026, 12, 1, 10, 0, tzinfo=UTC)) == "2026-12-01T10:00:00Z"
    paris = timezone(timedelta(hours=1))
    assert iso(datetime(2026, 12, 1, 11, 0, 0, 5, tzinfo=paris)) == "2026-12-01T10:00:00.000005Z"
    assert iso(datetime(2026, 12, 1, 10, 0)) == "2026-12-01T10:00:00Z"  # naive: taken as UTC
    assert iso(None) is None
