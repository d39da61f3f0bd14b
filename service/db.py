"""Database plumbing: the declarative base, the engine factory, error classes and the
lock order.

The engine is created by :mod:`service.runtime`; writers only ``flush()``, the
owner of the transaction commits.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

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

from service import telemetry
from service.aws.backoff import Backoff
from service.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")

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


#: ``ECSWATCH_DATABASE_SSLMODE`` values, as libpq names them.
SslMode = Literal["disable", "require", "verify-ca", "verify-full"]


def ssl_argument(mode: SslMode | None) -> ssl.SSLContext | bool | None:
    """asyncpg's ``ssl`` connect argument for ``mode`` (None: the driver's default).

    ``require`` encrypts without checking the server. ``verify-ca`` checks that
    the server's certificate chains to a trusted CA, and ``verify-full`` also
    that it names the host connected to. Trusted CAs are the system's store
    (``SSL_CERT_FILE`` points elsewhere); the image adds the Amazon RDS bundle
    to it (docs/deploy.md "Database TLS").
    """
    if mode is None:
        return None
    if mode == "disable":
        return False
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if mode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    pre_ping: bool = True,
    autocommit: bool = False,
    sslmode: SslMode | None = None,
) -> AsyncEngine:
    """An asyncpg engine; with pre-ping, connections dropped by a restart are replaced.

    ``pre_ping=False`` saves a round trip per checkout, for callers that handle a
    dropped connection themselves (the API's reads retry once: see
    :func:`service.api.queries.execute_read`). ``autocommit=True`` runs every
    statement in its own implicit transaction (no BEGIN/ROLLBACK round trips),
    set once per connection rather than per checkout. ``sslmode``: see
    :func:`ssl_argument`.

    Statement parameters never appear in an error's text (``hide_parameters``):
    they carry webhook secrets and URLs, and errors are logged.
    """
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    tls = ssl_argument(sslmode)
    if tls is not None:
        options["connect_args"] = {"ssl": tls}
    return create_async_engine(
        to_asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        json_deserializer=loads_json,
        hide_parameters=True,
        **options,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


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


# ---------------------------------------------------------------- lock order and contention

#: The order in which a transaction that writes several of these tables takes
#: their row locks: the consumer's (``service.consumer.transaction.commit_events``:
#: state, deployments, alerts, Datadog facts; each table first written in this
#: order), which the Describe writes of enrichment and reconciliation
#: (``service.enrich.writes.write_described``) follow. Within a table, each
#: statement locks its rows in primary-key order (an ``ORDER BY`` in the
#: statement, or rows sorted before they are sent, as the consumer does for that
#: table). Two transactions that follow it may wait for each other but do not
#: deadlock on tables. The consumer goes back to one table: ``deployments`` (the
#: lifecycle's transitions after its upsert), which no other transaction writes
#: together with an earlier table. A transaction that writes one table with
#: several statements locks the rows of all of them first, in one sorted pass
#: (``SELECT … ORDER BY … FOR UPDATE``). What the order cannot rule out (rows
#: inserted after that pass; the consumer's two statements on
#: ``container_instances``, state then health, each sorted alone; a statement
#: outside ecswatch) is retried: :func:`retry_on_contention`.
#: ``tests/poller/test_lock_order.py`` checks the consumer and the Describe writes
#: against this tuple; ``bench/contention.py`` runs them side by side.
WRITE_ORDER = (
    "raw_events",
    "clusters",
    "task_definitions",
    "tasks",
    "container_instances",
    "services",
    "resource_tags",
    "deployments",
    "alerts",
    "datadog_facts",
    "outbox",
)

# Lost a lock race with another transaction: deadlock_detected (the victim of a
# lock cycle) or serialization_failure. The same transaction run again succeeds.
CONTENTION_SQLSTATES = ("40001", "40P01")

#: How many times :func:`retry_on_contention` runs a transaction at most.
CONTENTION_ATTEMPTS = 3


def is_contention(exc: BaseException) -> bool:
    """True when ``exc`` is a deadlock or serialization failure (SQLSTATE 40P01, 40001)."""
    return sqlstate_of(exc) in CONTENTION_SQLSTATES


async def retry_on_contention(
    sessionmaker: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    name: str,
    attempts: int = CONTENTION_ATTEMPTS,
    backoff: Backoff | None = None,
) -> T:
    """Run ``work(session)`` in a transaction of its own and commit; return its result.

    When the transaction loses a lock race (:func:`is_contention`) it is rolled
    back and ``work`` runs again from the start, in a new session and transaction
    (nothing of the failed attempt survives), after a short jittered backoff: at
    most ``attempts`` runs. ``work`` must therefore have no effect outside the
    transaction (count and notify after this returns). Any other error, or
    contention on the last attempt, propagates to the caller; giving up is logged
    (``transaction_contention_gave_up``) and counted with each retry in
    ``ecswatch_db_contention_total{transaction=name}``.
    """
    delays = backoff or Backoff(initial=0.05, cap=0.5)
    for attempt in range(1, attempts + 1):
        try:
            async with sessionmaker() as session, session.begin():
                return await work(session)
        except Exception as exc:
            if not is_contention(exc):
                raise
            state = sqlstate_of(exc)
            if attempt >= attempts:
                telemetry.DB_CONTENTION.labels(name, "gave_up").inc()
                log.warning(
                    "transaction_contention_gave_up",
                    transaction=name,
                    attempts=attempt,
                    sqlstate=state,
                )
                raise
            telemetry.DB_CONTENTION.labels(name, "retried").inc()
            log.info(
                "transaction_contention_retry", transaction=name, attempt=attempt, sqlstate=state
            )
            await delays.sleep()
    raise AssertionError("unreachable: the last attempt returns or raises")
