"""Pure predicates of the deployment lifecycle: failed starts, crash loops, stuck.

The transitions (:mod:`service.deployments.transitions`) apply them to the rows
the consumer and the stuck sweep read; ``now`` is always an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from service.deployments.outcome import Outcome

#: Stop codes that count against the deployment that started the task.
FAILED_STOP_CODES = ("TaskFailedToStart", "EssentialContainerExited")
#: Stop reasons that mean the task never ran (the no-circuit-breaker crash loop).
START_FAILURE_MARKERS = ("CannotPullContainerError", "ResourceInitializationError")
#: Service Action events that say why a deployment is not progressing.
IMPAIRED_EVENTS = (
    "SERVICE_TASK_START_IMPAIRED",
    "SERVICE_TASK_PLACEMENT_FAILURE",
    "SERVICE_TASK_CONFIGURATION_FAILURE",
)


def is_failed_start(
    stop_code: str | None, stopped_reason: str | None, containers: Iterable[Mapping[str, Any]]
) -> bool:
    """A stopped task that counts against its deployment (it never ran properly).

    TaskFailedToStart, CannotPullContainerError, ResourceInitializationError, or
    an essential container that exited non-zero.
    """
    if stop_code == "TaskFailedToStart":
        return True
    reason = stopped_reason or ""
    if any(marker in reason for marker in START_FAILURE_MARKERS):
        return True
    if stop_code == "EssentialContainerExited":
        for container in containers:
            code = container.get("exit_code")
            if code is None:
                code = container.get("exitCode")
            if isinstance(code, int) and code != 0:
                return True
    return False


def crash_looping(stops: Sequence[datetime], *, tasks: int, window_s: float) -> bool:
    """True when ``tasks`` failed stops fall within one window of ``window_s`` seconds."""
    if tasks <= 0 or len(stops) < tasks:
        return False
    ordered = sorted(stops)
    window = timedelta(seconds=window_s)
    return any(
        ordered[i + tasks - 1] - ordered[i] <= window for i in range(len(ordered) - tasks + 1)
    )


def crash_loop_reason(count: int, window_s: float, last_reason: str | None) -> str:
    """The reason a crash-looping deployment is marked failed with."""
    minutes = f"{window_s / 60:g} min"
    why = f" (last: {last_reason})" if last_reason else ""
    return f"{count} tasks of this deployment failed to start within {minutes}{why}"


def service_action_reason(event_name: str, reason: str | None) -> str:
    """The reason a Service Action (:data:`IMPAIRED_EVENTS`) attaches to a deployment."""
    return event_name + (f": {reason}" if reason else "")


def is_stuck(
    *,
    outcome: Outcome,
    started_at: datetime | None,
    running_tasks: int,
    now: datetime,
    after_s: float,
) -> bool:
    """An in-progress deployment with no running task ``after_s`` seconds after it began."""
    if outcome != Outcome.IN_PROGRESS or started_at is None or running_tasks > 0:
        return False
    return now - started_at >= timedelta(seconds=after_s)
