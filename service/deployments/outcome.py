"""Pure mapping from one deployment-related event to the deployment's outcome.

The stored outcome is then chosen by event order (``updatedAt``, then this
rank on ties) inside one conditional upsert, so that any arrival order ends in
the same row. Terminal outcomes outrank ``in_progress`` at equal timestamps:
ECS often stamps IN_PROGRESS and COMPLETED with the same second.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeploymentKind(StrEnum):
    """How a deployment replaces tasks (DESIGN.md's closed set)."""

    ROLLING = "rolling"
    BLUE_GREEN = "blue_green"
    CODEDEPLOY = "codedeploy"


class Outcome(StrEnum):
    """Where a deployment ended, or that it has not yet (DESIGN.md's closed set)."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    STOPPED = "stopped"


TERMINAL = frozenset(
    {Outcome.SUCCEEDED, Outcome.ROLLED_BACK, Outcome.ROLLBACK_FAILED, Outcome.STOPPED}
)

#: Tie-break of events with equal timestamps: later stages win.
RANK: dict[Outcome, int] = {
    Outcome.IN_PROGRESS: 0,
    Outcome.FAILED: 1,
    Outcome.STOPPED: 2,
    Outcome.SUCCEEDED: 2,
    Outcome.ROLLED_BACK: 3,
    Outcome.ROLLBACK_FAILED: 3,
}


@dataclass(frozen=True, slots=True)
class Step:
    """What one event says about its deployment."""

    outcome: Outcome
    finished: bool


def ecs_deployment_step(event_name: str | None, rollback_target: str | None) -> Step:
    """``ECS Deployment State Change``: IN_PROGRESS / COMPLETED / FAILED.

    A circuit-breaker IN_PROGRESS whose reason says "rolling back to deploymentId
    X" means this deployment has failed and ECS is restoring X: the failure is
    known now, the rollback is not finished.
    """
    name = (event_name or "").upper()
    if name == "SERVICE_DEPLOYMENT_COMPLETED":
        return Step(Outcome.SUCCEEDED, True)
    if name == "SERVICE_DEPLOYMENT_FAILED":
        return Step(Outcome.FAILED, True)
    if rollback_target is not None:
        return Step(Outcome.FAILED, False)
    return Step(Outcome.IN_PROGRESS, False)


def hook_step(event_name: str | None) -> Step:
    """``ECS Hook State Change`` of a native blue/green deployment."""
    name = (event_name or "").upper()
    if name in ("HOOK_FAILED", "HOOK_TIMED_OUT"):
        return Step(Outcome.FAILED, False)
    return Step(Outcome.IN_PROGRESS, False)


def codedeploy_step(state: str | None) -> Step:
    """``CodeDeploy Deployment State-change Notification``: START/READY/SUCCESS/FAILURE/STOP."""
    name = (state or "").upper()
    if name == "SUCCESS":
        return Step(Outcome.SUCCEEDED, True)
    if name == "FAILURE":
        return Step(Outcome.FAILED, True)
    if name == "STOP":
        return Step(Outcome.STOPPED, True)
    return Step(Outcome.IN_PROGRESS, False)


def daemon_deployment_step(event_name: str | None) -> Step:
    """``ECS Daemon Deployment State Change``."""
    name = (event_name or "").upper()
    table = {
        "DAEMON_DEPLOYMENT_SUCCESSFUL": Step(Outcome.SUCCEEDED, True),
        "DAEMON_DEPLOYMENT_STOPPED": Step(Outcome.STOPPED, True),
        "DAEMON_DEPLOYMENT_ROLLBACK_SUCCESSFUL": Step(Outcome.ROLLED_BACK, True),
        "DAEMON_DEPLOYMENT_ROLLBACK_FAILED": Step(Outcome.ROLLBACK_FAILED, True),
        "DAEMON_DEPLOYMENT_ROLLBACK_IN_PROGRESS": Step(Outcome.FAILED, False),
    }
    return table.get(name, Step(Outcome.IN_PROGRESS, False))
