"""The Datadog senders against the real local intake, driven by the real client."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from datadog_api_client import Configuration
from datadog_api_client.model_utils import validate_and_convert_types
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload

from service import telemetry
from service.api.app import create_app
from service.config import Settings, load_settings
from service.datadog.forwarder import (
    DatadogMetricsSender,
    DatadogSenders,
    Decision,
    Verdict,
    build_senders,
    client_configuration,
    decide,
)
from service.demo.intake import DatadogIntake
from service.outbox.models import OutboxKind
from service.outbox.sender import ClaimedRow, SendStatus
from service.runtime import open_runtime

API_KEY = "test-api-key"


@pytest.fixture
async def senders(datadog_intake: DatadogIntake) -> AsyncIterator[DatadogSenders]:
    settings = load_settings(
        dd_api_key=API_KEY, datadog_url=datadog_intake.url, datadog_tag_keys="team,env"
    )
    built = build_senders(settings)
    assert built is not None
    try:
        yield built
    finally:
        await built.aclose()


def _metrics_row(row_id: int, series: list[dict[str, Any]]) -> ClaimedRow:
    return ClaimedRow(
        id=row_id,
        kind=OutboxKind.DATADOG_METRICS,
        dedupe_key=f"test:{row_id}",
        payload={"series": series},
        attempts=0,
        created_at=datetime.now(UTC),
    )


def _event_row(row_id: int, payload: dict[str, Any]) -> ClaimedRow:
    return ClaimedRow(
        row_id, OutboxKind.DATADOG_EVENT, f"ev:{row_id}", payload, 0, datetime.now(UTC)
    )


def _gauge(value: float, *, ts: int | None = None, service: str = "web") -> dict[str, Any]:
    return {
        "metric": "service.running",
        "points": [[ts or int(time.time()), value]],
        "tags": ["ecs_cluster_name:prod", f"ecs_service:{service}"],
        "resource_tags": {"team": "Payments", "owner": "alice", "env": "prod"},
    }


def _as_payload(body: Any) -> MetricPayload:
    model = validate_and_convert_types(
        body, (MetricPayload,), ["body"], True, True, Configuration()
    )
    assert isinstance(model, MetricPayload)
    return model


def _points(intake: DatadogIntake) -> Counter[tuple[str, str, int]]:
    return Counter(
        (s["metric"], ",".join(s["tags"]), p["timestamp"])
        for s in intake.series()
        for p in s["points"]
    )


async def test_metrics_arrive_compressed_with_the_key_and_deserialise(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    results = await senders.metrics.send(
        [_metrics_row(1, [_gauge(3)]), _metrics_row(2, [_gauge(4, service="api")])]
    )
    assert [(r.row_id, r.status) for r in results] == [(1, "delivered"), (2, "delivered")]
    [request] = datadog_intake.requests
    assert request.headers["dd-api-key"] == API_KEY
    assert request.headers["content-encoding"] == "zstd1"
    assert request.wire_size < len(request.body)
    payload = _as_payload(request.json)
    first = payload.series[0]
    assert first.metric == "ecswatch.service.running"
    assert first.type == MetricIntakeType.GAUGE
    assert first.unit == "task"
    # Resource tags filtered by ECSWATCH_DATADOG_TAG_KEYS (team, env) and normalised.
    assert first.tags == ["ecs_cluster_name:prod", "ecs_service:web", "env:prod", "team:payments"]


async def test_metric_prefix_comes_from_settings(datadog_intake: DatadogIntake) -> None:
    settings = load_settings(
        dd_api_key=API_KEY, datadog_url=datadog_intake.url, metric_prefix="acme.ecs."
    )
    built = build_senders(settings)
    assert built is not None
    try:
        await built.metrics.send([_metrics_row(1, [_gauge(1)])])
    finally:
        await built.aclose()
    assert [s["metric"] for s in datadog_intake.series()] == ["acme.ecs.service.running"]


def test_no_key_means_forwarding_off() -> None:
    assert build_senders(load_settings(dd_api_key=None)) is None


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (500, {}, Decision(Verdict.RETRY, "e")),
        (502, {}, Decision(Verdict.RETRY, "e")),
        (408, {}, Decision(Verdict.RETRY, "e")),
        (429, {"X-RateLimit-Reset": "7"}, Decision(Verdict.RETRY, "e", 7.0)),
        (429, {"x-ratelimit-reset": "2"}, Decision(Verdict.RETRY, "e", 2.0)),
        (503, {"Retry-After": "3"}, Decision(Verdict.RETRY, "e", 3.0)),
        (429, {"X-RateLimit-Reset": "soon"}, Decision(Verdict.RETRY, "e")),
        (None, None, Decision(Verdict.RETRY, "e")),
        (413, {}, Decision(Verdict.SPLIT, "e")),
        (400, {}, Decision(Verdict.DEAD, "e")),
        (403, {}, Decision(Verdict.DEAD, "e")),
        (404, {}, Decision(Verdict.DEAD, "e")),
    ],
)
def test_decide(status: int | None, headers: dict[str, str] | None, expected: Decision) -> None:
    assert decide(status, headers, "e") == expected


async def test_429_retries_with_the_reset_and_500_retries(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    datadog_intake.fail_next(429, headers={"X-RateLimit-Reset": "4"})
    [result] = await senders.metrics.send([_metrics_row(1, [_gauge(1)])])
    assert (result.status, result.retry_after) == (SendStatus.RETRY, 4.0)
    assert "429" in (result.error or "")
    datadog_intake.fail_next(500)
    [result] = await senders.events.send([_event_row(5, {"title": "t", "text": "x"})])
    assert result.status is SendStatus.RETRY


@pytest.mark.parametrize("status", [400, 403])
async def test_400_and_403_are_dead_with_the_error_in_metrics(
    senders: DatadogSenders, datadog_intake: DatadogIntake, status: int
) -> None:
    before = telemetry.DATADOG_FAILURES.labels("metrics", str(status))._value.get()
    dead_before = telemetry.DATADOG_POINTS.labels("dead")._value.get()
    datadog_intake.fail_next(status)
    [result] = await senders.metrics.send([_metrics_row(1, [_gauge(1), _gauge(2, service="x")])])
    assert result.status is SendStatus.DEAD
    assert f"HTTP {status}" in (result.error or "")
    assert telemetry.DATADOG_FAILURES.labels("metrics", str(status))._value.get() == before + 1
    assert telemetry.DATADOG_POINTS.labels("dead")._value.get() == dead_before + 2


async def test_wrong_key_is_dead(datadog_intake: DatadogIntake) -> None:
    datadog_intake.api_key = "the-right-one"
    built = build_senders(load_settings(dd_api_key="wrong", datadog_url=datadog_intake.url))
    assert built is not None
    try:
        [result] = await built.metrics.send([_metrics_row(1, [_gauge(1)])])
    finally:
        await built.aclose()
    assert result.status is SendStatus.DEAD
    assert "403" in (result.error or "")


async def test_413_splits_the_batch_and_it_arrives_whole(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    now = int(time.time())
    rows = [
        _metrics_row(i, [_gauge(float(i), ts=now - i, service=f"svc{i}") for _ in range(1)])
        for i in range(40)
    ]
    datadog_intake.max_series_bytes = 2_500  # about ten series a request
    results = await senders.metrics.send(rows)
    assert {r.status for r in results} == {SendStatus.DELIVERED}
    statuses = Counter(r.status for r in datadog_intake.requests)
    assert statuses[413] >= 1
    assert statuses[202] >= 4
    expected = {("ecswatch.service.running", i) for i in range(40)}
    got = {(s["metric"], int(s["points"][0]["value"])) for s in datadog_intake.series()}
    assert got == expected
    assert sum(_points(datadog_intake).values()) == 40  # whole, and nothing twice


async def test_points_older_than_an_hour_are_dropped_with_the_reason(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    before = telemetry.DATADOG_DROPPED.labels("points", "too_old")._value.get()
    old = int(time.time()) - 2 * 3600
    rows = [_metrics_row(1, [_gauge(1, ts=old)]), _metrics_row(2, [_gauge(2), _gauge(3, ts=old)])]
    results = await senders.metrics.send(rows)
    assert [r.status for r in results] == [SendStatus.DELIVERED, SendStatus.DELIVERED]
    assert [p["value"] for s in datadog_intake.series() for p in s["points"]] == [2.0]
    assert telemetry.DATADOG_DROPPED.labels("points", "too_old")._value.get() == before + 2
    # A row whose points are all too old is finished without a request.
    datadog_intake.clear()
    await senders.metrics.send([_metrics_row(3, [_gauge(1, ts=old)])])
    assert datadog_intake.requests == []


async def test_a_malformed_row_is_dead_and_spares_its_neighbours(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    bad = _metrics_row(1, [{"metric": "service.running", "points": "nonsense"}])
    results = await senders.metrics.send([bad, _metrics_row(2, [_gauge(1)])])
    assert [r.status for r in results] == [SendStatus.DEAD, SendStatus.DELIVERED]
    assert len(datadog_intake.series()) == 1


async def test_counts_of_the_same_second_are_summed_not_overwritten(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    ts = int(time.time())
    count = {"metric": "tasks.started", "points": [[ts, 2]], "tags": ["ecs_service:web"]}
    await senders.metrics.send([_metrics_row(1, [count]), _metrics_row(2, [count])])
    [series] = datadog_intake.series()
    assert series["type"] == 1
    assert series["points"] == [{"timestamp": ts, "value": 4.0}]


async def test_event_deserialises_with_tags_and_limits(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    payload = {
        "title": "Deployment failed: prod/web " + "x" * 200,
        "text": "reason " + "y" * 5_000,
        "alert_type": "error",
        "aggregation_key": "deployment:ecs-svc/123",
        "date_happened": int(time.time()),
        "tags": ["ecs_cluster_name:prod", "ecs_service:web"],
        "resource_tags": {"team": "Payments", "owner": "bob"},
    }
    [result] = await senders.events.send([_event_row(1, payload)])
    assert result.status is SendStatus.DELIVERED
    [request] = datadog_intake.requests
    assert request.headers["dd-api-key"] == API_KEY
    model = validate_and_convert_types(
        request.json, (EventCreateRequest,), ["body"], True, True, Configuration()
    )
    assert isinstance(model, EventCreateRequest)
    assert str(model.alert_type) == "error"
    assert model.aggregation_key == "deployment:ecs-svc/123"
    assert len(model.title) <= 100
    assert len(model.text) <= 4_000
    assert model.tags == ["ecs_cluster_name:prod", "ecs_service:web", "team:payments"]
    # ecswatch's own source, never the official ECS integration's ("amazon ecs").
    assert model.source_type_name == "ecswatch"


async def test_bad_event_row_is_dead(senders: DatadogSenders) -> None:
    [result] = await senders.events.send([_event_row(1, {"text": "no title"})])
    assert result.status is SendStatus.DEAD


async def test_a_400_is_narrowed_to_the_row_it_blames(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    # The whole batch is refused, then the first row alone; the second goes through.
    datadog_intake.fail_next(400, count=2)
    rows = [_metrics_row(1, [_gauge(1)]), _metrics_row(2, [_gauge(2, service="api")])]
    results = await senders.metrics.send(rows)
    assert [(r.row_id, r.status) for r in results] == [
        (1, SendStatus.DEAD),
        (2, SendStatus.DELIVERED),
    ]
    assert [s["points"][0]["value"] for s in datadog_intake.series()] == [2.0]


async def test_no_answer_is_retried(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}"  # nothing listens there
    built = build_senders(load_settings(dd_api_key=API_KEY, datadog_url=url))
    assert built is not None
    try:
        [metrics] = await built.metrics.send([_metrics_row(1, [_gauge(1)])])
        [event] = await built.events.send([_event_row(2, {"title": "t", "text": "x"})])
    finally:
        await built.aclose()
    assert (metrics.status, event.status) == (SendStatus.RETRY, SendStatus.RETRY)
    assert telemetry.DATADOG_FAILURES.labels("metrics", "network")._value.get() >= 1


async def test_nan_points_are_dropped_not_sent(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    before = telemetry.DATADOG_DROPPED.labels("points", "not_finite")._value.get()
    now = int(time.time())
    series = {**_gauge(1), "points": [[now - 1, float("nan")], [now, 5.0]]}
    [result] = await senders.metrics.send([_metrics_row(1, [series])])
    assert result.status is SendStatus.DELIVERED
    assert [p["value"] for s in datadog_intake.series() for p in s["points"]] == [5.0]
    assert telemetry.DATADOG_DROPPED.labels("points", "not_finite")._value.get() == before + 1


async def test_metrics_endpoint_shows_points_and_events_by_result(
    senders: DatadogSenders, datadog_intake: DatadogIntake, settings: Settings
) -> None:
    await senders.metrics.send([_metrics_row(1, [_gauge(1)])])
    await senders.events.send([_event_row(2, {"title": "t", "text": "x"})])
    async with open_runtime(settings, pool_size=1) as runtime:
        app = create_app(runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            text = (await client.get("/metrics")).text
    assert 'ecswatch_datadog_points_total{result="sent"}' in text
    assert 'ecswatch_datadog_events_total{result="sent"}' in text


async def test_events_older_than_datadog_takes_are_dropped_with_the_reason(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    before = telemetry.DATADOG_DROPPED.labels("events", "too_old")._value.get()
    old = {"title": "old", "text": "x", "date_happened": int(time.time()) - 20 * 3600}
    fresh = {"title": "fresh", "text": "x", "date_happened": int(time.time()) - 3600}
    results = await senders.events.send([_event_row(1, old), _event_row(2, fresh)])
    assert [r.status for r in results] == [SendStatus.DELIVERED, SendStatus.DELIVERED]
    assert [e["title"] for e in datadog_intake.events()] == ["fresh"]
    assert telemetry.DATADOG_DROPPED.labels("events", "too_old")._value.get() == before + 1


async def test_a_series_the_client_refuses_is_dead_alone(
    senders: DatadogSenders, datadog_intake: DatadogIntake
) -> None:
    bad = {**_gauge(1), "tags": ["ok:1", 5]}  # a tag that is not a string
    results = await senders.metrics.send([_metrics_row(1, [bad]), _metrics_row(2, [_gauge(2)])])
    assert [r.status for r in results] == [SendStatus.DEAD, SendStatus.DELIVERED]
    assert "invalid series" in (results[0].error or "")
    assert [s["points"][0]["value"] for s in datadog_intake.series()] == [2.0]


async def test_requests_stay_under_the_senders_own_size(datadog_intake: DatadogIntake) -> None:
    configuration = client_configuration(
        load_settings(dd_api_key=API_KEY, datadog_url=datadog_intake.url)
    )
    assert configuration is not None
    sender = DatadogMetricsSender(configuration, request_bytes=3_000)
    try:
        rows = [_metrics_row(i, [_gauge(float(i), service=f"s{i}")]) for i in range(30)]
        results = await sender.send(rows)
    finally:
        await sender.aclose()
    assert {r.status for r in results} == {SendStatus.DELIVERED}
    assert len(datadog_intake.requests) >= 3
    assert all(len(r.body) <= 3_000 for r in datadog_intake.requests)
    assert len(datadog_intake.series()) == 30
