"""The Datadog senders: outbox rows of metric series and of events, to Datadog.

Built on the real async ``datadog-api-client`` (``MetricsApi.submit_metrics``,
v2 series, compressed; ``EventsApi.create_event``, v1). The client's own retry
is off: its backoff cannot go under 2 s and the async client ignores the retry
policy, so the retry decision is ours (:func:`decide`) and the dispatcher owns
the schedule: 408, 429 and 5xx are retried (honouring ``X-RateLimit-Reset``),
413 splits the batch, 400 and 403 (and any other 4xx) mark the row dead.

Row payloads (written by :mod:`service.datadog.outbox` and
:mod:`service.datadog.gauges`) use unprefixed registry names; the prefix and
the ``ECSWATCH_DATADOG_TAG_KEYS`` filter are applied here, at send time.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import zstandard
from datadog_api_client import AsyncApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.model.event_alert_type import EventAlertType
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.metric_content_encoding import MetricContentEncoding
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_series import MetricSeries

from service import telemetry
from service.config import Settings
from service.datadog.batching import (
    MAX_UNCOMPRESSED,
    Batch,
    RowSeries,
    drop_old_points,
    merge_counts,
    plan_batches,
    split_by_rows,
    split_in_half,
)
from service.datadog.metrics import REGISTRY, MetricName
from service.datadog.tags import merge_tags, resource_tags
from service.logging import get_logger
from service.outbox.models import OutboxKind
from service.outbox.sender import ClaimedRow, Sender, SendResult, SendStatus

log = get_logger(__name__)

# Datadog refuses points older than about an hour; a little margin for the trip.
MAX_POINT_AGE_S = 3_540.0
# Datadog's limits on v1 events.
MAX_EVENT_TITLE = 100
MAX_EVENT_TEXT = 4_000
MAX_AGGREGATION_KEY = 100
# ecswatch's own event source: never a Datadog integration's ("amazon ecs" is the
# official ECS integration's), so ecswatch's events are not taken for its.
SOURCE_TYPE_NAME = "ecswatch"
# Datadog takes events at most 18 hours old; older ones are dropped, with the reason.
MAX_EVENT_AGE_S = 17.5 * 3_600
# Requests in flight per send() call.
_CONCURRENCY = 4
# Requests are kept well under Datadog's 5 MB: the client builds and serialises a
# payload on the event loop, and a 1 MB one (about 10,000 points) takes a fraction
# of a second there; a 5 MB one would stall every other role of the process.
REQUEST_BYTES = 1_048_576
_REQUEST_TIMEOUT_S = 30.0


def _zstd(data: bytes) -> bytes:
    # The same codec and level the client applies for content_encoding=zstd1.
    return zstandard.ZstdCompressor().compress(data)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zstd1": _zstd,
    "gzip": _gzip,
    "deflate": zlib.compress,
}


# --- the retry decision (pure) -------------------------------------------------


class Verdict(StrEnum):
    """What to do about one failed request."""

    RETRY = "retry"
    SPLIT = "split"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on a failed request, with the wait the intake asked for."""

    verdict: Verdict
    error: str
    retry_after: float | None = None


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def decide(status: int | None, headers: dict[str, str] | None, error: str) -> Decision:
    """The verdict on a request that failed with HTTP ``status`` (None: no answer).

    408, 429, 5xx and network errors are retried; ``X-RateLimit-Reset`` (seconds
    until the limit resets) or ``Retry-After`` sets the wait. 413 splits the batch.
    Any other status (400, 401, 403, 404, ...) will not get better by retrying.
    """
    if status is None or status in (408, 429) or 500 <= status <= 599:
        wait = None
        for name in ("X-RateLimit-Reset", "Retry-After"):
            raw = _header(headers, name)
            if raw is not None:
                try:
                    wait = max(0.0, float(raw))
                except ValueError:
                    continue
                break
        return Decision(Verdict.RETRY, error, wait)
    if status == 413:
        return Decision(Verdict.SPLIT, error)
    return Decision(Verdict.DEAD, error)


def _describe(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, dict) and body.get("errors"):
        detail = "; ".join(str(e) for e in body["errors"])[:300]
    else:
        detail = str(body or exc.reason or "")[:300]
    return f"HTTP {exc.status}: {detail}" if detail else f"HTTP {exc.status}"


async def _call(make: Callable[[], Any]) -> Decision | None:
    """Await the client call; None on success, else the decision about its failure."""
    try:
        async with asyncio.timeout(_REQUEST_TIMEOUT_S):
            await make()
    except ApiException as exc:
        status = int(exc.status) if exc.status is not None else None
        return decide(status, exc.headers, _describe(exc))
    except (OSError, TimeoutError) as exc:
        return decide(None, None, f"{type(exc).__name__}: {exc}"[:300])
    except Exception as exc:  # aiosonic's connection errors share no base class
        if type(exc).__module__.startswith("aiosonic"):
            return decide(None, None, f"{type(exc).__name__}: {exc}"[:300])
        raise
    return None


