"""Scope configuration, credentials per account, and organization discovery.

Configuration errors stop the process at start-up with one line and exit code 2.
Credentials come from ``sts:AssumeRole`` (moto answers it for any account) and are
refreshed by botocore's refreshable credentials: a clock handed to them moves the
credentials into their refresh window, no sleeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, suppress
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session
from dateutil.tz import tzlocal

from service.aws.scopes import AwsScopes, Scope, scope_of_arn, session_name
from service.config import load_settings
from service.demo.aws import MotoServer
from service.errors import ConfigError
from service.events.arns import partition_of
from tests.rig.aws_proxy import AwsProxy

REGION = "us-east-1"
ECSWATCH = [sys.executable, "-m", "service"]


def _start(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_"))}
    return subprocess.run(
        [*ECSWATCH, "db", "upgrade"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"ECSWATCH_ACCOUNTS": "111111111111=arn:aws:iam::111111111111:user/x"},
            "ecswatch: invalid ECSWATCH_ACCOUNTS: malformed role ARN for account 111111111111:"
            " 'arn:aws:iam::111111111111:user/x'",
        ),
        (
            {"ECSWATCH_ACCOUNTS": "111111111111=arn:aws:iam::222222222222:role/ecswatch"},
            "ecswatch: invalid ECSWATCH_ACCOUNTS: the role for account 111111111111 is in"
            " account 222222222222: arn:aws:iam::222222222222:role/ecswatch",
        ),
        (
            {"ECSWATCH_REGIONS": "us-east-1,eu-nowhere-9"},
            "ecswatch: invalid ECSWATCH_REGIONS: unknown region 'eu-nowhere-9'",
        ),
        (
            {"ECSWATCH_REGIONS": "us-east-1,cn-north-1", "ECSWATCH_ORGANIZATION_ROLE_NAME": "r"},
            "ecswatch: invalid ECSWATCH_REGIONS: us-east-1 is in partition aws and cn-north-1"
            " in aws-cn: one ecswatch watches one partition (its roles and credentials are per"
            " partition); run one deployment per partition",
        ),
        (
            {"ECSWATCH_REGIONS": "us-gov-west-1,us-east-1"},
            "ecswatch: invalid ECSWATCH_REGIONS: us-gov-west-1 is in partition aws-us-gov and"
            " us-east-1 in aws: one ecswatch watches one partition (its roles and credentials"
            " are per partition); run one deployment per partition",
        ),
        (
            {
                "AWS_REGION": "cn-north-1",
                "ECSWATCH_ACCOUNTS": "111111111111=arn:aws:iam::111111111111:role/r",
            },
            "ecswatch: invalid ECSWATCH_ACCOUNTS: the role for account 111111111111 is in"
            " partition aws, the regions in aws-cn (cn-north-1):"
            " arn:aws:iam::111111111111:role/r",
        ),
        (
            {
                "ECSWATCH_ACCOUNTS": "111111111111=arn:aws:iam::111111111111:role/r",
                "ECSWATCH_ORGANIZATION_ROLE_NAME": "r",
            },
            "ecswatch: invalid ECSWATCH_ORGANIZATION_ROLE_NAME: set ECSWATCH_ACCOUNTS or"
            " ECSWATCH_ORGANIZATION_ROLE_NAME, not both",
        ),
    ],
)
def test_a_wrong_scope_configuration_is_one_line_and_exit_2(env: dict[str, str], line: str) -> None:
    result = _start(**env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]


def test_scope_settings_parse() -> None:
    settings = load_settings(
        regions="us-east-1, eu-west-1,us-east-1",
        accounts="111111111111=arn:aws:iam::111111111111:role/path/ecswatch,"
        "222222222222=arn:aws:iam::222222222222:role/ecswatch",
        external_id="ext-123",
    )
    assert settings.scope_regions == ("us-east-1", "eu-west-1")
    assert settings.accounts == {
        "111111111111": "arn:aws:iam::111111111111:role/path/ecswatch",
        "222222222222": "arn:aws:iam::222222222222:role/ecswatch",
    }
    assert load_settings(aws_region="eu-central-1").scope_regions == ("eu-central-1",)
    with pytest.raises(ConfigError, match="listed twice"):
        load_settings(
            accounts="111111111111=arn:aws:iam::111111111111:role/a,"
            "111111111111=arn:aws:iam::111111111111:role/b"
        )
    with pytest.raises(ConfigError, match="not an IAM role name"):
        load_settings(organization_role_name="bad role")


def test_scope_of_arn_and_session_name() -> None:
    assert scope_of_arn("arn:aws:ecs:eu-west-1:111111111111:task/prod/abc") == Scope(
        "111111111111", "eu-west-1"
    )
    assert scope_of_arn("arn:aws:iam::111111111111:role/x") is None
    assert scope_of_arn("prod") is None
    assert session_name("111111111111") == "ecswatch-111111111111"
    regions = ("eu-west-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1", "us-isob-east-1")
    assert [partition_of(r) for r in regions] == [
        "aws",
        "aws-cn",
        "aws-us-gov",
        "aws-iso",
        "aws-iso-b",
    ]


def test_regions_and_roles_of_one_partition_are_accepted() -> None:
    settings = load_settings(
        regions="cn-north-1,cn-northwest-1",
        accounts="111111111111=arn:aws-cn:iam::111111111111:role/ecswatch",
    )
    assert settings.scope_regions == ("cn-north-1", "cn-northwest-1")
    assert load_settings(regions="us-gov-west-1,us-gov-east-1").scope_regions == (
        "us-gov-west-1",
        "us-gov-east-1",
    )
    with pytest.raises(ConfigError, match="partition aws-us-gov, the regions in aws"):
        load_settings(
            regions="us-east-1",
            accounts="111111111111=arn:aws-us-gov:iam::111111111111:role/ecswatch",
        )


class Clock:
    """botocore's time fetcher, moved by the test."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(tzlocal()) + self.offset


