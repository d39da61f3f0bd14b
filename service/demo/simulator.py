"""A simulated ECS fleet for ``ecswatch demo``: realistic events, paced in real time.

Two clusters (Fargate and EC2), four services with running tasks, container
instances whose agent flaps, periodic steady-state actions, one deployment that
succeeds and one that crash-loops, trips the circuit breaker and rolls back.
Events go out through EventBridge ``PutEvents`` (to moto in the demo), so they
reach the consumer by the same rule and queue as in production.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from service.demo.events import (
    container_instance_events,
    deployment_events,
    envelope,
    service_arn,
    task_lifecycle,
)
from service.logging import get_logger

log = get_logger(__name__)

Emit = Callable[[list[dict[str, Any]]], Awaitable[None]]

SERVICES = (
    ("demo-fargate", "web", "FARGATE"),
    ("demo-fargate", "api", "FARGATE"),
    ("demo-ec2", "worker", "EC2"),
    ("demo-ec2", "batch", "EC2"),
)
# Deployment ids are unique per service in ECS: one stable deployment per service.
STABLE = {svc[1]: f"ecs-svc/10000000000000001{n:02d}" for n, svc in enumerate(SERVICES)}
GOOD_ROLLOUT = "ecs-svc/1000000000000000002"
BAD_ROLLOUT = "ecs-svc/1000000000000000003"


def put_events_entries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """EventBridge ``PutEvents`` entries for events shaped as ECS sends them."""
    return [
        {
            "Source": e["source"],
            "DetailType": e["detail-type"],
            "Detail": json.dumps(e["detail"]),
            "Resources": e["resources"],
            "Time": datetime.fromisoformat(e["time"].replace("Z", "+00:00")),
        }
        for e in events
    ]


class FleetSimulator:
    """Emits the demo fleet's events until stopped; ``pace`` scales the waits."""

    def __init__(self, emit: Emit, *, seed: int = 42, pace: float = 1.0) -> None:
        self._emit = emit
        self._rng = random.Random(seed)
        self._pace = pace
        self.emitted = 0

    async def _send(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 10):  # PutEvents takes 10 entries a call
            await self._emit(events[start : start + 10])
        self.emitted += len(events)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self._pace)

    def _tasks(
        self, svc: tuple[str, str, str], deployment: str, *, fail: bool = False, stop: bool = False
    ) -> list[dict[str, Any]]:
        cluster, service, launch = svc
        return task_lifecycle(
            self._rng,
            cluster=cluster,
            service=service,
            family=service,
            revision=2 if deployment == BAD_ROLLOUT else 1,
            deployment_id=deployment,
            start=datetime.now(UTC),
            launch_type=launch,
            fail=fail,
            stop=stop,
        )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._scenario(stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the demo keeps serving what it has
            log.error("simulator_failed", error=f"{type(exc).__name__}: {exc}")

    async def _scenario(self, stop: asyncio.Event) -> None:
        now = datetime.now(UTC)
        for cluster in ("demo-ec2",):
            for _ in range(2):
                await self._send(container_instance_events(self._rng, cluster=cluster, start=now))
        for cluster, service, launch in SERVICES:
            await self._send(
                deployment_events(
                    cluster=cluster,
                    service=service,
                    deployment_id=STABLE[service],
                    start=now - timedelta(hours=1),
                )
            )
            for _ in range(2):
                await self._send(self._tasks((cluster, service, launch), STABLE[service]))
        log.info("simulator_fleet_running", services=len(SERVICES))
        await self._sleep(3)
        await self._rollout_that_succeeds()
        await self._sleep(3)
        await self._rollout_that_fails()
        # Then the fleet idles: periodic steady-state notices and task churn.
        while not stop.is_set():
            cluster, service, launch = self._rng.choice(SERVICES)
            t = datetime.now(UTC)
            detail = {
                "eventType": "INFO",
                "eventName": "SERVICE_STEADY_STATE",
                "clusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{cluster}",
                "createdAt": t.isoformat().replace("+00:00", "Z"),
            }
            await self._send(
                [envelope("ECS Service Action", [service_arn(cluster, service)], detail, t)]
            )
            if self._rng.random() < 0.3:
                await self._send(
                    self._tasks((cluster, service, launch), STABLE[service], stop=True)
                )
            await self._sleep(5)

    async def _rollout_that_succeeds(self) -> None:
        cluster, service, _ = SERVICES[1]
        start = datetime.now(UTC)
        events = deployment_events(
            cluster=cluster, service=service, deployment_id=GOOD_ROLLOUT, start=start
        )
        await self._send(events[:1])
        for _ in range(2):
            await self._send(self._tasks(SERVICES[1], GOOD_ROLLOUT))
        await self._send(events[1:])
        log.info("simulator_rollout_succeeded", service=service, deployment=GOOD_ROLLOUT)

    async def _rollout_that_fails(self) -> None:
        cluster, service, _ = SERVICES[0]
        start = datetime.now(UTC)
        events = deployment_events(
            cluster=cluster,
            service=service,
            deployment_id=BAD_ROLLOUT,
            start=start,
            outcome="failed",
            rollback_to=STABLE[service],
        )
        await self._send(events[:1])
        for _ in range(3):  # new tasks crash: exit 137, OutOfMemoryError
            await self._send(self._tasks(SERVICES[0], BAD_ROLLOUT, fail=True, stop=True))
            await self._sleep(1)
        await self._send(events[1:3])  # circuit breaker: FAILED, rolling back to STABLE
        # The synthetic rollback notice is stamped start+4 min: the restored
        # deployment completes after it.
        restored = deployment_events(
            cluster=cluster,
            service=service,
            deployment_id=STABLE[service],
            start=start + timedelta(minutes=5),
        )
        await self._send(restored[1:])  # STABLE completes again: rollback done
        log.info("simulator_rollout_failed", service=service, deployment=BAD_ROLLOUT)
