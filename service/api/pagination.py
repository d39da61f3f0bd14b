"""Keyset pagination: opaque cursors holding the sort key of the last row of a page.

Offsets drift when rows are inserted or deleted between two page fetches; a
keyset ("rows after this key") does not, as long as the ordering key of a row
never changes and is unique. Every list route therefore orders by immutable,
unique keys (a primary key, or an immutable time plus the primary key).

A cursor is base64url (unpadded) JSON ``{"k": route, "v": [key values]}``. The
route name makes a cursor from one route useless on another instead of silently
wrong; anything that does not decode to the expected shape is a 400 problem
naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import typing
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Query, Response
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    literal_column,
    or_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from service.api.fastdump import FastDump, NotFast, static_fields
from service.api.queries import fetch_dicts
from service.api.schemas import Page
from service.errors import InvalidInputError

#: Type of one key part: text, integer, timestamp, or a timestamp that may be null.
KeyPart = Literal["str", "int", "time", "time?"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

LimitParam = Annotated[
    int,
    Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}."),
]
#: Longest cursor accepted; ours are a few hundred characters at most.
MAX_CURSOR_LENGTH = 2048
# A cursor holds one object and one list; a few more brackets may sit in its strings.
_MAX_CURSOR_BRACKETS = 16

CursorParam = Annotated[
    str | None,
    Query(
        description="Opaque `next_cursor` of the previous page; omit for the first page.",
        max_length=MAX_CURSOR_LENGTH,
        pattern=r"^[A-Za-z0-9_-]*$",
    ),
]


@dataclass(frozen=True, slots=True)
class Keyset:
    """The ordering key of one list route: its parts' types, for encoding and checking."""

    route: str
    parts: tuple[KeyPart, ...]

    def encode(self, values: Sequence[Any]) -> str:
        """The cursor pointing just after a row whose sort key is ``values``."""
        encoded = [_encode_value(v) for v in values]
        raw = json.dumps({"k": self.route, "v": encoded}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode(self, cursor: str | None) -> tuple[Any, ...] | None:
        """The key values inside ``cursor`` (None for no cursor); 400 when malformed."""
        if cursor is None:
            return None
        # The route's parameter already bounds the length and alphabet; this is the
        # guard for every other caller. No cursor of ours nests: anything deeper
        # than {"v": [...]} is refused before the decoder recurses into it.
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise _bad_cursor()
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
            if raw.count(b"[") + raw.count(b"{") > _MAX_CURSOR_BRACKETS:
                raise _bad_cursor()
            data = json.loads(raw)
        except (ValueError, binascii.Error, UnicodeError, RecursionError):
            raise _bad_cursor() from None
        if not isinstance(data, dict) or data.get("k") != self.route:
            raise _bad_cursor()
        values = data.get("v")
        if not isinstance(values, list) or len(values) != len(self.parts):
            raise _bad_cursor()
        return tuple(
            _decode_value(part, value) for part, value in zip(self.parts, values, strict=True)
        )


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


_INT64 = 2**63
# PostgreSQL timestamptz covers 4713 BC to 294276 AD; Python datetimes 1 to 9999.
# Keep a day of margin so that converting any offset to UTC stays in range.
_TIME_MIN = datetime(1, 1, 2, tzinfo=UTC)
_TIME_MAX = datetime(9999, 12, 30, tzinfo=UTC)


def _decode_value(part: KeyPart, value: Any) -> Any:
    if part == "str" and isinstance(value, str) and _storable(value):
        return value
    # bool is an int subclass; a cursor never holds one. Keys are bigint columns.
    if (
        part == "int"
        and isinstance(value, int)
        and not isinstance(value, bool)
        and -_INT64 <= value < _INT64
    ):
        return value
    if part == "time?" and value is None:
        return None
    if part in ("time", "time?") and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _bad_cursor() from None
        if parsed.tzinfo is not None and _TIME_MIN <= parsed <= _TIME_MAX:
            return parsed
    raise _bad_cursor()


def _storable(value: str) -> bool:
    """No NUL and no lone surrogate (a JSON ``\\ud800`` escape): PostgreSQL takes it."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_cursor() -> InvalidInputError:
    return InvalidInputError(
        "the cursor is malformed or belongs to another route; "
        "pass next_cursor from the previous page unchanged",
        param="cursor",
    )


def fetch(rows: int) -> ColumnElement[int]:
    """A LIMIT written into the SQL text rather than sent as a parameter.

    The driver prepares statements, and after a few executions PostgreSQL may
    switch to a generic plan, which must assume a LIMIT parameter could be
    large: it then reads whole tables to hash-join them instead of probing an
    index for the hundred rows of a page (0.4 ms becomes 30 ms). A literal LIMIT
    keeps every plan a page-sized plan. It is a constant of the statement (not a
    parameter rendered at execution), so a statement built once and reused is
    compiled once: :class:`ListRoute` keeps one statement per page size.
    """
    return literal_column(str(int(rows)), Integer)


def after(
    columns: Sequence[tuple[SQLColumnExpression[Any], bool]],
    values: Sequence[Any],
) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order of ``columns`` ((column, descending)).

    Expands to ``c1 > v1 OR (c1 = v1 AND c2 > v2) ...`` (``<`` for descending
    columns), plus a redundant ``c1 >= v1`` that lets the planner use the leading
    column as an index bound. Columns must be non-null, except a nullable first
    column ordered ``DESC NULLS FIRST`` whose cursor value may be None (see
    :meth:`ListRoute._after`).
    """
    terms: list[ColumnElement[bool]] = []
    for i, (column, descending) in enumerate(columns):
        equal = [c == v for (c, _), v in zip(columns[:i], values[:i], strict=True)]
        step = column < values[i] if descending else column > values[i]
        terms.append(and_(*equal, step) if equal else step)
    first, first_desc = columns[0]
    bound = first <= values[0] if first_desc else first >= values[0]
    return and_(bound, or_(*terms))


def next_cursor(
    keyset: Keyset,
    rows: Sequence[Any],
    limit: int,
    key: Callable[[Any], Sequence[Any]],
) -> str | None:
    """The cursor after a page fetched with ``LIMIT limit + 1`` (None on the last page).

    Fetching one extra row tells whether another page exists without a count query.
    """
    if len(rows) <= limit:
        return None
    return keyset.encode(key(rows[limit - 1]))


# ---------------------------------------------------------------- list routes

#: Where a request resumes: None (first page), or one flag per key part telling
#: whether the cursor's value is null (only a leading ``time?`` part can be).
AfterShape = tuple[bool, ...] | None

ShapeT = TypeVar("ShapeT", bound=Hashable)


class ListRoute(Generic[ShapeT]):
    """One list route: its keyset, order, page model and statement per filter shape.

    ``page`` is the route's :class:`~service.api.schemas.Page` ``[T]`` subclass
    (it carries the OpenAPI example); the route declares it as ``response_model``
    and :func:`list_page` answers JSON validated by it, once.

    A route turns its query parameters into a hashable *shape* (which filters
    are used, in which form) and a dict of bound values; ``where(shape)`` gives
    the filters of a shape as expressions over :func:`sqlalchemy.bindparam`
    names. The whole statement (filters, keyset condition, order, LIMIT) is
    built once per (shape, cursor shape, page size) and reused, so a request only binds
    values: SQLAlchemy finds the compiled SQL through the statement's memoised
    cache key instead of building and walking a new statement tree.

    ``order`` lists (column, descending); its columns' keys are also the row
    keys the cursor is read from. A first column of a ``time?`` keyset sorts
    ``DESC NULLS FIRST``.
    """

    def __init__(
        self,
        keyset: Keyset,
        page: type[Page[Any]],
        select_: Select[*tuple[Any, ...]],
        order: Sequence[tuple[SQLColumnExpression[Any], bool]],
        where: Callable[[ShapeT], Sequence[ColumnElement[bool]]] = lambda shape: (),
    ) -> None:
        if len(order) != len(keyset.parts):
            raise ValueError("the order and the keyset must have as many parts")
        self.keyset = keyset
        self.page = page
        self.adapter: TypeAdapter[Any] = TypeAdapter(page)
        item_model = _item_model(page)
        self.fast = FastDump(item_model, static_fields(item_model, select_.selected_columns))
        self._select = select_
        self._order = tuple(order)
        self._where = where
        self._nullable_first = keyset.parts[0] == "time?"
        self.row_keys = tuple(_row_key(column) for column, _ in order)
        self.statement = functools.lru_cache(maxsize=1024)(self._build)

    def _build(self, shape: ShapeT, after_shape: AfterShape, rows: int) -> Select[*tuple[Any, ...]]:
        stmt = self._select.where(*self._where(shape))
        if after_shape is not None:
            stmt = stmt.where(self._after(after_shape))
        order_by = [
            (column.desc().nulls_first() if i == 0 and self._nullable_first else column.desc())
            if descending
            else column
            for i, (column, descending) in enumerate(self._order)
        ]
        return stmt.order_by(*order_by).limit(fetch(rows))

    def _after(self, after_shape: tuple[bool, ...]) -> ColumnElement[bool]:
        bound = [
            bindparam(f"after_{i}", type_=getattr(column, "type", None))
            for i, (column, _) in enumerate(self._order)
        ]
        if not self._nullable_first:
            return after(self._order, bound)
        first, tiebreak = (column for column, _ in self._order)
        if after_shape[0]:
            # ``first DESC NULLS FIRST, tiebreak DESC`` after a row whose first is
            # null: the rest of the nulls, then every non-null row.
            return or_(and_(first.is_(None), tiebreak < bound[1]), first.is_not(None))
        return after(self._order, bound)

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[name] for name in self.row_keys)


