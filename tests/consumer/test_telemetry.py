"""The consumer's self-metrics move with what it does (served at /metrics)."""

from __future__ import annotations

import json
import random

from service.consumer.handler import Handler, Message
from service.demo.events import task_lifecycle
from service.runtime import Runtime
from service.telemetry import REGISTRY

TASK = "ECS Task State Change"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_counters_by_detail_type(runtime: Runtime) -> None:
    events = task_lifecycle(random.Random(9), stop=False)
    before = {
        "received": _value("ecswatch_events_received_total", detail_type=TASK),
        "applied": _value("ecswatch_events_applied_total", detail_type=TASK),
        "stale": _value("ecswatch_events_stale_total", detail_type=TASK),
        "duplicate": _value("ecswatch_events_duplicate_total", detail_type=TASK),
        "quarantined": _value("ecswatch_events_quarantined_total", detail_type="unparseable"),
    }
    handler = Handler(runtime.sessionmaker)
    newest = [Message("n", json.dumps(events[-1]))]
    await handler.handle(newest)
    older = [Message(str(i), json.dumps(e)) for i, e in enumerate(events[:-1])]
    await handler.handle([*older, *newest, Message("bad", "{")])
    assert (
        _value("ecswatch_events_received_total", detail_type=TASK) - before["received"]
        == len(events) + 1
    )
    assert _value("ecswatch_events_applied_total", detail_type=TASK) - before["applied"] == 1
    assert _value("ecswatch_events_stale_total", detail_type=TASK) - before["stale"] == len(older)
    assert _value("ecswatch_events_duplicate_total", detail_type=TASK) - before["duplicate"] == 1
    quarantined = _value("ecswatch_events_quarantined_total", detail_type="unparseable")
    assert quarantined - before["quarantined"] == 1
