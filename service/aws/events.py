"""Typed adapter over EventBridge PutEvents: ecswatch's heartbeat on the default bus."""

from __future__ import annotations

import json
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from service.aws.calls import AwsCaller, AwsCallFailed
from service.events.normalise import HEARTBEAT_SOURCE, SCOPE_HEARTBEAT_DETAIL_TYPE

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_events.type_defs import PutEventsRequestEntryTypeDef

__all__ = ["HEARTBEAT_DETAIL_TYPE", "HEARTBEAT_SOURCE", "SCOPE_HEARTBEAT_DETAIL_TYPE", "EventsApi"]

#: The heartbeat's ``detail-type`` (its ``source`` is ``ecswatch.heartbeat``:
#: EventBridge refuses ``aws.*`` sources from callers).
HEARTBEAT_DETAIL_TYPE = "ecswatch heartbeat"


class EventsApi:
    """EventBridge writes, each through the shared :class:`AwsCaller`."""

    def __init__(self, client: EventBridgeClient, caller: AwsCaller) -> None:
        self._client = client
        self._caller = caller

    async def put_heartbeat(
        self,
        at: datetime,
        *,
        bus: str = "default",
        detail_type: str = HEARTBEAT_DETAIL_TYPE,
        scope: tuple[str, str] | None = None,
    ) -> str:
        """Put one heartbeat event stamped ``at`` on ``bus``; its EventBridge id.

        PutEvents answers 200 even when it refuses an entry: a refused entry
        (``FailedEntryCount``) raises :class:`AwsCallFailed` with its error code.
        ``scope`` (account, region) goes in the detail of a scope's heartbeat.
        """
        detail: dict[str, str] = {"sent_at": at.isoformat()}
        if scope is not None:
            detail["account_id"], detail["region"] = scope
        entry: PutEventsRequestEntryTypeDef = {
            "Source": HEARTBEAT_SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail),
            "Time": at,
            "EventBusName": bus,
        }
        answer = await self._caller.call(
            "events", "PutEvents", partial(self._client.put_events, Entries=[entry])
        )
        entries = answer.get("Entries") or [{}]
        first = entries[0]
        if answer.get("FailedEntryCount") or "EventId" not in first:
            code = first.get("ErrorCode") or "unknown"
            raise AwsCallFailed(
                f"events:PutEvents refused the heartbeat: {code} {first.get('ErrorMessage', '')}"[
                    :500
                ],
                code=code,
            )
        return str(first["EventId"])
