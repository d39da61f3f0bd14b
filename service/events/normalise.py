"""Normalise a validated EventBridge event into a typed :class:`NormalisedEvent`.

Pure: no I/O, no clock (the caller passes ``received_at``). Real events vary a lot
(FIELDS.md): optional fields go missing, numbers arrive as strings (even
``"null"``), timestamps carry 0 to 9 fractional digits or are epoch numbers, ARNs
come in old and new formats, and unknown keys and detail-types appear. So every
field is read defensively: a value of the wrong type reads as absent, and only a
missing identifying field (the key the state is stored under) makes an event
permanently unprocessable. ``normalise`` raises nothing but
:class:`~service.errors.PermanentError`, whatever JSON it is given.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from service.errors import PermanentError
from service.events.arns import Arn, family_and_revision, parse_arn
from service.events.envelope import (
    checked_event,
    json_type_name,
    unwrap_body_with_detail_json,
)
from service.events.models import (
    AttributeEntry,
    CodeDeployDeploymentStateChange,
    Container,
    ContainerInstanceHealthChange,
    ContainerInstanceStateChange,
    DaemonDeploymentStateChange,
    DaemonServiceAction,
    DeploymentStateChange,
    DetailType,
    Envelope,
    EventDetail,
    HealthCheck,
    HookStateChange,
    NormalisedEvent,
    ResourceEntry,
    ServiceAction,
    TaskStateChange,
    UnknownDetail,
)

__all__ = [
    "ACCEPTED_SOURCES",
    "HEARTBEAT_SOURCE",
    "check_source",
    "normalise",
    "parse_int",
    "parse_message",
    "parse_timestamp",
]

#: ecswatch's own heartbeat: acknowledged and counted, never stored or alerted on.
HEARTBEAT_SOURCE = "ecswatch.heartbeat"
#: The ``detail-type`` of a watched scope's heartbeat, put on that scope's default
#: bus with its own credentials and forwarded to the organization's bus: recorded
#: under the event's ``account`` and ``region``, which EventBridge sets (docs/deploy.md,
#: "An organization"). Any other heartbeat is ecswatch's own (the ``self`` row).
SCOPE_HEARTBEAT_DETAIL_TYPE = "ecswatch scope heartbeat"
#: Event sources the consumer accepts; any other is quarantined with the reason.
ACCEPTED_SOURCES = frozenset({"aws.ecs", "aws.codedeploy", HEARTBEAT_SOURCE})

# ---------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 1e11 seconds is the year 5138, so a number that large is epoch milliseconds.
_EPOCH_MILLIS_FROM = 100_000_000_000
# Python 3.11's fromisoformat stops at 6 fractional digits and ECS sends up to 9,
# so ISO strings are parsed by hand. ASCII digits only: \d would accept other scripts.
_ISO_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?"
    r"\s*(?P<tz>[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)
# Its most common case, UTC with a `Z`, which the fast path of parse_timestamp takes.
_COMMON_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?Z"
)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Spellings of "no value" seen in events (a doc example even has "cpu": "null").
_NULL_TEXTS = frozenset({"", "null", "none"})


def parse_timestamp(value: object) -> datetime | None:
    """Read an event timestamp as a tz-aware UTC datetime, or ``None`` if there is none.

    Accepts ISO 8601 strings with 0 to 9 (or more) fractional digits, ``Z`` or a
    numeric offset (no offset means UTC); epoch seconds or milliseconds as numbers
    or numeric strings (DescribeTasks returns epoch numbers); ``datetime`` objects
    (botocore parses them). Fractions beyond microseconds are truncated, never
    rounded, so a timestamp never moves into the next second. ``None``, ``"null"``,
    ``""`` and anything unparseable give ``None``.
    """
    if type(value) is str:
        # Fast path for the form ECS sends (`2020-01-23T17:57:58.103Z`); the result
        # is the one the general parse below gives for it.
        common = _COMMON_TIMESTAMP.fullmatch(value)
        if common is not None:
            try:
                # The same value as the fields below, read in C: UTC, the fraction
                # truncated to microseconds.
                return datetime.fromisoformat(value)
            except ValueError:
                pass
            year, month, day, hour, minute, second, fraction = common.groups()
            try:
                return datetime(
                    int(year),
                    int(month),
                    int(day),
                    int(hour),
                    int(minute),
                    int(second),
                    int(fraction[:6].ljust(6, "0")) if fraction else 0,
                    tzinfo=UTC,
                )
            except ValueError:
                return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return _to_utc(value)
    if isinstance(value, int | float):
        return _from_epoch(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.lower() in _NULL_TEXTS:
        return None
    if _INTEGER.fullmatch(text):
        return _from_epoch(_str_to_int(text))
    if _DECIMAL.fullmatch(text):
        return _from_epoch(float(text))
    match = _ISO_TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    try:
        parsed = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"] or 0),
            int(fraction),
            tzinfo=_parse_offset(match["tz"]),
        )
    except ValueError:
        return None
    return _to_utc(parsed)


def parse_int(value: object) -> int | None:
    """Read an integer that may arrive as a number or a string: ``12``, ``"12"``, ``12.0``.

    ``None``, ``"null"``, booleans, fractions (``12.5``), non-finite numbers and
    anything else give ``None``.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _INTEGER.fullmatch(text):
        return _str_to_int(text)
    if _DECIMAL.fullmatch(text):
        return parse_int(float(text))
    return None


