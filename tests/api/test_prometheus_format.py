"""``GET /metrics`` as Prometheus reads it: parsed by prometheus_client's own parser,
no ``_created`` series, and every known labelled series present from start-up."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

import service
from service import telemetry
from service.api.app import create_app
from service.config import load_settings
from service.outbox.models import OutboxKind
from service.runtime import open_runtime


async def _scrape(tmp_path: Path) -> str:
    # No database (port 1 refuses at once): /metrics answers all the same.
    settings = load_settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none", data_dir=tmp_path
    )
    async with open_runtime(settings, pool_size=1) as runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_metrics_parse_with_no_created_series(tmp_path: Path) -> None:
    families = list(text_string_to_metric_families(await _scrape(tmp_path)))
    assert families
    names = {s.name for f in families for s in f.samples}
    assert not [n for n in names if n.endswith("_created")]
    assert "ecswatch_aws_calls_total" in names


async def test_known_labelled_series_show_zero_from_start_up(tmp_path: Path) -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(await _scrape(tmp_path))
        for s in f.samples
    }
    for kind in OutboxKind:
        assert ("ecswatch_outbox_depth", (("kind", kind.value),)) in samples
        for result in ("delivered", "retry", "dead"):
            key = ("ecswatch_dispatch_results_total", (("kind", kind.value), ("result", result)))
            assert key in samples
    for service_, operation in telemetry.AWS_OPERATIONS:
        labels = (("operation", operation), ("outcome", "throttled"), ("service", service_))
        assert ("ecswatch_aws_calls_total", labels) in samples
        assert ("ecswatch_aws_throttles_total", (("operation", operation),)) in samples
    assert samples[("ecswatch_datadog_points_total", (("result", "dead"),))] >= 0


def test_known_label_values_are_the_codes() -> None:
    # The pre-created values are those the code uses: every AWS call ecswatch makes
    # through its caller, and every outbox kind.
    assert tuple(k.value for k in OutboxKind) == telemetry.OUTBOX_KINDS
    root = Path(service.__file__).resolve().parent / "aws"
    call = re.compile(r'\.call\(\s*"([a-z0-9]+)",\s*"([A-Za-z]+)"')
    made = {m.groups() for p in root.glob("*.py") for m in call.finditer(p.read_text("utf-8"))}
    assert made
    assert set(telemetry.AWS_OPERATIONS) == made


def test_precreate_keeps_values() -> None:
    labels = {"kind": "points", "reason": "not_finite"}
    before = telemetry.REGISTRY.get_sample_value("ecswatch_datadog_dropped_total", labels)
    assert before is not None
    telemetry.DATADOG_DROPPED.labels("points", "not_finite").inc()
    telemetry.precreate()
    after = telemetry.REGISTRY.get_sample_value("ecswatch_datadog_dropped_total", labels)
    assert after == before + 1
