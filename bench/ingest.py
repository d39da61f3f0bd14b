"""Ingestion benchmark: events/s through the pipeline, next to its baselines.

(a) in-process: the handler (parse, normalise, apply, commit) fed directly, next to
    a plain asyncpg COPY of the same raw JSON into a table, in the same run;
(b) end to end through SQS on moto: the consumer draining a queue, next to moto's
    own receive+delete ceiling on the same number of messages, in the same run.

Prints a table and writes bench/results/ingest.json. Usage:

    .venv/bin/python bench/ingest.py [--events 20000] [--sqs-events 500]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchdb  # bench/ is the script's directory, so first on sys.path

from service.config import load_settings
from service.consumer.handler import Handler, Message
from service.consumer.loop import Consumer
from service.db import create_engine
from service.demo.aws import MotoServer, create_queue_with_dlq
from service.demo.events import (
    container_instance_events,
    deployment_events,
    envelope,
    service_arn,
    task_lifecycle,
)
from service.logging import configure_logging
from service.migrate import upgrade
from service.runtime import open_runtime


def workload(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """~n realistic events: task lifecycles, instances, deployments, service actions;
    10% duplicates; shuffled (out of order)."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    events: list[dict[str, Any]] = []
    unique = int(n / 1.1)
    i = 0
    while len(events) < unique:
        cluster = f"c{i % 5}"
        service = f"svc{i % 40}"
        t = start + timedelta(seconds=i)
        events += task_lifecycle(
            rng,
            cluster=cluster,
            service=service,
            start=t,
            fail=i % 7 == 0,
            deployment_id=f"ecs-svc/{1000 + i % 40}",
        )
        if i % 10 == 0:
            events += container_instance_events(rng, cluster=cluster, start=t)
        if i % 25 == 0:
            events += deployment_events(
                cluster=cluster,
                service=service,
                deployment_id=f"ecs-svc/{1000 + i % 40}",
                start=t,
                outcome="completed" if i % 50 else "failed",
            )
        if i % 5 == 0:
            detail = {
                "eventType": "INFO",
                "eventName": "SERVICE_STEADY_STATE",
                "clusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{cluster}",
                "createdAt": t.isoformat().replace("+00:00", "Z"),
            }
            events.append(
                envelope("ECS Service Action", [service_arn(cluster, service)], detail, t)
            )
        i += 1
    events = events[:unique]
    events += rng.sample(events, n - len(events))
    rng.shuffle(events)
    return events


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def fresh_database(server_url: str) -> str:
    return await benchdb.fresh_database(server_url, "ecswatch_bench")


drop_database = benchdb.drop_database


async def truncate(db_url: str) -> None:
    conn = await benchdb.connect(db_url)
    await conn.execute(
        "TRUNCATE raw_events, tasks, container_instances, deployments, services, clusters,"
        " resource_tags, quarantine"
    )
    await conn.close()


async def copy_baseline(db_url: str, bodies: list[str]) -> float:
    conn = await benchdb.connect(db_url)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_copy (id text, body jsonb)")
    await conn.execute("TRUNCATE bench_copy")
    records = [(str(i), b) for i, b in enumerate(bodies)]
    t0 = time.perf_counter()
    await conn.copy_records_to_table("bench_copy", records=records, columns=["id", "body"])
    elapsed = time.perf_counter() - t0
    await conn.execute("DROP TABLE bench_copy")
    await conn.close()
    return len(bodies) / elapsed


async def in_process(db_url: str, bodies: list[str], batch: int, workers: int) -> float:
    """Batches fed to ``workers`` concurrent handler calls, as the consumer's workers
    run them: one parses while another waits on the database."""
    settings = load_settings(database_url=db_url)
    async with open_runtime(settings, pool_size=4) as runtime:
        handler = Handler(runtime.sessionmaker)
        messages = [Message(str(i), b) for i, b in enumerate(bodies)]
        batches = [messages[s : s + batch] for s in range(0, len(messages), batch)]

        async def worker(mine: list[list[Message]]) -> None:
            for chunk in mine:
                result = await handler.handle(chunk)
                assert not result.retry

        gc.freeze()  # as the consumer role does once started
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(batches[w::workers]) for w in range(workers)))
        return len(messages) / (time.perf_counter() - t0)


