"""Answer rows that are already what their response model would say, without pydantic.

A page used to be validated by its pydantic model and then serialised: about
half of a 100-task page's CPU (docs/performance.md, "Cheaper requests"). Yet
nearly every row already holds exactly what the model would answer: its
columns have the model's field names and SQL types that map onto the field
types, and its JSONB columns hold what ecswatch itself wrote.

:class:`FastDump` makes sure of that and serialises the rows with orjson:

- A column whose SQL type can only produce the field's type (``text`` for a
  ``str``, ``bigint`` for an ``int``, ``timestamptz`` for a ``datetime``,
  ``boolean`` for a ``bool``), for a field that may be null, is proven once,
  when the route's statement is built (:func:`static_fields`).
- Every other value (JSONB columns above all) is checked on every row, by
  type. A JSONB object shown as a nested model keeps only the model's fields,
  as pydantic would (``tasks.containers`` holds more than ``Container``
  shows); nothing else is converted or copied.

Any value that is not exactly right (a JSONB column holding something else, a
row key too many or too few, an enum value the model does not know, an integer
beyond 64 bits) sends the whole answer back to pydantic, which validates and
reshapes it as before. So the answer is the same either way; only its cost
differs. ``tests/api/test_fastdump.py`` holds the two paths to that.

Only simple field types take the fast path: ``str``, ``int``, ``float``,
``bool``, ``datetime``, a ``StrEnum``, ``Any``, ``dict[str, str]``,
``dict[str, Any]``, ``list[Any]``, a nested model of such fields, a list of
them, and ``X | None`` of each. A model with another field type never takes
it (``FastDump.supported`` is false).
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Union, get_args, get_origin

import orjson
from pydantic import BaseModel
from sqlalchemy import Boolean, DateTime, Enum, Integer, String
from sqlalchemy.sql.elements import ColumnElement

#: How one value is answered: the set of types it may have, answered unchanged
#: (the cheap, common case), or a function giving the value the model would
#: answer (a nested model keeps only its own fields), raising NotFast where
#: only pydantic can tell.
Check = frozenset[type] | Callable[[Any], Any]

_NONE: type = type(None)
_OPTIONS = orjson.OPT_UTC_Z
_MISSING = object()


class NotFast(Exception):
    """A row (or a value in it) is not exactly what the model would answer."""


def _optional(annotation: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, True), or (annotation, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        others = [arg for arg in args if arg is not _NONE]
        if len(others) == 1 and len(args) == 2:
            return others[0], True
    return annotation, False


_SCALARS: dict[Any, frozenset[type]] = {
    str: frozenset({str}),
    # type() tells bool from int; orjson refuses integers beyond 64 bits, which
    # sends the answer to pydantic.
    int: frozenset({int}),
    bool: frozenset({bool}),
    # pydantic answers an int in a float field as a float (1 -> 1.0).
    float: frozenset({float}),
}


def _check_for(annotation: Any) -> Check | None:
    """How a value of one field type is answered, or None where only pydantic can tell."""
    inner, optional = _optional(annotation)
    check = _check_required(inner)
    if check is None or not optional:
        return check
    if type(check) is frozenset:
        return check | {_NONE}
    required = check

    def optional_value(value: Any) -> Any:
        return None if value is None else required(value)  # type: ignore[operator]

    return optional_value


def _is(test: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not test(value):
            raise NotFast
        return value

    return check


def _check_required(annotation: Any) -> Check | None:
    if annotation is Any:
        return lambda value: value
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation is datetime:
        return _is(lambda value: type(value) is datetime and value.tzinfo is not None)
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
        members = frozenset(member.value for member in annotation)
        return _is(lambda value: type(value) is str and value in members)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_check(annotation)
    origin = get_origin(annotation)
    if origin is dict:
        key, value_type = get_args(annotation)
        if key is not str:
            return None
        if value_type is Any:
            return frozenset({dict})
        if value_type is str:
            return _is(
                lambda value: (
                    type(value) is dict and all(type(item) is str for item in value.values())
                )
            )
        return None
    if origin is list:
        (item_type,) = get_args(annotation)
        if item_type is Any:
            return frozenset({list})
        item_check = _check_for(item_type)
        if item_check is None:
            return None
        return _list_check(item_check)
    return None


def _list_check(item_check: Check) -> Callable[[Any], Any]:
    if type(item_check) is frozenset:
        allowed = item_check
        return _is(lambda value: type(value) is list and all(type(i) in allowed for i in value))
    convert = item_check

    def check(value: Any) -> Any:
        if type(value) is not list:
            raise NotFast
        return [convert(item) for item in value]  # type: ignore[operator]

    return check


def _model_check(model: type[BaseModel]) -> Check | None:
    """A nested model given as a dict: its own fields only, as pydantic keeps them.

    Keys the model does not know are left out (pydantic ignores them), a missing
    key takes the field's default (a required one declines), every value is
    answered by its field's check.
    """
    checks = _field_checks(model)
    if checks is None:
        return None
    specs = tuple(
        (
            name,
            check,
            _MISSING
            if model.model_fields[name].is_required()
            else model.model_fields[name].get_default(call_default_factory=True),
        )
        for name, check in checks.items()
    )

    def check(value: Any) -> Any:
        if type(value) is not dict:
            raise NotFast
        answer = {}
        for name, field_check, default in specs:
            item = value.get(name, _MISSING)
            if item is _MISSING:
                if default is _MISSING:
                    raise NotFast
                answer[name] = default
            elif type(field_check) is frozenset:
                if type(item) not in field_check:
                    raise NotFast
                answer[name] = item
            else:
                answer[name] = field_check(item)  # type: ignore[operator]
        return answer

    return check


def _field_checks(model: type[BaseModel]) -> dict[str, Check] | None:
    if model.model_config.get("extra"):
        return None
    checks: dict[str, Check] = {}
    for name, field in model.model_fields.items():
        if field.alias not in (None, name) or field.serialization_alias not in (None, name):
            return None
        check = _check_for(field.annotation)
        if check is None:
            return None
        checks[name] = check
    return checks


class FastDump:
    """Serialise dicts shaped as ``model`` straight to JSON, when they need no reshaping.

    ``static`` names the fields whose values are proven by their column's SQL
    type (see :func:`static_fields`); they are not checked again per row.
    """

    def __init__(self, model: type[BaseModel], static: Collection[str] = ()) -> None:
        self.model = model
        checks = _field_checks(model)
        self.supported = checks is not None
        self._names = frozenset(checks or ())
        self._checks = tuple(
            (name, check) for name, check in (checks or {}).items() if name not in static
        )

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        """What the model would answer for ``row``, or :class:`NotFast`.

        The row's keys must be the model's fields. A value that needs no change
        is kept; a nested model is replaced by its own fields (in place: the
        rows are the caller's fresh dicts, and pydantic reads the replaced value
        the same way should another row decline).
        """
        if not self.supported or row.keys() != self._names:
            raise NotFast
        for name, check in self._checks:
            if type(check) is frozenset:
                if type(row[name]) not in check:
                    raise NotFast
            else:
                row[name] = check(row[name])  # type: ignore[operator]
        return row

    def page(self, rows: Sequence[dict[str, Any]], next_cursor: str | None) -> bytes:
        """The page as JSON; :class:`NotFast` if any row is not exact."""
        items = [self.item(row) for row in rows]
        return dumps({"items": items, "next_cursor": next_cursor})

    def one(self, row: dict[str, Any]) -> bytes:
        return dumps(self.item(row))


def dumps(value: Any) -> bytes:
    """orjson with pydantic's form of times (``Z`` for UTC); NotFast where orjson refuses."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):  # an integer beyond 64 bits, say
        raise NotFast from None


