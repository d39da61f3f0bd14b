"""The rig's stand-ins driven by the real clients the service uses."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime

import aiohttp
import pytest
from aiobotocore.session import get_session
from datadog_api_client import AsyncApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.model.event_alert_type import EventAlertType
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.metric_content_encoding import MetricContentEncoding
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_series import MetricSeries
from standardwebhooks.webhooks import Webhook
from types_aiobotocore_sqs import SQSClient

from service.demo.aws import create_queue_with_dlq
from service.demo.intake import DatadogIntake
from service.demo.receiver import WebhookReceiver
from tests.rig.fixtures import REGION, SqsQueue


async def test_sqs_round_trip(sqs_client: SQSClient, sqs_queue: SqsQueue) -> None:
    url = sqs_queue.queue_url
    await sqs_client.send_message(QueueUrl=url, MessageBody='{"n": 1}')
    [message] = (await sqs_client.receive_message(QueueUrl=url, WaitTimeSeconds=1))["Messages"]
    assert json.loads(message["Body"]) == {"n": 1}
    await sqs_client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert "Messages" not in await sqs_client.receive_message(QueueUrl=url)


async def test_sqs_redrive_to_dlq(sqs_client: SQSClient, sqs_queue: SqsQueue) -> None:
    await sqs_client.send_message(QueueUrl=sqs_queue.queue_url, MessageBody="poison")
    receives = 0
    for _ in range(6):  # maxReceiveCount is 3: the 4th receive moves it to the DLQ instead
        got = await sqs_client.receive_message(QueueUrl=sqs_queue.queue_url, VisibilityTimeout=0)
        receives += len(got.get("Messages", []))
    assert receives == 3
    got = await sqs_client.receive_message(
        QueueUrl=sqs_queue.dlq_url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )
    [dead] = got["Messages"]
    assert dead["Body"] == "poison"
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) >= 3


async def test_create_queue_with_dlq_converges(sqs_client: SQSClient, sqs_queue: SqsQueue) -> None:
    name = sqs_queue.queue_url.rsplit("/", 1)[1]
    assert await create_queue_with_dlq(sqs_client, name) == tuple(sqs_queue)
    # Another maxReceiveCount updates the existing queue instead of failing.
    await create_queue_with_dlq(sqs_client, name, max_receive_count=5)
    got = await sqs_client.get_queue_attributes(
        QueueUrl=sqs_queue.queue_url, AttributeNames=["RedrivePolicy"]
    )
    policy = json.loads(got["Attributes"]["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == sqs_queue.dlq_arn
    assert int(policy["maxReceiveCount"]) == 5


async def test_moto_answers_service_deployments_as_an_account_with_none(aws_env: str) -> None:
    """moto implements no service deployments: the demo's server answers them as ECS
    answers an account without any record, never with a 500."""
    async with get_session().create_client("ecs", region_name=REGION) as ecs:
        listed = await ecs.list_service_deployments(cluster="prod", service="web")
        described = await ecs.describe_service_deployments(serviceDeploymentArns=["arn:sd"])
        revisions = await ecs.describe_service_revisions(serviceRevisionArns=["arn:rev"])
        clusters = await ecs.list_clusters()  # everything else is moto's
    assert listed["serviceDeployments"] == []
    assert described["serviceDeployments"] == []
    assert described["failures"] == [{"arn": "arn:sd", "reason": "MISSING"}]
    assert revisions["failures"] == [{"arn": "arn:rev", "reason": "MISSING"}]
    assert "clusterArns" in clusters


async def test_ecs_tasks_stay_pinned(aws_env: str) -> None:
    session, kw = get_session(), {"endpoint_url": aws_env, "region_name": REGION}
    async with session.create_client("ec2", **kw) as ec2, session.create_client("ecs", **kw) as ecs:
        vpc = (await ec2.create_vpc(CidrBlock="10.9.0.0/16"))["Vpc"]["VpcId"]
        # moto's awsvpc run_task needs DNS hostnames on the VPC (else HTTP 500).
        await ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = (await ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24"))["Subnet"]
        group = await ec2.create_security_group(GroupName="pin", Description="t", VpcId=vpc)
        await ecs.create_cluster(clusterName="pin")
        await ecs.register_task_definition(
            family="pin", requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256",
            memory="512", containerDefinitions=[{"name": "app", "image": "nginx", "memory": 512}],
        )  # fmt: skip
        net = {"subnets": [subnet["SubnetId"]], "securityGroups": [group["GroupId"]]}
        run = await ecs.run_task(
            cluster="pin", taskDefinition="pin", launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": net},
        )  # fmt: skip
        arn = run["tasks"][0]["taskArn"]
        # Unpinned, moto walks the task one step towards STOPPED on every describe.
        statuses = {
            (await ecs.describe_tasks(cluster="pin", tasks=[arn]))["tasks"][0]["lastStatus"]
            for _ in range(4)
        }
        assert statuses == {"RUNNING"}
        await ecs.stop_task(cluster="pin", task=arn)


def _dd_client(intake: DatadogIntake) -> AsyncApiClient:
    # No retries: a failure must reach the test, and the client's backoff is >= 2 s.
    config = Configuration(host=intake.url, enable_retry=False)
    config.api_key["apiKeyAuth"] = "test-api-key"
    return AsyncApiClient(config)


def _payload(value: float) -> MetricPayload:
    point = MetricPoint(timestamp=int(time.time()), value=value)
    return MetricPayload(
        series=[
            MetricSeries(
                metric="ecswatch.rig.test", type=MetricIntakeType.GAUGE, points=[point],
                tags=["ecs_cluster_name:demo"],
            )
        ]
    )  # fmt: skip


@pytest.mark.parametrize("encoding", [None, "deflate", "gzip", "zstd1"])
async def test_datadog_metrics(datadog_intake: DatadogIntake, encoding: str | None) -> None:
    kwargs = {} if encoding is None else {"content_encoding": MetricContentEncoding(encoding)}
    async with _dd_client(datadog_intake) as client:
        response = await MetricsApi(client).submit_metrics(body=_payload(1.5), **kwargs)
    assert response.errors == []
    [request] = datadog_intake.requests
    assert (request.method, request.path, request.status) == ("POST", "/api/v2/series", 202)
    assert request.headers["dd-api-key"] == "test-api-key"
    assert request.headers.get("content-encoding") == encoding
    [series] = datadog_intake.series()
    assert (series["metric"], series["type"]) == ("ecswatch.rig.test", 3)
    assert series["points"][0]["value"] == 1.5
    assert series["tags"] == ["ecs_cluster_name:demo"]


async def test_datadog_event(datadog_intake: DatadogIntake) -> None:
    body = EventCreateRequest(
        title="deploy failed", text="rolling back", alert_type=EventAlertType.ERROR,
        aggregation_key="deployment:ecs-svc/123", tags=["ecs_service:web"],
    )  # fmt: skip
    async with _dd_client(datadog_intake) as client:
        response = await EventsApi(client).create_event(body=body)
    assert response.status == "ok"
    assert isinstance(response.event.id, int)
    assert response.event.title == "deploy failed"
    [event] = datadog_intake.events()
    assert event["alert_type"] == "error"
    assert event["aggregation_key"] == "deployment:ecs-svc/123"
    assert event["tags"] == ["ecs_service:web"]


@pytest.mark.parametrize(
    ("status", "headers"), [(500, {}), (429, {"X-Ratelimit-Reset": "1"}), (413, {})]
)
async def test_datadog_injected_failure(
    datadog_intake: DatadogIntake, status: int, headers: dict[str, str]
) -> None:
    datadog_intake.fail_next(status, headers=headers)
    async with _dd_client(datadog_intake) as client:
        with pytest.raises(ApiException) as failure:
            await MetricsApi(client).submit_metrics(body=_payload(1.0))
        assert failure.value.status == status
        assert {k: failure.value.headers.get(k) for k in headers} == headers
        await MetricsApi(client).submit_metrics(body=_payload(2.0))
    assert [r.status for r in datadog_intake.requests] == [status, 202]
    assert [s["points"][0]["value"] for s in datadog_intake.series()] == [2.0]


async def test_datadog_intake_needs_api_key(datadog_intake: DatadogIntake) -> None:
    url = f"{datadog_intake.url}/api/v2/series"
    async with aiohttp.ClientSession() as http, http.post(url, json={"series": []}) as response:
        assert response.status == 403


def _secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


async def _post_signed(url: str, secret: str, body: bytes, *, tamper: bool = False) -> int:
    msg_id, now = "msg_" + os.urandom(6).hex(), datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body.decode()),
    }
    data = body + b" " if tamper else body
    async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=headers) as r:
        return r.status


async def test_webhook_signed_and_tampered(webhook_receiver: WebhookReceiver) -> None:
    secret = _secret()
    url = webhook_receiver.expect("/hooks/a", secret)
    body = json.dumps({"type": "deployment.failed", "id": "al_1"}).encode()
    assert await _post_signed(url, secret, body) == 204
    assert await _post_signed(url, secret, body, tamper=True) == 400
    assert await _post_signed(url, _secret(), body) == 400  # wrong secret
    ok, tampered, wrong = webhook_receiver.deliveries
    assert (ok.verified, ok.error, ok.headers["webhook-id"][:4]) == (True, None, "msg_")
    assert not tampered.verified
    assert "signature" in (tampered.error or "").lower()
    assert not wrong.verified
    assert webhook_receiver.verified("/hooks/a") == [{"type": "deployment.failed", "id": "al_1"}]


async def test_webhook_fail_next_and_unknown_path(webhook_receiver: WebhookReceiver) -> None:
    secret = _secret()
    url = webhook_receiver.expect("/hooks/b", secret)
    webhook_receiver.fail_next(500, count=2)
    assert [await _post_signed(url, secret, b'{"n": 1}') for _ in range(3)] == [500, 500, 204]
    assert [d.verified for d in webhook_receiver.deliveries] == [True, True, True]
    assert webhook_receiver.verified() == [{"n": 1}]
    assert await _post_signed(webhook_receiver.url + "/nowhere", secret, b"{}") == 404
    assert len(await webhook_receiver.wait_for(4)) == 4
