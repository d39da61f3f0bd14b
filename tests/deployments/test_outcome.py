"""Pure outcome mapping of each deployment-related event (tables of cases)."""

from __future__ import annotations

import pytest

from service.deployments.outcome import (
    RANK,
    Outcome,
    Step,
    codedeploy_step,
    daemon_deployment_step,
    ecs_deployment_step,
    hook_step,
)


@pytest.mark.parametrize(
    ("event_name", "rollback_target", "expected"),
    [
        ("SERVICE_DEPLOYMENT_IN_PROGRESS", None, Step(Outcome.IN_PROGRESS, False)),
        ("SERVICE_DEPLOYMENT_IN_PROGRESS", "ecs-svc/1", Step(Outcome.FAILED, False)),
        ("SERVICE_DEPLOYMENT_COMPLETED", None, Step(Outcome.SUCCEEDED, True)),
        ("SERVICE_DEPLOYMENT_FAILED", None, Step(Outcome.FAILED, True)),
        ("service_deployment_failed", None, Step(Outcome.FAILED, True)),
        ("SOMETHING_NEW", None, Step(Outcome.IN_PROGRESS, False)),
        (None, None, Step(Outcome.IN_PROGRESS, False)),
    ],
)
def test_ecs_deployment(
    event_name: str | None, rollback_target: str | None, expected: Step
) -> None:
    assert ecs_deployment_step(event_name, rollback_target) == expected


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("HOOK_IN_PROGRESS", Outcome.IN_PROGRESS),
        ("HOOK_AWAITING_ACTION", Outcome.IN_PROGRESS),
        ("HOOK_SUCCEEDED", Outcome.IN_PROGRESS),
        ("HOOK_FAILED", Outcome.FAILED),
        ("HOOK_TIMED_OUT", Outcome.FAILED),
    ],
)
def test_hook(name: str, outcome: Outcome) -> None:
    assert hook_step(name).outcome is outcome


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("START", Step(Outcome.IN_PROGRESS, False)),
        ("READY", Step(Outcome.IN_PROGRESS, False)),
        ("SUCCESS", Step(Outcome.SUCCEEDED, True)),
        ("FAILURE", Step(Outcome.FAILED, True)),
        ("STOP", Step(Outcome.STOPPED, True)),
    ],
)
def test_codedeploy(state: str, expected: Step) -> None:
    assert codedeploy_step(state) == expected


@pytest.mark.parametrize(
    ("name", "outcome", "finished"),
    [
        ("DAEMON_DEPLOYMENT_PENDING", Outcome.IN_PROGRESS, False),
        ("DAEMON_DEPLOYMENT_IN_PROGRESS", Outcome.IN_PROGRESS, False),
        ("DAEMON_DEPLOYMENT_SUCCESSFUL", Outcome.SUCCEEDED, True),
        ("DAEMON_DEPLOYMENT_STOPPED", Outcome.STOPPED, True),
        ("DAEMON_DEPLOYMENT_STOP_REQUESTED", Outcome.IN_PROGRESS, False),
        ("DAEMON_DEPLOYMENT_ROLLBACK_IN_PROGRESS", Outcome.FAILED, False),
        ("DAEMON_DEPLOYMENT_ROLLBACK_SUCCESSFUL", Outcome.ROLLED_BACK, True),
        ("DAEMON_DEPLOYMENT_ROLLBACK_FAILED", Outcome.ROLLBACK_FAILED, True),
    ],
)
def test_daemon(name: str, outcome: Outcome, finished: bool) -> None:
    assert daemon_deployment_step(name) == Step(outcome, finished)


def test_terminal_outcomes_outrank_in_progress() -> None:
    assert all(RANK[o] > RANK[Outcome.IN_PROGRESS] for o in set(Outcome) - {Outcome.IN_PROGRESS})
    assert RANK[Outcome.ROLLED_BACK] > RANK[Outcome.SUCCEEDED]