def _str_to_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        # Longer than sys.get_int_max_str_digits(): not a real count or version.
        return None


def _from_epoch(number: int | float | None) -> datetime | None:
    if number is None or (isinstance(number, float) and not math.isfinite(number)):
        return None
    try:
        if abs(number) >= _EPOCH_MILLIS_FROM:
            return _EPOCH + timedelta(milliseconds=number)
        return _EPOCH + timedelta(seconds=number)
    except (OverflowError, ValueError):
        return None


def _parse_offset(text: str | None) -> timezone:
    if text is None or text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    # timezone() raises ValueError for offsets of 24 hours or more.
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _to_utc(value: datetime) -> datetime | None:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        # e.g. 0001-01-01T00:00:00+01:00 has no UTC representation.
        return None


# ---------------------------------------------------------------------------
# Reading fields of a JSON object without trusting their types
# ---------------------------------------------------------------------------


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    # ``value and not value.isspace()`` is ``value.strip() != ""``, without a copy.
    if isinstance(value, str) and value and not value.isspace():
        return value
    return None


def _number_text(data: Mapping[str, Any], key: str) -> str | None:
    """cpu / memory: strings in events (even ``"null"``), numbers elsewhere."""
    value = data.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return _int_text(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        text = value.strip()
        return None if text.lower() in _NULL_TEXTS else text
    return None


def _int_text(number: int) -> str | None:
    try:
        return str(number)
    except ValueError:
        # More digits than sys.get_int_max_str_digits(): no real cpu or memory value.
        return None


def _flag(data: Mapping[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _texts(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str) and item.strip())


def _object(data: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    return value if isinstance(value, dict) else None


def _objects(data: Mapping[str, Any], key: str) -> tuple[dict[str, Any], ...]:
    value = data.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, dict))


def _timestamp(data: Mapping[str, Any], key: str) -> datetime | None:
    return parse_timestamp(data.get(key))


def _require_text(data: Mapping[str, Any], key: str, label: str) -> str:
    """The identifying field: without it the event cannot be stored under any key."""
    value = data.get(key)
    if value is None:
        raise PermanentError(f"{label}: detail.{key} missing")
    if not isinstance(value, str):
        raise PermanentError(f"{label}: detail.{key} is {json_type_name(value)}, not a string")
    if not value.strip():
        raise PermanentError(f"{label}: detail.{key} is empty")
    return value


# ---------------------------------------------------------------------------
# ARNs
# ---------------------------------------------------------------------------

# ECS resource types whose new-format ARN starts its path with the cluster name
# (`task/<cluster>/<id>`); their old format (`task/<id>`) has a single segment.
_CLUSTER_SCOPED_TYPES = frozenset(
    {
        "task",
        "container-instance",
        "container",
        "service",
        "task-set",
        "service-deployment",
        "service-revision",
        "daemon",
        "daemon-deployment",
        "daemon-revision",
    }
)


def _parse_arn(value: str | None) -> Arn | None:
    return parse_arn(value)


def _cluster_of(
    cluster_value: str | None, *related_arns: str | None
) -> tuple[str | None, str | None]:
    """(cluster ARN, cluster name) from ``clusterArn``, else from a new-format related ARN."""
    parsed = _parse_arn(cluster_value)
    if parsed is not None and parsed.resource_type == "cluster" and len(parsed.path) == 1:
        return cluster_value, parsed.path[0]
    for arn in related_arns:
        owner = _parse_arn(arn)
        if (
            owner is not None
            and owner.resource_type in _CLUSTER_SCOPED_TYPES
            and len(owner.path) >= 2
        ):
            name = owner.path[0]
            return owner.sibling(f"cluster/{name}"), name
    if cluster_value and parsed is None and not any(c in cluster_value for c in ":/"):
        # A bare name where ECS would send an ARN (hand-made or replayed events).
        return None, cluster_value
    return None, None


def _first_arn_of_type(
    resource_type: str, *candidates: str | None
) -> tuple[str, Arn] | tuple[None, None]:
    """The first candidate that is an ARN of ``resource_type``, as given and parsed."""
    for candidate in candidates:
        parsed = _parse_arn(candidate)
        if (
            candidate is not None
            and parsed is not None
            and parsed.resource_type == resource_type
            and parsed.path
        ):
            return candidate, parsed
    return None, None


def _service_of(*candidates: str | None) -> tuple[str | None, str | None]:
    """(service ARN, service name) from the first service ARN among ``candidates``.

    Both formats end with the name: old `service/<name>`, new `service/<cluster>/<name>`.
    """
    for candidate in candidates:
        parsed = _parse_arn(candidate)
        if parsed is not None and parsed.resource_type == "service" and parsed.path:
            return candidate, parsed.path[-1]
    return None, None


def _last_segment(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _task_definition_parts(arn: str | None) -> tuple[str | None, int | None]:
    """(family, revision) of `task-definition/<family>:<revision>`; revision may be absent."""
    family, revision = family_and_revision(arn)
    return family, None if revision is None else parse_int(revision)


# ---------------------------------------------------------------------------
# Natural keys (dedupe of versionless events, FIELDS.md rule 6)
# ---------------------------------------------------------------------------

# The key is stored in a unique text column: keep it well under btree's row limit.
_MAX_NATURAL_KEY = 512


def _digest(text: str) -> str:
    # surrogatepass: never fail here, even on text validate_event would refuse.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _natural_key(detail_type: str, *parts: str | None) -> str:
    """Readable ``detail-type|part|...``; hashed when ARNs from the message make it long.

    Parts keep fixed positions (absent = empty) so two keys never shift into each other.
    """
    key = "|".join([detail_type, *(part or "" for part in parts)])
    if len(key) > _MAX_NATURAL_KEY:
        return f"{detail_type}|sha256:{_digest(key)}"
    return key


def _reason_part(reason: str | None) -> str | None:
    # Two distinct events can share every other key field (the AWS samples do:
    # a plain IN_PROGRESS and a rollback IN_PROGRESS with the same deploymentId
    # and updatedAt), while true re-sends repeat the reason verbatim.
    return None if reason is None else f"reason:{_digest(reason)[:16]}"


# ---------------------------------------------------------------------------
# Detail builders
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    """What every builder may need besides ``detail``."""

    detail_type: str
    resources: tuple[str, ...]
    # Envelope `time` or the detail timestamp that replaced it; None when only the
    # receive time is known, which must never go into a natural key (a re-delivery
    # would get a different key).
    event_time: datetime | None
    # Envelope.time: event_time, else the receive time.
    envelope_time: datetime


@dataclass(frozen=True, slots=True)
class _Built:
    detail: EventDetail
    cluster_arn: str | None
    cluster_name: str | None
    natural_key: str | None


def _key_time(detail_time: datetime | None, context: _Context) -> str | None:
    chosen = detail_time or context.event_time
    return None if chosen is None else chosen.isoformat()


def _build_task(detail: dict[str, Any], context: _Context) -> _Built:
    task_arn = _require_text(detail, "taskArn", context.detail_type)
    container_instance_arn = _text(detail, "containerInstanceArn")
    cluster_arn, cluster_name = _cluster_of(
        _text(detail, "clusterArn"), task_arn, container_instance_arn
    )
    task_definition_arn = _text(detail, "taskDefinitionArn")
    family, revision = _task_definition_parts(task_definition_arn)
    group = _text(detail, "group")
    service_name = None
    if group is not None:
        kind, _, name = group.partition(":")
        if kind == "service" and name:
            service_name = name
        elif kind == "family" and name and family is None:
            family = name
    started_by = _text(detail, "startedBy")
    task = TaskStateChange(
        task_arn=task_arn,
        task_id=_last_segment(task_arn),
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        task_definition_arn=task_definition_arn,
        family=family,
        revision=revision,
        group=group,
        service_name=service_name,
        started_by=started_by,
        deployment_id=(
            started_by if started_by is not None and started_by.startswith("ecs-svc/") else None
        ),
        last_status=_text(detail, "lastStatus"),
        desired_status=_text(detail, "desiredStatus"),
        health_status=_text(detail, "healthStatus"),
        stop_code=_text(detail, "stopCode"),
        stopped_reason=_text(detail, "stoppedReason"),
        launch_type=_text(detail, "launchType"),
        capacity_provider_name=_text(detail, "capacityProviderName"),
        platform_version=_text(detail, "platformVersion"),
        availability_zone=_text(detail, "availabilityZone"),
        container_instance_arn=container_instance_arn,
        connectivity=_text(detail, "connectivity"),
        version=parse_int(detail.get("version")),
        cpu=_number_text(detail, "cpu"),
        memory=_number_text(detail, "memory"),
        containers=tuple(_container(item) for item in _objects(detail, "containers")),
        created_at=_timestamp(detail, "createdAt"),
        connectivity_at=_timestamp(detail, "connectivityAt"),
        pull_started_at=_timestamp(detail, "pullStartedAt"),
        pull_stopped_at=_timestamp(detail, "pullStoppedAt"),
        started_at=_timestamp(detail, "startedAt"),
        stopping_at=_timestamp(detail, "stoppingAt"),
        execution_stopped_at=_timestamp(detail, "executionStoppedAt"),
        stopped_at=_timestamp(detail, "stoppedAt"),
        updated_at=_timestamp(detail, "updatedAt"),
        attachments=_objects(detail, "attachments"),
        overrides=_object(detail, "overrides"),
        attributes=_attributes(detail),
    )
    # Task events dedupe by (taskArn, detail.version), not by a natural key.
    return _Built(task, cluster_arn, cluster_name, None)


def _container(data: dict[str, Any]) -> Container:
    return Container(
        name=_text(data, "name"),
        container_arn=_text(data, "containerArn"),
        last_status=_text(data, "lastStatus"),
        exit_code=parse_int(data.get("exitCode")),
        reason=_text(data, "reason"),
        image=_text(data, "image"),
        image_digest=_text(data, "imageDigest"),
        runtime_id=_text(data, "runtimeId"),
        cpu=_number_text(data, "cpu"),
        memory=_number_text(data, "memory"),
        health_status=_text(data, "healthStatus"),
    )


def _attributes(data: Mapping[str, Any]) -> tuple[AttributeEntry, ...]:
    entries: list[AttributeEntry] = []
    for item in _objects(data, "attributes"):
        name = _text(item, "name")
        if name is not None:
            entries.append({"name": name, "value": _text(item, "value")})
    return tuple(entries)


_RESOURCE_VALUE_KEYS = {
    "INTEGER": "integerValue",
    "LONG": "longValue",
    "DOUBLE": "doubleValue",
    "STRINGSET": "stringSetValue",
}


def _resources(data: Mapping[str, Any], key: str) -> tuple[ResourceEntry, ...]:
    entries: list[ResourceEntry] = []
    for item in _objects(data, key):
        name = _text(item, "name")
        if name is None:
            continue
        resource_type = _text(item, "type")
        value_key = _RESOURCE_VALUE_KEYS.get(resource_type or "")
        # An unknown or missing type: take whichever value field is present.
        value_keys = [value_key] if value_key else list(_RESOURCE_VALUE_KEYS.values())
        value: int | float | list[str] | None = None
        for candidate in value_keys:
            value = _resource_value(item.get(candidate))
            if value is not None:
                break
        entries.append({"name": name, "type": resource_type, "value": value})
    return tuple(entries)


def _resource_value(raw: object) -> int | float | list[str] | None:
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        # NaN and infinities cannot be stored in jsonb.
        return raw if math.isfinite(raw) else None
    if isinstance(raw, str):
        return parse_int(raw)
    if isinstance(raw, list):
        members = (
            item if isinstance(item, str) else _int_text(item)
            for item in raw
            if isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool))
        )
        return [member for member in members if member is not None]
    return None


