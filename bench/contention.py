"""Contention benchmark: deadlocks between the consumer and the Describe writes.

Seeds ``--tasks`` tasks of one cluster through the consumer's handler, then runs
two phases of ``--duration`` seconds each, side by side in each phase:

* ``--consumers`` consumer workers: batches of ``--batch`` random tasks' events
  (each a newer version) through :class:`service.consumer.handler.Handler`, which
  retries its own transaction on contention;
* ``--writers`` Describe writers: batches of ``--batch`` random tasks found and
  ``--missing`` random tasks missing (marked gone), in a phase's way of writing:

  - ``before``: the Describe write of main before the lock order, reproduced
    here: tags first, then the tasks (upsert, gone), no retry;
  - ``ordered``: :func:`service.enrich.writes.write_described` (tasks, then
    tags) under :func:`service.db.retry_on_contention`, as the Describer runs it.

Per phase: Describe transactions committed and lost (a failure after the last
attempt, or the one attempt of ``before``), their retries, consumer batches and
messages left for redelivery, and the deadlocks PostgreSQL counted
(``pg_stat_database.deadlocks``). Prints a table and writes
bench/results/contention.json. Usage:

    .venv/bin/python bench/contention.py [--tasks 200] [--batch 20] [--missing 5]
        [--consumers 2] [--writers 2] [--duration 20]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchdb  # bench/ is the script's directory, so first on sys.path
from sqlalchemy.ext.asyncio import AsyncSession

from service import telemetry
from service.config import load_settings
from service.consumer.handler import Handler, Message
from service.db import create_engine, is_contention, retry_on_contention
from service.enrich import writes
from service.logging import configure_logging
from service.migrate import upgrade
from service.runtime import open_runtime
from service.state.bulk import execute

ACCOUNT = "123456789012"
CLUSTER = "bench"
CLUSTER_ARN = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/{CLUSTER}"


def task_arn(i: int) -> str:
    return f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/{CLUSTER}/{i:032x}"


def task_event(i: int, version: int) -> str:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": ACCOUNT,
            "region": "us-east-1",
            "time": datetime.now(UTC).isoformat(),
            "detail": {
                "taskArn": task_arn(i),
                "clusterArn": CLUSTER_ARN,
                "group": "service:web",
                "lastStatus": "RUNNING",
                "desiredStatus": "RUNNING",
                "version": version,
                "containers": [{"name": "app", "lastStatus": "RUNNING"}],
                "updatedAt": datetime.now(UTC).isoformat(),
            },
        }
    )


def described_task(i: int) -> dict[str, Any]:
    """A DescribeTasks item (an old version: it locks the row, the newer event stays)."""
    return {
        "taskArn": task_arn(i),
        "clusterArn": CLUSTER_ARN,
        "group": "service:web",
        "lastStatus": "RUNNING",
        "desiredStatus": "RUNNING",
        "version": 1,
        "containers": [{"name": "app", "lastStatus": "RUNNING"}],
        "tags": [{"key": "team", "value": "web"}],
    }


# main's Describe write of tasks before the lock order (service/enrich/writes.py at
# 8c6f6fb): tags, then the version-guarded upsert, the un-gone and the gone UPDATEs.
_GONE_BEFORE = (
    "UPDATE tasks SET gone_at = $2, seen_at = now()"
    " WHERE arn = ANY($1::TEXT[]) AND gone_at IS NULL RETURNING arn"
)


async def write_before(
    session: AsyncSession, items: Sequence[dict[str, Any]], missing: Sequence[str], now: datetime
) -> None:
    await writes.write_tags(session, {str(t["taskArn"]): writes.tags_of(t) for t in items}, now)
    await writes.write_tasks(session, items, now)
    if missing:
        await execute(session, _GONE_BEFORE, sorted(set(missing)), now)


#: Event versions, increasing across the consumer workers: every event is newer.
VERSIONS = itertools.count(2)


async def _write_ordered(
    session: AsyncSession, *, items: list[dict[str, Any]], missing: list[str], now: datetime
) -> None:
    await writes.write_described(session, "tasks", items, missing, now)


async def consumer(
    handler: Handler, tasks: int, batch: int, stop: float, tally: Counter[str]
) -> None:
    rng = random.Random()
    while time.monotonic() < stop:
        bodies = [task_event(i, next(VERSIONS)) for i in rng.sample(range(tasks), batch)]
        result = await handler.handle(
            [Message(message_id=str(uuid.uuid4()), body=b) for b in bodies]
        )
        tally["consumer_batches"] += 1
        tally["consumer_messages_redelivered"] += len(result.retry)


async def writer(
    runtime: Any, mode: str, tasks: int, batch: int, missing: int, stop: float, tally: Counter[str]
) -> None:
    rng = random.Random()
    while time.monotonic() < stop:
        picked = rng.sample(range(tasks), batch + missing)
        items = [described_task(i) for i in picked[:batch]]
        gone = [task_arn(i) for i in picked[batch:]]
        now = datetime.now(UTC)
        try:
            if mode == "before":
                async with runtime.sessionmaker() as session, session.begin():
                    await write_before(session, items, gone, now)
            else:
                await retry_on_contention(
                    runtime.sessionmaker,
                    functools.partial(_write_ordered, items=items, missing=gone, now=now),
                    name="bench_describe_tasks",
                )
            tally["describe_committed"] += 1
        except Exception as exc:
            if not is_contention(exc):
                raise
            tally["describe_lost"] += 1


async def deadlocks(db_url: str) -> int:
    conn = await benchdb.connect(db_url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value or 0)
    finally:
        await conn.close()


async def phase(db_url: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(database_url=db_url)
    tally: Counter[str] = Counter()
    retried = telemetry.DB_CONTENTION.labels("bench_describe_tasks", "retried")
    retried_before = retried._value.get()
    async with open_runtime(settings, pool_size=args.consumers + args.writers + 2) as runtime:
        before = await deadlocks(db_url)
        stop = time.monotonic() + args.duration
        handler = Handler(runtime.sessionmaker)
        await asyncio.gather(
            *(
                consumer(handler, args.tasks, args.batch, stop, tally)
                for _ in range(args.consumers)
            ),
            *(
                writer(runtime, mode, args.tasks, args.batch, args.missing, stop, tally)
                for _ in range(args.writers)
            ),
        )
    # Backends report their counters when idle or gone: the runtime's are closed now.
    await asyncio.sleep(1.5)
    counted = await deadlocks(db_url) - before
    describes = tally["describe_committed"] + tally["describe_lost"]
    return {
        "describe_transactions": describes,
        "describe_committed": tally["describe_committed"],
        "describe_lost": tally["describe_lost"],
        "describe_retries": int(retried._value.get() - retried_before),
        "consumer_batches": tally["consumer_batches"],
        "consumer_messages_redelivered": tally["consumer_messages_redelivered"],
        "deadlocks": counted,
        "deadlocks_per_1000_describes": round(1000 * counted / max(1, describes), 1),
    }


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20, help="tasks per transaction")
    parser.add_argument("--missing", type=int, default=5, help="tasks marked gone per Describe")
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    configure_logging("json", "error")
    db_url = await benchdb.fresh_database(args.database_url, "ecswatch_bench_contention")
    results: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("tasks", "batch", "missing", "consumers", "writers", "duration")
    }
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        settings = load_settings(database_url=db_url)
        async with open_runtime(settings, pool_size=2) as runtime:
            await Handler(runtime.sessionmaker).handle(
                [Message(message_id=str(i), body=task_event(i, 1)) for i in range(args.tasks)]
            )
        for mode in ("before", "ordered"):
            results[mode] = await phase(db_url, mode, args)
    finally:
        await benchdb.drop_database(db_url)
    return results


def report(results: dict[str, Any]) -> None:
    """Print the table and write bench/results/contention.json."""
    print(
        f"{results['tasks']} tasks, {results['consumers']} consumers and {results['writers']}"
        f" Describe writers, {results['batch']} tasks a transaction"
        f" (+{results['missing']} gone a Describe), {results['duration']} s a phase"
    )
    columns = (
        ("describe_transactions", "describes"),
        ("describe_lost", "lost"),
        ("describe_retries", "retries"),
        ("consumer_batches", "consumer batches"),
        ("consumer_messages_redelivered", "redelivered"),
        ("deadlocks", "deadlocks"),
        ("deadlocks_per_1000_describes", "per 1,000 describes"),
    )
    print(f"{'phase':<10}" + "".join(f"{title:>20}" for _, title in columns))
    for mode in ("before", "ordered"):
        row = results[mode]
        print(f"{mode:<10}" + "".join(f"{row[key]:>20}" for key, _ in columns))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "contention.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    report(asyncio.run(main()))
