"""Run Alembic migrations from inside the event loop, on an open async engine.

Migrations follow expand/contract (docs/deploy.md, "Upgrade and roll back"):
every release keeps the previous one working on its schema. So a release that
finds the database at a revision it does not know (a newer release migrated it,
then was rolled back) starts on it as it is instead of refusing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from service.logging import get_logger

log = get_logger(__name__)


def migrations_dir() -> Path:
    """Where the Alembic scripts are.

    An installed wheel carries them as ``service.migrations`` (the build maps the
    repository's top-level ``alembic/`` there, see setup.py). A checkout, editable
    install included, has them as ``alembic/`` beside the package: setuptools'
    editable finder cannot import a mapped directory that has no ``__init__.py``,
    and an ``alembic/__init__.py`` would shadow the Alembic library itself.
    """
    spec = importlib.util.find_spec("service.migrations")
    candidates = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    candidates.append(Path(__file__).resolve().parent.parent / "alembic")
    for location in candidates:
        if (location / "env.py").is_file() and (location / "versions").is_dir():
            return location
    raise RuntimeError(
        "the migrations (service.migrations) are missing from this installation; reinstall ecswatch"
    )


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


#: Advisory lock key that serialises migrations: replicas that start together
#: (every ``ecswatch run`` migrates first) wait for each other, and the ones after
#: the first find the database at head and do nothing.
MIGRATION_LOCK_KEY = 0x6563_7377_6D69_67  # "ecswmig"


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Alembic ``upgrade`` to ``revision`` (head by default), one process at a time.

    A database at a revision newer than this build's migrations is left as it is
    (logged as ``database_newer_than_code``): see the module's docstring.
    """

    def _run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        if revision == "head":
            newer = unknown_revisions(connection)
            if newer:
                log.warning(
                    "database_newer_than_code",
                    database=list(newer),
                    code_head=list(head_revisions()),
                )
                return
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        # Released with the transaction, so a process that dies mid-way frees it.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await conn.run_sync(_run)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Alembic ``downgrade`` to ``revision`` (base by default)."""

    def _run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(_run)


def head_revisions() -> tuple[str, ...]:
    """The head revision(s) of the migrations this build ships."""
    from alembic.script import ScriptDirectory

    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def unknown_revisions(connection: Connection) -> tuple[str, ...]:
    """The database's revisions that this build's migrations do not contain."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    heads = MigrationContext.configure(connection).get_current_heads()
    return tuple(rev for rev in heads if rev not in known)


async def current(engine: AsyncEngine) -> tuple[str, ...]:
    """The revision(s) the database is at; empty when it has never been migrated."""
    from alembic.migration import MigrationContext

    def _run(connection: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(connection).get_current_heads())

    async with engine.connect() as conn:
        return await conn.run_sync(_run)
