"""The demo fleet's life, paced in real time: moto changes and the events ECS would send.

The fleet itself lives in moto (:mod:`service.demo.fleet`); this module starts
and stops its tasks there and emits, through EventBridge ``PutEvents``, the
events ECS would emit for them (moto's ECS emits none), so they reach the
consumer by the same rule and queue as in production, and enrichment and the
poller describe the same resources. The story:

1. the fleet comes up: container instances, stable deployments, running tasks;
2. one container instance drains, another loses its ECS agent;
3. ``api`` rolls out a new deployment that succeeds (old tasks stop, exit 0);
4. ``web`` rolls out an image that does not exist: its tasks fail to start
   (``CannotPullContainerError``), the circuit breaker fails the deployment and
   rolls back; its alerts' cause is ``image_pull``;
5. ``batch`` (no circuit breaker) rolls out one that crash-loops, its container
   killed for memory (exit 137, ``OutOfMemoryError``): cause ``out_of_memory``;
6. ``checkout`` goes blue/green through CodeDeploy, which succeeds;
7. then churn: Spot interruptions, tasks stopped by a user, replacements and
   steady-state notices.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from service.demo.events import (
    cluster_arn,
    container_instance_events,
    deployment_events,
    envelope,
    iso,
    service_arn,
    task_lifecycle,
)
from service.demo.fleet import (
    CODEDEPLOY_APP,
    CODEDEPLOY_GROUP,
    EC2_CLUSTER,
    DemoService,
    Fleet,
    run_tasks,
    stop_tasks,
)
from service.logging import get_logger

log = get_logger(__name__)

Emit = Callable[[list[dict[str, Any]]], Awaitable[None]]

GOOD_ROLLOUT = "ecs-svc/1000000000000000002"
BAD_ROLLOUT = "ecs-svc/1000000000000000003"
CRASH_ROLLOUT = "ecs-svc/1000000000000000004"

#: (stop code, exit code, stopped reason, container reason) of a rollout's failing
#: tasks, worded as ECS words them; no exit code: the container never ran.
Crash = tuple[str, int | None, str, str | None]
_PULL_FAILURE: Crash = (
    "TaskFailedToStart",
    None,
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to"
    " resolve ref 123456789012.dkr.ecr.us-east-1.amazonaws.com/web:v2: not found",
    None,
)
_OOM_KILL: Crash = (
    "EssentialContainerExited",
    137,
    "Essential container in task exited",
    "OutOfMemoryError: Container killed due to memory usage",
)


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


def codedeploy_event(deployment_id: str, state: str, t: datetime) -> dict[str, Any]:
    """A ``CodeDeploy Deployment State-change Notification`` of the demo's group."""
    prefix = "arn:aws:codedeploy:us-east-1:123456789012"
    return {
        "version": "0",
        "id": f"cd-{deployment_id}-{state}",
        "detail-type": "CodeDeploy Deployment State-change Notification",
        "source": "aws.codedeploy",
        "account": "123456789012",
        "time": iso(t, 0),
        "region": "us-east-1",
        "resources": [
            f"{prefix}:application:{CODEDEPLOY_APP}",
            f"{prefix}:deploymentgroup:{CODEDEPLOY_APP}/{CODEDEPLOY_GROUP}",
        ],
        "detail": {
            "region": "us-east-1",
            "application": CODEDEPLOY_APP,
            "deploymentId": deployment_id,
            "state": state,
            "deploymentGroup": CODEDEPLOY_GROUP,
        },
    }


