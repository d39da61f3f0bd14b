"""The pure outcome model: tables of event sequences, every permutation, the samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import ServiceRef
from service.deployments.outcome import (
    DeploymentState,
    Observation,
    Outcome,
    Step,
    codedeploy_step,
    daemon_deployment_step,
    ecs_deployment_step,
    fold,
    hook_step,
)
from service.deployments.rows import deployment_row
from service.events.normalise import parse_message

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
D, X = "ecs-svc/2", "ecs-svc/1"


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ecs(dep: str, name: str, at: float, target: str | None = None) -> Observation:
    return Observation(dep, t(at), ecs_deployment_step(name, target), target)


IN_PROGRESS = "SERVICE_DEPLOYMENT_IN_PROGRESS"
COMPLETED = "SERVICE_DEPLOYMENT_COMPLETED"
FAILED = "SERVICE_DEPLOYMENT_FAILED"

# X completed long ago; D starts, fails, ECS rolls back to X, X completes again.
CIRCUIT_BREAKER = [
    ecs(X, IN_PROGRESS, -60),
    ecs(X, COMPLETED, -55),
    ecs(D, IN_PROGRESS, 0),
    ecs(D, IN_PROGRESS, 6, target=X),
    ecs(D, FAILED, 6),
    ecs(X, IN_PROGRESS, 6),
    ecs(X, COMPLETED, 9),
]

TABLE: list[tuple[str, list[Observation], dict[str, tuple[Outcome, str | None, bool]]]] = [
    (
        "rolling success",
        [ecs(D, IN_PROGRESS, 0), ecs(D, COMPLETED, 3)],
        {D: (Outcome.SUCCEEDED, None, True)},
    ),
    ("in progress", [ecs(D, IN_PROGRESS, 0)], {D: (Outcome.IN_PROGRESS, None, False)}),
    (
        "circuit breaker rollback completes",
        CIRCUIT_BREAKER,
        {D: (Outcome.ROLLED_BACK, X, True), X: (Outcome.SUCCEEDED, None, True)},
    ),
    (
        "rollback under way: failed, naming the target",
        CIRCUIT_BREAKER[:5],
        {D: (Outcome.FAILED, X, True), X: (Outcome.SUCCEEDED, None, True)},
    ),
    (
        "rollback notice alone",
        [ecs(D, IN_PROGRESS, 6, target=X)],
        {D: (Outcome.FAILED, X, False)},
    ),
    (
        "FAILED stamped after the restore still ends rolled back",
        [*CIRCUIT_BREAKER[:4], ecs(X, COMPLETED, 9), ecs(D, FAILED, 10)],
        {D: (Outcome.ROLLED_BACK, X, True), X: (Outcome.SUCCEEDED, None, True)},
    ),
    (
        "failed without rollback (alarms, rollback off)",
        [ecs(D, IN_PROGRESS, 0), ecs(D, FAILED, 5)],
        {D: (Outcome.FAILED, None, True)},
    ),
    (
        "X's old completion is no restore",
        [ecs(X, COMPLETED, -55), ecs(D, IN_PROGRESS, 0), ecs(D, IN_PROGRESS, 6, target=X)],
        {D: (Outcome.FAILED, X, False), X: (Outcome.SUCCEEDED, None, True)},
    ),
    (
        "same second: completion outranks progress",
        [ecs(D, COMPLETED, 3), ecs(D, IN_PROGRESS, 3)],
        {D: (Outcome.SUCCEEDED, None, True)},
    ),
    (
        "native blue/green hook failure",
        [
            Observation(D, t(0), hook_step("HOOK_IN_PROGRESS")),
            Observation(D, t(2), hook_step("HOOK_FAILED")),
        ],
        {D: (Outcome.FAILED, None, False)},
    ),
    (
        "hook timed out",
        [Observation(D, t(2), hook_step("HOOK_TIMED_OUT"))],
        {D: (Outcome.FAILED, None, False)},
    ),
    (
        "hook succeeded is progress",
        [Observation(D, t(2), hook_step("HOOK_SUCCEEDED"))],
        {D: (Outcome.IN_PROGRESS, None, False)},
    ),
    (
        "CodeDeploy failure",
        [
            Observation("d-1", t(0), codedeploy_step("START")),
            Observation("d-1", t(5), codedeploy_step("FAILURE")),
        ],
        {"d-1": (Outcome.FAILED, None, True)},
    ),
    (
        "CodeDeploy success",
        [
            Observation("d-1", t(0), codedeploy_step("START")),
            Observation("d-1", t(1), codedeploy_step("READY")),
            Observation("d-1", t(5), codedeploy_step("SUCCESS")),
        ],
        {"d-1": (Outcome.SUCCEEDED, None, True)},
    ),
    (
        "CodeDeploy stop",
        [
            Observation("d-1", t(0), codedeploy_step("START")),
            Observation("d-1", t(5), codedeploy_step("STOP")),
        ],
        {"d-1": (Outcome.STOPPED, None, True)},
    ),
    (
        "daemon rollback failed",
        [
            Observation("dd", t(0), daemon_deployment_step("DAEMON_DEPLOYMENT_IN_PROGRESS")),
            Observation(
                "dd", t(3), daemon_deployment_step("DAEMON_DEPLOYMENT_ROLLBACK_IN_PROGRESS")
            ),
            Observation("dd", t(6), daemon_deployment_step("DAEMON_DEPLOYMENT_ROLLBACK_FAILED")),
        ],
        {"dd": (Outcome.ROLLBACK_FAILED, None, True)},
    ),
    (
        "daemon rollback succeeded",
        [
            Observation(
                "dd", t(3), daemon_deployment_step("DAEMON_DEPLOYMENT_ROLLBACK_IN_PROGRESS")
            ),
            Observation(
                "dd", t(6), daemon_deployment_step("DAEMON_DEPLOYMENT_ROLLBACK_SUCCESSFUL")
            ),
        ],
        {"dd": (Outcome.ROLLED_BACK, None, True)},
    ),
]


def summary(states: dict[str, DeploymentState]) -> dict[str, tuple[Outcome, str | None, bool]]:
    return {k: (s.outcome, s.rollback_target, s.finished) for k, s in states.items()}


@pytest.mark.parametrize(("name", "sequence", "expected"), TABLE, ids=[c[0] for c in TABLE])
def test_table(
    name: str, sequence: list[Observation], expected: dict[str, tuple[Outcome, str | None, bool]]
) -> None:
    assert summary(fold(sequence)) == expected
    # Any order and any repeats end the same.
    assert summary(fold(list(reversed(sequence)) + sequence)) == expected


@pytest.mark.parametrize(("name", "sequence", "expected"), TABLE, ids=[c[0] for c in TABLE])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_permutation_with_repeats(
    name: str,
    sequence: list[Observation],
    expected: dict[str, tuple[Outcome, str | None, bool]],
    data: st.DataObject,
) -> None:
    repeats = data.draw(st.lists(st.sampled_from(sequence), max_size=len(sequence)))
    shuffled = data.draw(st.permutations(sequence + repeats))
    assert summary(fold(shuffled)) == expected


# Short random sequences over one deployment and its rollback target: whatever
# the events say, the order they arrive in never changes the result.
_POOL = [
    ecs(D, IN_PROGRESS, 0),
    ecs(D, IN_PROGRESS, 4, target=X),
    ecs(D, FAILED, 4),
    ecs(D, FAILED, 11),
    ecs(D, COMPLETED, 7),
    ecs(X, IN_PROGRESS, -60),
    ecs(X, COMPLETED, -55),
    ecs(X, IN_PROGRESS, 5),
    ecs(X, COMPLETED, 9),
    Observation(D, t(2), hook_step("HOOK_FAILED")),
]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_random_short_sequences_are_order_independent(data: st.DataObject) -> None:
    sequence = data.draw(st.lists(st.sampled_from(_POOL), min_size=1, max_size=6))
    other = data.draw(st.permutations(sequence))
    assert fold(sequence) == fold(other)


def test_merge_keeps_the_first_rollback_target() -> None:
    states = fold([ecs(D, IN_PROGRESS, 6, target=X), ecs(D, COMPLETED, 7)])
    assert states[D].outcome is Outcome.ROLLED_BACK
    assert states[D].rollback_target == X
    assert isinstance(states[D].started_at, datetime)
    assert Step(Outcome.FAILED, False) == ecs_deployment_step(IN_PROGRESS, X)


# ---------------------------------------------------------------- the samples


def observe(name: str, groups: dict[str, ServiceRef] | None = None) -> Observation:
    body = (SAMPLES / name).read_text()
    event = parse_message(body, received_at=datetime.now(UTC))
    row = deployment_row(event, groups or {})
    assert row is not None, name
    return Observation(
        row["id"],
        row["last_event_at"],
        Step(Outcome(row["outcome"]), row["finished_at"] is not None),
        row["rollback_target"],
        row["reason"],
    )


@pytest.mark.parametrize(
    ("sample", "deployment", "outcome", "target"),
    [
        ("deployment_state_change_in_progress.json", "ecs-svc/123", Outcome.IN_PROGRESS, None),
        ("deployment_state_change_completed.json", "ecs-svc/123", Outcome.SUCCEEDED, None),
        (
            "deployment_state_change_failed_circuit_breaker.json",
            "ecs-svc/123",
            Outcome.FAILED,
            None,
        ),
        (
            "deployment_state_change_in_progress_rollback.json",
            "ecs-svc/123",
            Outcome.FAILED,
            "deploymentID",
        ),
        (
            "hook_state_change_pause_awaiting_action_docs.json",
            "arn:aws:ecs:us-west-2:123456789012:service-deployment/my-cluster/my-service/"
            "0EYSiB0qap8xf0N76FsbE",
            Outcome.IN_PROGRESS,
            None,
        ),
        (
            "codedeploy_deployment_success_generic_lambdago.json",
            "d-123456789",
            Outcome.SUCCEEDED,
            None,
        ),
    ],
)
def test_each_deployment_sample(
    sample: str, deployment: str, outcome: Outcome, target: str | None
) -> None:
    obs = observe(sample)
    states = fold([obs, obs])
    assert states[deployment].outcome is outcome
    assert states[deployment].rollback_target == target


def test_the_samples_together_in_any_order() -> None:
    """The four ECS samples share one deployment id and one timestamp."""
    names = [
        "deployment_state_change_in_progress.json",
        "deployment_state_change_in_progress_rollback.json",
        "deployment_state_change_failed_circuit_breaker.json",
    ]
    sequence = [observe(n) for n in names]
    for order in (sequence, list(reversed(sequence)), sequence[1:] + sequence[:1]):
        state = fold(order)["ecs-svc/123"]
        assert (state.outcome, state.rollback_target) == (Outcome.FAILED, "deploymentID")
