"""Multi-row statements of the state writers: a batch's rows as one JSON document.

Used by every writer of batched rows (the consumer's state and deployment
upserts, enrichment's Describe writes, the poller's metric points). Only
executes in the caller's transaction.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import Base
from service.state import rows as r

# A batch's rows travel as one JSON document, expanded by jsonb_to_recordset into
# an INSERT … SELECT … ON CONFLICT: one prepared statement, one parameter and one
# round trip per step whatever the batch size, and the rows are serialised in C
# (orjson) rather than encoded value by value by the driver. Integer columns are
# read as numeric and cast in SQL, so a value out of the column's range is refused
# by PostgreSQL (a database error: the message is quarantined).
#
# The document is jsonb, not json: PostgreSQL then parses it once,
# into jsonb, and hands each jsonb column (an event's detail, a task's containers)
# its part as it is. With json it parsed the document three times: to check the
# parameter, to walk the records, and again each jsonb column's text. Measured
# against binary COPY into a staging table (the fair baseline's way), this leaves
# PostgreSQL ~5 µs more per event, and the driver ~4 µs less Python per event
# (docs/performance.md): a wash, without temporary tables.
_DIALECT = PGDialect()  # type: ignore[no-untyped-call]
_INTEGER_TYPES = ("INTEGER", "BIGINT", "SMALLINT")


def quote(name: str) -> str:
    return str(_DIALECT.identifier_preparer.quote(name))


def bulk_insert(model: type[Base], columns: Sequence[str], *, order_by: str | None) -> str:
    """``INSERT INTO <model> (<columns>) SELECT … FROM jsonb_to_recordset($1::jsonb)``."""
    table = model.__table__
    assert isinstance(table, Table)
    definitions: list[str] = []
    selected: list[str] = []
    for name in columns:
        sql_type = str(table.c[name].type.compile(dialect=_DIALECT))
        column = f"s.{quote(name)}"
        if sql_type in _INTEGER_TYPES:
            definitions.append(f"{quote(name)} NUMERIC")
            selected.append(f"{column}::{sql_type}")
        else:
            definitions.append(f"{quote(name)} {sql_type}")
            selected.append(column)
    names = ", ".join(quote(c) for c in columns)
    order = f" ORDER BY s.{quote(order_by)}" if order_by else ""
    return (
        f"INSERT INTO {quote(str(table.name))} ({names}) SELECT {', '.join(selected)}"
        f" FROM jsonb_to_recordset($1::jsonb) AS s({', '.join(definitions)}){order}"
    )


def payload(rows: Sequence[r.Row]) -> str:
    """The rows as one JSON array for :func:`bulk_insert` (keys it does not name are
    ignored there)."""
    try:
        return orjson.dumps(rows, default=orjson_default).decode()
    except TypeError:
        return _payload_slow(rows)


def orjson_default(value: object) -> Any:
    if isinstance(value, r.JsonText):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _payload_slow(rows: Sequence[r.Row]) -> str:
    """:func:`payload` by the standard library, for what orjson refuses: integers
    beyond 64 bits (written exactly, for PostgreSQL to accept or refuse) and nesting
    deeper than orjson goes. Pre-serialised documents are spliced in as text, never
    decoded again: a detail nested near the recursion limit stays storable."""
    texts: list[str] = []

    def default(value: object) -> Any:
        if isinstance(value, r.JsonText):
            texts.append(value.text.decode() if isinstance(value.text, bytes) else value.text)
            # NUL never occurs in stored values (validation refuses it), so this
            # placeholder cannot collide with data.
            return f"\x00{len(texts) - 1}"
        if isinstance(value, datetime):
            return value.isoformat()  # as orjson writes it on the fast path
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    encoded = json.dumps(rows, default=default)
    return _PLACEHOLDER.sub(lambda match: texts[int(match[1])], encoded)


_PLACEHOLDER = re.compile(r'"\\u0000([0-9]+)"')


async def execute(session: AsyncSession, sql: str, *params: Any) -> Any:
    """Run ``sql`` in the session's transaction (errors wrapped like any statement's)."""
    connection = await session.connection()
    return await connection.exec_driver_sql(sql, params)
