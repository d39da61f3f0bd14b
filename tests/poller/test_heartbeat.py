"""The heartbeat on moto: bus → rule → queue → consumer → its age in /metrics and Datadog.

The leader's heartbeat job puts the event on moto's default bus; the rule that
``ecswatch aws setup`` creates delivers it to the queue; the consumer's handler
records its time and stores nothing else. The Datadog job then sends the age to
the local intake through the real dispatcher: small after a heartbeat, past the
monitor's threshold once heartbeats stop.

CloudWatch alarms are not evaluated by moto (it stores them and their state,
set by hand). The alarm test evaluates the template's alarm definition (metric,
statistic, period, threshold, comparison, missing-data treatment) against the
datapoints moto's CloudWatch returns, as CloudWatch would, for a window with
heartbeats and one after they stopped. moto's SQS publishes no metrics, so the
test puts the ``NumberOfMessagesSent`` points SQS publishes (one message per
heartbeat, on the heartbeat schedule).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import telemetry
from service.api.routes.prometheus import refresh_outbox_gauges
from service.aws.calls import AwsCaller
from service.aws.events import HEARTBEAT_DETAIL_TYPE, HEARTBEAT_SOURCE, EventsApi
from service.aws.limiter import Limiter
from service.aws.setup import EVENT_PATTERN, setup_event_pipeline
from service.config import load_settings
from service.consumer.handler import Handler, Message
from service.datadog.forwarder import open_datadog_senders
from service.datadog.gauges import DatadogJob, collect_gauges
from service.datadog.metrics import MetricName
from service.demo.intake import DatadogIntake
from service.outbox.dispatcher import Dispatcher, build_registry
from service.outbox.retry import RetryPolicy
from service.poller.heartbeat import Heartbeat, heartbeat_job
from service.poller.leader import LeaderLock
from service.runtime import Runtime
from service.state.heartbeats import heartbeat_age_s
from tests.cfn_template import load_template
from tests.rig.fixtures import REGION
from tests.rig.outbox import drain_outbox

FAST = RetryPolicy(base_s=0.05, cap_s=0.2, budget_s=3600)
MONITORS = "service/datadog/assets/monitors.json"


def _monitor_threshold() -> float:
    """The heartbeat monitor's critical threshold, from its query (and its options)."""
    path = Path(__file__).resolve().parents[2] / MONITORS
    [entry] = [m for m in json.loads(path.read_text("utf-8")) if m["key"] == "heartbeat_stale"]
    query = entry["monitor"]["query"]
    match = re.fullmatch(r"min\(last_5m\):max:ecswatch\.self\.heartbeat\.age\{\*\} > (\d+)", query)
    assert match, query
    threshold = float(match.group(1))
    assert entry["monitor"]["options"]["thresholds"]["critical"] == threshold
    # No point at all (no dispatcher, no heartbeat ever) alerts too.
    assert entry["monitor"]["options"]["notify_no_data"] is True
    return threshold


class Pipeline:
    """moto's queue and rule as ``ecswatch aws setup`` makes them, and the leader's job."""

    def __init__(self, sqs: Any, queue_url: str, heartbeat: Heartbeat) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.heartbeat = heartbeat

    async def receive(self, within: float = 10.0) -> list[Message]:
        async with asyncio.timeout(within):
            while True:
                answer = await self.sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                messages = answer.get("Messages", [])
                if messages:
                    return [
                        Message(m["MessageId"], m["Body"], receipt_handle=m["ReceiptHandle"])
                        for m in messages
                    ]

    async def delete(self, messages: list[Message]) -> None:
        for message in messages:
            await self.sqs.delete_message(
                QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle
            )


@pytest.fixture
async def pipeline(aws_env: str) -> AsyncIterator[Pipeline]:
    session = get_session()
    async with (
        session.create_client("sqs", endpoint_url=aws_env, region_name=REGION) as sqs,
        session.create_client("events", endpoint_url=aws_env, region_name=REGION) as events,
    ):
        name = f"hb-{uuid.uuid4().hex[:12]}"
        resources = await setup_event_pipeline(sqs, events, name)
        caller = AwsCaller(Limiter(), region=REGION)
        try:
            yield Pipeline(sqs, resources.queue_url, Heartbeat(EventsApi(events, caller)))
        finally:
            rule = f"ecswatch-{name}"
            await events.remove_targets(Rule=rule, Ids=["ecswatch-sqs"])
            await events.delete_rule(Name=rule)
            await sqs.delete_queue(QueueUrl=resources.queue_url)
            await sqs.delete_queue(QueueUrl=resources.dlq_url)