class FleetSimulator:
    """Runs the demo's story against moto and emits its events; ``pace`` scales the waits."""

    def __init__(
        self,
        emit: Emit,
        ecs: Any,
        codedeploy: Any,
        fleet: Fleet,
        *,
        seed: int = 42,
        pace: float = 1.0,
    ) -> None:
        self._emit = emit
        self._ecs = ecs
        self._codedeploy = codedeploy
        self._fleet = fleet
        self._rng = random.Random(seed)
        self._pace = pace
        #: service name -> its running tasks: ARN -> container instance ARN (EC2) or None
        self.running: dict[str, dict[str, str | None]] = {}

    async def _send(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 10):  # PutEvents takes 10 entries a call
            await self._emit(events[start : start + 10])

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self._pace)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._scenario(stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the demo keeps serving what it has
            log.error("simulator_failed", error=f"{type(exc).__name__}: {exc}")

    async def _start(
        self, svc: DemoService, count: int, deployment: str, *, revision: int = 1
    ) -> list[tuple[str, str | None]]:
        """Start ``count`` tasks in moto and emit their lifecycle up to RUNNING."""
        tasks = await run_tasks(self._ecs, self._fleet, svc, count, started_by=deployment)
        events: list[dict[str, Any]] = []
        for n, task in enumerate(tasks):
            arn, instance = task["taskArn"], task.get("containerInstanceArn")
            spot = svc.spot and n % 4 != 0
            events += task_lifecycle(
                self._rng,
                cluster=svc.cluster,
                service=svc.name,
                family=svc.name,
                revision=revision,
                deployment_id=deployment,
                start=datetime.now(UTC),
                launch_type=svc.launch,
                stop=False,
                task_arn=arn,
                container_instance_arn=instance,
                capacity_provider=("FARGATE_SPOT" if spot else "FARGATE")
                if svc.launch == "FARGATE"
                else None,
            )
            self.running.setdefault(svc.name, {})[arn] = instance
        await self._send(events)
        return [(t["taskArn"], t.get("containerInstanceArn")) for t in tasks]

    async def _stop(
        self,
        svc: DemoService,
        arn: str,
        deployment: str,
        *,
        stop_code: str,
        exit_code: int,
        reason: str,
    ) -> None:
        """Stop a running task in moto and emit its stop events."""
        instance = self.running.get(svc.name, {}).pop(arn, None)
        await stop_tasks(self._ecs, svc.cluster, [arn], reason)
        await self._send(
            task_lifecycle(
                self._rng,
                cluster=svc.cluster,
                service=svc.name,
                family=svc.name,
                revision=1,
                deployment_id=deployment,
                start=datetime.now(UTC) - timedelta(minutes=5),
                launch_type=svc.launch,
                stop=True,
                only_stop=True,
                first_version=50,
                task_arn=arn,
                container_instance_arn=instance,
                stop_code=stop_code,
                exit_code=exit_code,
                stopped_reason=reason,
            )
        )

    async def _crash(self, svc: DemoService, deployment: str, crashes: tuple[Crash, ...]) -> None:
        """Tasks of ``deployment`` that start, crash and stop (in moto too)."""
        for stop_code, exit_code, reason, container_reason in crashes:
            tasks = await run_tasks(self._ecs, self._fleet, svc, 1, started_by=deployment)
            arns = [t["taskArn"] for t in tasks]
            await stop_tasks(self._ecs, svc.cluster, arns, reason)
            for task in tasks:
                await self._send(
                    task_lifecycle(
                        self._rng,
                        cluster=svc.cluster,
                        service=svc.name,
                        family=svc.name,
                        revision=2,
                        deployment_id=deployment,
                        start=datetime.now(UTC),
                        launch_type=svc.launch,
                        fail=exit_code is not None,
                        stop=True,
                        task_arn=task["taskArn"],
                        container_instance_arn=task.get("containerInstanceArn"),
                        stop_code=stop_code,
                        exit_code=exit_code,
                        stopped_reason=reason,
                        container_reason=container_reason,
                        container_ran=exit_code is not None,
                    )
                )
            await self._sleep(1)

    async def _scenario(self, stop: asyncio.Event) -> None:
        fleet = self._fleet
        now = datetime.now(UTC)
        # 1. The fleet comes up.
        for arn, ec2 in fleet.instances.items():
            await self._send(
                container_instance_events(
                    self._rng,
                    cluster=EC2_CLUSTER,
                    count=1,
                    start=now,
                    arn=arn,
                    ec2_instance_id=ec2,
                    agent_connected=True,
                )
            )
        for svc in _services(fleet):
            await self._send(
                deployment_events(
                    cluster=svc.cluster,
                    service=svc.name,
                    deployment_id=fleet.deployments[svc.name],
                    start=now - timedelta(hours=1),
                )
            )
            await self._start(svc, svc.tasks, fleet.deployments[svc.name])
        log.info("simulator_fleet_running", services=len(fleet.deployments))
        await self._sleep(2)
        # 2. One instance drains, another loses its agent.
        draining, disconnected = list(fleet.instances)[1:3]
        await self._ecs.update_container_instances_state(
            cluster=EC2_CLUSTER, containerInstances=[draining], status="DRAINING"
        )
        await self._send(
            container_instance_events(
                self._rng,
                cluster=EC2_CLUSTER,
                count=1,
                start=datetime.now(UTC),
                arn=draining,
                ec2_instance_id=fleet.instances[draining],
                status="DRAINING",
                agent_connected=True,
                first_version=40,
            )
            + container_instance_events(
                self._rng,
                cluster=EC2_CLUSTER,
                count=1,
                start=datetime.now(UTC),
                arn=disconnected,
                ec2_instance_id=fleet.instances[disconnected],
                agent_connected=False,
                first_version=40,
            )
        )
        await self._sleep(2)
        await self._rollout_that_succeeds()
        await self._sleep(2)
        await self._rollout_that_fails()
        await self._sleep(2)
        await self._rollout_that_crash_loops()
        await self._sleep(2)
        await self._codedeploy_blue_green()
        # 7. Churn until stopped.
        while not stop.is_set():
            await self._sleep(6)
            await self._churn()

    async def _rollout_that_succeeds(self) -> None:
        svc = self._fleet.service("api")
        start = datetime.now(UTC)
        events = deployment_events(
            cluster=svc.cluster, service=svc.name, deployment_id=GOOD_ROLLOUT, start=start
        )
        await self._send(events[:1])
        old = list(self.running.get(svc.name, {}))
        await self._start(svc, 2, GOOD_ROLLOUT, revision=2)
        for arn in old:
            await self._stop(
                svc,
                arn,
                self._fleet.deployments[svc.name],
                stop_code="ServiceSchedulerInitiated",
                exit_code=0,
                reason=f"Scaling activity initiated by (deployment {GOOD_ROLLOUT})",
            )
        await self._send(events[1:])
        log.info("simulator_rollout_succeeded", service=svc.name, deployment=GOOD_ROLLOUT)

    async def _rollout_that_fails(self) -> None:
        svc = self._fleet.service("web")
        stable = self._fleet.deployments[svc.name]
        start = datetime.now(UTC)
        events = deployment_events(
            cluster=svc.cluster,
            service=svc.name,
            deployment_id=BAD_ROLLOUT,
            start=start,
            outcome="failed",
            rollback_to=stable,
        )
        await self._send(events[:1])
        await self._crash(svc, BAD_ROLLOUT, (_PULL_FAILURE,) * 3)
        await self._send(events[1:3])  # circuit breaker: FAILED, rolling back to stable
        # The synthetic rollback notice is stamped start+4 min: the restored
        # deployment completes after it.
        restored = deployment_events(
            cluster=svc.cluster,
            service=svc.name,
            deployment_id=stable,
            start=start + timedelta(minutes=5),
        )
        await self._send(restored[1:])  # the stable deployment completes again
        log.info("simulator_rollout_failed", service=svc.name, deployment=BAD_ROLLOUT)

    async def _rollout_that_crash_loops(self) -> None:
        svc = self._fleet.service("batch")
        events = deployment_events(
            cluster=svc.cluster,
            service=svc.name,
            deployment_id=CRASH_ROLLOUT,
            start=datetime.now(UTC),
        )
        await self._send(events[:1])  # in progress, and no circuit breaker to end it
        await self._crash(svc, CRASH_ROLLOUT, (_OOM_KILL,) * 3)
        log.info("simulator_rollout_crash_looping", service=svc.name, deployment=CRASH_ROLLOUT)

    async def _codedeploy_blue_green(self) -> None:
        svc = self._fleet.service("checkout")
        try:
            created = await self._codedeploy.create_deployment(
                applicationName=CODEDEPLOY_APP,
                deploymentGroupName=CODEDEPLOY_GROUP,
                description="demo blue/green",
            )
            deployment_id = str(created["deploymentId"])
        except Exception as exc:  # moto's CodeDeploy is thin: the events carry the story
            log.info("simulator_codedeploy_synthetic", reason=f"{type(exc).__name__}: {exc}")
            deployment_id = "d-DEMO0BLUE"
        await self._send([codedeploy_event(deployment_id, "START", datetime.now(UTC))])
        # The green tasks, started by CodeDeploy (their startedBy names its deployment).
        await self._start(svc, svc.tasks, deployment_id, revision=2)
        await self._sleep(2)
        await self._send([codedeploy_event(deployment_id, "SUCCESS", datetime.now(UTC))])
        log.info("simulator_codedeploy_succeeded", deployment=deployment_id)

    async def _churn(self) -> None:
        """One steady-state notice and one stopped-and-replaced task."""
        fleet = self._fleet
        svc = self._rng.choice([s for s in _services(fleet) if s.name != "batch"])
        t = datetime.now(UTC)
        detail = {
            "eventType": "INFO",
            "eventName": "SERVICE_STEADY_STATE",
            "clusterArn": cluster_arn(svc.cluster),
            "createdAt": iso(t, 3),
        }
        await self._send(
            [envelope("ECS Service Action", [service_arn(svc.cluster, svc.name)], detail, t)]
        )
        running = list(self.running.get(svc.name, {}))
        if not running:
            return
        arn = self._rng.choice(running)
        deployment = GOOD_ROLLOUT if svc.name == "api" else fleet.deployments[svc.name]
        if svc.spot:
            await self._stop(
                svc,
                arn,
                deployment,
                stop_code="SpotInterruption",
                exit_code=143,
                reason="Your Spot Task was interrupted.",
            )
        else:
            await self._stop(
                svc,
                arn,
                deployment,
                stop_code="UserInitiated",
                exit_code=143,
                reason="Task stopped by user",
            )
        await self._start(svc, 1, deployment)


def _services(fleet: Fleet) -> list[DemoService]:
    from service.demo.fleet import SERVICES

    return [s for s in SERVICES if s.name in fleet.deployments]