def _build_container_instance(detail: dict[str, Any], context: _Context) -> _Built:
    arn = _require_text(detail, "containerInstanceArn", context.detail_type)
    cluster_arn, cluster_name = _cluster_of(_text(detail, "clusterArn"), arn)
    instance = ContainerInstanceStateChange(
        container_instance_arn=arn,
        ec2_instance_id=_text(detail, "ec2InstanceId"),
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        status=_text(detail, "status"),
        status_reason=_text(detail, "statusReason"),
        agent_connected=_flag(detail, "agentConnected"),
        agent_update_status=_text(detail, "agentUpdateStatus"),
        version=parse_int(detail.get("version")),
        running_tasks_count=parse_int(detail.get("runningTasksCount")),
        pending_tasks_count=parse_int(detail.get("pendingTasksCount")),
        registered_resources=_resources(detail, "registeredResources"),
        remaining_resources=_resources(detail, "remainingResources"),
        attributes=_attributes(detail),
        version_info=_object(detail, "versionInfo"),
        capacity_provider_name=_text(detail, "capacityProviderName"),
        registered_at=_timestamp(detail, "registeredAt"),
        updated_at=_timestamp(detail, "updatedAt"),
    )
    # Container-instance events dedupe by (containerInstanceArn, detail.version).
    return _Built(instance, cluster_arn, cluster_name, None)