# --- configuration ------------------------------------------------------------


def client_configuration(settings: Settings) -> Configuration | None:
    """The client's configuration from settings; None when no API key is set."""
    if not settings.datadog_enabled:
        return None
    assert settings.dd_api_key is not None
    config = Configuration(host=settings.datadog_base_url)  # type: ignore[no-untyped-call]
    config.api_key["apiKeyAuth"] = settings.dd_api_key.get_secret_value()
    if settings.dd_app_key is not None:
        config.api_key["appKeyAuth"] = settings.dd_app_key.get_secret_value()
    config.enable_retry = False  # our schedule, not the client's (see module doc)
    return config


@dataclass(slots=True)
class _RowOutcome:
    """What became of one row's pieces."""

    dead: str | None = None
    retry: str | None = None
    retry_after: float | None = None

    def fail(self, decision: Decision) -> None:
        if decision.verdict is Verdict.DEAD:
            self.dead = self.dead or decision.error
        else:
            self.retry = self.retry or decision.error
            if decision.retry_after is not None:
                self.retry_after = max(self.retry_after or 0.0, decision.retry_after)

    def result(self, row_id: int) -> SendResult:
        if self.dead is not None:
            return SendResult(row_id, SendStatus.DEAD, error=self.dead)
        if self.retry is not None:
            return SendResult(row_id, SendStatus.RETRY, self.retry, self.retry_after)
        return SendResult(row_id, SendStatus.DELIVERED)


class _ClientOwner:
    """Opens one AsyncApiClient lazily and closes it on :meth:`aclose`."""

    def __init__(self, configuration: Configuration) -> None:
        self.configuration = configuration
        self._client: AsyncApiClient | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> AsyncApiClient:
        async with self._lock:
            if self._client is None:
                client = AsyncApiClient(self.configuration)
                await client.__aenter__()
                self._client = client
            return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.__aexit__(None, None, None)  # type: ignore[no-untyped-call]


# --- metrics -------------------------------------------------------------------


@dataclass(slots=True)
class _Prepared:
    items: list[RowSeries] = field(default_factory=list)
    points: Counter[int] = field(default_factory=Counter)  # row id -> points to send
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> points


