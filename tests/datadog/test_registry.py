"""The metric registry against docs/metrics.md, and the registry's own rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.datadog.metrics import CLOUDWATCH_NAMES, REGISTRY, MetricName, exit_class

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