def _build_instance_health(detail: dict[str, Any], context: _Context) -> _Built:
    arn = _require_text(detail, "containerInstanceArn", context.detail_type)
    cluster_arn, cluster_name = _cluster_of(_text(detail, "clusterArn"), arn)
    checks = tuple(
        HealthCheck(
            type=_text(item, "type"),
            status=_text(item, "status"),
            last_status_change=_timestamp(item, "lastStatusChange"),
            last_updated=_timestamp(item, "lastUpdated"),
            status_reason=_text(item, "statusReason"),
        )
        for item in _objects(detail, "healthChecks")
    )
    newest_check = max((c.last_updated for c in checks if c.last_updated), default=None)
    overall_status = _text(detail, "overallStatus")
    health = ContainerInstanceHealthChange(
        container_instance_arn=arn,
        updated_at=newest_check or context.envelope_time,
        ec2_instance_id=_text(detail, "ec2InstanceId"),
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        capacity_provider_name=_text(detail, "capacityProviderName"),
        overall_status=overall_status,
        health_checks=checks,
    )
    key_time = _key_time(newest_check, context)
    statuses = ",".join(sorted(f"{c.type or ''}={c.status or ''}" for c in checks))
    key = (
        None
        if key_time is None
        else _natural_key(context.detail_type, arn, overall_status, key_time, statuses)
    )
    return _Built(health, cluster_arn, cluster_name, key)