class DatadogMetricsSender(_ClientOwner):
    """Sends ``datadog_metrics`` rows (``{"series": [...]}``) through ``submit_metrics``."""

    kinds = frozenset({OutboxKind.DATADOG_METRICS})

    def __init__(
        self,
        configuration: Configuration,
        *,
        prefix: str = "ecswatch.",
        tag_keys: Sequence[str] | None = None,
        encoding: str = "zstd1",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_point_age_s: float = MAX_POINT_AGE_S,
        request_bytes: int = REQUEST_BYTES,
    ) -> None:
        super().__init__(configuration)
        self._request_bytes = request_bytes
        self.prefix = prefix
        self.tag_keys = tuple(tag_keys) if tag_keys else None
        self.encoding = MetricContentEncoding(encoding)  # type: ignore[no-untyped-call]
        self._compress = COMPRESSORS[encoding]
        self._clock = clock
        self._max_age = max_point_age_s

    async def send(self, rows: Sequence[ClaimedRow]) -> Sequence[SendResult]:
        outcomes = {row.id: _RowOutcome() for row in rows}
        prepared = _Prepared()
        now = self._clock()
        for row in rows:
            try:
                series = [self._series(raw) for raw in row.payload.get("series", [])]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                outcomes[row.id].dead = f"malformed metrics row: {type(exc).__name__}: {exc}"
                log.error("datadog_row_malformed", row_id=row.id, error=outcomes[row.id].dead)
                continue
            known = [s for s in series if s is not None]
            for raw, built in zip(row.payload.get("series", []), series, strict=True):
                if built is None:
                    prepared.dropped["unregistered"] += len(raw.get("points", []))
                else:
                    prepared.dropped["not_finite"] += len(raw["points"]) - len(built["points"])
            split = drop_old_points(known, now=now, max_age_s=self._max_age)
            prepared.dropped["too_old"] += split.too_old
            for s in split.fresh:
                prepared.items.append(RowSeries((row.id,), s))
                prepared.points[row.id] += len(s["points"])
        for reason, count in prepared.dropped.items():
            if count:
                telemetry.DATADOG_POINTS.labels("dropped").inc(count)
                telemetry.DATADOG_DROPPED.labels("points", reason).inc(count)
                log.warning("datadog_points_dropped", reason=reason, points=count)
        plan = plan_batches(
            merge_counts(prepared.items),
            compress=self._compress,
            max_uncompressed=min(MAX_UNCOMPRESSED, self._request_bytes),
        )
        for item in plan.oversize:
            for row_id in item.row_ids:
                outcomes[row_id].dead = "a single point is larger than Datadog's payload limit"
        semaphore = asyncio.Semaphore(_CONCURRENCY)

        async def run(batch: Batch) -> None:
            async with semaphore:
                await self._send_batch(batch.items, outcomes)

        await asyncio.gather(*(run(b) for b in plan.batches))
        results = [outcomes[row.id].result(row.id) for row in rows]
        for result in results:
            points = prepared.points[result.row_id]
            if points:
                label = {"delivered": "sent", "retry": "retried", "dead": "dead"}[result.status]
                telemetry.DATADOG_POINTS.labels(label).inc(points)
            if result.status is SendStatus.DEAD:
                log.error("datadog_metrics_dead", row_id=result.row_id, error=result.error)
        return results

    def _series(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        """The v2 series of one stored series, prefixed and tagged; None if unregistered."""
        try:
            spec = REGISTRY[MetricName(raw["metric"])]
        except ValueError:
            return None
        points = [
            {"timestamp": int(p[0]), "value": float(p[1])}
            if isinstance(p, list | tuple)
            else {"timestamp": int(p["timestamp"]), "value": float(p["value"])}
            for p in raw["points"]
        ]
        # NaN and infinities are not JSON: Datadog would refuse the whole payload.
        points = [p for p in points if math.isfinite(p["value"])]
        tags = merge_tags(
            raw.get("tags") or (), resource_tags(raw.get("resource_tags") or {}, self.tag_keys)
        )
        series: dict[str, Any] = {
            "metric": self.prefix + spec.name.value,
            "type": int(spec.series_type),
            "points": points,
            "tags": tags,
        }
        if spec.unit:
            series["unit"] = spec.unit
        return series

    async def _send_batch(self, items: list[RowSeries], outcomes: dict[int, _RowOutcome]) -> None:
        client = await self.client()
        api = MetricsApi(client)  # type: ignore[no-untyped-call]
        try:
            # The models' validation is the costly part: off the event loop.
            payload = await asyncio.to_thread(_payload_of, items)
        except (TypeError, ValueError) as exc:  # the client's models refuse a value
            decision: Decision | None = Decision(Verdict.DEAD, f"invalid series: {exc}"[:300])
        else:
            decision = await _call(
                lambda: api.submit_metrics(body=payload, content_encoding=self.encoding)
            )
        if decision is None:
            return
        if decision.verdict is Verdict.SPLIT:
            halves = split_in_half(items)
            if len(halves) > 1:
                log.info("datadog_batch_split", series=len(items))
                for half in halves:
                    await self._send_batch(half, outcomes)
                return
            decision = Decision(Verdict.DEAD, decision.error + " (cannot split further)")
        if decision.verdict is Verdict.DEAD and decision.error.startswith(
            ("HTTP 400", "invalid series")
        ):
            # One bad row must not take its neighbours down: find it by halves.
            halves = split_by_rows(items)
            if len(halves) > 1:
                for half in halves:
                    await self._send_batch(half, outcomes)
                return
        log.warning("datadog_metrics_failed", verdict=decision.verdict, error=decision.error)
        telemetry.DATADOG_FAILURES.labels("metrics", _status_of(decision.error)).inc()
        for item in items:
            for row_id in item.row_ids:
                outcomes[row_id].fail(decision)


def _status_of(error: str) -> str:
    return error.split(":", 1)[0].removeprefix("HTTP ") if error.startswith("HTTP ") else "network"


def _payload_of(items: Sequence[RowSeries]) -> MetricPayload:
    return MetricPayload(series=[_to_model(i.series) for i in items])


def _to_model(series: dict[str, Any]) -> MetricSeries:
    extra: dict[str, Any] = {}
    if "unit" in series:
        extra["unit"] = series["unit"]
    return MetricSeries(
        metric=series["metric"],
        type=MetricIntakeType(series["type"]),  # type: ignore[no-untyped-call]
        points=[MetricPoint(timestamp=p["timestamp"], value=p["value"]) for p in series["points"]],
        tags=series["tags"],
        **extra,
    )


# --- events --------------------------------------------------------------------

_ALERT_TYPES = frozenset({"error", "warning", "info", "success"})


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DatadogEventSender(_ClientOwner):
    """Sends ``datadog_event`` rows, one event each, through ``create_event``."""

    kinds = frozenset({OutboxKind.DATADOG_EVENT})

    def __init__(
        self,
        configuration: Configuration,
        *,
        tag_keys: Sequence[str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        super().__init__(configuration)
        self.tag_keys = tuple(tag_keys) if tag_keys else None
        self._clock = clock

    async def send(self, rows: Sequence[ClaimedRow]) -> Sequence[SendResult]:
        semaphore = asyncio.Semaphore(_CONCURRENCY)
        cutoff = self._clock().timestamp() - MAX_EVENT_AGE_S
        dropped: set[int] = set()

        async def one(row: ClaimedRow) -> SendResult:
            happened = row.payload.get("date_happened")
            if isinstance(happened, int | float) and happened < cutoff:
                # Datadog refuses events this old: finished, counted as dropped.
                dropped.add(row.id)
                return SendResult(row.id, SendStatus.DELIVERED)
            async with semaphore:
                return await self._send_one(row)

        results = await asyncio.gather(*(one(r) for r in rows))
        if dropped:
            telemetry.DATADOG_DROPPED.labels("events", "too_old").inc(len(dropped))
            log.warning("datadog_events_dropped", reason="too_old", events=len(dropped))
        for result in results:
            label = {"delivered": "sent", "retry": "retried", "dead": "dead"}[result.status]
            if result.row_id in dropped:
                label = "dropped"
            telemetry.DATADOG_EVENTS.labels(label).inc()
            if result.status is SendStatus.DEAD:
                log.error("datadog_event_dead", row_id=result.row_id, error=result.error)
        return results

    def build(self, payload: dict[str, Any]) -> EventCreateRequest:
        """The client's request model of one stored event (limits applied)."""
        alert_type = payload.get("alert_type", "info")
        if alert_type not in _ALERT_TYPES:
            raise ValueError(f"unknown alert_type {alert_type!r}")
        tags = merge_tags(
            payload.get("tags") or (),
            resource_tags(payload.get("resource_tags") or {}, self.tag_keys),
        )
        extra: dict[str, Any] = {}
        if payload.get("aggregation_key"):
            extra["aggregation_key"] = truncate(
                str(payload["aggregation_key"]), MAX_AGGREGATION_KEY
            )
        if payload.get("date_happened") is not None:
            extra["date_happened"] = int(payload["date_happened"])
        return EventCreateRequest(
            title=truncate(str(payload["title"]), MAX_EVENT_TITLE),
            text=truncate(str(payload.get("text") or ""), MAX_EVENT_TEXT),
            alert_type=EventAlertType(alert_type),  # type: ignore[no-untyped-call]
            tags=tags,
            source_type_name=SOURCE_TYPE_NAME,
            **extra,
        )

    async def _send_one(self, row: ClaimedRow) -> SendResult:
        try:
            body = self.build(row.payload)
        except (KeyError, TypeError, ValueError) as exc:
            return SendResult(row.id, SendStatus.DEAD, f"malformed event row: {exc}")
        client = await self.client()
        api = EventsApi(client)  # type: ignore[no-untyped-call]
        decision = await _call(lambda: api.create_event(body=body))
        if decision is None:
            return SendResult(row.id, SendStatus.DELIVERED)
        telemetry.DATADOG_FAILURES.labels("events", _status_of(decision.error)).inc()
        log.warning("datadog_event_failed", row_id=row.id, error=decision.error)
        if decision.verdict is Verdict.RETRY:
            return SendResult(row.id, SendStatus.RETRY, decision.error, decision.retry_after)
        return SendResult(row.id, SendStatus.DEAD, decision.error)


# --- wiring --------------------------------------------------------------------


@dataclass
class DatadogSenders:
    """The two senders, or none when forwarding is off."""

    metrics: DatadogMetricsSender
    events: DatadogEventSender

    def all(self) -> list[DatadogMetricsSender | DatadogEventSender]:
        return [self.metrics, self.events]

    async def aclose(self) -> None:
        await self.metrics.aclose()
        await self.events.aclose()


def build_senders(settings: Settings) -> DatadogSenders | None:
    """Senders for both Datadog kinds; None when no API key is set (the supervisor
    says so once at start: ``datadog_forwarding_off``)."""
    configuration = client_configuration(settings)
    if configuration is None:
        return None
    keys = settings.datadog_tag_keys or None
    log.info("datadog_forwarding_on", url=settings.datadog_base_url)
    return DatadogSenders(
        metrics=DatadogMetricsSender(configuration, prefix=settings.metric_prefix, tag_keys=keys),
        events=DatadogEventSender(configuration, tag_keys=keys),
    )


@asynccontextmanager
async def open_datadog_senders(settings: Settings) -> AsyncIterator[list[Sender]]:
    """The Datadog senders for the dispatcher (none when forwarding is off), closed on exit."""
    senders = build_senders(settings)
    if senders is None:
        yield []
        return
    try:
        yield [senders.metrics, senders.events]
    finally:
        await senders.aclose()
