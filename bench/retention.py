"""Retention benchmark: does pruning old raw events stall ingestion running beside it?

Seeds ``--old-events`` raw events past retention (realistic task-event bodies,
40 days old), then feeds fresh events through the consumer's handler (2 workers,
batches of 500, as the consumer runs them): once to warm up, then three times,
each on a workload of its own: alone, while ``service.retention.prune`` deletes
the old events (ingestion goes on until pruning ends), and alone again. Reports
ingestion events/s and batch latencies (p50, p99, max) of each phase, and how
fast pruning went while ingestion ran. A stall would show as a batch that waits
seconds (max latency) and as lower events/s in the middle phase.

Prints a table and writes bench/results/retention.json. Usage:

    .venv/bin/python bench/retention.py [--old-events 100000] [--events 10000]
        [--events-during 30000] [--batch-size 2000] [--pause-s 0]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

The figure in docs/performance.md comes from
``--old-events 1000000 --events-during 250000``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchdb  # bench/ is the script's directory, so first on sys.path
from ingest import workload

from service.config import load_settings
from service.consumer.handler import Handler, Message
from service.db import create_engine
from service.logging import configure_logging
from service.migrate import upgrade
from service.retention import prune
from service.runtime import open_runtime

# The ingest workload's events start here; old events are seeded 40 days earlier and
# pruning runs as of one day later with a 30-day retention, so the cutoff falls
# between the two and no freshly ingested event is ever past it.
WORKLOAD_START = datetime(2026, 11, 1, tzinfo=UTC)
PRUNE_NOW = WORKLOAD_START + timedelta(days=1)
RETENTION_DAYS = 30


async def seed_old_events(db_url: str, count: int, sample: dict[str, Any]) -> float:
    """``count`` raw events 40 days before the workload, bodies like real task events."""
    conn = await benchdb.connect(db_url)
    t0 = time.perf_counter()
    try:
        step = 100_000
        for start in range(0, count, step):
            n = min(step, count - start)
            await conn.execute(
                """
                INSERT INTO raw_events (id, detail_type, source, account, region, time,
                                        resources, detail, cluster_arn, cluster_name)
                SELECT 'old-' || g, $1, 'aws.ecs', '123456789012', 'us-east-1',
                       $2::timestamptz - make_interval(secs => g),
                       jsonb_build_array($3 || g), $4::jsonb,
                       'arn:aws:ecs:us-east-1:123456789012:cluster/c' || (g % 5),
                       'c' || (g % 5)
                FROM generate_series($5::bigint, $6::bigint) g
                """,
                sample["detail-type"],
                WORKLOAD_START - timedelta(days=40),
                "arn:aws:ecs:us-east-1:123456789012:task/c0/old",
                json.dumps(sample["detail"]),
                start + 1,
                start + n,
            )
        await conn.execute("VACUUM ANALYZE raw_events")
    finally:
        await conn.close()
    return time.perf_counter() - t0


async def count_old(db_url: str) -> int:
    conn = await benchdb.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM raw_events WHERE id LIKE 'old-%'"))
    finally:
        await conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ingest(
    handler: Handler,
    bodies: list[str],
    batch: int,
    workers: int,
    prefix: str,
    until: asyncio.Task[Any] | None = None,
) -> dict[str, float]:
    """Feed ``bodies`` through the handler (all of them, or until ``until`` is done);
    events/s and per-batch latencies (ms)."""
    messages = [Message(f"{prefix}-{i}", b) for i, b in enumerate(bodies)]
    batches = iter([messages[s : s + batch] for s in range(0, len(messages), batch)])
    latencies: list[float] = []
    handled = 0

    async def worker() -> None:
        nonlocal handled
        for chunk in batches:  # one shared iterator: each batch goes to one worker
            if until is not None and until.done():
                return
            t = time.perf_counter()
            result = await handler.handle(chunk)
            latencies.append((time.perf_counter() - t) * 1000)
            handled += len(chunk)
            assert not result.retry, "the database refused a batch"

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - t0
    return {
        "events": handled,
        "seconds": round(elapsed, 2),
        "events_per_s": round(handled / elapsed),
        "batch_p50_ms": round(statistics.median(latencies), 1),
        "batch_p99_ms": round(_percentile(latencies, 0.99), 1),
        "batch_max_ms": round(max(latencies), 1),
    }


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-events", type=int, default=100_000)
    parser.add_argument(
        "--events", type=int, default=10_000, help="fresh events of each phase alone"
    )
    parser.add_argument(
        "--events-during",
        type=int,
        default=30_000,
        help="fresh events available while pruning (ingestion stops when pruning ends)",
    )
    parser.add_argument("--batch", type=int, default=500, help="events per handler call")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2_000, help="rows per prune batch")
    parser.add_argument(
        "--pause-s", type=float, default=0.0, help="prune's pause between batches (seconds)"
    )
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    configure_logging("json", "warning")
    db_url = await benchdb.fresh_database(args.database_url, "ecswatch_bench_retention")
    results: dict[str, Any] = {
        "old_events": args.old_events,
        "events_per_phase": args.events,
        "batch": args.batch,
        "workers": args.workers,
        "prune_batch_size": args.batch_size,
        "prune_pause_s": args.pause_s,
    }
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        # Three workloads of one size and shape (a shuffled workload's density of
        # events per task depends on its size); the phases alone take a prefix.
        size = max(args.events, args.events_during)
        workloads = [workload(size, seed=seed) for seed in (10, 11, 12, 13)]
        workloads[0] = workloads[0][: args.events]
        workloads[1] = workloads[1][: args.events]
        workloads[3] = workloads[3][: args.events]
        sample = next(e for e in workloads[0] if e["detail-type"] == "ECS Task State Change")
        results["seed_seconds"] = round(await seed_old_events(db_url, args.old_events, sample), 1)
        bodies = [[json.dumps(e) for e in w] for w in workloads]

        settings = load_settings(database_url=db_url)
        async with open_runtime(settings, pool_size=6) as runtime:
            handler = Handler(runtime.sessionmaker)
            gc.freeze()  # as the consumer role does once started
            # Warm-up, not measured: the first events into empty state tables go
            # faster than any later ones and would flatter the first phase.
            await ingest(handler, bodies[0], args.batch, args.workers, "w")
            results["alone_before"] = await ingest(
                handler, bodies[1], args.batch, args.workers, "a"
            )

            started = time.perf_counter()
            pruning = asyncio.create_task(
                prune(
                    runtime.sessionmaker,
                    RETENTION_DAYS,
                    PRUNE_NOW,
                    args.batch_size,
                    pause_s=args.pause_s,
                )
            )
            during = await ingest(handler, bodies[2], args.batch, args.workers, "b", until=pruning)
            ingest_done = time.perf_counter() - started
            report = await pruning
            prune_seconds = time.perf_counter() - started
            # Below 100%: the workload ran out before pruning ended (raise --events-during).
            during["pruning_covered_by_ingestion"] = round(min(1.0, ingest_done / prune_seconds), 2)
            results["while_pruning"] = during
            results["prune"] = {
                "rows": report.deleted.get("raw_events", 0),
                "seconds": round(prune_seconds, 1),
                "rows_per_s": round(report.deleted.get("raw_events", 0) / prune_seconds),
                "batches": report.batches,
            }
            results["alone_after"] = await ingest(handler, bodies[3], args.batch, args.workers, "c")
        results["old_events_left"] = await count_old(db_url)
    finally:
        await benchdb.drop_database(db_url)
    alone = (results["alone_before"]["events_per_s"] + results["alone_after"]["events_per_s"]) / 2
    results["while_pruning_vs_alone"] = round(results["while_pruning"]["events_per_s"] / alone, 3)
    return results


def report(results: dict[str, Any]) -> None:
    """Print the table and write bench/results/retention.json."""
    print(
        f"old raw events {results['old_events']:,} (seeded in {results['seed_seconds']} s), "
        f"{results['events_per_phase']:,} fresh events per phase alone"
    )
    print(f"{'ingestion phase':<30} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for key, name in (
        ("alone_before", "alone (before)"),
        ("while_pruning", "while pruning"),
        ("alone_after", "alone (after)"),
    ):
        r = results[key]
        print(
            f"{name:<30} {r['events_per_s']:>10,} {r['batch_p50_ms']:>8} "
            f"{r['batch_p99_ms']:>8} {r['batch_max_ms']:>8}"
        )
    p = results["prune"]
    covered = results["while_pruning"]["pruning_covered_by_ingestion"]
    print(
        f"while pruning / alone: {results['while_pruning_vs_alone']:.0%}; ingestion ran "
        f"during {covered:.0%} of the pruning"
    )
    print(
        f"pruned {p['rows']:,} rows in {p['seconds']} s ({p['rows_per_s']:,}/s, "
        f"{p['batches']} batches, {results['prune_pause_s']} s pause between batches); "
        f"old events left: {results['old_events_left']}"
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "retention.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    report(asyncio.run(main()))
