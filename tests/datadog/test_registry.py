"""The metric registry against docs/metrics.md, and the registry's own rules."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

import service
from service.datadog.install import load_assets, metric_names
from service.datadog.metrics import (
    CLOUDWATCH_NAMES,
    REGISTRY,
    MetricName,
    cloudwatch_name,
    exit_class,
)
from service.datadog.tags import DATADOG_TAG_NAMES, OWN_TAG_NAMES
from service.poller.metrics import (
    ClusterTarget,
    ServiceTarget,
    TargetGroupTarget,
    plan_queries,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
_ROW = re.compile(r"^\| `ecswatch\.([a-z0-9_.]+)` \| (\w+) \| (\w+) \| (.*?) \| (.+) \|$")


def _documented() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    rows: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for line in DOC.read_text("utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            name, kind, unit, tags, _ = match.groups()
            assert name not in rows, f"{name} documented twice"
            rows[name] = (kind, unit, tuple(re.findall(r"`([a-z_]+)`", tags)))
    return rows


def test_every_metric_is_documented_with_its_type_unit_and_tags() -> None:
    documented = _documented()
    registry = {s.name.value: (s.kind, s.unit, s.tags) for s in REGISTRY.values()}
    assert set(documented) == set(registry), (
        f"undocumented: {sorted(set(registry) - set(documented))}, "
        f"documented but not sent: {sorted(set(documented) - set(registry))}"
    )
    for name, entry in registry.items():
        assert documented[name] == entry, name


def test_registry_is_closed_and_names_are_valid_datadog_names() -> None:
    assert set(REGISTRY) == set(MetricName)
    for name in MetricName:
        assert re.fullmatch(r"[a-z][a-z0-9_.]*", name.value)
        assert len("ecswatch." + name.value) <= 200
    assert set(CLOUDWATCH_NAMES.values()) <= set(REGISTRY)


def _polled() -> set[MetricName]:
    """Registry names of every query the poller plans, for every kind of target."""
    batches = plan_queries(
        [ClusterTarget("prod", True)],
        [ServiceTarget("prod", "web", container_insights=True)],
        [TargetGroupTarget("prod", "web", "targetgroup/web/1", "app/lb/2")],
    )
    names: set[MetricName] = set()
    for query in (q for batch in batches for q in batch):
        name = cloudwatch_name(query.namespace, query.name, dict(query.dimensions))
        assert name is not None, f"the poller queries {query.namespace} {query.name}, never sent"
        names.add(name)
    return names


def _named_in_code() -> set[MetricName]:
    """Registry names the job builds series from (``MetricName.X`` outside the registry)."""
    root = Path(service.__file__).resolve().parent
    found: set[MetricName] = set()
    for path in root.rglob("*.py"):
        if path == root / "datadog" / "metrics.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "MetricName"
            ):
                found.add(MetricName[node.attr])
    return found


def test_every_registered_metric_is_produced() -> None:
    # CloudWatch metrics come from the poller's queries; the others from the code that
    # builds gauges and counts. A metric in the registry (and so in docs/metrics.md)
    # that neither produces fails here.
    cloudwatch = set(CLOUDWATCH_NAMES.values())
    produced = _polled() | (_named_in_code() - cloudwatch)
    assert _polled() == cloudwatch, f"registered, never queried: {cloudwatch - _polled()}"
    assert set(REGISTRY) == produced, f"never produced: {sorted(set(REGISTRY) - produced)}"


def test_dashboard_and_monitors_name_only_produced_metrics() -> None:
    produced = {n.value for n in _polled() | _named_in_code()}
    for item in load_assets():
        names = metric_names(json.dumps(item.body))
        assert names <= produced, f"{item.title}: {sorted(names - produced)} are never sent"


def test_cluster_and_service_points_have_their_own_names() -> None:
    cluster = cloudwatch_name("AWS/ECS", "CPUUtilization", {"ClusterName": "c"})
    dims = {"ClusterName": "c", "ServiceName": "s"}
    service_ = cloudwatch_name("AWS/ECS", "CPUUtilization", dims)
    assert cluster is MetricName.CLUSTER_CPU_UTILIZATION
    assert service_ is MetricName.SERVICE_CPU_UTILIZATION
    assert "ecs_service" not in REGISTRY[MetricName.CLUSTER_CPU_UTILIZATION].tags


def test_no_metric_is_tagged_by_task_or_arn() -> None:
    for spec in REGISTRY.values():
        assert not {"task_arn", "task_id", "arn", "container_instance"} & set(spec.tags)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, "0"),
        (1, "1-127"),
        (127, "1-127"),
        (137, "137"),
        (139, "139"),
        (143, "143"),
        (128, "other"),
        (255, "other"),
        (-1, "other"),
    ],
)
def test_exit_class(code: int, expected: str) -> None:
    assert exit_class(code) == expected


_TAG_ROW = re.compile(r"^\| `([a-z_]+)` \| (Datadog's|ecswatch's own) \|")


def test_tag_names_table_matches_the_code_and_covers_every_tag() -> None:
    table = {
        m[1]: m[2] for line in DOC.read_text("utf-8").splitlines() if (m := _TAG_ROW.match(line))
    }
    assert not set(DATADOG_TAG_NAMES) & OWN_TAG_NAMES
    assert {t for t, whose in table.items() if whose == "Datadog's"} == set(DATADOG_TAG_NAMES)
    assert {t for t, whose in table.items() if whose == "ecswatch's own"} == OWN_TAG_NAMES
    used = {t for spec in REGISTRY.values() for t in spec.tags}
    assert used == set(table), f"untabled: {used - set(table)}, unused: {set(table) - used}"


def test_alb_tags_are_the_aws_integrations_names() -> None:
    alb = [s for s in REGISTRY.values() if s.name.value.startswith("aws.alb.")]
    assert alb
    for spec in alb:
        assert {"targetgroup", "loadbalancer"} <= set(spec.tags)
        assert not {"target_group", "load_balancer"} & set(spec.tags)