@pytest.fixture
async def proxy(moto_server: MotoServer, aws_env: str) -> AsyncIterator[AwsProxy]:
    async with AwsProxy(moto_server.endpoint_url) as p:
        yield p


def _kwargs(proxy: AwsProxy) -> Any:
    return lambda region: {"endpoint_url": proxy.url, "region_name": region}


async def _cluster_in(endpoint: str, account: str) -> str:
    """A cluster created in ``account`` (through credentials assumed into it)."""
    session: Any = get_session()
    base = {"endpoint_url": endpoint, "region_name": REGION}
    async with session.create_client(
        "sts", aws_access_key_id="testing", aws_secret_access_key="testing", **base
    ) as sts:
        creds = (
            await sts.assume_role(
                RoleArn=f"arn:aws:iam::{account}:role/r", RoleSessionName="fixture"
            )
        )["Credentials"]
    name = f"c{uuid.uuid4().hex[:8]}"
    async with session.create_client(
        "ecs",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        **base,
    ) as ecs:
        return str((await ecs.create_cluster(clusterName=name))["cluster"]["clusterArn"])


async def test_credentials_refresh_in_their_window_and_are_reused_otherwise(
    proxy: AwsProxy, moto_server: MotoServer
) -> None:
    account = "313131313131"
    cluster = await _cluster_in(moto_server.endpoint_url, account)
    clock = Clock()
    async with AsyncExitStack() as stack:
        scopes = AwsScopes(
            session=get_session(),
            stack=stack,
            client_kwargs=_kwargs(proxy),
            regions=[REGION],
            roles={account: f"arn:aws:iam::{account}:role/ecswatch"},
            external_id="ext-123",
            time_fetcher=clock,
        )
        await scopes.start()
        apis = await scopes.apis(Scope(account, REGION))
        assert apis is not None
        assert await scopes.apis(Scope(account, "eu-west-1")) is None  # not a watched region
        assert cluster in await apis.ecs.list_clusters()
        assert cluster in await apis.ecs.list_clusters()
        assert scopes.assumed == {account: 1}
        # 50 minutes on, the hour-long credentials are inside botocore's refresh window.
        clock.offset = timedelta(minutes=50)
        assert cluster in await apis.ecs.list_clusters()
        assert scopes.assumed == {account: 2}
        # Back to now: the refreshed credentials are good for another hour.
        clock.offset = timedelta()
        assert cluster in await apis.ecs.list_clusters()
        assert scopes.assumed == {account: 2}
        assert proxy.count("AssumeRole") == 2
        # One set of clients per scope, reused.
        assert await scopes.apis(Scope(account, REGION)) is apis


async def test_organization_discovery_lists_active_accounts(
    proxy: AwsProxy, moto_server: MotoServer
) -> None:
    session: Any = get_session()
    async with session.create_client(
        "organizations", endpoint_url=moto_server.endpoint_url, region_name=REGION
    ) as org:
        with suppress(org.exceptions.AlreadyInOrganizationException):
            await org.create_organization(FeatureSet="ALL")
        made = []
        for n in range(2):
            status = await org.create_account(
                Email=f"a{uuid.uuid4().hex[:6]}{n}@example.com", AccountName=f"member{n}"
            )
            made.append(status["CreateAccountStatus"]["AccountId"])
        await org.close_account(AccountId=made[1])
    cluster = await _cluster_in(moto_server.endpoint_url, made[0])
    async with AsyncExitStack() as stack:
        scopes = AwsScopes(
            session=get_session(),
            stack=stack,
            client_kwargs=_kwargs(proxy),
            regions=[REGION],
            organization_role_name="ecswatch-read",
        )
        await scopes.start()
        assert scopes.roles[made[0]] == f"arn:aws:iam::{made[0]}:role/ecswatch-read"
        assert made[1] not in scopes.roles  # suspended
        apis = await scopes.apis(Scope(made[0], REGION))
        assert apis is not None
        assert cluster in await apis.ecs.list_clusters()
        assert proxy.count("ListAccounts") >= 1
