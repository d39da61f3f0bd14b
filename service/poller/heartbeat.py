"""The poller leader's heartbeat: proof that the event path still delivers.

Every ``ECSWATCH_HEARTBEAT_INTERVAL_S`` the leader puts one event with source
``ecswatch.heartbeat`` and detail-type ``ecswatch heartbeat`` on the default
event bus. It takes the same way as ECS's events (the EventBridge rule, the
queue's policy, the queue, a consumer), and the consumer records its time in the
``heartbeats`` table. When any link breaks (rule disabled or edited, policy
broken, consumer down, no poller leader) the heartbeat's age grows past its
threshold and the alarms fire (docs/runbook.md, "ecswatch is blind").

With several scopes, the leader also puts an ``ecswatch scope heartbeat`` on the
default bus of every watched scope other than the home one, with that scope's
credentials (its member role). It takes that scope's way: the member account's
forwarding rule, the organization's bus and its rule, the queue. The consumer
records it under the event's account and region, so a broken forwarding rule in
one account shows as that scope's stale heartbeat (``GET /v1/accounts``). A scope
whose role may not put events (AccessDenied and the like) is logged once and
skipped: its heartbeat is optional, and the scope is not marked failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from service.aws.calls import AwsCallFailed
from service.aws.events import SCOPE_HEARTBEAT_DETAIL_TYPE, EventsApi
from service.aws.scopes import Scope
from service.logging import get_logger
from service.poller.leader import Job

log = get_logger(__name__)

#: Error codes that mean a scope's role may not put its heartbeat (not a failure).
REFUSED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "NotAuthorized", "UnauthorizedOperation"}
)
#: Scope heartbeats put at once.
SCOPE_CONCURRENCY = 8

#: The adapter that puts events in a scope with its credentials; None when unwatched.
ScopeEvents = Callable[[Scope], Awaitable[EventsApi | None]]


class Heartbeat:
    """Puts the heartbeats on their buses; one run of the leader's ``heartbeat`` job."""

    def __init__(
        self,
        events: EventsApi,
        *,
        bus: str = "default",
        scopes: Callable[[], list[Scope]] | None = None,
        home: Callable[[], Scope | None] | None = None,
        scope_events: ScopeEvents | None = None,
    ) -> None:
        self._events = events
        self._bus = bus
        self._scopes = scopes
        self._home = home
        self._scope_events = scope_events
        #: Scopes whose role was refused PutEvents (logged once, then skipped).
        self.refused: set[Scope] = set()

    async def beat(self, now: datetime) -> str:
        """Put the home heartbeat stamped ``now``, then each scope's; the home one's id."""
        event_id = await self._events.put_heartbeat(now, bus=self._bus)
        log.debug("heartbeat_sent", event_id=event_id)
        await self.beat_scopes(now)
        return event_id

    async def beat_scopes(self, now: datetime) -> dict[Scope, str]:
        """Put one heartbeat on each watched scope's default bus (not the home's)."""
        if self._scopes is None or self._scope_events is None:
            return {}
        home = self._home() if self._home is not None else None
        todo = [s for s in self._scopes() if s != home and s not in self.refused]
        gate = asyncio.Semaphore(SCOPE_CONCURRENCY)
        sent: dict[Scope, str] = {}

        async def one(scope: Scope) -> None:
            async with gate:
                sent_id = await self._beat_scope(scope, now)
            if sent_id is not None:
                sent[scope] = sent_id

        await asyncio.gather(*(one(s) for s in todo))
        return sent

    async def _beat_scope(self, scope: Scope, now: datetime) -> str | None:
        assert self._scope_events is not None
        try:
            events = await self._scope_events(scope)
            if events is None:
                return None
            return await events.put_heartbeat(
                now,
                bus="default",
                detail_type=SCOPE_HEARTBEAT_DETAIL_TYPE,
                scope=(scope.account, scope.region),
            )
        except AwsCallFailed as exc:
            if exc.code in REFUSED_CODES:
                self.refused.add(scope)
                log.info(
                    "scope_heartbeat_refused",
                    account_id=scope.account,
                    region=scope.region,
                    error=str(exc)[:300],
                )
            else:
                log.warning(
                    "scope_heartbeat_failed",
                    account_id=scope.account,
                    region=scope.region,
                    error=str(exc)[:300],
                )
            return None


def heartbeat_job(heartbeat: Heartbeat, interval_s: float) -> Job:
    """The leader's ``heartbeat`` job (a failed put waits for its next turn)."""
    return Job("heartbeat", interval_s, heartbeat.beat)
