"""Retention benchmark: a day of raw events pruned by partition drop vs. batched delete.

Seeds ``--old-events`` raw events, all on one day past retention (realistic
task-event bodies, 40 days old), in each of two ways, each in a database of its
own: in that day's partition (``drop``: retention drops the partition), and in
the default partition (``delete``: retention deletes them in batches of
``--batch-size`` rows, the statements every raw event went through before
``raw_events`` was partitioned). Then, per mode, it feeds fresh events through the
consumer's handler (2 workers, batches of 500, as the consumer runs them): once to
warm up, then three times, each on a workload of its own: alone, while
``service.retention.prune`` prunes the old day (ingestion goes on until pruning
ends), and alone again. Reports ingestion events/s and batch latencies (p50, p99,
max) of each phase, and how long pruning took. A stall would show as a batch that
waits seconds (max latency) and as lower events/s in the middle phase.

The old rows are built with ``generate_series`` in a plain table and indexed in
bulk, then attached as the partition (setup, not timed as pruning).

Prints a table and writes bench/results/retention.json. Usage:

    .venv/bin/python bench/retention.py [--old-events 100000] [--events 10000]
        [--events-during 30000] [--batch-size 2000] [--pause-s 0] [--modes drop,delete]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

The figures in docs/performance.md come from the command lines written there.
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


OLD_DAY = (WORKLOAD_START - timedelta(days=40)).date()
MODES = ("drop", "delete")


async def seed_old_events(db_url: str, count: int, sample: dict[str, Any], mode: str) -> float:
    """``count`` raw events spread over ``OLD_DAY``, bodies like real task events, in
    that day's partition (``drop``) or in the default partition (``delete``)."""
    conn = await benchdb.connect(db_url)
    t0 = time.perf_counter()
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute("CREATE TABLE bench_old (LIKE raw_events INCLUDING DEFAULTS)")
        step = 500_000
        for start in range(0, count, step):
            n = min(step, count - start)
            await conn.execute(
                """
                INSERT INTO bench_old (id, detail_type, source, account, region, time,
                                       resources, detail, cluster_arn, cluster_name)
                SELECT 'old-' || g, $1, 'aws.ecs', '123456789012', 'us-east-1',
                       $2::timestamptz + make_interval(secs => g * 86400.0 / $7),
                       jsonb_build_array($3 || g), $4::jsonb,
                       'arn:aws:ecs:us-east-1:123456789012:cluster/c' || (g % 5),
                       'c' || (g % 5)
                FROM generate_series($5::bigint, $6::bigint) g
                """,
                sample["detail-type"],
                datetime(OLD_DAY.year, OLD_DAY.month, OLD_DAY.day, tzinfo=UTC),
                "arn:aws:ecs:us-east-1:123456789012:task/c0/old",
                json.dumps(sample["detail"]),
                start,
                start + n - 1,
                float(count),
            )
        # ATTACH builds the partitioned table's indexes on the rows in bulk.
        if mode == "drop":
            name = f"raw_events_p{OLD_DAY:%Y%m%d}"
            upper = OLD_DAY + timedelta(days=1)
            await conn.execute(f"ALTER TABLE bench_old RENAME TO {name}")
            await conn.execute(
                f"ALTER TABLE raw_events ATTACH PARTITION {name} "
                f"FOR VALUES FROM ('{OLD_DAY.isoformat()}T00:00:00Z') "
                f"TO ('{upper.isoformat()}T00:00:00Z')"
            )
        else:
            await conn.execute("DROP TABLE raw_events_default")
            await conn.execute("ALTER TABLE bench_old RENAME TO raw_events_default")
            await conn.execute("ALTER TABLE raw_events ATTACH PARTITION raw_events_default DEFAULT")
        # The fresh workload's days have their partitions, as retention makes them.
        await conn.execute(
            "SELECT raw_events_add_day(d::date) FROM generate_series($1::date, "
            "$1::date + 9, interval '1 day') AS d",
            WORKLOAD_START.date(),
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


async def run_mode(
    args: argparse.Namespace, mode: str, bodies: list[list[str]], sample: dict[str, Any]
) -> dict[str, Any]:
    """Seed the old day as ``mode`` lays it out, then the three ingestion phases."""
    db_url = await benchdb.fresh_database(args.database_url, "ecswatch_bench_retention")
    results: dict[str, Any] = {}
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        seeded = await seed_old_events(db_url, args.old_events, sample, mode)
        results["seed_seconds"] = round(seeded, 1)
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
            rows = report.deleted.get("raw_events", 0)
            results["prune"] = {
                "rows": rows,
                "seconds": round(prune_seconds, 2),
                "rows_per_s": round(rows / prune_seconds),
                "batches": report.batches,
                "partitions_dropped": report.partitions_dropped,
            }
            results["alone_after"] = await ingest(handler, bodies[3], args.batch, args.workers, "c")
        results["old_events_left"] = await count_old(db_url)
    finally:
        await benchdb.drop_database(db_url)
    alone = (results["alone_before"]["events_per_s"] + results["alone_after"]["events_per_s"]) / 2
    results["while_pruning_vs_alone"] = round(results["while_pruning"]["events_per_s"] / alone, 3)
    return results


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-events", type=int, default=100_000, help="raw events of the day")
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
        "--modes", default=",".join(MODES), help="drop, delete or both, comma-separated"
    )
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes: any of {', '.join(MODES)}")
    configure_logging("json", "warning")
    results: dict[str, Any] = {
        "old_events": args.old_events,
        "events_per_phase": args.events,
        "batch": args.batch,
        "workers": args.workers,
        "prune_batch_size": args.batch_size,
        "prune_pause_s": args.pause_s,
    }
    # Four workloads of one size and shape (a shuffled workload's density of
    # events per task depends on its size); the phases alone take a prefix.
    size = max(args.events, args.events_during)
    workloads = [workload(size, seed=seed) for seed in (10, 11, 12, 13)]
    workloads[0] = workloads[0][: args.events]
    workloads[1] = workloads[1][: args.events]
    workloads[3] = workloads[3][: args.events]
    sample = next(e for e in workloads[0] if e["detail-type"] == "ECS Task State Change")
    bodies = [[json.dumps(e) for e in w] for w in workloads]
    results["modes"] = {mode: await run_mode(args, mode, bodies, sample) for mode in modes}
    if set(modes) == set(MODES):
        drop, delete = results["modes"]["drop"], results["modes"]["delete"]
        results["delete_vs_drop_seconds"] = round(
            delete["prune"]["seconds"] / max(drop["prune"]["seconds"], 0.001), 1
        )
    return results