# Steps of service.state.apply.apply_events, timed one by one by phase_breakdown().
_APPLY_PHASES = {
    "_insert_raw": "apply: raw events",
    "_upsert_clusters": "apply: clusters",
    "_apply_versioned": "apply: tasks + container instances",
    "_apply_health": "apply: instance health",
    "_upsert_services": "apply: services",
    "_apply_deployments": "apply: deployments",
    "_mark_tags_unknown": "apply: resource tags",
}


async def phase_breakdown(db_url: str, bodies: list[str], batch: int) -> dict[str, float]:
    """µs per event of each phase, from a second in-process run with timers around them.

    The database is emptied and the same batches go through the handler again, with
    parse_message and each apply step wrapped in a timer. "commit + rest" is what
    the handler spends outside them (session, BEGIN/COMMIT, quarantine, telemetry).
    """
    from service.consumer import handler as handler_module
    from service.state import apply as apply_module

    timings: dict[str, float] = {"parse (json, validate, normalise)": 0.0}
    parse = handler_module.parse_message

    def timed_parse(body: str, *, received_at: datetime) -> Any:
        start = time.perf_counter()
        try:
            return parse(body, received_at=received_at)
        finally:
            timings["parse (json, validate, normalise)"] += time.perf_counter() - start

    originals = {name: getattr(apply_module, name) for name in _APPLY_PHASES}

    def timed(name: str) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await originals[name](*args, **kwargs)
            finally:
                label = _APPLY_PHASES[name]
                timings[label] = timings.get(label, 0.0) + time.perf_counter() - start

        return wrapper

    await truncate(db_url)
    settings = load_settings(database_url=db_url)
    try:
        handler_module.parse_message = timed_parse  # type: ignore[assignment]
        for name in _APPLY_PHASES:
            setattr(apply_module, name, timed(name))
        async with open_runtime(settings, pool_size=4) as runtime:
            handler = Handler(runtime.sessionmaker)
            messages = [Message(str(i), b) for i, b in enumerate(bodies)]
            gc.freeze()  # as the consumer role does once started
            t0, cpu0 = time.perf_counter(), time.process_time()
            for start in range(0, len(messages), batch):
                result = await handler.handle(messages[start : start + batch])
                assert not result.retry
            total = time.perf_counter() - t0
            python_cpu = time.process_time() - cpu0
    finally:
        handler_module.parse_message = parse
        for name, original in originals.items():
            setattr(apply_module, name, original)
    timings["commit + rest (session, handler)"] = total - sum(timings.values())
    timings["total (timed run)"] = total
    # One batch at a time: the run is either running Python or waiting for
    # PostgreSQL, so the two add up to the total.
    timings["of which Python CPU"] = python_cpu
    timings["of which waiting for PostgreSQL"] = total - python_cpu
    return {k: round(v / len(bodies) * 1e6, 1) for k, v in timings.items()}


