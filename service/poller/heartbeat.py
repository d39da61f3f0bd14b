"""The poller leader's heartbeat: proof that the event path still delivers.

Every ``ECSWATCH_HEARTBEAT_INTERVAL_S`` the leader puts one event with source
``ecswatch.heartbeat`` and detail-type ``ecswatch heartbeat`` on the default
event bus. It takes the same way as ECS's events (the EventBridge rule, the
queue's policy, the queue, a consumer), and the consumer records its time in the
``heartbeats`` table. When any link breaks (rule disabled or edited, policy
broken, consumer down, no poller leader) the heartbeat's age grows past its
threshold and the alarms fire (docs/runbook.md, "ecswatch is blind").
"""

from __future__ import annotations

from datetime import datetime

from service.aws.events import EventsApi
from service.logging import get_logger
from service.poller.leader import Job

log = get_logger(__name__)


class Heartbeat:
    """Puts the heartbeat on the bus; one run of the leader's ``heartbeat`` job."""

    def __init__(self, events: EventsApi, *, bus: str = "default") -> None:
        self._events = events
        self._bus = bus

    async def beat(self, now: datetime) -> str:
        """Put one heartbeat stamped ``now``; its EventBridge id."""
        event_id = await self._events.put_heartbeat(now, bus=self._bus)
        log.debug("heartbeat_sent", event_id=event_id)
        return event_id


def heartbeat_job(heartbeat: Heartbeat, interval_s: float) -> Job:
    """The leader's ``heartbeat`` job (a failed put waits for its next turn)."""
    return Job("heartbeat", interval_s, heartbeat.beat)