def report(results: dict[str, Any]) -> None:
    """Print the table and write bench/results/retention.json."""
    print(
        f"a day of {results['old_events']:,} old raw events, "
        f"{results['events_per_phase']:,} fresh events per phase alone"
    )
    for mode, r in results["modes"].items():
        print(f"\n{mode} (seeded in {r['seed_seconds']} s)")
        print(f"{'ingestion phase':<30} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for key, name in (
            ("alone_before", "alone (before)"),
            ("while_pruning", "while pruning"),
            ("alone_after", "alone (after)"),
        ):
            phase = r[key]
            print(
                f"{name:<30} {phase['events_per_s']:>10,} {phase['batch_p50_ms']:>8} "
                f"{phase['batch_p99_ms']:>8} {phase['batch_max_ms']:>8}"
            )
        p = r["prune"]
        covered = r["while_pruning"]["pruning_covered_by_ingestion"]
        print(
            f"while pruning / alone: {r['while_pruning_vs_alone']:.0%}; ingestion ran "
            f"during {covered:.0%} of the pruning"
        )
        print(
            f"pruned {p['rows']:,} rows in {p['seconds']} s ({p['rows_per_s']:,}/s, "
            f"{p['batches']} batches, {p['partitions_dropped']} partitions dropped, "
            f"{results['prune_pause_s']} s pause between batches); "
            f"old events left: {r['old_events_left']}"
        )
    if "delete_vs_drop_seconds" in results:
        print(
            f"\nbatched delete ÷ partition drop, pruning time: {results['delete_vs_drop_seconds']}x"
        )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "retention.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    report(asyncio.run(main()))
