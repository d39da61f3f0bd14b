"""The one ARN parser, and the names read out of ARNs (pure).

``arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE``: ECS writes the resource as
``type/path`` (``task/<cluster>/<id>``, ``task-definition/<family>:<revision>``),
CodeDeploy and a few others as ``type:path``; the type ends at whichever
separator comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Arn:
    """The parts of an ARN."""

    partition: str
    service: str
    region: str
    account: str
    resource_type: str
    path: tuple[str, ...]

    def sibling(self, resource: str) -> str:
        """An ARN for another resource of the same service, region and account."""
        return f"arn:{self.partition}:{self.service}:{self.region}:{self.account}:{resource}"


def parse_arn(value: str | None) -> Arn | None:
    """The parts of ``value``; None when it is not an ARN (or has an empty path segment)."""
    if not value:
        return None
    return _parse(value)


# Cluster, container-instance and task-definition ARNs repeat in event after event
# (and a task's own ARN in each of its events); the result is immutable.
@lru_cache(maxsize=16384)
def _parse(value: str) -> Arn | None:
    parts = value.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    _, partition, service, region, account, resource = parts
    cut = min((i for i in (resource.find("/"), resource.find(":")) if i >= 0), default=-1)
    if cut < 0:
        return Arn(partition, service, region, account, resource, ())
    path = tuple(resource[cut + 1 :].split("/"))
    if not all(path):
        return None
    return Arn(partition, service, region, account, resource[:cut], path)


# Region name prefixes of the partitions other than ``aws`` (longest first).
_PARTITION_PREFIXES = (
    ("us-isob-", "aws-iso-b"),
    ("us-isof-", "aws-iso-f"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-iso-", "aws-iso"),
    ("us-gov-", "aws-us-gov"),
    ("cn-", "aws-cn"),
)


def partition_of(region: str) -> str:
    """The ARN partition of a region (``aws``, ``aws-cn``, ``aws-us-gov``, ...).

    The one place a partition comes from: the role ARNs ecswatch builds, the ARNs
    it guesses for a scope, and the start-up check that the watched regions share
    one partition (IAM roles and credentials are per partition; docs/aws.md).
    """
    for prefix, partition in _PARTITION_PREFIXES:
        if region.startswith(prefix):
            return partition
    return "aws"


def resource_name(value: str) -> str:
    """The last segment of an ARN's resource (``prod`` of ``…:cluster/prod``), or of
    ``value`` itself when it is no ARN."""
    parsed = parse_arn(value)
    if parsed is None:
        return value.rpartition("/")[2]
    return parsed.path[-1] if parsed.path else parsed.resource_type


def family_and_revision(task_definition: str | None) -> tuple[str | None, str | None]:
    """``family`` and ``revision`` of a task definition ARN or of ``family:revision``;
    the revision as written (it may be absent)."""
    if not task_definition:
        return None, None
    parsed = parse_arn(task_definition)
    reference = "/".join(parsed.path) if parsed is not None else task_definition
    reference = reference.rsplit("/", 1)[-1]
    family, colon, revision = reference.rpartition(":")
    if not colon:
        return reference or None, None
    return family or None, revision or None


def target_group_name(arn: str) -> str | None:
    """``web-blue`` of ``arn:aws:elasticloadbalancing:…:targetgroup/web-blue/0123…``."""
    parsed = parse_arn(arn)
    if parsed is None or parsed.resource_type != "targetgroup" or not parsed.path:
        return None
    return parsed.path[0]
