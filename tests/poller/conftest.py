"""Fixtures for enrichment and the poller: moto behind a counting, throttling proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service.aws.scopes import Scope
from service.config import Settings
from service.demo.aws import MotoServer
from service.runtime import Runtime, open_runtime
from tests.poller.fleet import REGION, Fleet, build_fleet
from tests.poller.org import REGIONS, ScopeFleet, build_scope, org_settings, random_account
from tests.rig.aws_proxy import AwsProxy


@pytest.fixture
async def aws_proxy(moto_server: MotoServer, aws_env: str) -> AsyncIterator[AwsProxy]:
    async with AwsProxy(moto_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def proxied_settings(settings: Settings, aws_proxy: AwsProxy) -> Settings:
    return settings.model_copy(update={"aws_endpoint_url": aws_proxy.url, "aws_region": REGION})


@pytest.fixture
async def proxied_runtime(
    proxied_settings: Settings, engine: AsyncEngine
) -> AsyncIterator[Runtime]:
    async with open_runtime(proxied_settings, pool_size=5) as rt:
        yield rt


@pytest.fixture
async def fleet(moto_server: MotoServer, aws_env: str) -> Fleet:
    return await build_fleet(moto_server.endpoint_url)


# --- several accounts and regions (tests/poller/org.py) ---------------------------


@pytest.fixture
async def org_proxy(moto_server: MotoServer, aws_env: str) -> AsyncIterator[AwsProxy]:
    async with AwsProxy(moto_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
async def accounts() -> tuple[str, str, str]:
    """Two watched accounts and one that is not, fresh for each test."""
    return random_account(), random_account(), random_account()


@pytest.fixture
async def fleets(moto_server: MotoServer, accounts: tuple[str, str, str]) -> list[ScopeFleet]:
    return [
        await build_scope(moto_server.endpoint_url, Scope(account, region))
        for account in accounts
        for region in REGIONS
    ]


@pytest.fixture
async def org_runtime(
    settings: Settings,
    org_proxy: AwsProxy,
    accounts: tuple[str, str, str],
    engine: AsyncEngine,
) -> AsyncIterator[Runtime]:
    async with open_runtime(org_settings(settings, org_proxy, accounts[:2]), pool_size=5) as rt:
        yield rt