def _build_service_action(detail: dict[str, Any], context: _Context) -> _Built:
    event_name = _require_text(detail, "eventName", context.detail_type)
    # Service = resources[0]; detail.serviceArn, or (per the Chinese docs)
    # `serviceName` / `service` for events that come from Create/UpdateService.
    service_arn, service_name = _service_of(
        *context.resources,
        _text(detail, "serviceArn"),
        _text(detail, "service"),
        _text(detail, "serviceName"),
    )
    if service_name is None:
        for field in ("serviceName", "service"):
            name = _text(detail, field)
            if name is not None and not any(c in name for c in ":/"):
                service_name = name
                break
    cluster_arn, cluster_name = _cluster_of(_text(detail, "clusterArn"), service_arn)
    created_at = _timestamp(detail, "createdAt")
    reason = _text(detail, "reason")
    action = ServiceAction(
        event_name=event_name,
        event_type=_text(detail, "eventType"),
        service_arn=service_arn,
        service_name=service_name,
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        created_at=created_at,
        reason=reason,
        capacity_provider_arns=_texts(detail, "capacityProviderArns"),
        container_instance_arns=_texts(detail, "containerInstanceArns"),
        task_arns=_texts(detail, "taskArns"),
        desired_count=parse_int(detail.get("desiredCount")),
    )
    key_time = _key_time(created_at, context)
    key = (
        None
        if key_time is None
        else _natural_key(
            context.detail_type,
            service_arn or f"{cluster_arn or ''}/{service_name or ''}",
            event_name,
            key_time,
            _reason_part(reason),
        )
    )
    return _Built(action, cluster_arn, cluster_name, key)


