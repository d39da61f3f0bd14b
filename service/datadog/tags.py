"""Datadog tags: normalisation to Datadog's rules and the ECS tag conventions.

Pure functions. Datadog lower-cases tags, turns characters outside letters,
digits, ``_ - : . /`` into underscores, wants the tag to start with a letter and
keeps at most 200 characters; doing the same here keeps our tags identical to
what Datadog shows, so dashboards and monitors can name them. No per-task or
per-ARN tag is ever built: tag cardinality is per service at most.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from service.events.arns import parse_arn

MAX_TAG_LENGTH = 200

_INVALID = re.compile(r"[^\w\-:./]", re.UNICODE)
_UNDERSCORES = re.compile(r"__+")

# Keys of the convention tags: an ECS resource tag with one of these keys is not
# forwarded (it would make the convention tag ambiguous).
RESERVED_KEYS = frozenset(
    {
        "ecs_cluster_name",
        "clustername",
        "ecs_service",
        "servicename",
        "task_family",
        "task_version",
        "launch_type",
        "region",
        "aws_account",
        "targetgroup",
        "loadbalancer",
    }
)


# Tag names ecswatch writes that are Datadog's own, and where Datadog writes them
# (docs/metrics.md, "Tag names"): a series tagged so joins the user's series of that
# integration on the same tag.
DATADOG_TAG_NAMES: dict[str, str] = {
    "ecs_cluster_name": "Datadog Agent on ECS",
    "ecs_service": "Datadog Agent on ECS",
    "task_family": "Datadog Agent on ECS",
    "task_version": "Datadog Agent on ECS",
    "clustername": "AWS integration, Amazon ECS",
    "servicename": "AWS integration, Amazon ECS",
    "region": "AWS integration and Datadog Agent on ECS",
    "aws_account": "AWS integration and Datadog Agent on ECS",
    "targetgroup": "AWS integration, Application ELB",
    "loadbalancer": "AWS integration, Application ELB",
}
# Tag names that are ecswatch's own: Datadog's integrations write none of them (the
# Agent's launch type tag is ``ecs_launch_type``; the AWS integration puts the
# statistic in the metric name).
OWN_TAG_NAMES = frozenset(
    {
        "launch_type",
        "statistic",
        "task_status",
        "stop_code",
        "exit_class",
        "outcome",
        "deployment_kind",
        "alert_type",
        "status",
        "agent_connected",
        "outbox_kind",
        "operation",
    }
)


@lru_cache(maxsize=65_536)
def normalise_tag(tag: str) -> str | None:
    """``tag`` as Datadog stores it, or None when nothing valid is left.

    Lower case; characters outside letters, digits and ``_ - : . /`` become ``_``;
    runs of ``_`` collapse; leading characters up to the first letter and trailing
    ``_`` are removed; at most 200 characters.
    """
    text = _UNDERSCORES.sub("_", _INVALID.sub("_", tag.lower()))
    start = next((i for i, c in enumerate(text) if c.isalpha()), None)
    if start is None:
        return None
    text = text[start:][:MAX_TAG_LENGTH].rstrip("_")
    return text or None


def tag(key: str, value: object) -> str | None:
    """One normalised ``key:value`` tag; None if the key or the value is empty."""
    if value is None or value == "":
        return None
    return normalise_tag(f"{key}:{value}")


@dataclass(frozen=True, slots=True)
class ArnParts:
    """Region and account of an ARN (``arn:aws:ecs:REGION:ACCOUNT:…``)."""

    region: str | None
    account: str | None


def arn_parts(arn: str | None) -> ArnParts:
    """Region and account from an ARN; both None when it is not an ARN."""
    parsed = parse_arn(arn)
    if parsed is None:
        return ArnParts(None, None)
    return ArnParts(parsed.region or None, parsed.account or None)


@dataclass(frozen=True, slots=True)
class EcsContext:
    """What a metric or event is about, as far as tags go (never a task or an ARN tag)."""

    cluster_arn: str | None = None
    cluster_name: str | None = None
    service_name: str | None = None
    launch_type: str | None = None
    task_family: str | None = None
    task_version: str | int | None = None
    # The scope, when no cluster ARN says it (a CloudWatch point of an unknown cluster).
    region: str | None = None
    account: str | None = None


def ecs_tags(context: EcsContext) -> list[str]:
    """Datadog's ECS convention tags for ``context``, normalised, in a stable order."""
    parts = arn_parts(context.cluster_arn)
    pairs: list[tuple[str, object]] = [
        ("ecs_cluster_name", context.cluster_name),
        ("clustername", context.cluster_name),
        ("ecs_service", context.service_name),
        ("servicename", context.service_name),
        ("task_family", context.task_family),
        ("task_version", context.task_version),
        ("launch_type", context.launch_type),
        ("region", parts.region or context.region),
        ("aws_account", parts.account or context.account),
    ]
    return [t for k, v in pairs if (t := tag(k, v)) is not None]


def resource_tags(tags: Mapping[str, object], keys: Iterable[str] | None) -> list[str]:
    """A resource's ECS tags as normalised ``key:value`` tags.

    ``keys`` (``ECSWATCH_DATADOG_TAG_KEYS``) restricts them to those ECS keys,
    compared as written in ECS; None forwards all. Keys that clash with a
    convention tag are left out. Sorted, so the same tags give the same series.
    """
    allowed = None if keys is None else frozenset(keys)
    out: set[str] = set()
    for key, value in tags.items():
        if allowed is not None and key not in allowed:
            continue
        normal = normalise_tag(key)
        if normal is None or normal in RESERVED_KEYS:
            continue
        built = tag(key, value)
        if built is not None:
            out.add(built)
    return sorted(out)


def merge_tags(*groups: Iterable[str | None]) -> list[str]:
    """Tags of every group, first occurrence kept, Nones dropped."""
    seen: dict[str, None] = {}
    for group in groups:
        for item in group:
            if item is not None:
                seen.setdefault(item, None)
    return list(seen)
