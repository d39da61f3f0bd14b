"""The benchmarks' own databases: connect, create a fresh one, drop it."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from service.db import to_asyncpg_url


def connect_kwargs(db_url: str, *, database: str | None = None) -> dict[str, Any]:
    """asyncpg keyword arguments for ``db_url`` (or another ``database`` on its server)."""
    url = make_url(to_asyncpg_url(db_url))
    return {
        "user": url.username or "postgres",
        "password": url.password,
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "database": database or url.database,
    }


async def connect(db_url: str, *, database: str | None = None) -> asyncpg.Connection:
    return await asyncpg.connect(**connect_kwargs(db_url, database=database))


async def fresh_database(server_url: str, prefix: str) -> str:
    """Create ``<prefix>_<random>`` on the server of ``server_url``; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await connect(server_url, database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(to_asyncpg_url(server_url))
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_database(db_url: str) -> None:
    conn = await connect(db_url, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{make_url(db_url).database}" WITH (FORCE)')
    finally:
        await conn.close()