async def _consume(pipeline: Pipeline, handler: Handler) -> list[Message]:
    messages = await pipeline.receive()
    result = await handler.handle(messages)
    assert not result.retry
    assert set(result.outcomes.values()) == {"heartbeat"}
    await pipeline.delete(result.done)
    return messages


def _ages(intake: DatadogIntake) -> dict[int, float]:
    return {
        p["timestamp"]: p["value"]
        for s in intake.series()
        if s["metric"] == "ecswatch.self.heartbeat.age"
        for p in s["points"]
    }


async def test_heartbeat_goes_through_the_pipeline_and_its_age_grows_when_it_stops(
    pipeline: Pipeline,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    runtime: Runtime,
    datadog_intake: DatadogIntake,
) -> None:
    threshold = _monitor_threshold()
    handler = Handler(sessionmaker)
    # The leader's job ran 15 minutes ago, and not since.
    sent_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)
    job = heartbeat_job(pipeline.heartbeat, 120)
    assert job.name == "heartbeat"
    await job.run(sent_at)

    [message] = await _consume(pipeline, handler)
    event = json.loads(message.body)
    assert (event["source"], event["detail-type"]) == (HEARTBEAT_SOURCE, HEARTBEAT_DETAIL_TYPE)
    async with engine.connect() as conn:
        [(last_at,)] = (await conn.execute(text("SELECT last_at FROM heartbeats"))).all()
        stored = (await conn.execute(text("SELECT count(*) FROM raw_events"))).scalar_one()
        alerts = (await conn.execute(text("SELECT count(*) FROM alerts"))).scalar_one()
    assert last_at == sent_at  # the heartbeat's own time
    assert (stored, alerts) == (0, 0)  # never an ECS event, never an alert

    settings = load_settings(dd_api_key="k", datadog_url=datadog_intake.url)
    async with open_datadog_senders(settings) as senders:
        dispatcher = Dispatcher(
            engine, sessionmaker, build_registry(senders), policy=FAST, jitter=lambda: 0.0
        )
        job_dd = DatadogJob(sessionmaker, interval_s=60)
        # A minute after the heartbeat: fresh.
        await job_dd.run_once(now=sent_at + timedelta(minutes=1))
        await drain_outbox(dispatcher, engine)
        fresh = _ages(datadog_intake)
        assert list(fresh.values()) == [60.0]
        # Heartbeats stopped: now, 15 minutes later, the age is past the monitor's threshold.
        now = datetime.now(UTC)
        await job_dd.run_once(now=now)
        await drain_outbox(dispatcher, engine)
    grown = {ts: v for ts, v in _ages(datadog_intake).items() if ts not in fresh}
    [age] = grown.values()
    assert age > threshold >= 60.0
    assert age >= (now - sent_at).total_seconds() - 1

    # /metrics reads the same row.
    await refresh_outbox_gauges(runtime)
    scraped = telemetry.REGISTRY.get_sample_value("ecswatch_heartbeat_age_seconds")
    assert scraped is not None
    assert scraped > threshold

    # The next heartbeat resets the age.
    await pipeline.heartbeat.beat(datetime.now(UTC).replace(microsecond=0))
    await _consume(pipeline, handler)
    await refresh_outbox_gauges(runtime)
    scraped = telemetry.REGISTRY.get_sample_value("ecswatch_heartbeat_age_seconds")
    assert scraped is not None
    assert scraped < 60.0
    async with engine.connect() as conn:
        age_now = await heartbeat_age_s(conn)
    assert age_now is not None
    assert age_now < 60.0