# "ECS deployment circuit breaker: rolling back to deploymentId ecs-svc/123."
_ROLLBACK_TARGET = re.compile(r"rolling\s+back\s+to\s+deployment\s*id\s+(\S+)", re.IGNORECASE)


def _rollback_target(reason: str | None) -> str | None:
    if reason is None:
        return None
    match = _ROLLBACK_TARGET.search(reason)
    if match is None:
        return None
    # The sentence ends right after the id: drop its full stop (ids never end in one).
    target = match.group(1).rstrip(".,;:)'\"")
    return target or None


def _build_deployment(detail: dict[str, Any], context: _Context) -> _Built:
    deployment_id = _require_text(detail, "deploymentId", context.detail_type)
    service_arn, service_name = _service_of(*context.resources, _text(detail, "serviceArn"))
    cluster_arn, cluster_name = _cluster_of(_text(detail, "clusterArn"), service_arn)
    updated_at = _timestamp(detail, "updatedAt")
    event_name = _text(detail, "eventName")
    reason = _text(detail, "reason")
    deployment = DeploymentStateChange(
        deployment_id=deployment_id,
        event_type=_text(detail, "eventType"),
        event_name=event_name,
        service_arn=service_arn,
        service_name=service_name,
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        updated_at=updated_at,
        reason=reason,
        rollback_target=_rollback_target(reason),
    )
    key_time = _key_time(updated_at, context)
    key = (
        None
        if key_time is None
        else _natural_key(
            context.detail_type,
            service_arn,
            event_name,
            key_time,
            deployment_id,
            _reason_part(reason),
        )
    )
    return _Built(deployment, cluster_arn, cluster_name, key)


def _build_hook(detail: dict[str, Any], context: _Context) -> _Built:
    hook_id = _require_text(detail, "hookId", context.detail_type)
    service_deployment_arn, service_deployment = _first_arn_of_type(
        "service-deployment", _text(detail, "serviceDeploymentArn"), *context.resources
    )
    service_deployment_arn = _text(detail, "serviceDeploymentArn") or service_deployment_arn
    derived_service = None
    if service_deployment is not None and len(service_deployment.path) >= 3:
        # service-deployment/<cluster>/<service>/<id> names its service.
        cluster, service = service_deployment.path[0], service_deployment.path[1]
        derived_service = service_deployment.sibling(f"service/{cluster}/{service}")
    service_arn, service_name = _service_of(_text(detail, "serviceArn"), derived_service)
    cluster_arn, cluster_name = _cluster_of(
        _text(detail, "clusterArn"), service_arn, service_deployment_arn
    )
    updated_at = _timestamp(detail, "updatedAt")
    event_name = _text(detail, "eventName")
    hook = HookStateChange(
        hook_id=hook_id,
        event_type=_text(detail, "eventType"),
        event_name=event_name,
        hook_type=_text(detail, "hookType"),
        lifecycle_stage=_text(detail, "lifecycleStage"),
        expires_at=_timestamp(detail, "expiresAt"),
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        service_arn=service_arn,
        service_name=service_name,
        service_deployment_arn=service_deployment_arn,
        updated_at=updated_at,
    )
    key_time = _key_time(updated_at, context)
    key = (
        None
        if key_time is None
        else _natural_key(
            context.detail_type, service_deployment_arn, event_name, key_time, hook_id
        )
    )
    return _Built(hook, cluster_arn, cluster_name, key)


