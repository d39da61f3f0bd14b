"""pytest fixtures for the real local stand-ins: moto, Datadog intake, webhook receiver.

Registered by ``pytest_plugins = ["tests.rig.fixtures"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

import pytest
from aiobotocore.session import get_session
from sqlalchemy.engine import make_url
from types_aiobotocore_sqs import SQSClient

from service.demo.aws import MotoServer, create_queue_with_dlq
from service.demo.intake import DatadogIntake
from service.demo.receiver import WebhookReceiver
from tests.rig.tcp_proxy import TcpProxy

REGION = "us-east-1"


class SqsQueue(NamedTuple):
    """A per-test queue whose redrive policy moves a message to ``dlq_url`` on its 4th receive."""

    queue_url: str
    dlq_url: str
    dlq_arn: str


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session, ECS tasks pinned; touches no environment variable."""
    server = MotoServer()
    server.start()
    try:
        server.pin_ecs_tasks()
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point botocore at moto for this test through the standard variables; returns the URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # A developer's profile or session token must not leak into signed requests.
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_server.endpoint_url


@pytest.fixture
async def sqs_client(aws_env: str) -> AsyncIterator[SQSClient]:
    """An aiobotocore SQS client against moto, closed after the test."""
    async with get_session().create_client("sqs", endpoint_url=aws_env, region_name=REGION) as c:
        yield c


@pytest.fixture
async def sqs_queue(sqs_client: SQSClient) -> AsyncIterator[SqsQueue]:
    """A fresh queue and DLQ (maxReceiveCount 3) with unique names, deleted afterwards."""
    queue = SqsQueue(*await create_queue_with_dlq(sqs_client, f"t-{uuid.uuid4().hex[:16]}"))
    yield queue
    # Deleting keeps moto's per-process state small over a long session.
    await sqs_client.delete_queue(QueueUrl=queue.queue_url)
    await sqs_client.delete_queue(QueueUrl=queue.dlq_url)


@pytest.fixture
async def datadog_intake() -> AsyncIterator[DatadogIntake]:
    """A running :class:`DatadogIntake`; point ``Configuration(host=...)`` at its ``url``."""
    async with DatadogIntake() as intake:
        yield intake


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A running :class:`WebhookReceiver`; register paths with ``expect(path, secret)``."""
    async with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
async def db_proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test database, to cut or refuse its connections.

    Tests that use it need a server reached over TCP (``ECSWATCH_TEST_DATABASE_URL``,
    as ``scripts/test`` sets); the embedded server listens on a socket only. Without
    one they fail rather than skip, so that they never pass by not running.
    """
    url = make_url(database_url)
    if not url.host:
        pytest.fail("this test needs a TCP database URL (ECSWATCH_TEST_DATABASE_URL)")
    proxy = TcpProxy(url.host, url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()