async def test_an_older_heartbeat_never_moves_the_time_back(
    pipeline: Pipeline, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    handler = Handler(sessionmaker)
    newer = datetime.now(UTC).replace(microsecond=0)
    await pipeline.heartbeat.beat(newer)
    await _consume(pipeline, handler)
    await pipeline.heartbeat.beat(newer - timedelta(minutes=5))  # late or redelivered
    await _consume(pipeline, handler)
    async with engine.connect() as conn:
        last_at = (await conn.execute(text("SELECT last_at FROM heartbeats"))).scalar_one()
    assert last_at == newer


async def test_no_heartbeat_ever_reads_as_infinitely_old(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    # The per-test truncation removed the row the migration seeds.
    await refresh_outbox_gauges(runtime)
    assert telemetry.REGISTRY.get_sample_value("ecswatch_heartbeat_age_seconds") == float("inf")


# --- the CloudWatch alarm, evaluated as CloudWatch does ---------------------------------------

_COMPARE = {
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
}


def _alarm(name: str) -> dict[str, Any]:
    props: dict[str, Any] = load_template()["Resources"][name]["Properties"]
    return props


async def _evaluate(cloudwatch: Any, alarm: dict[str, Any], queue: str, end: datetime) -> str:
    """ALARM or OK: the last ``EvaluationPeriods`` periods before ``end``, every one
    breaching (DatapointsToAlarm defaults to EvaluationPeriods); a period without a
    datapoint counts as ``TreatMissingData`` says."""
    period = int(alarm["Period"])
    periods = int(alarm["EvaluationPeriods"])
    start = end - timedelta(seconds=period * periods)
    [result] = (
        await cloudwatch.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "m",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": alarm["Namespace"],
                            "MetricName": alarm["MetricName"],
                            "Dimensions": [{"Name": "QueueName", "Value": queue}],
                        },
                        "Period": period,
                        "Stat": alarm["Statistic"],
                    },
                }
            ],
            StartTime=start,
            EndTime=end,
        )
    )["MetricDataResults"]
    values = {
        int(ts.timestamp()): v for ts, v in zip(result["Timestamps"], result["Values"], strict=True)
    }
    compare = _COMPARE[alarm["ComparisonOperator"]]
    threshold = float(alarm["Threshold"])
    breaching = []
    for n in range(periods):
        at = int(start.timestamp()) + n * period
        if at in values:
            breaching.append(compare(values[at], threshold))
        else:
            missing = alarm["TreatMissingData"]
            assert missing in ("breaching", "notBreaching")
            breaching.append(missing == "breaching")
    return "ALARM" if all(breaching) else "OK"


async def test_a_heartbeat_gap_raises_the_cloudwatch_alarm(aws_env: str) -> None:
    alarm = _alarm("HeartbeatMissingAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "NumberOfMessagesSent")
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsQueue", "QueueName"]}}
    ]
    assert alarm["AlarmActions"] == {
        "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
    }
    interval = load_settings().heartbeat_interval_s
    window = int(alarm["Period"]) * int(alarm["EvaluationPeriods"])
    # Every period holds at least two heartbeats: one lost message alarms no one.
    assert int(alarm["Period"]) >= 2 * interval
    period = int(alarm["Period"])
    end_epoch = int(datetime.now(UTC).timestamp()) // period * period
    end = datetime.fromtimestamp(end_epoch, UTC)
    healthy, stopped = f"hb-ok-{uuid.uuid4().hex[:8]}", f"hb-gap-{uuid.uuid4().hex[:8]}"

    async with get_session().create_client(
        "cloudwatch", endpoint_url=aws_env, region_name=REGION
    ) as cloudwatch:
        # The alarm as the template defines it is accepted by the API.
        await cloudwatch.put_metric_alarm(
            AlarmName=f"{stopped}-heartbeat",
            Namespace=alarm["Namespace"],
            MetricName=alarm["MetricName"],
            Dimensions=[{"Name": "QueueName", "Value": stopped}],
            Statistic=alarm["Statistic"],
            Period=period,
            EvaluationPeriods=int(alarm["EvaluationPeriods"]),
            Threshold=float(alarm["Threshold"]),
            ComparisonOperator=alarm["ComparisonOperator"],
            TreatMissingData=alarm["TreatMissingData"],
        )
        [described] = (await cloudwatch.describe_alarms(AlarmNames=[f"{stopped}-heartbeat"]))[
            "MetricAlarms"
        ]
        assert described["TreatMissingData"] == "breaching"

        # SQS counts one message per heartbeat: every interval for the last 30 minutes
        # on one queue; on the other, none in the alarm's window (stopped before it).
        first = end - timedelta(minutes=30)
        beats = [first + timedelta(seconds=s) for s in range(0, 30 * 60, interval)]
        for queue, times in (
            (healthy, beats),
            (stopped, [t for t in beats if t < end - timedelta(seconds=window + interval)]),
        ):
            await cloudwatch.put_metric_data(
                Namespace="AWS/SQS",
                MetricData=[
                    {
                        "MetricName": "NumberOfMessagesSent",
                        "Dimensions": [{"Name": "QueueName", "Value": queue}],
                        "Timestamp": t,
                        "Value": 1.0,
                        "Unit": "Count",
                    }
                    for t in times
                ],
            )
        assert await _evaluate(cloudwatch, alarm, healthy, end) == "OK"
        assert await _evaluate(cloudwatch, alarm, stopped, end) == "ALARM"
        # A queue nothing ever reached publishes nothing: missing data breaches.
        assert (
            await _evaluate(cloudwatch, alarm, f"hb-never-{uuid.uuid4().hex[:8]}", end) == "ALARM"
        )


