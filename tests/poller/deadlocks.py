"""Real PostgreSQL errors 40P01 (deadlock_detected) on demand, for the retry tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


@asynccontextmanager
async def provoked_deadlocks(
    engine: AsyncEngine, table: str, when: str, times: int
) -> AsyncIterator[None]:
    """The first ``times`` row writes of ``table`` for which ``when`` (an SQL condition
    on ``NEW``) holds fail with 40P01, raised by a trigger; a sequence counts them, as
    it is not rolled back with the failed transaction."""
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SEQUENCE provoked_deadlocks"))
        await conn.execute(
            text(
                f"""
                CREATE FUNCTION provoke_deadlock() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF ({when}) AND nextval('provoked_deadlocks') <= {int(times)} THEN
                    RAISE EXCEPTION 'provoked by the test' USING ERRCODE = '40P01';
                  END IF;
                  RETURN NEW;
                END $$
                """
            )
        )
        await conn.execute(
            text(
                f"CREATE TRIGGER provoke_deadlock BEFORE INSERT OR UPDATE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION provoke_deadlock()"
            )
        )
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TRIGGER provoke_deadlock ON {table}"))
            await conn.execute(text("DROP FUNCTION provoke_deadlock()"))
            await conn.execute(text("DROP SEQUENCE provoked_deadlocks"))
