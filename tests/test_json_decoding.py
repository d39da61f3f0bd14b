"""JSONB read from PostgreSQL decodes with orjson, exactly as ``json`` would."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import loads_json

CASES = [
    '{"a": [1, 2.5, null, true, false, "x"]}',
    "123456789012345678901234567890",  # beyond 64 bits: orjson would make it a float
    "-9223372036854775809",
    "18446744073709551615",
    '{"id": "1234567890123456789012"}',  # a long digit run inside a string
    '"\\ud800"',  # a lone surrogate, which orjson refuses
    "1e400",  # beyond a double: json reads inf, orjson refuses
    '"\\u0000"',
]


@pytest.mark.parametrize("value", CASES)
def test_decodes_as_json_does(value: str) -> None:
    decoded = loads_json(value)
    expected = json.loads(value)
    assert decoded == expected
    assert type(decoded) is type(expected)
    assert loads_json(value.encode()) == expected


async def test_the_engine_decodes_jsonb_through_it(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        big = (
            await conn.execute(text("SELECT '{\"n\": 123456789012345678901234567890}'::jsonb"))
        ).scalar_one()
    assert big == {"n": 123456789012345678901234567890}


def test_big_floats_inside_structures_are_decoded_by_json() -> None:
    text = '{"a": [{"b": 18446744073709551616}], "c": 1.5e300, "d": -9223372036854775809}'
    decoded = loads_json(text)
    assert decoded == json.loads(text)
    assert decoded["a"][0]["b"] == 18446744073709551616
    assert type(decoded["d"]) is int
