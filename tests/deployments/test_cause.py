"""The cause classifier: tables of the wording ECS really writes, mixed evidence,
and a property: any facts give a valid cause.

Stopped reasons are ECS's own (AWS's "Amazon ECS stopped tasks error messages",
"CannotPullContainer task errors" and re:Post's ResourceInitializationError
pages), and the placement reasons come from the AWS samples in
tests/fixtures/ecs-events.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.deployments.cause import (
    CATEGORY,
    MAX_DETAIL,
    MAX_EVIDENCE,
    PRECEDENCE,
    SUMMARIES,
    AlarmFact,
    Category,
    Cause,
    CodeDeployFact,
    ContainerFact,
    DeploymentFacts,
    EvidenceKind,
    HookFact,
    ServiceActionFact,
    Signal,
    TargetHealthPoint,
    TaskFact,
    classify,
    is_failed,
)
from service.deployments.evidence import build_facts, configured_alarms

T0 = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
ACCOUNT = "123456789012"
ECR = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
TARGET_GROUP_ARN = (
    f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:targetgroup/web-tg/0123456789abcdef"
)

PULL_NOT_FOUND = (
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to "
    f"resolve ref {ECR}/web:v2: {ECR}/web:v2: not found"
)
PULL_ECR_AUTH = (
    "CannotPullContainerError: AccessDeniedException: User: "
    f"arn:aws:sts::{ACCOUNT}:assumed-role/ecsTaskExecutionRole/0d2b8c1e is not authorized to "
    "perform: ecr:GetAuthorizationToken on resource: * because no identity-based policy allows "
    "the ecr:GetAuthorizationToken action"
)
PULL_ACCESS_DENIED = (
    "CannotPullContainerError: Error response from daemon: pull access denied for private/web, "
    "repository does not exist or may require 'docker login': denied: requested access to the "
    "resource is denied"
)
INIT_ECR_AUTH = (
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource "
    "retrieval failed: unable to retrieve ecr registry auth: service call has been retried 3 "
    "time(s): RequestError: send request failed caused by: Post "
    '"https://api.ecr.us-east-1.amazonaws.com/": dial tcp 10.0.1.12:443: i/o timeout. Please '
    "check your task network configuration."
)
INIT_SECRET = (
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource "
    "retrieval failed: unable to retrieve secret from asm: service call has been retried 5 "
    f"time(s): failed to fetch secret arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-AbCdEf "
    "from secrets manager: AccessDeniedException"
)
INIT_SSM = (
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource "
    "retrieval failed: unable to retrieve secrets from ssm: service call has been retried 5 "
    "time(s): AccessDeniedException"
)
INIT_LOG_DRIVER = (
    "ResourceInitializationError: failed to validate logger args: create stream has been retried "
    "1 times: failed to create Cloudwatch log stream: ResourceNotFoundException: The specified "
    "log group does not exist. : exit status 1"
)
INIT_ENI = (
    "ResourceInitializationError: failed to configure ENI: failed to setup regular eni: "
    "netplugin failed with no error message"
)
OOM = "OutOfMemoryError: Container killed due to memory usage"
ESSENTIAL = "Essential container in task exited"
ELB = f"Task failed ELB health checks in (target-group {TARGET_GROUP_ARN})"
CONTAINER_HEALTH = "Task failed container health checks"
RUNTIME_TIMEOUT = (
    "ContainerRuntimeTimeoutError: Could not transition to running; timed out after waiting 1m"
)
SCALE_IN = "Scaling activity initiated by (deployment ecs-svc/1234567890123456789)"


def _sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return loaded


SPOT = _sample("task_state_change_fargate_spot_interruption_current_docs_snippet.json")["detail"]
PLACEMENT_CPU = _sample("service_action_task_placement_failure_ec2_cpu.json")["detail"]
PLACEMENT_FARGATE = _sample("service_action_task_placement_failure_fargate_spot.json")["detail"]
DAEMON_CPU = _sample("daemon_service_action_task_creation_failed_docs.json")["detail"]
DAEMON_PULL = _sample("daemon_service_action_task_failed_to_run_docs.json")["detail"]


def task(
    n: int = 0,
    *,
    stop_code: str | None = "TaskFailedToStart",
    reason: str | None = None,
    containers: tuple[ContainerFact, ...] = (),
) -> TaskFact:
    return TaskFact(
        arn=f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/prod/{n:032x}",
        at=T0 + timedelta(minutes=n),
        stop_code=stop_code,
        stopped_reason=reason,
        containers=containers,
    )


def web(exit_code: int | None = None, reason: str | None = None) -> ContainerFact:
    return ContainerFact("web", exit_code, reason)


def sidecar(exit_code: int | None = 0, reason: str | None = None) -> ContainerFact:
    return ContainerFact("log-router", exit_code, reason)


def facts_of(*tasks: TaskFact, **others: Any) -> DeploymentFacts:
    return DeploymentFacts(tasks=tasks, **others)


# ---------------------------------------------------------------- one kind of evidence


@pytest.mark.parametrize(
    ("name", "facts", "category", "container", "exit_code", "summary"),
    [
        (
            "image not found",
            facts_of(task(reason=PULL_NOT_FOUND, containers=(web(None, PULL_NOT_FOUND),))),
            Category.IMAGE_PULL,
            "web",
            None,
            "the image of container web could not be pulled in 1 of 1 failed task: "
            "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed "
            f"to resolve ref {ECR}/web:v2: 1234567890…",
        ),
        (
            "ECR authorisation",
            facts_of(task(reason=PULL_ECR_AUTH)),
            Category.IMAGE_PULL,
            None,
            None,
            None,
        ),
        (
            "pull access denied",
            facts_of(task(reason=PULL_ACCESS_DENIED)),
            Category.IMAGE_PULL,
            None,
            None,
            None,
        ),
        (
            "ECR registry auth during initialisation",
            facts_of(task(reason=INIT_ECR_AUTH)),
            Category.IMAGE_PULL,
            None,
            None,
            None,
        ),
        (
            "Secrets Manager secret",
            facts_of(task(reason=INIT_SECRET)),
            Category.SECRETS_OR_CONFIG,
            None,
            None,
            None,
        ),
        (
            "SSM parameter",
            facts_of(task(reason=INIT_SSM)),
            Category.SECRETS_OR_CONFIG,
            None,
            None,
            None,
        ),
        (
            "log driver",
            facts_of(task(reason=INIT_LOG_DRIVER)),
            Category.SECRETS_OR_CONFIG,
            None,
            None,
            "tasks could not be set up in 1 of 1 failed task: ResourceInitializationError: "
            "failed to validate logger args: create stream has been retried 1 times: failed to "
            "create Cloudwatch log stream: ResourceNotFoundEx…",
        ),
        (
            "ENI",
            facts_of(task(reason=INIT_ENI)),
            Category.SECRETS_OR_CONFIG,
            None,
            None,
            None,
        ),
        (
            "out of memory, three tasks",
            facts_of(
                *(
                    task(
                        n,
                        stop_code="EssentialContainerExited",
                        reason=ESSENTIAL,
                        containers=(web(137, OOM), sidecar(0)),
                    )
                    for n in range(3)
                )
            ),
            Category.OUT_OF_MEMORY,
            "web",
            137,
            "container web was killed for memory (exit 137, OutOfMemoryError) in 3 of 3 "
            "failed tasks",
        ),
        (
            "essential container exit 1, the sidecar exited 0",
            facts_of(
                task(
                    stop_code="EssentialContainerExited",
                    reason=ESSENTIAL,
                    containers=(web(1), sidecar(0)),
                )
            ),
            Category.CONTAINER_EXIT,
            "web",
            1,
            "container web exited with code 1 in 1 of 1 failed task",
        ),
        (
            "essential sidecar exit 2",
            facts_of(
                task(
                    stop_code="EssentialContainerExited",
                    reason=ESSENTIAL,
                    containers=(web(143), sidecar(2)),
                )
            ),
            Category.CONTAINER_EXIT,
            "log-router",
            2,
            None,
        ),
        (
            "exit 137 without OutOfMemoryError is a kill, not memory",
            facts_of(
                task(stop_code="EssentialContainerExited", reason=ESSENTIAL, containers=(web(137),))
            ),
            Category.CONTAINER_EXIT,
            "web",
            137,
            "container web exited with code 137 in 1 of 1 failed task",
        ),
        (
            "ELB health checks (ECS stops them as the scheduler)",
            facts_of(
                task(0, stop_code="ServiceSchedulerInitiated", reason=ELB, containers=(web(143),)),
                task(1, stop_code="ServiceSchedulerInitiated", reason=ELB, containers=(web(143),)),
            ),
            Category.HEALTH_CHECK,
            None,
            None,
            "tasks failed the load balancer's health checks of target group web-tg in 2 of 2 "
            "failed tasks",
        ),
        (
            "container health checks",
            facts_of(
                task(
                    stop_code="ServiceSchedulerInitiated",
                    reason=CONTAINER_HEALTH,
                    containers=(web(137),),
                )
            ),
            Category.HEALTH_CHECK,
            None,
            None,
            "tasks failed their container health checks in 1 of 1 failed task",
        ),
        (
            "runtime timeout",
            facts_of(task(reason=RUNTIME_TIMEOUT)),
            Category.TIMEOUT,
            None,
            None,
            None,
        ),
        (
            "placement: CPU (AWS sample)",
            facts_of(
                service_actions=(
                    ServiceActionFact(T0, PLACEMENT_CPU["eventName"], PLACEMENT_CPU["reason"]),
                )
            ),
            Category.PLACEMENT,
            None,
            None,
            "ECS could not place the tasks: not enough CPU",
        ),
        (
            "placement: memory, twice",
            facts_of(
                service_actions=(
                    ServiceActionFact(T0, "SERVICE_TASK_PLACEMENT_FAILURE", "RESOURCE:MEMORY"),
                    ServiceActionFact(
                        T0 + timedelta(minutes=1),
                        "SERVICE_TASK_PLACEMENT_FAILURE",
                        "RESOURCE:MEMORY",
                    ),
                )
            ),
            Category.PLACEMENT,
            None,
            None,
            "ECS could not place the tasks: not enough memory (2 placement failures)",
        ),
        (
            "placement: ENI",
            facts_of(
                service_actions=(
                    ServiceActionFact(T0, "SERVICE_TASK_PLACEMENT_FAILURE", "RESOURCE:ENI"),
                )
            ),
            Category.PLACEMENT,
            None,
            None,
            "ECS could not place the tasks: not enough elastic network interfaces (ENIs)",
        ),
        (
            "placement: Fargate Spot capacity (AWS sample)",
            facts_of(
                service_actions=(
                    ServiceActionFact(
                        T0, PLACEMENT_FARGATE["eventName"], PLACEMENT_FARGATE["reason"]
                    ),
                )
            ),
            Category.PLACEMENT,
            None,
            None,
            "ECS could not place the tasks: not enough Fargate capacity",
        ),
        (
            "placement: no container instances",
            facts_of(
                service_actions=(
                    ServiceActionFact(
                        T0,
                        "SERVICE_TASK_PLACEMENT_FAILURE",
                        "service web was unable to place a task because no container instance "
                        "met all of its requirements. Reason: No Container Instances were found "
                        "in your cluster.",
                    ),
                )
            ),
            Category.PLACEMENT,
            None,
            None,
            "ECS could not place the tasks: not enough container instances",
        ),
        (
            "placement of a daemon (AWS sample)",
            facts_of(
                service_actions=(
                    ServiceActionFact(T0, DAEMON_CPU["eventName"], DAEMON_CPU["reason"]),
                )
            ),
            Category.PLACEMENT,
            None,
            None,
            "ECS could not place the tasks: not enough CPU",
        ),
        (
            "a daemon's image (AWS sample)",
            facts_of(
                service_actions=(
                    ServiceActionFact(T0, DAEMON_PULL["eventName"], DAEMON_PULL["reason"]),
                )
            ),
            Category.IMAGE_PULL,
            None,
            None,
            "the image of a container could not be pulled (ECS events: 1): Task failed to reach "
            "RUNNING status: CannotPullContainerError: pull image manifest has been retried 5 "
            "time(s)",
        ),
        (
            "a lifecycle hook failed",
            facts_of(hooks=(HookFact(T0, "HOOK_FAILED", "POST_TEST_TRAFFIC_SHIFT", "LAMBDA"),)),
            Category.HOOK,
            None,
            None,
            "the lambda hook failed at POST_TEST_TRAFFIC_SHIFT",
        ),
        (
            "a CloudWatch alarm rolled it back",
            facts_of(alarms=(AlarmFact(T0, ("web-5xx",)),)),
            Category.ALARM,
            None,
            None,
            "CloudWatch alarm web-5xx went into ALARM during the rollout",
        ),
        (
            "CodeDeploy's error",
            facts_of(
                codedeploy=(
                    CodeDeployFact(
                        T0,
                        "ECS_UPDATE_ERROR",
                        "The ECS service cannot reach a steady state.",
                    ),
                )
            ),
            Category.CODEDEPLOY,
            None,
            None,
            "CodeDeploy failed the deployment: ECS_UPDATE_ERROR: The ECS service cannot reach "
            "a steady state.",
        ),
        (
            "stuck with nothing else",
            facts_of(stuck=True),
            Category.TIMEOUT,
            None,
            None,
            "no task of the deployment is running: it made no progress",
        ),
        (
            "nothing at all quotes ECS",
            facts_of(reason="ECS deployment circuit breaker: task failed to start."),
            Category.UNKNOWN,
            None,
            None,
            "no evidence that ecswatch holds explains it; ECS said: ECS deployment circuit "
            "breaker: task failed to start.",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 60 else None,
)
def test_one_kind_of_evidence(
    name: str,
    facts: DeploymentFacts,
    category: Category,
    container: str | None,
    exit_code: int | None,
    summary: str | None,
) -> None:
    cause = classify(facts)
    assert cause.category is category, (name, cause)
    assert (cause.container, cause.exit_code) == (container, exit_code), name
    if summary is not None:
        assert cause.summary == summary
    if facts.tasks:
        assert {e.kind for e in cause.evidence} == {EvidenceKind.TASK_STOPPED}


# ---------------------------------------------------------------- replaced, not failed


@pytest.mark.parametrize(
    "replaced",
    [
        task(stop_code=SPOT["stopCode"], reason=SPOT["stoppedReason"], containers=(web(137),)),
        task(stop_code="ServiceSchedulerInitiated", reason=SCALE_IN, containers=(web(143),)),
        task(stop_code=None, reason=SCALE_IN, containers=(web(143),)),
        task(stop_code="UserInitiated", reason="Task stopped by user", containers=(web(137, OOM),)),
        task(
            stop_code="TerminationNotice",
            reason="Task stopped because the underlying infrastructure is being retired",
            containers=(web(143),),
        ),
    ],
    ids=["spot interruption", "scale-in", "scale-in without a code", "user stop", "maintenance"],
)
def test_a_replaced_task_is_no_failure_and_no_cause(replaced: TaskFact) -> None:
    assert not is_failed(replaced)
    cause = classify(facts_of(replaced, reason="ECS deployment circuit breaker: task failed."))
    assert cause.category is Category.UNKNOWN
    assert cause.evidence == ()
    # Next to real failures it is not counted either.
    failing = task(1, stop_code="EssentialContainerExited", reason=ESSENTIAL, containers=(web(1),))
    cause = classify(facts_of(replaced, failing))
    assert cause.summary == "container web exited with code 1 in 1 of 1 failed task"


def test_a_spot_interruption_of_a_stuck_deployment_leaves_the_timeout() -> None:
    spot = task(stop_code=SPOT["stopCode"], reason=SPOT["stoppedReason"])
    assert classify(facts_of(spot, stuck=True)).category is Category.TIMEOUT


# ---------------------------------------------------------------- mixed evidence


def _oom_task(n: int) -> TaskFact:
    return task(
        n, stop_code="EssentialContainerExited", reason=ESSENTIAL, containers=(web(137, OOM),)
    )


ALB_POINTS = (
    TargetHealthPoint(
        "targetgroup/web-tg/0123456789abcdef",
        "UnHealthyHostCount",
        "Maximum",
        T0 + timedelta(minutes=2),
        3.0,
    ),
    TargetHealthPoint(
        "targetgroup/web-tg/0123456789abcdef",
        "HTTPCode_Target_5XX_Count",
        "Sum",
        T0 + timedelta(minutes=2),
        40.0,
    ),
    TargetHealthPoint(
        "targetgroup/web-tg/0123456789abcdef",
        "HTTPCode_Target_5XX_Count",
        "Sum",
        T0 + timedelta(minutes=3),
        2.0,
    ),
    TargetHealthPoint(
        "targetgroup/web-tg/0123456789abcdef",
        "HealthyHostCount",
        "Minimum",
        T0 + timedelta(minutes=3),
        1.0,
    ),
)


@pytest.mark.parametrize(
    ("name", "facts", "category"),
    [
        (
            "an image that cannot be pulled beats crashes of an older image",
            facts_of(_oom_task(0), _oom_task(1), task(2, reason=PULL_NOT_FOUND)),
            Category.IMAGE_PULL,
        ),
        (
            "out of memory beats the health checks it made fail",
            facts_of(
                task(0, stop_code="ServiceSchedulerInitiated", reason=ELB, containers=(web(143),)),
                _oom_task(1),
            ),
            Category.OUT_OF_MEMORY,
        ),
        (
            "health checks beat the exit code of the stop they caused",
            facts_of(
                task(
                    0,
                    stop_code="ServiceSchedulerInitiated",
                    reason=CONTAINER_HEALTH,
                    containers=(web(143),),
                )
            ),
            Category.HEALTH_CHECK,
        ),
        (
            "a container exit beats CodeDeploy's generic error",
            facts_of(
                task(stop_code="EssentialContainerExited", reason=ESSENTIAL, containers=(web(1),)),
                codedeploy=(CodeDeployFact(T0, "ECS_UPDATE_ERROR", "steady state"),),
            ),
            Category.CONTAINER_EXIT,
        ),
        (
            "ELB health checks beat the alarm and the ALB points",
            facts_of(
                task(stop_code="ServiceSchedulerInitiated", reason=ELB),
                alarms=(AlarmFact(T0, ("web-5xx",)),),
                target_health=ALB_POINTS,
            ),
            Category.HEALTH_CHECK,
        ),
        (
            "a failed hook beats the ALB points",
            facts_of(
                hooks=(HookFact(T0, "HOOK_TIMED_OUT", "POST_TEST_TRAFFIC_SHIFT"),),
                target_health=ALB_POINTS,
            ),
            Category.HOOK,
        ),
        (
            "placement beats a stuck deployment and a start-impaired notice",
            facts_of(
                service_actions=(
                    ServiceActionFact(T0, "SERVICE_TASK_START_IMPAIRED"),
                    ServiceActionFact(T0, "SERVICE_TASK_PLACEMENT_FAILURE", "RESOURCE:CPU"),
                ),
                stuck=True,
            ),
            Category.PLACEMENT,
        ),
        (
            "placement beats an alarm",
            facts_of(
                service_actions=(
                    ServiceActionFact(T0, "SERVICE_TASK_PLACEMENT_FAILURE", "RESOURCE:MEMORY"),
                ),
                alarms=(AlarmFact(T0, ("web-latency",)),),
            ),
            Category.PLACEMENT,
        ),
        (
            "a configuration failure beats out of memory",
            facts_of(
                _oom_task(0),
                service_actions=(
                    ServiceActionFact(T0, "SERVICE_TASK_CONFIGURATION_FAILURE", "bad log option"),
                ),
            ),
            Category.SECRETS_OR_CONFIG,
        ),
        (
            "ALB points alone are a health-check cause",
            facts_of(target_health=ALB_POINTS, stuck=True),
            Category.HEALTH_CHECK,
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_mixed_evidence_picks_the_most_specific_cause(
    name: str, facts: DeploymentFacts, category: Category
) -> None:
    assert classify(facts).category is category, name


def test_an_alarm_carries_the_alb_points_as_evidence() -> None:
    cause = classify(
        facts_of(
            alarms=(AlarmFact(T0 + timedelta(minutes=4), ("web-5xx",)),), target_health=ALB_POINTS
        )
    )
    assert cause.category is Category.ALARM
    assert [e.kind for e in cause.evidence] == [
        EvidenceKind.TARGET_HEALTH,
        EvidenceKind.TARGET_HEALTH,
        EvidenceKind.ALARM,
    ]
    assert cause.evidence[0].detail == "target group web-tg: HTTPCode_Target_5XX_Count Sum 40"


def test_a_stuck_deployment_carries_the_start_impaired_notices() -> None:
    impaired = ServiceActionFact(T0, "SERVICE_TASK_START_IMPAIRED")
    cause = classify(facts_of(service_actions=(impaired,), stuck=True))
    assert cause.category is Category.TIMEOUT
    assert [(e.kind, e.detail) for e in cause.evidence] == [
        (EvidenceKind.SERVICE_ACTION, "SERVICE_TASK_START_IMPAIRED")
    ]
    # Without the stuck flag the notice alone is all there is.
    assert classify(facts_of(service_actions=(impaired,))).category is Category.UNKNOWN


def test_alb_points_alone_say_how_bad_it_was() -> None:
    cause = classify(facts_of(target_health=ALB_POINTS))
    assert cause.summary == (
        "target group web-tg had 42 target 5xx responses and up to 3 unhealthy targets "
        "during the rollout"
    )


def test_the_largest_group_wins_within_one_signal_and_counts_all_failures() -> None:
    crashes = [
        task(n, stop_code="EssentialContainerExited", reason=ESSENTIAL, containers=(web(1),))
        for n in range(3)
    ]
    other = task(9, stop_code="EssentialContainerExited", reason=ESSENTIAL, containers=(web(2),))
    cause = classify(facts_of(other, *crashes))
    assert (cause.container, cause.exit_code) == ("web", 1)
    assert cause.summary == "container web exited with code 1 in 3 of 4 failed tasks"


def test_evidence_is_oldest_first_and_bounded() -> None:
    tasks = [_oom_task(n) for n in reversed(range(25))]
    cause = classify(facts_of(*tasks))
    stamps = [e.at for e in cause.evidence]
    assert len(stamps) == MAX_EVIDENCE
    assert stamps == sorted(s for s in stamps if s is not None)
    assert stamps[0] == T0
    assert "in 25 of 25 failed tasks" in cause.summary


def test_the_tables_cover_every_signal_once() -> None:
    assert sorted(PRECEDENCE) == sorted(Signal)
    assert len(set(PRECEDENCE)) == len(PRECEDENCE)
    assert set(CATEGORY) == set(Signal) == set(SUMMARIES)
    # Every category is some signal's.
    assert set(CATEGORY.values()) == set(Category)


def test_the_json_form() -> None:
    cause = classify(facts_of(_oom_task(0)))
    body = cause.as_dict()
    assert body["category"] == "out_of_memory"
    assert body["evidence"] == [
        {
            "at": "2026-11-03T10:00:00+00:00",
            "kind": "task_stopped",
            "detail": f"task {0:032x} stopped (EssentialContainerExited): {ESSENTIAL}; "
            f"container web exit 137 ({OOM})",
        }
    ]


# ---------------------------------------------------------------- facts from rows (pure)


def _deployment(**overrides: Any) -> dict[str, Any]:
    row = {
        "kind": "rolling",
        "reason": None,
        "stuck": False,
        "event_ids": [],
        "last_event_at": T0,
        "deployment_configuration": {},
    }
    return {**row, **overrides}


def _event(detail_type: str, **fields: Any) -> dict[str, Any]:
    row = dict.fromkeys(
        ("event_name", "reason", "lifecycle_stage", "hook_type", "task_arn", "state"), None
    )
    return {"id": fields.pop("id", "e1"), "detail_type": detail_type, "time": T0, **row, **fields}


def test_facts_of_an_alarm_rollback_name_the_configured_alarm() -> None:
    config = {"alarms": {"alarmNames": ["web-5xx", "web-latency"], "enable": True}}
    deployment = _deployment(deployment_configuration=config, event_ids=["e1"])
    event = _event(
        "ECS Deployment State Change",
        event_name="SERVICE_DEPLOYMENT_FAILED",
        reason="ECS deployment failed: alarm web-5xx is in ALARM state.",
    )
    facts = build_facts(deployment, [], [event], [])
    assert facts.alarms == (AlarmFact(T0, ("web-5xx",), event["reason"]),)
    assert classify(facts).category is Category.ALARM
    assert configured_alarms(config) == ("web-5xx", "web-latency")
    assert configured_alarms(None) == ()


def test_facts_of_a_codedeploy_failure_and_a_failed_hook() -> None:
    deployment = _deployment(
        kind="codedeploy",
        reason="CodeDeploy FAILURE (BatchGetDeployments): ECS_UPDATE_ERROR: Primary taskset "
        "target group must be behind listener",
    )
    facts = build_facts(deployment, [], [], [])
    assert facts.codedeploy == (
        CodeDeployFact(
            T0, "ECS_UPDATE_ERROR", "Primary taskset target group must be behind listener"
        ),
    )
    hook = _event("ECS Hook State Change", event_name="HOOK_FAILED", lifecycle_stage="PRE_SCALE_UP")
    facts = build_facts(_deployment(event_ids=["e1"]), [], [hook], [])
    assert classify(facts).summary == "the lifecycle hook failed at PRE_SCALE_UP"


# ---------------------------------------------------------------- any facts


REASONS = st.sampled_from(
    [
        PULL_NOT_FOUND,
        PULL_ECR_AUTH,
        INIT_SECRET,
        INIT_ENI,
        OOM,
        ESSENTIAL,
        ELB,
        SCALE_IN,
        CONTAINER_HEALTH,
        RUNTIME_TIMEOUT,
        "RESOURCE:CPU",
        "RESOURCE:",
        "",
    ]
) | st.text(max_size=400)
MAYBE = st.none() | REASONS
TIMES = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
CODES = (
    st.none()
    | st.sampled_from(
        [
            "TaskFailedToStart",
            "EssentialContainerExited",
            "ServiceSchedulerInitiated",
            "SpotInterruption",
            "UserInitiated",
            "TerminationNotice",
        ]
    )
    | st.text(max_size=30)
)
CONTAINERS = st.builds(
    ContainerFact, st.none() | st.text(max_size=20), st.none() | st.integers(-(2**63), 2**63), MAYBE
)
TASKS = st.builds(
    TaskFact, st.text(max_size=80), TIMES, CODES, MAYBE, st.lists(CONTAINERS, max_size=4).map(tuple)
)
ACTIONS = st.builds(
    ServiceActionFact,
    TIMES,
    st.sampled_from(
        [
            "SERVICE_TASK_PLACEMENT_FAILURE",
            "SERVICE_TASK_CONFIGURATION_FAILURE",
            "SERVICE_TASK_START_IMPAIRED",
            "SERVICE_STEADY_STATE",
        ]
    )
    | st.text(max_size=30),
    MAYBE,
)
HOOKS = st.builds(
    HookFact,
    TIMES,
    st.sampled_from(["HOOK_FAILED", "HOOK_TIMED_OUT", "X"]),
    st.none() | st.text(max_size=30),
    st.none() | st.text(max_size=30),
)
ALARMS = st.builds(AlarmFact, TIMES, st.lists(st.text(max_size=30), max_size=3).map(tuple), MAYBE)
POINTS = st.builds(
    TargetHealthPoint,
    st.text(max_size=60),
    st.sampled_from(["UnHealthyHostCount", "HTTPCode_Target_5XX_Count", "RequestCount"]),
    st.sampled_from(["Maximum", "Sum", "Minimum"]),
    st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.just(UTC)),
    st.floats(allow_nan=True, allow_infinity=True),
)
ERRORS = st.builds(CodeDeployFact, TIMES, st.none() | st.text(max_size=30), MAYBE)
FACTS = st.builds(
    DeploymentFacts,
    tasks=st.lists(TASKS, max_size=6).map(tuple),
    service_actions=st.lists(ACTIONS, max_size=4).map(tuple),
    hooks=st.lists(HOOKS, max_size=3).map(tuple),
    alarms=st.lists(ALARMS, max_size=2).map(tuple),
    target_health=st.lists(POINTS, max_size=6).map(tuple),
    codedeploy=st.lists(ERRORS, max_size=2).map(tuple),
    stuck=st.booleans(),
    reason=MAYBE,
)


@settings(max_examples=300, deadline=None)
@given(FACTS)
def test_any_facts_give_a_valid_cause(facts: DeploymentFacts) -> None:
    cause = classify(facts)
    assert isinstance(cause, Cause)
    assert cause.category in set(Category)
    assert 0 < len(cause.summary) <= MAX_DETAIL
    assert len(cause.evidence) <= MAX_EVIDENCE
    assert all(e.kind in set(EvidenceKind) and len(e.detail) <= MAX_DETAIL for e in cause.evidence)
    stamps = [e.at for e in cause.evidence if e.at is not None]
    assert stamps == sorted(stamps)
    json.dumps(cause.as_dict())
