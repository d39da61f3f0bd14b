"""Filter building blocks shared by the list routes, and parsing of filter values.

Every filter here is written so that an existing index can serve it (see
docs/api.md, "Indexes"): names and ARNs compare to indexed columns, tag
filters are ``EXISTS`` probes into ``resource_tags`` through its GIN index, and
event resources use the GIN index on ``raw_events.resources``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Query
from pydantic import WithJsonSchema
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Select,
    SQLColumnExpression,
    Text,
    bindparam,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, Result
from sqlalchemy.exc import ArgumentError, DBAPIError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from service.api.schemas import NO_NUL
from service.errors import AmbiguousNameError, InvalidInputError
from service.events import arns
from service.events.arns import Arn
from service.state.models import ResourceTags

_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<frac>\d+))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})$"
)


def parse_time(value: str | None, *, param: str) -> datetime | None:
    """An RFC 3339 timestamp with an explicit offset (``Z`` or ``±hh:mm``), or None.

    Stricter than ``datetime.fromisoformat`` on purpose: a timestamp without an
    offset is ambiguous, and a bare date or epoch number is not RFC 3339.
    Fractions of any length are accepted and truncated to microseconds.
    """
    if value is None:
        return None
    match = _RFC3339.match(value)
    if match is None:
        raise InvalidInputError(
            f"{param} must be an RFC 3339 timestamp such as 2025-01-31T12:00:00Z",
            param=param,
        )
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    tz = "+00:00" if match["tz"] in ("Z", "z") else match["tz"]
    try:
        # In UTC: PostgreSQL refuses offsets beyond ±15:59 that RFC 3339 allows.
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}.{frac}{tz}")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInputError(f"{param} is not a valid date and time", param=param) from None


#: Most ``tag=`` filters one request may repeat: each adds a term to the statement,
#: and each count of terms is a statement of its own in the statement cache.
MAX_TAG_FILTERS = 20


def parse_tags(values: Sequence[str]) -> list[tuple[str, str]]:
    """``key:value`` pairs (split at the first colon; the value may be empty)."""
    if len(values) > MAX_TAG_FILTERS:
        raise InvalidInputError(
            f"at most {MAX_TAG_FILTERS} tag filters, got {len(values)}", param="tag"
        )
    pairs: list[tuple[str, str]] = []
    for raw in values:
        key, sep, value = raw.partition(":")
        if not sep or not key or "\x00" in raw or len(raw) > 512:
            raise InvalidInputError(f"tag must look like key:value, got {raw!r}", param="tag")
        pairs.append((key, value))
    return pairs


def tags_match_bound(arn_column: SQLColumnExpression[str], count: int) -> ColumnElement[bool]:
    """The resource behind ``arn_column`` carries every one of ``count`` tags (AND).

    The tags are bound at execution as ``tag0``, ``tag1``, … (JSON objects of one
    pair, see :func:`bind_tags`): one containment test per pair rather than one
    merged object, so that ``tag=a:1&tag=a:2`` matches nothing instead of
    collapsing to ``a:2``.
    """
    return _tag_probe(arn_column, [inline_json(None, name=f"tag{i}") for i in range(count)])


def inline_json(value: Any, *, name: str) -> ColumnElement[Any]:
    """A JSONB value written into the SQL text (``'…'::JSONB``), not sent as a parameter.

    The driver reuses prepared statements, and after five executions PostgreSQL
    may keep a generic plan that cannot see the value: for ``tags @> $1`` it
    then walks a primary key and checks every row instead of asking the GIN
    index (86 ms instead of 17 ms on 100,000 tasks). Written in, the value is
    planned every time. Pass the value here, or as JSON text in ``name`` at
    execution; it is rendered as an escaped string literal.
    """
    text_value = json.dumps(value) if value is not None else None
    return cast(bindparam(name, text_value, type_=Text, literal_execute=True), JSONB)


def inline_time(name: str) -> ColumnElement[Any]:
    """A timestamp bound at execution (an ISO string) but written into the SQL text,
    so that ``since``/``until`` ranges are planned with their value (see inline_json)."""
    return cast(bindparam(name, type_=Text, literal_execute=True), DateTime(timezone=True))


def _tag_probe(
    arn_column: SQLColumnExpression[str], wanted: Sequence[ColumnElement[Any]]
) -> ColumnElement[bool]:
    # Aliased as tag_probe so that query plans (and tests reading them) can tell
    # the filter from the lateral lookup of the tags column.
    probe_tags = aliased(ResourceTags, name="tag_probe")
    probe = select(probe_tags.resource_arn).where(
        probe_tags.resource_arn == arn_column,
        *(probe_tags.tags.contains(value) for value in wanted),
    )
    return exists(probe)


def parse_arn(value: str | None) -> Arn | None:
    """Split an ECS ARN; None for anything else (including old opaque forms we cannot read)."""
    arn = arns.parse_arn(value)
    return arn if arn is not None and arn.service == "ecs" else None


def is_arn(value: str) -> bool:
    return value.startswith("arn:")


def cluster_name_of_arn(value: str) -> str | None:
    """``name`` from ``arn:…:cluster/name``."""
    arn = parse_arn(value)
    if arn is None or arn.resource_type != "cluster" or len(arn.path) != 1:
        return None
    return arn.path[0]


def service_names_of_arn(value: str) -> tuple[str | None, str] | None:
    """(cluster, service) from a new-format service ARN, (None, service) from an old one."""
    arn = parse_arn(value)
    if arn is None or arn.resource_type != "service":
        return None
    if len(arn.path) == 2:
        return arn.path[0], arn.path[1]
    if len(arn.path) == 1:
        return None, arn.path[0]
    return None


def jsonb_object(value: Any) -> dict[str, Any]:
    """A JSONB column expected to hold an object; anything else reads as empty."""
    return value if isinstance(value, dict) else {}


def jsonb_list(value: Any) -> list[Any]:
    """A JSONB column expected to hold an array; anything else reads as empty."""
    return value if isinstance(value, list) else []


# `key:value`, documented in the schema; parse_tags() checks it with a clearer message.
TagValue = Annotated[
    str, WithJsonSchema({"type": "string", "pattern": r"^[^:\x00]+:[^\x00]*$", "maxLength": 512})
]
TagParam = Annotated[
    list[TagValue] | None,
    Query(
        description="`key:value` (split at the first colon); repeat for AND, "
        f"at most {MAX_TAG_FILTERS} times.",
        max_length=MAX_TAG_FILTERS,
    ),
]

# The format sits on the string branch of the generated anyOf, where it belongs.
RFC3339 = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
SinceParam = Annotated[
    RFC3339 | None, Query(description="RFC 3339 timestamp, inclusive lower bound.")
]
UntilParam = Annotated[
    RFC3339 | None, Query(description="RFC 3339 timestamp, inclusive upper bound.")
]
ClusterParam = Annotated[
    str | None, Query(description="Cluster name or ARN.", max_length=2048, pattern=NO_NUL)
]
ServiceParam = Annotated[
    str | None, Query(description="Service name or ARN.", max_length=2048, pattern=NO_NUL)
]


class TagJoin:
    """The tags of a tagged table's rows, as a LATERAL subquery built once per table.

    Joined as ``LEFT JOIN LATERAL (… OFFSET 0)``: the OFFSET keeps PostgreSQL
    from flattening it into a plain join, so the tags are always fetched by one
    primary-key probe per row the page emits (the LIMIT stops the probes), never
    by hashing the whole ``resource_tags`` table. Built at import, so a request
    does not pay for constructing the subquery. No tag row means "never
    fetched": ``{}`` and ``tags_known`` false.
    """

    def __init__(self, arn_column: SQLColumnExpression[str]) -> None:
        self.lateral = (
            select(ResourceTags.tags, ResourceTags.known)
            .where(ResourceTags.resource_arn == arn_column)
            .offset(literal_column("0"))
            .lateral("tag_row")
        )
        self.columns = (
            func.coalesce(self.lateral.c.tags, literal({}, JSONB)).label("tags"),
            func.coalesce(self.lateral.c.known, false()).label("tags_known"),
        )

    def select(self, *columns: Any) -> Select[*tuple[Any, ...]]:
        """``SELECT columns, tags, tags_known FROM <table> LEFT JOIN LATERAL …``."""
        return select(*columns, *self.columns).outerjoin(self.lateral, true())


async def execute_read(
    conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any] | None = None
) -> Result[Any]:
    """Execute a read, once more on a fresh connection if the pooled one was dropped.

    The API's engine does not pre-ping each checkout (a round trip per request);
    a connection closed since its last use (a database restart, an idle timeout
    on the way) fails on its first statement instead. SQLAlchemy then marks it
    and every older pooled connection invalid; after a rollback of the failed
    implicit transaction, the same ``AsyncConnection`` reconnects. Only a
    disconnect is retried, and only once: reads have no side effects, and a
    database that is really down fails the retry too (a 503 problem).
    """
    bound = dict(params) if params else None
    try:
        return await conn.execute(stmt, bound)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    await conn.rollback()
    return await conn.execute(stmt, bound)


async def fetch_dicts(
    conn: AsyncConnection, stmt: Executable, params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Execute ``stmt`` and return its rows as plain dicts (keys: the statement's labels).

    Statements the driver can run as they are (see :func:`direct_form`) go straight to
    the asyncpg connection with SQL compiled once: SQLAlchemy's execution path
    (execution context, result metadata, ``Row`` objects) was a fixed cost per
    request and a cost per row, for nothing these reads need. Anything else, and
    any failure of the direct path, goes through :func:`execute_read`, which
    retries once on a fresh connection after a disconnect and raises SQLAlchemy's
    errors as before.

    Response models validate a dict several times faster than a ``RowMapping``,
    which pydantic can only read through the generic ``Mapping`` protocol.
    """
    direct = direct_form(stmt, conn.dialect) if isinstance(stmt, ClauseElement) else None
    if direct is not None:
        try:
            args = direct.arguments(params or {})
        except KeyError:
            direct = None  # a parameter is missing: let SQLAlchemy name it
    if direct is not None:
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is None:
                raise asyncpg.InterfaceError("the pooled connection is closed")
            for listener in DIRECT_READ_LISTENERS:
                listener(direct.sql, args)
            records = await driver.fetch(direct.sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # A dropped connection, a cancelled statement: SQLAlchemy's path
            # reconnects or raises as it always did.
            pass
        else:
            names = direct.keys
            return [dict(zip(names, record, strict=True)) for record in records]
    result = await execute_read(conn, stmt, params)
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


#: Called with (SQL, arguments) before each read sent straight to the driver, which
#: SQLAlchemy's ``before_cursor_execute`` event does not see (tests and bench/api.py
#: count and capture statements through both).
DIRECT_READ_LISTENERS: list[Callable[[str, Sequence[Any]], None]] = []

_FLOAT8 = 701  # PostgreSQL's oid of double precision


def _result_processor(sql_type: Any, dialect: Dialect) -> bool:
    """Whether SQLAlchemy would convert this column's values after the driver."""
    try:
        return sql_type._cached_result_processor(dialect, None) is not None
    except (TypeError, ValueError, ArgumentError, InvalidRequestError):
        # Numeric types decide by the driver's type code, unknown before execution;
        # a Float column is double precision, which asyncpg already reads as float.
        if isinstance(sql_type, Float) and not sql_type.asdecimal:
            return sql_type._cached_result_processor(dialect, _FLOAT8) is not None
        return True


@dataclass(frozen=True, slots=True)
class _Direct:
    """A statement compiled once for asyncpg: SQL text, parameter order, row keys."""

    sql: str
    keys: tuple[str, ...]
    # One per positional parameter: (name given at execution, processor) or
    # (None, the statement's own value, already processed).
    slots: tuple[tuple[str | None, Any], ...]

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        args: list[Any] = []
        for name, value in self.slots:
            if name is None:
                args.append(value)
            else:
                given = params[name]
                args.append(given if value is None or given is None else value(given))
        return args


_DIRECT_CACHE: dict[int, tuple[ClauseElement, _Direct | None]] = {}
_DIRECT_CACHE_SIZE = 4096


def direct_form(stmt: ClauseElement, dialect: Dialect) -> _Direct | None:
    """The statement compiled for the driver, or None where SQLAlchemy must run it.

    Cached per statement object (routes build their statements once per shape).
    A statement qualifies when nothing is rendered at execution time (no
    ``literal_execute`` or expanding parameters) and no result column needs a
    SQLAlchemy result processor: asyncpg already returns what SQLAlchemy would
    (its JSON codec is the engine's, see :func:`service.db.loads_json`).
    """
    cached = _DIRECT_CACHE.get(id(stmt))
    if cached is not None and cached[0] is stmt:
        return cached[1]
    direct = _compile_direct(stmt, dialect)
    if len(_DIRECT_CACHE) >= _DIRECT_CACHE_SIZE:
        _DIRECT_CACHE.clear()
    # The statement is kept with its entry, so its id() cannot be reused meanwhile.
    _DIRECT_CACHE[id(stmt)] = (stmt, direct)
    return direct


def _compile_direct(stmt: ClauseElement, dialect: Dialect) -> _Direct | None:
    compiled = stmt.compile(dialect=dialect)
    if not isinstance(compiled, SQLCompiler) or not compiled.positional:
        return None
    if compiled.literal_execute_params or compiled.post_compile_params:
        return None
    keys: list[str] = []
    for entry in compiled._result_columns or ():
        if _result_processor(entry[3], dialect):
            return None
        keys.append(entry[0])
    if len(set(keys)) != len(keys):
        return None
    processors = compiled._bind_processors
    slots: list[tuple[str | None, Any]] = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        processor = processors.get(name)
        if bind.callable is not None or not (processor is None or callable(processor)):
            return None
        if bind.required:
            slots.append((bind.key, processor))
        else:
            value = bind.effective_value
            slots.append((None, processor(value) if processor and value is not None else value))
    return _Direct(compiled.string, tuple(keys), tuple(slots))


# ---------------------------------------------------------------- bound filters
# ``cluster=`` and ``service=`` as a name or an ARN, for statements built once and
# reused (see service.api.pagination.ListRoute): ``bind_*`` records the values in
# ``params`` and returns the form; ``*_filter`` gives the form's expressions over
# bindparam names.

ClusterForm = Literal["name", "arn", "arn+name"]
ServiceForm = Literal["name", "arn", "arn+service", "arn+service+cluster"]


def bind_cluster(value: str, params: dict[str, Any], *, arn_indexed: bool) -> ClusterForm:
    """Bind ``cluster=`` (a name or an ARN) as ``cluster`` (and ``cluster_name``).

    Where the ARN column has no index, an ARN also compares the name parsed from
    it: redundant for the result (one ARN has one name) but it lets the planner
    use the indexes that lead with ``cluster_name``. Where the ARN is indexed the
    name is left out, because the planner would take the two predicates as
    independent, underestimate the rows tenfold and pick a worse plan.
    """
    params["cluster"] = value
    if not is_arn(value):
        return "name"
    name = cluster_name_of_arn(value)
    if name is None or arn_indexed:
        return "arn"
    params["cluster_name"] = name
    return "arn+name"


def cluster_filter(
    form: ClusterForm | None,
    *,
    name_column: SQLColumnExpression[str | None],
    arn_column: SQLColumnExpression[str | None],
) -> list[ColumnElement[bool]]:
    if form is None:
        return []
    if form == "name":
        return [name_column == bindparam("cluster")]
    if form == "arn":
        return [arn_column == bindparam("cluster")]
    return [arn_column == bindparam("cluster"), name_column == bindparam("cluster_name")]


def bind_service(value: str, params: dict[str, Any]) -> ServiceForm:
    """Bind ``service=`` as ``service`` (and ``service_name``, ``service_cluster``).

    An ARN compares the ARN column and also the names parsed from it, which the
    indexes lead with.
    """
    params["service"] = value
    if not is_arn(value):
        return "name"
    names = service_names_of_arn(value)
    if names is None:
        return "arn"
    cluster, params["service_name"] = names
    if cluster is None:
        return "arn+service"
    params["service_cluster"] = cluster
    return "arn+service+cluster"


def service_filter(
    form: ServiceForm | None,
    *,
    name_column: SQLColumnExpression[str | None],
    cluster_name_column: SQLColumnExpression[str | None],
    arn_column: SQLColumnExpression[str | None],
) -> list[ColumnElement[bool]]:
    if form is None:
        return []
    if form == "name":
        return [name_column == bindparam("service")]
    terms = [arn_column == bindparam("service")]
    if form in ("arn+service", "arn+service+cluster"):
        terms.append(name_column == bindparam("service_name"))
    if form == "arn+service+cluster":
        terms.append(cluster_name_column == bindparam("service_cluster"))
    return terms


def bind_tags(values: Sequence[str] | None, params: dict[str, Any]) -> int:
    """Bind ``tag=`` pairs as ``tag0``, ``tag1``, … for :func:`tags_match_bound`."""
    tags = parse_tags(values or [])
    for i, (key, value) in enumerate(tags):
        params[f"tag{i}"] = json.dumps({key: value})
    return len(tags)


AccountParam = Annotated[
    str | None,
    Query(description="AWS account id (12 digits): only its resources.", pattern=r"^[0-9]{12}$"),
]
RegionParam = Annotated[
    str | None,
    Query(
        description="AWS region, such as `eu-west-1`: only its resources.",
        max_length=32,
        pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
    ),
]


def account_of(arn_column: SQLColumnExpression[str]) -> ColumnElement[str]:
    """The account of an ARN column (its 5th part; '' for no ARN)."""
    return func.split_part(arn_column, ":", 5)


def region_of(arn_column: SQLColumnExpression[str]) -> ColumnElement[str]:
    """The region of an ARN column (its 4th part; '' for no ARN)."""
    return func.split_part(arn_column, ":", 4)


def scope_columns(arn_column: SQLColumnExpression[str]) -> tuple[ColumnElement[Any], ...]:
    """``account_id`` and ``region`` of a resource, from its ARN (NULL without one)."""
    return (
        func.nullif(account_of(arn_column), "").label("account_id"),
        func.nullif(region_of(arn_column), "").label("region"),
    )


def bind_scope(
    account_id: str | None, region: str | None, params: dict[str, Any]
) -> tuple[bool, bool]:
    """Bind the ``account_id=``/``region=`` filters; which of them are used."""
    if account_id is not None:
        params["account_id"] = account_id
    if region is not None:
        params["region"] = region
    return account_id is not None, region is not None


def scope_filter(
    arn_column: SQLColumnExpression[str], scope: tuple[bool, bool]
) -> list[ColumnElement[bool]]:
    """The filters of :func:`bind_scope` over an ARN column (served by the
    ``(split_part(arn, ':', 5), arn)`` and ``(split_part(arn, ':', 4), arn)``
    indexes where the route pages by ARN)."""
    filters: list[ColumnElement[bool]] = []
    if scope[0]:
        filters.append(account_of(arn_column) == bindparam("account_id"))
    if scope[1]:
        filters.append(region_of(arn_column) == bindparam("region"))
    return filters


#: Resources of one name (or deployments of one id) read to tell their scopes apart:
#: names are unique only within an account and region. More rows are not read.
MAX_NAMESAKES = 50


def one_scope(
    found: Sequence[Mapping[str, Any]], *, what: str, arn_key: str
) -> Mapping[str, Any] | None:
    """The first of ``found`` (rows with ``account_id`` and ``region``), None for none;
    :class:`~service.errors.AmbiguousNameError` (409) listing each scope with the
    service ARN (``arn_key`` of its first row, where known) when they span several
    scopes. The one form of that problem for every route."""
    scopes = sorted({(r["account_id"] or "", r["region"] or "") for r in found})
    if len(scopes) > 1:
        listed: list[dict[str, str]] = []
        for account, region in scopes:
            first = next(
                r for r in found if (r["account_id"] or "", r["region"] or "") == (account, region)
            )
            entry = {"account_id": account, "region": region}
            if first[arn_key]:
                entry["service_arn"] = first[arn_key]
            listed.append(entry)
        raise AmbiguousNameError(
            f"{what} is in {len(scopes)} scopes; give account_id and region", scopes=listed
        )
    return found[0] if found else None


def in_scope(arn: str, account_id: str | None, region: str | None) -> bool:
    """Whether ``arn`` is in the account and the region given (None: any)."""
    parsed = parse_arn(arn)
    if parsed is None:
        return account_id is None and region is None
    return account_id in (None, parsed.account) and region in (None, parsed.region)