def _build_daemon_action(detail: dict[str, Any], context: _Context) -> _Built:
    daemon_arn = _require_text(detail, "daemonArn", context.detail_type)
    task_arn = _text(detail, "taskArn")
    container_instance_arn = _text(detail, "containerInstanceArn")
    cluster_arn, cluster_name = _cluster_of(
        _text(detail, "clusterArn"), daemon_arn, task_arn, container_instance_arn
    )
    created_at = _timestamp(detail, "createdAt")
    event_name = _text(detail, "eventName")
    failure_type = _text(detail, "failureType")
    reason = _text(detail, "reason")
    action = DaemonServiceAction(
        daemon_arn=daemon_arn,
        daemon_name=_last_segment(daemon_arn),
        event_type=_text(detail, "eventType"),
        event_name=event_name,
        failure_type=failure_type,
        daemon_revision_arn=_text(detail, "daemonRevisionArn"),
        daemon_task_definition_arn=_text(detail, "daemonTaskDefinitionArn"),
        container_instance_arn=container_instance_arn,
        task_arn=task_arn,
        capacity_provider_name=_text(detail, "capacityProviderName"),
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        created_at=created_at,
        reason=reason,
    )
    key_time = _key_time(created_at, context)
    key = (
        None
        if key_time is None
        else _natural_key(
            context.detail_type,
            daemon_arn,
            event_name,
            key_time,
            failure_type,
            task_arn or container_instance_arn,
            _reason_part(reason),
        )
    )
    return _Built(action, cluster_arn, cluster_name, key)


def _build_daemon_deployment(detail: dict[str, Any], context: _Context) -> _Built:
    deployment_arn = _require_text(detail, "daemonDeploymentArn", context.detail_type)
    # In the AWS sample, resources[0] of a daemon deployment event is the daemon ARN.
    daemon_arn = _text(detail, "daemonArn") or _first_arn_of_type("daemon", *context.resources)[0]
    cluster_arn, cluster_name = _cluster_of(_text(detail, "clusterArn"), daemon_arn, deployment_arn)
    updated_at = _timestamp(detail, "updatedAt")
    event_name = _text(detail, "eventName")
    deployment = DaemonDeploymentStateChange(
        daemon_deployment_arn=deployment_arn,
        daemon_arn=daemon_arn,
        daemon_name=None if daemon_arn is None else _last_segment(daemon_arn),
        event_type=_text(detail, "eventType"),
        event_name=event_name,
        target_daemon_revision_arn=_text(detail, "targetDaemonRevisionArn"),
        cluster_arn=cluster_arn,
        cluster_name=cluster_name,
        updated_at=updated_at,
        reason=_text(detail, "reason"),
    )
    key_time = _key_time(updated_at, context)
    key = (
        None
        if key_time is None
        else _natural_key(context.detail_type, deployment_arn, event_name, key_time)
    )
    return _Built(deployment, cluster_arn, cluster_name, key)


def _build_codedeploy(detail: dict[str, Any], context: _Context) -> _Built:
    deployment_id = _require_text(detail, "deploymentId", context.detail_type)
    state = _text(detail, "state")
    # resources holds the application and deployment-group ARNs, in either order.
    application_arn, _ = _first_arn_of_type("application", *context.resources)
    group_arn, _ = _first_arn_of_type("deploymentgroup", *context.resources)
    deployment = CodeDeployDeploymentStateChange(
        deployment_id=deployment_id,
        application=_text(detail, "application"),
        deployment_group=_text(detail, "deploymentGroup"),
        state=state,
        instance_group_id=_text(detail, "instanceGroupId"),
        region=_text(detail, "region"),
        application_arn=application_arn,
        deployment_group_arn=group_arn,
    )
    # A CodeDeploy deployment passes through each state once: the pair is the event.
    key = _natural_key(context.detail_type, deployment_id, state)
    return _Built(deployment, None, None, key)


def _build_unknown(detail: dict[str, Any], context: _Context) -> _Built:
    # Not modelled, but a clusterArn still lets /v1/events?cluster= find it.
    cluster_arn, cluster_name = _cluster_of(_text(detail, "clusterArn"))
    unknown = UnknownDetail(detail_type=context.detail_type, detail=detail)
    return _Built(unknown, cluster_arn, cluster_name, None)


