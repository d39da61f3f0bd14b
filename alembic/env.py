"""Alembic environment: async engine, ecswatch's metadata and naming convention.

Two ways in: ``service.migrate`` hands over an open connection in
``config.attributes["connection"]`` (so migrations run inside an existing event
loop); the plain ``alembic`` command builds an async engine from the URL:
``sqlalchemy.url`` when alembic.ini sets one,
else ``ECSWATCH_DATABASE_URL`` as ecswatch itself reads it.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Connection

from alembic import context
from service.config import Settings, load_settings
from service.db import create_engine
from service.errors import ConfigError
from service.schema import metadata
from service.state.models import include_name

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_new_engine(url: str) -> None:
    # ecswatch's own engine factory: the same TLS (ECSWATCH_DATABASE_SSLMODE) and
    # hidden statement parameters as the service.
    engine = create_engine(url, pool_size=1, sslmode=_settings().database_sslmode)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_configure)
            await conn.commit()
    finally:
        await engine.dispose()


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise SystemExit(f"alembic: {exc.detail}") from None


def _database_url() -> str:
    """sqlalchemy.url if set, else ECSWATCH_DATABASE_URL; a one-line exit otherwise."""
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    url = _settings().database_url
    if not url:
        raise SystemExit(
            "alembic: set ECSWATCH_DATABASE_URL (or sqlalchemy.url in alembic.ini); "
            "`ecswatch db upgrade` also works with the embedded PostgreSQL"
        )
    return url


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    asyncio.run(_run_with_new_engine(_database_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
