"""What an event shows, as facts (pure): tables of events and the facts they give."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.datadog.facts import deployment_facts, derive, stamp
from service.demo.events import container_instance_events, envelope, task_lifecycle
from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.snapshot import DeploymentSnapshot, failure_summary
from service.events.normalise import parse_message

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _parse(event: dict[str, Any]) -> Any:
    return parse_message(json.dumps(event), received_at=NOW)


def _stopped(**detail: Any) -> dict[str, Any]:
    events = task_lifecycle(random.Random(1), start=NOW - timedelta(minutes=5))
    last = events[-1]
    last["detail"].update(detail)
    return last


@pytest.mark.parametrize(
    ("detail", "keys", "events"),
    [
        (
            {"stopCode": "TaskFailedToStart", "stoppedReason": "CannotPullContainerError"},
            {"started", "stopped", "exit:app"},
            ["ECS task failed to start: prod/web"],
        ),
        (
            {
                "containers": [
                    {"name": "app", "exitCode": 137, "reason": "OutOfMemoryError: Container killed"}
                ]
            },
            {"started", "stopped", "exit:app", "oom:app"},
            ["ECS container killed out of memory: prod/web"],
        ),
        (
            {"containers": [{"name": "app", "exitCode": 1}, {"name": "sidecar"}]},
            {"started", "stopped", "exit:app"},
            [],
        ),
    ],
)
def test_task_facts(detail: dict[str, Any], keys: set[str], events: list[str]) -> None:
    event = _parse(_stopped(**detail))
    facts = derive([event], {}, NOW).facts
    arn = event.detail.task_arn
    assert {f.key.removeprefix(f"task:{arn}:") for f in facts} == keys
    assert [f.event.title for f in facts if f.event] == events
    for fact in facts:
        if fact.event:
            assert arn in fact.event.text  # the ARN is in the text, never in a tag
            assert fact.event.alert_type == "error"


def test_failed_to_start_text_carries_the_reason() -> None:
    event = _parse(_stopped(stopCode="TaskFailedToStart", stoppedReason="CannotPullContainer"))
    [fact] = [f for f in derive([event], {}, NOW).facts if f.event]
    assert fact.event is not None
    assert "reason: CannotPullContainer" in fact.event.text
    assert "cluster: prod" in fact.event.text


@pytest.mark.parametrize(
    ("event_type", "alert"), [("WARN", "warning"), ("ERROR", "error"), ("INFO", None)]
)
def test_service_actions(event_type: str, alert: str | None) -> None:
    detail = {
        "eventType": event_type,
        "eventName": "SERVICE_TASK_PLACEMENT_FAILURE",
        "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        "createdAt": "2026-12-01T11:00:00.000Z",
        "reason": "RESOURCE:MEMORY",
    }
    arn = "arn:aws:ecs:us-east-1:123456789012:service/prod/web"
    facts = derive([_parse(envelope("ECS Service Action", [arn], detail, NOW))], {}, NOW).facts
    assert [f.event.alert_type for f in facts if f.event] == ([alert] if alert else [])


def test_instance_health_impaired_then_ok() -> None:
    arn = "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/abc"
    detail: dict[str, Any] = {
        "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        "containerInstanceArn": arn,
        "overallStatus": "IMPAIRED",
        "healthChecks": [{"type": "CONTAINER_RUNTIME", "status": "IMPAIRED"}],
        "updatedAt": "2026-12-01T11:00:00.000Z",
    }
    impaired = _parse(envelope("ECS Container Instance Health Change", [arn], detail, NOW))
    derived = derive([impaired], {}, NOW)
    [fact] = derived.facts
    assert fact.key == f"ci:{arn}:impaired"
    assert fact.event is not None
    assert "CONTAINER_RUNTIME" in fact.event.text
    ok = _parse(
        envelope(
            "ECS Container Instance Health Change", [arn], {**detail, "overallStatus": "OK"}, NOW
        )
    )
    assert derive([ok], {}, NOW).forget == [f"ci:{arn}:impaired"]


def test_a_stale_active_state_does_not_end_a_draining_episode() -> None:
    [event] = container_instance_events(random.Random(3), count=1)
    parsed = _parse(event)
    assert derive([parsed], {parsed.envelope.id: False}, NOW).forget == []
    assert derive([parsed], {parsed.envelope.id: True}, NOW).forget != []


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (NOW - timedelta(minutes=10), NOW - timedelta(minutes=10)),
        (NOW - timedelta(hours=2), NOW),  # too old for Datadog: counted now
        (NOW + timedelta(minutes=5), NOW),  # a clock ahead of ours
    ],
)
def test_stamp(at: datetime, expected: datetime) -> None:
    assert stamp(at, NOW) == expected


@pytest.mark.parametrize(
    ("outcome", "keys", "alert"),
    [
        ("in_progress", ["started"], None),
        ("succeeded", ["started", "succeeded"], "success"),
        ("failed", ["started", "failed"], "error"),
        ("rolled_back", ["started", "rolled_back"], "warning"),
        ("rollback_failed", ["started", "rollback_failed"], "error"),
    ],
)
def test_deployment_facts(outcome: str, keys: list[str], alert: str | None) -> None:
    snapshot = DeploymentSnapshot(
        id="ecs-svc/1",
        kind=DeploymentKind.ROLLING,
        outcome=Outcome(outcome),
        cluster="prod",
        service="web",
        started_at=NOW - timedelta(minutes=30),
        finished_at=None if outcome == "in_progress" else NOW - timedelta(minutes=20),
        last_event_name="SERVICE_DEPLOYMENT_IN_PROGRESS",
        rollback_target="ecs-svc/0" if outcome == "rolled_back" else None,
    )
    facts = deployment_facts(snapshot, NOW)
    assert [f.key.removeprefix("deployment:ecs-svc/1:") for f in facts] == keys
    assert all(f.event and f.event.aggregation_key == "ecs-svc/1" for f in facts)
    if alert:
        assert facts[-1].event is not None
        assert facts[-1].event.alert_type == alert
        duration = [c for c in facts[-1].contributions if c.metric.value == "deployment.duration"]
        assert duration[0].value == 600


def test_one_deployment_id_in_two_scopes_is_grouped_apart() -> None:
    # Deployment ids are unique only within an account and region: Datadog must not
    # group two scopes' deployments of one id into one event thread.
    def snapshot(account: str, region: str) -> DeploymentSnapshot:
        return DeploymentSnapshot(
            id="ecs-svc/1",
            kind=DeploymentKind.ROLLING,
            outcome=Outcome.FAILED,
            cluster="prod",
            service="web",
            started_at=NOW - timedelta(minutes=30),
            finished_at=NOW - timedelta(minutes=20),
            last_event_name="SERVICE_DEPLOYMENT_FAILED",
            account_id=account,
            region=region,
        )

    keys = {
        (f.key, f.event.aggregation_key)
        for scope in (("111111111111", "us-east-1"), ("222222222222", "us-east-1"))
        for f in deployment_facts(snapshot(*scope), NOW)
        if f.event is not None
    }
    assert {a for _, a in keys} == {
        "111111111111/us-east-1/ecs-svc/1",
        "222222222222/us-east-1/ecs-svc/1",
    }
    assert len({k for k, _ in keys}) == 4  # started and failed, in each scope


def test_a_failure_is_worded_once_for_alerts_and_datadog() -> None:
    from service.alerts.rules import AlertType, deployment_alerts

    snapshot = DeploymentSnapshot(
        id="ecs-svc/1",
        kind=DeploymentKind.ROLLING,
        outcome=Outcome.ROLLED_BACK,
        cluster="prod",
        service="web",
        reason="circuit breaker: 3 tasks failed",
        rollback_target="ecs-svc/0",
        started_at=NOW - timedelta(minutes=30),
        finished_at=NOW - timedelta(minutes=20),
    )
    wording = failure_summary(snapshot)
    assert wording == (
        "Deployment ecs-svc/1 of prod/web failed: circuit breaker: 3 tasks failed;"
        " rolling back to ecs-svc/0"
    )
    [failed] = [
        a for a in deployment_alerts(snapshot, now=NOW) if a.type is AlertType.DEPLOYMENT_FAILED
    ]
    assert failed.summary == wording
    [fact] = [f for f in deployment_facts(snapshot, NOW) if f.key.endswith(":rolled_back")]
    assert fact.event is not None
    assert fact.event.text.splitlines()[0] == f"summary: {wording}"