def _item_model(page: type[Page[Any]]) -> type[BaseModel]:
    """``T`` of a ``Page[T]`` subclass."""
    (item,) = typing.get_args(page.model_fields["items"].annotation)
    if not (isinstance(item, type) and issubclass(item, BaseModel)):
        raise TypeError(f"{page.__name__}: items must be a list of a model")
    return item


def _row_key(column: SQLColumnExpression[Any]) -> str:
    key = getattr(column, "key", None)
    if not isinstance(key, str):
        raise ValueError(f"an order column needs a key: {column!r}")
    return key


async def fetch_page(
    conn: AsyncConnection,
    route: ListRoute[ShapeT],
    shape: ShapeT,
    params: dict[str, Any],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of rows (as dicts) and the cursor of the next page (None on the last)."""
    after_key = route.keyset.decode(cursor)
    bound = dict(params)
    after_shape: AfterShape = None
    if after_key is not None:
        after_shape = tuple(value is None for value in after_key)
        for i, value in enumerate(after_key):
            bound[f"after_{i}"] = value
    rows = await fetch_dicts(conn, route.statement(shape, after_shape, limit + 1), bound)
    return rows[:limit], next_cursor(route.keyset, rows, limit, route.key)


def page_response(route: ListRoute[Any], items: Sequence[Any], cursor: str | None) -> Response:
    """The page as JSON: the rows as they are where they are already exactly what the
    page model would answer (:mod:`service.api.fastdump`), else validated once by the
    page model and serialised by pydantic."""
    try:
        body = route.fast.page(items, cursor)
    except NotFast:
        page = route.adapter.validate_python({"items": items, "next_cursor": cursor})
        body = route.adapter.dump_json(page)
    return Response(body, media_type="application/json")


async def list_page(
    conn: AsyncConnection,
    route: ListRoute[ShapeT],
    shape: ShapeT,
    params: dict[str, Any],
    *,
    limit: int,
    cursor: str | None,
    item: Callable[[dict[str, Any]], Any] | None = None,
) -> Response:
    """Fetch one page of ``route`` for ``shape`` with ``params`` bound, and answer it.

    ``item`` turns a row into an item (by default the row itself is the item).
    """
    rows, next_page = await fetch_page(conn, route, shape, params, limit=limit, cursor=cursor)
    items = rows if item is None else [item(row) for row in rows]
    return page_response(route, items, next_page)


class Single:
    """The answer of a route returning one object of ``model``."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(model)
        self.fast = FastDump(model)


def single_response(single: Single, item: dict[str, Any]) -> Response:
    """One object as JSON: as it is where it is already exactly what its model would
    answer, else validated once by the model and serialised by pydantic."""
    try:
        body = single.fast.one(item)
    except NotFast:
        body = single.adapter.dump_json(single.adapter.validate_python(item))
    return Response(body, media_type="application/json")
