"""The JSON document a batch's rows travel in (service.state.bulk.payload)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from service.events.models import Container
from service.state import bulk
from service.state.rows import JsonText

WHEN = datetime(2026, 11, 26, 14, 0, 0, 123456, tzinfo=UTC)


def test_ordinary_rows_carry_values_and_preserialised_documents() -> None:
    rows = [
        {"id": "a", "time": WHEN, "resources": ("x", "y"), "detail": JsonText(b'{"k": [1, 2]}')},
        {"id": "b", "time": None, "resources": [], "detail": JsonText('{"snow": "\\u2603"}')},
    ]
    decoded = json.loads(bulk.payload(rows))
    assert decoded == [
        {"id": "a", "time": WHEN.isoformat(), "resources": ["x", "y"], "detail": {"k": [1, 2]}},
        {"id": "b", "time": None, "resources": [], "detail": {"snow": "\u2603"}},
    ]


def test_integers_beyond_64_bits_are_written_exactly() -> None:
    # orjson refuses them; the standard library takes over, and PostgreSQL then
    # accepts (numeric, jsonb) or refuses (bigint) the exact value.
    container = Container(name="web", exit_code=137)
    rows = [
        {
            "version": 2**70 + 1,
            "time": WHEN,
            "detail": JsonText(b'{"n": 1}'),
            "containers": (container,),
        }
    ]
    payload = bulk.payload(rows)
    assert str(2**70 + 1) in payload
    assert json.loads(payload) == [
        {
            "version": 2**70 + 1,
            "time": WHEN.isoformat(),
            "detail": {"n": 1},
            "containers": [dataclasses.asdict(container)],
        }
    ]
    # The same row within 64 bits takes orjson's path to the same document.
    rows[0]["version"] = 7
    assert json.loads(bulk.payload(rows))[0]["containers"] == [dataclasses.asdict(container)]


def test_deep_documents_are_spliced_in_without_being_decoded_again() -> None:
    deep: Any = "leaf"
    for _ in range(900):
        deep = [deep]
    text = json.dumps({"deep": deep})
    rows = [
        {"id": "a", "version": 2**64, "detail": JsonText(text)},
        {"id": "b", "version": 1, "detail": JsonText(b'{"plain": "\\\\u0000 is text here"}')},
    ]
    payload = bulk.payload(rows)
    assert text in payload
    assert payload.count('"\\u0000') == 0  # every placeholder was replaced
    assert json.loads(payload)[1]["detail"] == {"plain": "\\u0000 is text here"}