def test_the_template_rule_and_aws_setup_match_the_same_sources() -> None:
    template = load_template()["Resources"]
    rule = template["EcsEventsRule"]["Properties"]
    assert rule["EventPattern"] == EVENT_PATTERN
    assert HEARTBEAT_SOURCE in EVENT_PATTERN["source"]
    # The runtime role may put the heartbeat, and only it, on the default bus.
    statements = [
        s
        for p in template["RuntimeTaskRole"]["Properties"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
    ]
    [put] = [s for s in statements if s["Action"] == "events:PutEvents"]
    assert put["Condition"] == {"StringEquals": {"events:source": HEARTBEAT_SOURCE}}
    assert put["Resource"]["Fn::Sub"].endswith(":event-bus/default")


def _heartbeat_body(at: datetime) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": HEARTBEAT_DETAIL_TYPE,
            "source": HEARTBEAT_SOURCE,
            "account": "123456789012",
            "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [],
            "detail": {},
        }
    )


async def test_a_heartbeat_the_database_refuses_stays_in_the_queue(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    handler = Handler(sessionmaker)
    message = Message("m-1", _heartbeat_body(datetime.now(UTC)))
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE heartbeats RENAME TO heartbeats_away"))
    try:
        result = await handler.handle([message])
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE heartbeats_away RENAME TO heartbeats"))
    assert (result.done, result.retry) == ([], [message])
    result = await handler.handle([message])
    assert (result.done, result.outcomes) == ([message], {"m-1": "heartbeat"})


async def test_a_future_heartbeat_is_recorded_as_consumed_now(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # A clock ahead (or a forged time) never hides an age that grows.
    now = datetime.now(UTC).replace(microsecond=0)
    result = await Handler(sessionmaker).handle(
        [Message("m-2", _heartbeat_body(now + timedelta(hours=1)))], now=now
    )
    assert result.outcomes == {"m-2": "heartbeat"}
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT scope, last_at FROM heartbeats"))).all()
    # ecswatch's own row, and its scope's (the event's account and region).
    assert {scope for scope, _ in rows} == {"self", f"123456789012/{REGION}"}
    assert all(last_at == now for _, last_at in rows)


async def test_the_leaders_gauge_counts_the_lock_holder(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async def leaders() -> list[float]:
        async with sessionmaker() as session:
            series = await collect_gauges(session, now=datetime.now(UTC), interval_s=60)
        return [
            p[1]
            for s in series
            if s["metric"] == MetricName.SELF_POLLER_LEADERS.value
            for p in s["points"]
        ]

    assert await leaders() == [0.0]
    lock = LeaderLock.for_engine(engine)
    assert await lock.try_acquire()
    try:
        assert await leaders() == [1.0]
    finally:
        await lock.release()
    assert await leaders() == [0.0]