def static_fields(model: type[BaseModel], columns: Iterable[Any]) -> frozenset[str]:
    """The fields of ``model`` whose values the SQL type of their column proves.

    ``columns`` are a statement's selected columns, each named by its key (a
    table column, or a label). A column proves a field when its type can only
    produce the field's type (``text``/``varchar``: str; integers: int;
    ``boolean``: bool; ``timestamptz``: an aware datetime), where the field may
    be null. Everything else (JSONB above all, and fields that must not be
    null, as an outer join can give null in any column) is checked per row.
    """
    by_name: dict[str, Any] = {}
    for column in columns:
        key = getattr(column, "key", None)
        if isinstance(key, str):
            by_name[key] = column
    proven: set[str] = set()
    for name, field in model.model_fields.items():
        column = by_name.get(name)
        if column is None:
            continue
        inner, optional = _optional(field.annotation)
        if optional and _column_gives(column, inner):
            proven.add(name)
    return frozenset(proven)


def _column_gives(column: ColumnElement[Any], python_type: Any) -> bool:
    sql_type = column.type
    if python_type is str:
        return isinstance(sql_type, String) and not isinstance(sql_type, Enum)
    if python_type is int:
        return isinstance(sql_type, Integer)
    if python_type is bool:
        return isinstance(sql_type, Boolean)
    if python_type is datetime:
        return isinstance(sql_type, DateTime) and bool(sql_type.timezone)
    return False
