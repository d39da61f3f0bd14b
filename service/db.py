"""Database plumbing: the declarative base, the engine factory and unit_of_work().

The engine is created by :mod:`service.runtime`; repositories only ``flush()``,
the owner of the unit of work commits.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import DateTime, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every ecswatch table; times are always ``timestamptz``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
    }


def to_asyncpg_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` URLs and name the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


_INT64 = 2.0**63


def _maybe_big_int(value: Any) -> bool:
    """Whether ``value`` (decoded by orjson) holds a float that may have been an
    integer beyond 64 bits in the text (orjson reads those as floats)."""
    kind = type(value)
    if kind is float:
        return bool(value >= _INT64 or value <= -_INT64)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:
        item_kind = type(item)
        if item_kind is str or item_kind is int or item is None or item_kind is bool:
            continue
        if _maybe_big_int(item):
            return True
    return False


def loads_json(text: str | bytes) -> Any:
    """Decode a JSON/JSONB value read from PostgreSQL: orjson, exactly as ``json`` would.

    orjson decodes in C at several times the speed of ``json`` (for the API, a
    large part of a 100-task page: docs/performance.md). Where its answer could
    differ, ``json`` decides: a float of 2**63 or more (orjson reads integers
    beyond 64 bits as floats; ``json`` keeps them exact), and anything orjson
    refuses (a lone surrogate escape, a number beyond a double).
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if _maybe_big_int(value):
        return json.loads(text)
    return value


def create_engine(
    url: str, *, pool_size: int = 10, pre_ping: bool = True, autocommit: bool = False
) -> AsyncEngine:
    """An asyncpg engine; with pre-ping, connections dropped by a restart are replaced.

    ``pre_ping=False`` saves a round trip per checkout, for callers that handle a
    dropped connection themselves (the API's reads retry once: see
    :func:`service.api.queries.execute_read`). ``autocommit=True`` runs every
    statement in its own implicit transaction (no BEGIN/ROLLBACK round trips),
    set once per connection rather than per checkout.
    """
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_async_engine(
        to_asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        json_deserializer=loads_json,
        **options,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commits when the block ends normally, rolls back otherwise."""
    async with sessionmaker() as session, session.begin():
        yield session


# SQLSTATE classes and codes that mean "try again later", not "this input is bad".
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "40001", "40P01", "55P03", "58")


def sqlstate_of(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind ``exc`` (a SQLAlchemy DBAPIError, or asyncpg's own)."""
    orig = getattr(exc, "orig", exc)
    # SQLAlchemy's asyncpg adapter wraps the driver's exception as __cause__.
    for candidate in (orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_transient_db_error(exc: BaseException) -> bool:
    """True when a database failure may pass by itself (connection lost, server down)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        state = sqlstate_of(exc)
        if state is not None and state.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return True
        cause = getattr(getattr(exc, "orig", None), "__cause__", None)
        return isinstance(cause, OSError | ConnectionError | TimeoutError)
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    if isinstance(exc, asyncpg.exceptions.PostgresConnectionError | asyncpg.InterfaceError):
        return True
    state = sqlstate_of(exc)
    return state is not None and state.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
