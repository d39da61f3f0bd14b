"""Alert rules as tables: which alerts a deployment deserves, crash loops, stuck, matching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.alerts.rules import (
    CAUSE_ALERTS,
    AlertRules,
    AlertType,
    Subscription,
    alert_id,
    awaiting_service,
    cooldown_window,
    deployment_alerts,
    matches,
    noisy_alert,
    recovery_alert,
)
from service.alerts.slack import slack_message
from service.deployments.cause import Category, Cause, Evidence, EvidenceKind
from service.deployments.outcome import DeploymentKind, Outcome
from service.deployments.rules import crash_looping, is_failed_start, is_stuck
from service.deployments.snapshot import DeploymentSnapshot, target_groups

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def snap(outcome: str, **kw: object) -> DeploymentSnapshot:
    base: dict[str, object] = {
        "id": "ecs-svc/2",
        "kind": DeploymentKind.ROLLING,
        "outcome": Outcome(outcome),
        "cluster": "prod",
        "service": "web",
    }
    base.update(kw)
    if isinstance(base["kind"], str):
        base["kind"] = DeploymentKind(base["kind"])
    return DeploymentSnapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (snap("in_progress"), []),
        (snap("succeeded"), ["deployment.succeeded"]),
        (snap("succeeded", is_rollback_target=True), []),
        (snap("failed", rollback_target="ecs-svc/1"), ["deployment.failed"]),
        (snap("failed"), ["deployment.failed"]),
        (
            snap("rolled_back", rollback_target="ecs-svc/1"),
            ["deployment.failed", "deployment.rolled_back"],
        ),
        (snap("rollback_failed"), ["deployment.failed"]),
        (snap("stopped"), []),
        (snap("in_progress", stuck=True), ["deployment.stuck"]),
        (snap("succeeded", stuck=True), ["deployment.succeeded"]),
    ],
)
def test_deployment_alerts(snapshot: DeploymentSnapshot, expected: list[str]) -> None:
    drafts = deployment_alerts(snapshot, now=NOW)
    assert [d.type.value for d in drafts] == expected
    for d in drafts:
        assert d.dedupe_key == f"{d.type.value}:ecs-svc/2"
        assert d.id == alert_id(d.dedupe_key) == d.body["id"]
        assert d.body["deployment"]["id"] == "ecs-svc/2"
        assert set(d.body) >= {
            "type",
            "id",
            "created_at",
            "cluster",
            "service",
            "deployment",
            "summary",
            "events",
        }


def test_failed_summary_names_the_rollback_target() -> None:
    [failed] = deployment_alerts(
        snap("failed", rollback_target="ecs-svc/1", reason="circuit breaker"), now=NOW
    )
    assert failed.summary == (
        "Deployment ecs-svc/2 of prod/web failed: circuit breaker; rolling back to ecs-svc/1"
    )
    assert failed.body["deployment"]["rollback_target"] == "ecs-svc/1"


@pytest.mark.parametrize(
    ("stop_code", "reason", "exits", "failed"),
    [
        ("TaskFailedToStart", None, [], True),
        (None, "CannotPullContainerError: pull access denied", [], True),
        ("TaskFailedToStart", "ResourceInitializationError: secrets", [], True),
        ("EssentialContainerExited", "Essential container in task exited", [1], True),
        ("EssentialContainerExited", "Essential container in task exited", [0], False),
        ("EssentialContainerExited", "Essential container in task exited", [None], False),
        ("UserInitiated", "Task stopped by user", [137], False),
        ("ServiceSchedulerInitiated", "Scaling activity", [0], False),
        ("SpotInterruption", "Your Spot Task was interrupted.", [], False),
    ],
)
def test_is_failed_start(
    stop_code: str | None, reason: str | None, exits: list[int | None], failed: bool
) -> None:
    assert is_failed_start(stop_code, reason, [{"exit_code": e} for e in exits]) is failed


def _mins(*m: float) -> list[datetime]:
    return [NOW + timedelta(minutes=x) for x in m]


@pytest.mark.parametrize(
    ("stops", "looping"),
    [
        (_mins(), False),
        (_mins(0, 1), False),
        (_mins(0, 1, 2), True),
        (_mins(0, 6, 12), False),  # 3 failures, never 3 within 10 min
        (_mins(0, 6, 12, 13), True),  # 6, 12, 13 are
        (_mins(0, 10, 5), True),  # exactly the window, any order
    ],
)
def test_crash_looping(stops: list[datetime], looping: bool) -> None:
    assert crash_looping(stops, tasks=3, window_s=600) is looping


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=8), st.randoms())
def test_crash_looping_ignores_order(seconds: list[int], rnd: object) -> None:
    stops = [NOW + timedelta(seconds=s) for s in seconds]
    shuffled = list(stops)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert crash_looping(stops, tasks=3, window_s=600) == crash_looping(
        shuffled, tasks=3, window_s=600
    )


@pytest.mark.parametrize(
    ("outcome", "age_min", "running", "stuck"),
    [
        ("in_progress", 31, 0, True),
        ("in_progress", 29, 0, False),
        ("in_progress", 31, 1, False),
        ("succeeded", 31, 0, False),
        ("failed", 300, 0, False),
    ],
)
def test_is_stuck(outcome: str, age_min: int, running: int, stuck: bool) -> None:
    started = NOW - timedelta(minutes=age_min)
    got = is_stuck(
        outcome=Outcome(outcome), started_at=started, running_tasks=running, now=NOW, after_s=1800
    )
    assert got is stuck


def test_noisy_alerts_share_a_key_within_a_cooldown_window() -> None:
    rules = AlertRules(cooldown_s=900)

    def key(at: datetime, account: str = "111111111111", region: str = "eu-west-1") -> str:
        return noisy_alert(
            AlertType.SERVICE_PLACEMENT_FAILURE,
            scope="prod/web",
            account_id=account,
            region=region,
            at=at,
            rules=rules,
            now=NOW,
            cluster="prod",
            service="web",
            service_arn=None,
            summary="s",
            event_id="e",
        ).dedupe_key

    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a window boundary (900 s divides it)
    assert key(start) == key(start + timedelta(minutes=14))
    assert key(start) != key(start + timedelta(minutes=15))
    # The same names in another account or region are another service: another alert.
    assert key(start) != key(start, account="222222222222")
    assert key(start) != key(start, region="us-east-1")
    assert cooldown_window(start, 0) != cooldown_window(start + timedelta(seconds=1), 0)


@pytest.mark.parametrize(
    ("sub", "tags", "wanted"),
    [
        (Subscription("w", frozenset({"deployment.failed"})), {}, True),
        (Subscription("w", frozenset({"deployment.succeeded"})), {}, False),
        (Subscription("w", frozenset({"deployment.failed"}), cluster="prod"), {}, True),
        (
            Subscription(
                "w",
                frozenset({"deployment.failed"}),
                cluster="arn:aws:ecs:us-east-1:1:cluster/prod",
            ),
            {},
            True,
        ),
        (Subscription("w", frozenset({"deployment.failed"}), cluster="staging"), {}, False),
        (Subscription("w", frozenset({"deployment.failed"}), service="web"), {}, True),
        (Subscription("w", frozenset({"deployment.failed"}), service="api"), {}, False),
        (
            Subscription("w", frozenset({"deployment.failed"}), tag="team:web"),
            {"team": "web"},
            True,
        ),
        (
            Subscription("w", frozenset({"deployment.failed"}), tag="team:web"),
            {"team": "db"},
            False,
        ),
        (Subscription("w", frozenset({"deployment.failed"}), tag="team:web"), {}, False),
        (Subscription("w", frozenset({"deployment.failed"}), account_id="111111111111"), {}, True),
        (
            Subscription("w", frozenset({"deployment.failed"}), account_id="222222222222"),
            {},
            False,
        ),
        (Subscription("w", frozenset({"deployment.failed"}), region="eu-west-1"), {}, True),
        (Subscription("w", frozenset({"deployment.failed"}), region="us-east-1"), {}, False),
    ],
)
def test_matches(sub: Subscription, tags: dict[str, str], wanted: bool) -> None:
    arn = "arn:aws:ecs:eu-west-1:111111111111:service/prod/web"
    [alert] = deployment_alerts(snap("failed", service_arn=arn), now=NOW)
    assert (alert.body["account_id"], alert.body["region"]) == ("111111111111", "eu-west-1")
    assert matches(sub, alert, tags) is wanted


def test_a_deployment_without_arns_says_no_scope_and_a_scoped_filter_skips_it() -> None:
    [alert] = deployment_alerts(snap("failed"), now=NOW)
    assert (alert.body["account_id"], alert.body["region"]) == (None, None)
    sub = Subscription("w", frozenset({"deployment.failed"}), account_id="111111111111")
    assert not matches(sub, alert, {})
    cluster_only = snap("failed", cluster_arn="arn:aws:ecs:us-east-2:333333333333:cluster/prod")
    [alert] = deployment_alerts(cluster_only, now=NOW)
    assert (alert.body["account_id"], alert.body["region"]) == ("333333333333", "us-east-2")


# ------------------------------------------- CodeDeploy hold and target groups


@pytest.mark.parametrize(
    ("kind", "service", "resolved", "age_s", "held"),
    [
        ("codedeploy", None, False, 10, True),  # group not mapped yet, seen just now
        ("codedeploy", None, False, 121, False),  # the hold is over
        ("codedeploy", None, True, 10, False),  # mapped: CodeDeploy names no service
        ("codedeploy", "web", False, 10, False),  # named (override or mapping)
        ("rolling", None, False, 10, False),  # only CodeDeploy deployments wait
    ],
)
def test_codedeploy_alerts_wait_for_the_group_mapping(
    kind: str, service: str | None, resolved: bool, age_s: float, held: bool
) -> None:
    d = snap(
        "failed",
        kind=kind,
        service=service,
        group_resolved=resolved,
        last_event_at=NOW - timedelta(seconds=age_s),
        codedeploy_application="shop",
        codedeploy_group="blue",
    )
    drafts = deployment_alerts(d, now=NOW, hold_s=120)
    assert (drafts == []) is held
    assert awaiting_service(d, now=NOW, hold_s=120) is held
    assert deployment_alerts(d, now=NOW, hold_s=0)  # no hold configured: at once


TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{}/0123456789abcdef"


def test_target_groups_from_the_service_and_the_codedeploy_pair() -> None:
    lbs = [
        {"target_group_arn": TG.format("blue"), "alternate_target_group_arn": TG.format("green")}
    ]
    assert target_groups(lbs, None) == (
        {"name": "blue", "arn": TG.format("blue")},
        {"name": "green", "arn": TG.format("green")},
    )
    # CodeDeploy's pair (names) first; the service's ARN fills in the one it knows.
    pair = [{"name": "cd-green", "arn": None}, {"name": "blue", "arn": None}]
    assert target_groups([{"target_group_arn": TG.format("blue")}], pair) == (
        {"name": "cd-green", "arn": None},
        {"name": "blue", "arn": TG.format("blue")},
    )
    assert target_groups(None, None) == ()
    assert target_groups([{"target_group_arn": None, "container_name": "app"}], []) == ()


def test_blue_green_summaries_name_the_target_groups_rolling_ones_do_not() -> None:
    tgs = ({"name": "blue", "arn": None}, {"name": "green", "arn": None})
    [bg] = deployment_alerts(snap("failed", kind="blue_green", target_groups=tgs), now=NOW)
    assert bg.summary.endswith("(target groups blue, green)")
    assert bg.body["deployment"]["target_groups"] == [dict(t) for t in tgs]
    [rolling] = deployment_alerts(snap("failed", target_groups=tgs), now=NOW)
    assert "target groups" not in rolling.summary
    assert rolling.body["deployment"]["target_groups"] == [dict(t) for t in tgs]


# ------------------------------------------------------------------ the cause


OOM = Cause(
    Category.OUT_OF_MEMORY,
    "container web was killed for memory (exit 137, OutOfMemoryError) in 3 of 3 failed tasks",
    container="web",
    exit_code=137,
    evidence=(Evidence(NOW, EvidenceKind.TASK_STOPPED, "task 1 stopped"),),
)


@pytest.mark.parametrize(
    ("outcome", "stuck", "types"),
    [
        ("failed", False, {"deployment.failed"}),
        ("rolled_back", False, {"deployment.failed", "deployment.rolled_back"}),
        ("in_progress", True, {"deployment.stuck"}),
    ],
)
def test_failure_and_stuck_bodies_carry_the_cause(
    outcome: str, stuck: bool, types: set[str]
) -> None:
    drafts = deployment_alerts(snap(outcome, stuck=stuck, cause=OOM), now=NOW)
    assert {d.type.value for d in drafts} == types
    for draft in drafts:
        assert draft.type in CAUSE_ALERTS
        assert draft.body["deployment"]["cause"] == {
            "category": "out_of_memory",
            "summary": OOM.summary,
            "container": "web",
            "exit_code": 137,
            "evidence": [
                {"at": NOW.isoformat(), "kind": "task_stopped", "detail": "task 1 stopped"}
            ],
        }


def test_a_success_body_has_a_null_cause() -> None:
    [draft] = deployment_alerts(snap("succeeded"), now=NOW)
    assert draft.body["deployment"]["cause"] is None


def test_a_recovery_names_the_failure_it_closes_and_is_keyed_by_the_fix() -> None:
    draft = recovery_alert(snap("succeeded", id="ecs-svc/3"), "ecs-svc/2", now=NOW)
    assert draft.type is AlertType.DEPLOYMENT_RECOVERED
    assert draft.dedupe_key == "deployment.recovered:ecs-svc/3"
    assert draft.body["recovers"] == "ecs-svc/2"
    assert draft.body["deployment"]["id"] == "ecs-svc/3"
    assert (
        draft.summary == "prod/web recovered: deployment ecs-svc/3 succeeded after ecs-svc/2 failed"
    )


def test_slack_leads_with_the_cause_summary() -> None:
    [draft] = deployment_alerts(snap("failed", reason="circuit breaker", cause=OOM), now=NOW)
    message = slack_message(draft.body)
    assert message["text"].startswith(f":red_circle: {OOM.summary} — Deployment ecs-svc/2")
    assert message["blocks"][0]["text"]["text"].startswith(f":red_circle: *{OOM.summary} — ")
    [plain] = [d for d in deployment_alerts(snap("succeeded"), now=NOW)]
    assert slack_message(plain.body)["text"] == f":large_green_circle: {plain.summary}"
