"""Pure mapping from one deployment-related event to the deployment's outcome.

The stored outcome is then chosen by event order (``updatedAt``, then this
rank on ties) inside one conditional upsert, so that any arrival order ends in
the same row. Terminal outcomes outrank ``in_progress`` at equal timestamps:
ECS often stamps IN_PROGRESS and COMPLETED with the same second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DeploymentKind(StrEnum):
    """How a deployment replaces tasks (a closed set, docs/api.md)."""

    ROLLING = "rolling"
    BLUE_GREEN = "blue_green"
    CODEDEPLOY = "codedeploy"


class Outcome(StrEnum):
    """Where a deployment ended, or that it has not yet (a closed set, docs/api.md)."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    STOPPED = "stopped"


#: Outcomes after which a deployment changes no more.
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


# ---------------------------------------------------------------- the whole fold
#
# The stored deployment row is this fold, computed by conditional upserts in
# ``service.deployments.upsert`` one event at a time; the pure version below is the
# specification that the tests hold both to (every permutation of a sequence
# ends in the same states).


@dataclass(frozen=True, slots=True)
class Observation:
    """What one event says about one deployment."""

    deployment_id: str
    at: datetime
    step: Step
    rollback_target: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeploymentState:
    """A deployment's outcome after the observations seen so far."""

    outcome: Outcome
    at: datetime  # ordering key of the observation that set ``outcome``
    started_at: datetime
    rollback_target: str | None = None
    reason: str | None = None
    finished: bool = False


def merge(state: DeploymentState | None, obs: Observation) -> DeploymentState:
    """One observation into a deployment's state.

    The newer observation wins (``at``, then :data:`RANK`, then finished); the first
    rollback target known sticks, so a completion of a deployment that is being
    rolled back reads ``rolled_back``, whatever came first.
    """
    if state is None:
        outcome = obs.step.outcome
        if outcome is Outcome.SUCCEEDED and obs.rollback_target:
            outcome = Outcome.ROLLED_BACK
        return DeploymentState(
            outcome, obs.at, obs.at, obs.rollback_target, obs.reason, obs.step.finished
        )
    # On a full tie of time and rank, the finishing observation wins.
    newer = (obs.at, RANK[obs.step.outcome], obs.step.finished) > (
        state.at,
        RANK[state.outcome],
        state.finished,
    )
    winner = obs.step.outcome if newer else state.outcome
    target = state.rollback_target or obs.rollback_target
    if winner is Outcome.SUCCEEDED and target:
        winner = Outcome.ROLLED_BACK
    return DeploymentState(
        outcome=winner,
        at=obs.at if newer else state.at,
        started_at=min(state.started_at, obs.at),
        rollback_target=target,
        reason=obs.reason if newer else state.reason,
        finished=obs.step.finished if newer else state.finished,
    )


def settle(states: dict[str, DeploymentState]) -> dict[str, DeploymentState]:
    """End circuit-breaker rollbacks: a failed deployment whose rollback target
    completed after the failed one began is ``rolled_back`` (the target's own
    completion is the restore, not a success of the failed deployment)."""
    settled = dict(states)
    for deployment_id, state in states.items():
        target = states.get(state.rollback_target or "")
        if (
            state.outcome is Outcome.FAILED
            and target is not None
            and target.outcome is Outcome.SUCCEEDED
            and target.at >= state.started_at
        ):
            settled[deployment_id] = DeploymentState(
                Outcome.ROLLED_BACK,
                state.at,
                state.started_at,
                state.rollback_target,
                state.reason,
                True,
            )
    return settled


def fold(observations: Iterable[Observation]) -> dict[str, DeploymentState]:
    """Every deployment's state after ``observations``, in any order."""
    states: dict[str, DeploymentState] = {}
    for obs in observations:
        states[obs.deployment_id] = merge(states.get(obs.deployment_id), obs)
    return settle(states)
