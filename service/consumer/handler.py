"""One batch of messages: parse → normalise → apply → quarantine → commit.

The handler decides, per message, whether its effects are committed (then the
caller may delete it) or whether it must stay in the queue (transient failure).
A batch is written in one transaction with multi-row statements; if that fails
for a reason other than a transient fault, every message is retried alone so
that one bad message never fails its neighbours.

An event from a scope (account, region) ecswatch holds no credentials for is
stored like any other; once its batch committed it is counted in
``ecswatch_unmonitored_events_total`` by account, and each such scope new to this
process is recorded for ``GET /v1/accounts`` (``monitored`` false) in one short
statement for the batch, whether enrichment is on or off (docs/aws.md, "Accounts
and regions").
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import telemetry
from service.alerts.rules import AlertRules
from service.aws.backoff import Backoff
from service.aws.scopes import Scope
from service.config import ServiceRef
from service.consumer.transaction import BatchResult, commit_events
from service.db import is_contention as _is_contention
from service.db import is_transient_db_error, sqlstate_of
from service.errors import PermanentError
from service.events.models import NormalisedEvent
from service.events.normalise import HEARTBEAT_SOURCE, SCOPE_HEARTBEAT_DETAIL_TYPE, parse_message
from service.events.scopes import event_scope
from service.logging import get_logger
from service.state.apply import Applied
from service.state.heartbeats import SELF_SCOPE, record_heartbeat, scope_key
from service.state.quarantine import Poison, quarantine
from service.state.scopes import record_unmonitored

log = get_logger(__name__)

# Deadlocks and serialisation failures between replicas: retry at once, a few times.
_IMMEDIATE_RETRIES = 3
# Messages parsed between two yields to the event loop.
_PARSE_SLICE = 8
#: Unwatched scopes a process remembers having recorded (a bound on its memory).
MAX_UNMONITORED_SCOPES = 10_000


@dataclass(frozen=True, slots=True)
class Message:
    """A unit of work: an SQS message, or an event read from a file by replay."""

    message_id: str
    body: str
    receipt_handle: str | None = None
    sent_at: datetime | None = None
    receive_count: int = 1


@dataclass
class HandleResult:
    """Which messages are finished (delete them) and which must be redelivered."""

    done: list[Message] = field(default_factory=list)
    retry: list[Message] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # message id -> outcome

    def merge(self, other: HandleResult) -> None:
        self.done.extend(other.done)
        self.retry.extend(other.retry)
        self.outcomes.update(other.outcomes)


def _detail_type_label(event: NormalisedEvent | None) -> str:
    return event.detail_type[:64] if event is not None else "unparseable"


def _heartbeat_scopes(event: NormalisedEvent) -> tuple[str, ...]:
    """The ``heartbeats`` rows a heartbeat counts for.

    The scope of the event's ``account`` and ``region`` as EventBridge set them on
    ``PutEvents`` and keeps them when a rule forwards the event to another bus: never
    a field the sender chose. For ecswatch's own heartbeat (any detail-type but a
    scope heartbeat's) the ``self`` row too. The organization's bus admits only scope
    heartbeats from its member accounts, so a member account can make only its own
    scope's heartbeat fresh. A scope heartbeat without an ``account`` (no EventBridge
    path delivers one; moto's cross-bus forwarding does) counts for the scope its
    detail names.
    """
    envelope = event.envelope
    rows: list[str] = []
    if envelope.detail_type != SCOPE_HEARTBEAT_DETAIL_TYPE:
        rows.append(SELF_SCOPE)
        account, region = envelope.account, envelope.region
    elif envelope.account:
        account, region = envelope.account, envelope.region
    else:
        named = event.raw.get("detail")
        named = named if isinstance(named, dict) else {}
        account, region = named.get("account_id"), named.get("region")
    if isinstance(account, str) and isinstance(region, str) and account and region:
        rows.append(scope_key(account, region))
    return tuple(rows)


class Handler:
    """Turns messages into committed state; shared by the consumer and replay."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        codedeploy_groups: dict[str, ServiceRef] | None = None,
        alert_rules: AlertRules | None = None,
        datadog: bool = False,
        after_commit: Callable[[Sequence[NormalisedEvent]], None] | None = None,
        monitors: Callable[[Scope], bool] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._groups = codedeploy_groups or {}
        self._alert_rules = alert_rules or AlertRules()
        # Write Datadog facts and outbox rows (only when forwarding is on).
        self._datadog = datadog
        # Called with the applied events once their transaction committed (enrichment).
        self._after_commit = after_commit
        # Whether ecswatch watches a scope; None: unknown, nothing counted as unmonitored.
        self._monitors = monitors
        self._unmonitored_recorded: set[tuple[str, str]] = set()

    async def handle(
        self, messages: Sequence[Message], *, now: datetime | None = None
    ) -> HandleResult:
        """Process ``messages``; never raises for bad input or a database outage."""
        now = now or datetime.now(UTC)
        parsed: list[tuple[Message, NormalisedEvent]] = []
        poison: list[tuple[Message, Poison, str]] = []
        received: Counter[str] = Counter()
        heartbeats: list[tuple[Message, tuple[str, ...], datetime]] = []
        for index, message in enumerate(messages):
            if index % _PARSE_SLICE == _PARSE_SLICE - 1:
                # Parsing is the longest stretch of Python in a batch (~20 ms for
                # 500 messages): let the other worker's transaction, which may hold
                # the rows this one needs, send its next statement meanwhile.
                await asyncio.sleep(0)
            try:
                event = parse_message(message.body, received_at=now)
            except PermanentError as exc:
                item = Poison(message.body, exc.detail, message.message_id)
                poison.append((message, item, "unparseable"))
                received["unparseable"] += 1
                continue
            received[_detail_type_label(event)] += 1
            if event.envelope.source == HEARTBEAT_SOURCE:
                # Proof that the path from the bus works: counted above, its time
                # recorded; never stored as an ECS event (docs/events.md).
                heartbeats.append((message, _heartbeat_scopes(event), event.envelope.time))
                continue
            parsed.append((message, event))
        for label, count in received.items():
            telemetry.EVENTS_RECEIVED.labels(label).inc(count)
        beats = await self._record_heartbeats(heartbeats, now) if heartbeats else HandleResult()
        try:
            committed = await self._commit(parsed, poison)
        except Exception as exc:
            if is_transient_db_error(exc):
                log.warning("batch_transient_failure", error=type(exc).__name__, size=len(messages))
                retry = HandleResult(retry=[m for m, _ in parsed] + [m for m, _, _ in poison])
                retry.merge(beats)
                return retry
            log.warning("batch_failed_falling_back", error=_short(exc), size=len(messages))
        else:
            committed.merge(beats)
            return committed
        result = beats
        for message, event in parsed:
            result.merge(await self._one(message, event))
        for message, item, label in poison:
            result.merge(await self._one_poison(message, item, label))
        return result

    async def _record_heartbeats(
        self, heartbeats: list[tuple[Message, tuple[str, ...], datetime]], now: datetime
    ) -> HandleResult:
        """Record each scope's newest heartbeat time; on failure the heartbeats stay queued."""
        result = HandleResult()
        newest: dict[str, datetime] = {}
        for _, scopes, at in heartbeats:
            for scope in scopes:
                newest[scope] = max(at, newest.get(scope, at))
        try:
            async with self._sessionmaker() as session, session.begin():
                for scope, at in sorted(newest.items()):
                    await record_heartbeat(session, at, now=now, scope=scope)
        except Exception as exc:
            log.warning("heartbeat_not_recorded", error=_short(exc))
            result.retry.extend(m for m, _, _ in heartbeats)
            return result
        for message, _, _ in heartbeats:
            result.done.append(message)
            result.outcomes[message.message_id] = "heartbeat"
        return result

    async def _commit(
        self,
        parsed: list[tuple[Message, NormalisedEvent]],
        poison: list[tuple[Message, Poison, str]],
    ) -> HandleResult:
        # Deadlock / serialization retries: 0.05 s, then 0.1 s (the one backoff).
        contention = Backoff(initial=0.05, cap=0.1, jitter=0.0)
        for attempt in range(_IMMEDIATE_RETRIES):
            try:
                async with self._sessionmaker() as session, session.begin():
                    batch = await commit_events(
                        session,
                        [e for _, e in parsed],
                        codedeploy_groups=self._groups,
                        alert_rules=self._alert_rules,
                        datadog=self._datadog,
                    )
                    await quarantine(session, [p for _, p, _ in poison])
                break
            except Exception as exc:
                if _is_contention(exc) and attempt + 1 < _IMMEDIATE_RETRIES:
                    await contention.sleep()
                    continue
                raise
        self._notify_committed(parsed, batch)
        result = HandleResult()
        seen: set[str] = set()
        counts: Counter[tuple[str, Applied]] = Counter()
        for message, event in parsed:
            outcome = batch.outcomes.get(event.envelope.id, Applied.DUPLICATE)
            if event.envelope.id in seen:  # the same event twice in this batch
                outcome = Applied.DUPLICATE
            seen.add(event.envelope.id)
            counts[_detail_type_label(event), outcome] += 1
            result.done.append(message)
            result.outcomes[message.message_id] = outcome.value
        for (label, outcome), count in counts.items():
            _count(label, outcome, count)
        for alert in batch.alerts:  # committed: count them now
            telemetry.ALERTS_RAISED.labels(alert.type.value).inc()
        for message, item, label in poison:
            telemetry.EVENTS_QUARANTINED.labels(label).inc()
            log.info("message_quarantined", message_id=message.message_id, error=item.error)
            result.done.append(message)
            result.outcomes[message.message_id] = "quarantined"
        if self._monitors is not None and parsed:
            try:
                await self._unmonitored([e for _, e in parsed], batch)
            except Exception as exc:  # informative only: never touch a committed message
                log.error("unmonitored_count_failed", error=_short(exc))
        return result

    async def _unmonitored(self, events: Sequence[NormalisedEvent], batch: BatchResult) -> None:
        """Count the committed batch's stored events of unwatched scopes, by account, and
        record the scopes this process has not recorded yet (one statement)."""
        assert self._monitors is not None
        counts: Counter[str] = Counter()
        new: set[tuple[str, str]] = set()
        seen: set[str] = set()
        for event in events:
            outcome = batch.outcomes.get(event.envelope.id, Applied.DUPLICATE)
            if outcome is Applied.DUPLICATE or event.envelope.id in seen:
                continue
            seen.add(event.envelope.id)
            where = event_scope(event)
            if where is None or self._monitors(Scope(*where)):
                continue
            counts[where[0]] += 1
            if where not in self._unmonitored_recorded:
                new.add(where)
        for account, count in counts.items():
            telemetry.UNMONITORED_EVENTS.labels(account).inc(count)
        room = MAX_UNMONITORED_SCOPES - len(self._unmonitored_recorded)
        if not new or room <= 0:
            return
        record = sorted(new)[:room]
        try:
            async with self._sessionmaker() as session, session.begin():
                await record_unmonitored(session, record)
        except Exception as exc:  # tried again with the scope's next batch
            log.info("unmonitored_not_recorded", error=_short(exc))
            return
        self._unmonitored_recorded.update(record)
        for account, region in record:
            log.info("unmonitored_scope", account_id=account, region=region)

    def _notify_committed(
        self, parsed: list[tuple[Message, NormalisedEvent]], batch: BatchResult
    ) -> None:
        if self._after_commit is None or not parsed:
            return
        applied = [e for _, e in parsed if batch.outcomes.get(e.envelope.id) is Applied.APPLIED]
        if applied:
            try:
                self._after_commit(applied)
            except Exception as exc:  # enrichment must never touch a committed message
                log.error("after_commit_failed", error=_short(exc))

    async def _one(self, message: Message, event: NormalisedEvent) -> HandleResult:
        try:
            return await self._commit([(message, event)], [])
        except Exception as exc:
            if is_transient_db_error(exc):
                return HandleResult(retry=[message])
            if not isinstance(exc, DBAPIError) or not _refuses_this_event(exc):
                # Not the database refusing this event's data: a bug of ours, or the
                # database refusing *us* (permission denied, missing column after a
                # migration, read-only replica). Keep the message in SQS (and then
                # the DLQ) to replay after a fix, not in quarantine.
                log.error(
                    "event_failed_unexpectedly", message_id=message.message_id, error=_short(exc)
                )
                return HandleResult(retry=[message])
            error = f"{event.detail_type}: cannot be stored ({_short(exc)})"
            poison = Poison(message.body, error, message.message_id)
            return await self._one_poison(message, poison, _detail_type_label(event))

    async def _one_poison(
        self, message: Message, item: Poison, label: str = "unparseable"
    ) -> HandleResult:
        try:
            return await self._commit([], [(message, item, label)])
        except Exception as exc:
            # Even the quarantine write failed: keep the message for SQS (and the DLQ).
            log.error("quarantine_failed", message_id=message.message_id, error=_short(exc))
            return HandleResult(retry=[message])


def _count(label: str, outcome: Applied, count: int) -> None:
    if outcome is Applied.APPLIED:
        telemetry.EVENTS_APPLIED.labels(label).inc(count)
    elif outcome is Applied.STALE:
        telemetry.EVENTS_STALE.labels(label).inc(count)
    elif outcome is Applied.DUPLICATE:
        telemetry.EVENTS_DUPLICATE.labels(label).inc(count)
    else:
        telemetry.EVENTS_UNKNOWN_TYPE.labels(label).inc(count)


# SQLSTATE classes that blame the data of one event: 22 data exception (out of
# range, invalid text representation, ...) and 23 integrity constraint violation.
# Anything else (42 syntax error or access rule violation, 25 read-only
# transaction, XX internal error, ...) blames the deployment, not the event.
_EVENT_DATA_SQLSTATE_CLASSES = ("22", "23")


def _refuses_this_event(exc: BaseException) -> bool:
    state = sqlstate_of(exc)
    if state is None:
        # The driver refused a parameter before sending it (asyncpg's "invalid
        # input for query argument"): the value came from the event.
        return "invalid input for query argument" in str(exc)
    return state[:2] in _EVENT_DATA_SQLSTATE_CLASSES


def _short(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