async def sqs_runs(db_url: str, bodies: list[str], moto: MotoServer) -> tuple[float, float]:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=moto.endpoint_url, region_name="us-east-1"
    ) as sqs:

        async def fill(name: str) -> str:
            queue_url, _, _ = await create_queue_with_dlq(sqs, name)
            for start in range(0, len(bodies), 10):
                chunk = bodies[start : start + 10]
                await sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)],
                )
            return queue_url

        # moto's ceiling: two receivers (as the consumer runs) that only receive+delete.
        ceiling_queue = await fill("bench-ceiling")
        done = 0

        async def drain() -> None:
            nonlocal done
            while done < len(bodies):
                resp = await sqs.receive_message(
                    QueueUrl=ceiling_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                msgs = resp.get("Messages", [])
                if msgs:
                    await sqs.delete_message_batch(
                        QueueUrl=ceiling_queue,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(msgs)
                        ],
                    )
                    done += len(msgs)
                    if done >= len(bodies):
                        finished.append(time.perf_counter())

        finished: list[float] = []
        t0 = time.perf_counter()
        await asyncio.gather(drain(), drain())
        # Timed to the last delete, not to the other receiver's idle long poll.
        ceiling = len(bodies) / (finished[0] - t0)

        queue_url = await fill("bench-consumer")
        settings = load_settings(
            database_url=db_url,
            queue_url=queue_url,
            aws_endpoint_url=moto.endpoint_url,
            aws_region="us-east-1",
        )
        async with open_runtime(settings, pool_size=4) as runtime:
            consumer = Consumer(runtime, queue_url, wait_seconds=1)
            stop = asyncio.Event()
            t0 = time.perf_counter()
            task = asyncio.create_task(consumer.run(stop))
            while consumer.processed < len(bodies):
                await asyncio.sleep(0.01)
            end_to_end = len(bodies) / (time.perf_counter() - t0)
            stop.set()
            await task
    return end_to_end, ceiling


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sqs-events", type=int, default=500)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--workers", type=int, default=2, help="concurrent batches (the consumer runs 2)"
    )
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    configure_logging("json", "warning")
    db_url = await fresh_database(args.database_url)
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        bodies = [json.dumps(e) for e in workload(args.events)]
        copy_rate = await copy_baseline(db_url, bodies)
        pipeline_rate = await in_process(db_url, bodies, args.batch, args.workers)
        phases = await phase_breakdown(db_url, bodies, args.batch)
        await truncate(db_url)
        sqs_bodies = [json.dumps(e) for e in workload(args.sqs_events, seed=2)]
        with MotoServer() as moto:
            e2e_rate, moto_rate = await sqs_runs(db_url, sqs_bodies, moto)
    finally:
        await drop_database(db_url)
    results = {
        "events_in_process": args.events,
        "events_sqs": args.sqs_events,
        "batch": args.batch,
        "workers": args.workers,
        "copy_baseline_per_s": round(copy_rate),
        "pipeline_in_process_per_s": round(pipeline_rate),
        "in_process_vs_copy": round(pipeline_rate / copy_rate, 3),
        "moto_ceiling_per_s": round(moto_rate, 1),
        "end_to_end_per_s": round(e2e_rate, 1),
        "end_to_end_vs_moto": round(e2e_rate / moto_rate, 3),
        "peak_rss_mb": round(rss_mb(), 1),
        "phases_us_per_event": phases,
    }
    return results


def report(results: dict[str, Any]) -> None:
    """Print the table and write bench/results/ingest.json."""
    copy_rate = results["copy_baseline_per_s"]
    pipeline = results["pipeline_in_process_per_s"]
    moto = results["moto_ceiling_per_s"]
    e2e = results["end_to_end_per_s"]
    rows = [
        ("asyncpg COPY of the raw JSON (baseline)", f"{copy_rate:,.0f}/s", ""),
        ("pipeline in-process", f"{pipeline:,.0f}/s", f"{pipeline / copy_rate:.0%}"),
        ("moto receive+delete ceiling (baseline)", f"{moto:,.1f}/s", ""),
        ("end to end through SQS on moto", f"{e2e:,.1f}/s", f"{e2e / moto:.0%}"),
        ("peak RSS", f"{results['peak_rss_mb']:,.0f} MB", ""),
    ]
    print(f"{'measure':<42} {'rate':>14} {'vs baseline':>12}")
    for name, rate, ratio in rows:
        print(f"{name:<42} {rate:>14} {ratio:>12}")
    phases = results.get("phases_us_per_event", {})
    if phases:
        print()
        print(f"{'in-process phase (separate timed run)':<42} {'µs/event':>14} {'share':>12}")
        total = phases["total (timed run)"]
        for name, value in phases.items():
            share = "" if name.startswith("total") else f"{value / total:.0%}"
            if name.startswith("of which"):
                name = "  " + name
            print(f"{name:<42} {value:>14,.1f} {share:>12}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    report(asyncio.run(main()))