BUILDERS: dict[str, Callable[[dict[str, Any], _Context], _Built]] = {
    DetailType.TASK_STATE_CHANGE: _build_task,
    DetailType.CONTAINER_INSTANCE_STATE_CHANGE: _build_container_instance,
    DetailType.CONTAINER_INSTANCE_HEALTH_CHANGE: _build_instance_health,
    DetailType.SERVICE_ACTION: _build_service_action,
    DetailType.DEPLOYMENT_STATE_CHANGE: _build_deployment,
    DetailType.HOOK_STATE_CHANGE: _build_hook,
    DetailType.DAEMON_SERVICE_ACTION: _build_daemon_action,
    DetailType.DAEMON_DEPLOYMENT_STATE_CHANGE: _build_daemon_deployment,
    DetailType.CODEDEPLOY_DEPLOYMENT_STATE_CHANGE: _build_codedeploy,
}


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def normalise(event: dict[str, Any], *, received_at: datetime) -> NormalisedEvent:
    """Turn a decoded event into a :class:`NormalisedEvent`, dispatching on ``detail-type``.

    ``received_at`` is the receive time (naive means UTC); it becomes the event time
    only when neither ``time`` nor ``detail.updatedAt`` / ``detail.createdAt`` can be
    read. Unknown detail-types give an :class:`UnknownDetail`. Raises only
    :class:`PermanentError`: for a malformed event, for a known detail-type
    without its identifying field, and (with ``extra["unexpected"] = True``) for a
    shape this code failed to foresee, so a bug quarantines one message instead of
    crash-looping the consumer.
    """
    received = _received_utc(received_at)
    valid, detail_json = checked_event(event)
    return _normalise_checked(valid, detail_json, received)


def parse_message(body: str, *, received_at: datetime) -> NormalisedEvent:
    """Unwrap an SQS message body and normalise it (:func:`unwrap_body` + :func:`normalise`)."""
    # unwrap_body validates the event already: do not check (and serialise) it twice.
    valid, detail_json = unwrap_body_with_detail_json(body)
    check_source(valid["source"])
    return _normalise_checked(valid, detail_json, _received_utc(received_at))


def check_source(source: str) -> None:
    """Refuse a message whose ``source`` is not in :data:`ACCEPTED_SOURCES`.

    EventBridge sets ``source``: another one means the message did not come
    through ecswatch's rule (or the rule was changed by hand). Only messages are
    checked: enrichment passes ECS Describe outputs to :func:`normalise` under a
    source of its own (``ecswatch.describe``), and they never arrive as messages.
    """
    if source not in ACCEPTED_SOURCES:
        shown = " ".join(source.split())[:100]
        raise PermanentError(f"source {shown!r} is not one ecswatch accepts")


def _received_utc(received_at: datetime) -> datetime:
    # Outside normalise's guard: a caller's bad argument is a bug to surface, not
    # a reason to quarantine every message.
    return (
        received_at.replace(tzinfo=UTC)
        if received_at.tzinfo is None
        else received_at.astimezone(UTC)
    )


def _normalise_checked(
    valid: dict[str, Any], detail_json: str | bytes | None, received: datetime
) -> NormalisedEvent:
    """:func:`normalise` of an event that :func:`checked_event` has accepted."""
    detail_type: str = valid["detail-type"]
    try:
        return _normalise(valid, detail_type, received, detail_json)
    except PermanentError:
        raise
    except Exception as exc:
        label = " ".join(detail_type.split())[:100]
        message = " ".join(str(exc).split())[:200]
        raise PermanentError(
            f"{label}: cannot normalise detail ({type(exc).__name__}: {message})",
            unexpected=True,
        ) from exc


def _normalise(
    event: dict[str, Any], detail_type: str, received: datetime, detail_json: str | bytes | None
) -> NormalisedEvent:
    detail: dict[str, Any] = event["detail"]
    stated_time = parse_timestamp(event.get("time"))
    # A missing `time` falls back to detail.updatedAt, then detail.createdAt.
    event_time = stated_time or _timestamp(detail, "updatedAt") or _timestamp(detail, "createdAt")
    raw_resources = event.get("resources")
    resources = (
        tuple(item for item in raw_resources if isinstance(item, str) and item.strip())
        if isinstance(raw_resources, list)
        else ()
    )
    envelope = Envelope(
        id=event["id"],
        detail_type=detail_type,
        source=event["source"],
        account=_text(event, "account"),
        region=_text(event, "region"),
        time=event_time or received,
        resources=resources,
        time_was_missing=stated_time is None,
    )
    context = _Context(
        detail_type=detail_type,
        resources=resources,
        event_time=event_time,
        envelope_time=envelope.time,
    )
    built = BUILDERS.get(detail_type, _build_unknown)(detail, context)
    return NormalisedEvent(
        envelope=envelope,
        detail=built.detail,
        raw=event,
        cluster_arn=built.cluster_arn,
        cluster_name=built.cluster_name,
        natural_key=built.natural_key,
        received_at=received,
        detail_json=detail_json,
    )
