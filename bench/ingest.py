"""Ingestion benchmark: events/s through the pipeline, next to its baselines.

(a) in-process: the handler (parse, normalise, apply, commit) fed directly, next to
    a plain asyncpg COPY of the same raw JSON into a table, in the same run;
    and next to the fair baseline: the very rows the pipeline writes (raw events,
    clusters, tasks, container instances, services, deployments, tags, alerts),
    built ahead of time with its own parser and row builders (not timed), loaded
    into the same tables and indexes by COPY into staging tables and the
    pipeline's own upserts (its ON CONFLICT clauses, verbatim), batch by batch;
(b) end to end through SQS on moto: the consumer draining a queue, next to moto's
    own receive+delete ceiling on the same number of messages, in the same run.

Prints a table and writes bench/results/ingest.json. Usage:

    .venv/bin/python bench/ingest.py [--events 20000] [--sqs-events 500] [--rounds 2]
        [--profile] [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import orjson
from aiobotocore.session import get_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchdb  # bench/ is the script's directory, so first on sys.path

from service.alerts.raising import ALERT_COLUMNS  # the columns the pipeline inserts
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
from service.deployments import rows as deployment_rows
from service.deployments import upsert as upsert_module
from service.deployments.snapshot import DeploymentKey, key_params
from service.eventloop import settle_gc
from service.logging import configure_logging
from service.migrate import upgrade
from service.runtime import open_runtime
from service.state import apply as apply_module
from service.state import bulk as bulk_module
from service.state import rows as rows_module

RESULTS = Path(__file__).resolve().parent / "results"


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
        "TRUNCATE raw_events, raw_event_natural_keys, tasks, container_instances, deployments,"
        " services, clusters, resource_tags, quarantine, alerts, outbox, datadog_facts CASCADE"
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


_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``, from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


class CpuMeter:
    """Wall time, this process's CPU and the CPU of the PostgreSQL backends serving
    the benchmark's own database (same host: read from /proc) over a timed run.

    The sum of the two CPU figures over the wall time says how many cores the run
    used: with two vCPUs shared with other work, overlap cannot go past what is free.
    """

    def __init__(self, db_url: str) -> None:
        self._db_url = db_url
        self._conn: Any = None
        self._start: dict[int, float] = {}

    async def _backends(self) -> dict[int, float]:
        pids = await self._conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return {row["pid"]: _process_cpu(row["pid"]) for row in pids}

    async def start(self) -> None:
        self._conn = await benchdb.connect(self._db_url)
        self._start = await self._backends()
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()

    async def stop(self, events: int) -> dict[str, float]:
        """µs per event: wall, Python (this process) CPU, PostgreSQL backends' CPU."""
        wall, python = time.perf_counter() - self._t0, time.process_time() - self._cpu0
        end = await self._backends()
        await self._conn.close()
        postgres = sum(cpu - self._start.get(pid, 0.0) for pid, cpu in end.items())
        return {
            "wall": round(wall / events * 1e6, 1),
            "python_cpu": round(python / events * 1e6, 1),
            "postgres_cpu": round(postgres / events * 1e6, 1),
            "total_cpu": round((python + postgres) / events * 1e6, 1),
            "cores_used": round((python + postgres) / wall, 2),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }


async def in_process(
    db_url: str, bodies: list[str], batch: int, workers: int
) -> tuple[float, dict[str, float]]:
    """Batches fed to ``workers`` concurrent handler calls, as the consumer's workers
    run them: one parses while another waits on the database. Events/s and the
    run's CPU budget (:class:`CpuMeter`)."""
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
        meter = CpuMeter(db_url)
        await meter.start()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(batches[w::workers]) for w in range(workers)))
        rate = len(messages) / (time.perf_counter() - t0)
        return rate, await meter.stop(len(messages))


# ---- the fair baseline: the pipeline's own rows, loaded by COPY and the same upserts


@dataclass
class Load:
    """One step of a baseline batch: COPY ``records`` into a staging table, then the
    pipeline's own upsert (its ON CONFLICT clause, verbatim) from there."""

    table: str
    columns: tuple[str, ...]
    key: str
    records: list[tuple[Any, ...]]
    conflict: str  # " ON CONFLICT …" tail of the pipeline's statement
    stage: str = ""


@dataclass
class BaselineBatch:
    loads: list[Load] = field(default_factory=list)
    touched: list[DeploymentKey] = field(default_factory=list)  # deployments the batch touched
    task_deployments: list[DeploymentKey] = field(default_factory=list)


def _conflict(sql: str) -> str:
    return sql[sql.rindex(" ON CONFLICT") :]


def _copy_value(value: Any, pg_type: str) -> Any:
    """A row builder's value as asyncpg's COPY encodes it for ``pg_type``."""
    if value is None:
        return None
    if pg_type in ("json", "jsonb"):
        if isinstance(value, rows_module.JsonText):
            text = value.text
            return text.decode() if isinstance(text, bytes) else text
        return orjson.dumps(value, default=bulk_module.orjson_default).decode()
    if isinstance(value, Enum):
        return value.value
    return value


def _records(
    rows: list[dict[str, Any]], columns: tuple[str, ...], types: dict[str, str]
) -> list[tuple[Any, ...]]:
    return [tuple(_copy_value(row.get(c), types[c]) for c in columns) for row in rows]


def _deployment_key(row: dict[str, Any]) -> DeploymentKey:
    """A deployment row's identity: its scope and id, as the upsert's."""
    return DeploymentKey(row["account_id"], row["region"], row["id"])


def _key_arrays(keys: list[DeploymentKey]) -> list[list[str]]:
    """The three arrays the deployment statements bind for ``keys``."""
    params = key_params(keys)
    return [params["accounts"], params["regions"], params["ids"]]


def plan_baseline(
    bodies: list[str],
    batch: int,
    column_types: dict[str, dict[str, str]],
    alert_rows: list[tuple[Any, ...]],
    alert_columns: tuple[str, ...],
) -> list[BaselineBatch]:
    """The rows each of the pipeline's batches writes, built ahead of time (untimed)
    with the pipeline's own parser and pure row builders (service/state/rows.py),
    deduplicated as its statements are (one row per key a statement; the newest
    version of a task or instance; deployment events in rounds)."""
    from service.events.models import (
        ContainerInstanceHealthChange,
        ContainerInstanceStateChange,
        DaemonServiceAction,
        DeploymentStateChange,
        HookStateChange,
        ServiceAction,
        TaskStateChange,
    )
    from service.events.normalise import parse_message

    now = datetime.now(UTC)
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    seen_services: set[str] = set()
    plans: list[BaselineBatch] = []

    def load(table: str, key: str, rows: list[dict[str, Any]], conflict: str) -> Load | None:
        if not rows:
            return None
        rows = sorted(rows, key=lambda x: x[key])
        columns = tuple(c for c in rows[0] if c != "rank")
        types = column_types[table]
        return Load(table, columns, key, _records(rows, columns, types), conflict)

    for start in range(0, len(bodies), batch):
        events = [parse_message(b, received_at=now) for b in bodies[start : start + batch]]
        plan = BaselineBatch()
        unique: dict[str, Any] = {}
        for e in events:
            unique.setdefault(e.envelope.id, e)
        raw = [rows_module.raw_event_row(e) for e in unique.values()]
        fresh = []
        for e in unique.values():
            if e.envelope.id in seen_ids or (e.natural_key and e.natural_key in seen_keys):
                continue
            seen_ids.add(e.envelope.id)
            if e.natural_key:
                seen_keys.add(e.natural_key)
            fresh.append(e)
            if isinstance(e.detail, ContainerInstanceHealthChange | DaemonServiceAction):
                # Not in workload(): their rows are not built here, so refuse rather
                # than compare against a baseline that writes less.
                raise NotImplementedError(f"fair baseline: no rows for {e.detail_type}")
        # The natural keys a batch claims, then its raw events (one statement in
        # the pipeline, two loads here).
        claims = [
            {"natural_key": e.natural_key, "id": e.envelope.id, "time": e.envelope.time}
            for e in unique.values()
            if e.natural_key
        ]
        steps: list[Load | None] = [
            load("raw_event_natural_keys", "natural_key", claims, " ON CONFLICT DO NOTHING"),
            load("raw_events", "id", raw, _conflict(apply_module.INSERT_RAW)),
        ]
        clusters: dict[str, dict[str, Any]] = {}
        for e in fresh:
            if e.cluster_arn and e.cluster_arn not in clusters:
                row = rows_module.cluster_row(e.cluster_arn, e.cluster_name)
                if row is not None:
                    clusters[e.cluster_arn] = row
        steps.append(load("clusters", "arn", list(clusters.values()), " ON CONFLICT DO NOTHING"))
        tasks = [e for e in fresh if isinstance(e.detail, TaskStateChange)]
        instances = [e for e in fresh if isinstance(e.detail, ContainerInstanceStateChange)]
        for spec, group in ((apply_module.TASKS, tasks), (apply_module.INSTANCES, instances)):
            best: dict[str, dict[str, Any]] = {}
            for e in group:
                row = spec.build(e)
                current = best.get(row["arn"])
                if current is None or apply_module.version_key(row) > apply_module.version_key(
                    current
                ):
                    best[row["arn"]] = row
            if best:
                columns = tuple(next(iter(best.values())))
                upsert = apply_module.versioned_sql(spec, columns)[0]
                steps.append(
                    load(spec.model.__tablename__, "arn", list(best.values()), _conflict(upsert))
                )
        services: dict[str, dict[str, Any]] = {}
        for e in fresh:  # as apply._upsert_services picks them
            d = e.detail
            last_name, last_at = None, None
            if isinstance(d, ServiceAction):
                arn, name = d.service_arn, d.service_name
                last_name, last_at = d.event_name, d.created_at or e.envelope.time
            elif isinstance(d, DeploymentStateChange | HookStateChange):
                arn, name = d.service_arn, d.service_name
            else:
                continue
            row = rows_module.service_row(arn, name, d.cluster_arn, d.cluster_name) if arn else None
            if row is None:
                continue
            row["last_event_name"], row["last_event_at"] = last_name, last_at
            current = services.get(arn)
            if current is None or (
                last_at is not None
                and (current["last_event_at"] is None or last_at > current["last_event_at"])
            ):
                services[arn] = row
        steps.append(
            load("services", "arn", list(services.values()), apply_module.SERVICES_ON_CONFLICT)
        )
        of_tasks: dict[str, dict[str, Any]] = {}
        for e in tasks:
            row = rows_module.service_row_of_task(e.detail)
            if row is not None:
                of_tasks.setdefault(row["arn"], row)
        steps.append(
            load(
                "services",
                "arn",
                list(of_tasks.values()),
                _conflict(apply_module.INSERT_SERVICES_OF_TASKS),
            )
        )
        by_id: dict[DeploymentKey, list[dict[str, Any]]] = {}
        for e in fresh:
            row = deployment_rows.deployment_row(e, {})
            if row is not None:
                by_id.setdefault(_deployment_key(row), []).append(row)
        rounds: list[list[dict[str, Any]]] = []
        for group_rows in by_id.values():
            for index, row in enumerate(group_rows):
                if index == len(rounds):
                    rounds.append([])
                rounds[index].append(row)
        for round_rows in rounds:
            steps.append(
                load("deployments", "id", round_rows, upsert_module.DEPLOYMENTS_ON_CONFLICT)
            )
        task_deps: dict[DeploymentKey, dict[str, Any]] = {}
        for e in tasks:
            row = deployment_rows.task_deployment_row(e)
            if row is not None:
                task_deps.setdefault(_deployment_key(row), row)
        steps.append(
            load(
                "deployments",
                "id",
                list(task_deps.values()),
                upsert_module.TASK_DEPLOYMENTS_ON_CONFLICT,
            )
        )
        arns: set[str] = set()
        for e in fresh:  # as apply._mark_tags_unknown
            d = e.detail
            if e.cluster_arn:
                arns.add(e.cluster_arn)
            if isinstance(d, TaskStateChange):
                arns.add(d.task_arn)
            elif isinstance(d, ContainerInstanceStateChange):
                arns.add(d.container_instance_arn)
            elif isinstance(d, ServiceAction | DeploymentStateChange) and d.service_arn:
                arns.add(d.service_arn)
        new_services = set(of_tasks) - seen_services
        seen_services.update(of_tasks)
        tag_rows = [{"resource_arn": a} for a in sorted(arns | new_services)]
        steps.append(load("resource_tags", "resource_arn", tag_rows, " ON CONFLICT DO NOTHING"))
        plan.loads = [s for s in steps if s is not None]
        plan.touched = sorted(set(by_id) | set(task_deps))
        plan.task_deployments = sorted(task_deps)
        plans.append(plan)
    if plans and alert_rows:  # the alerts the pipeline raised for this workload
        plans[-1].loads.append(
            Load("alerts", alert_columns, "id", alert_rows, " ON CONFLICT DO NOTHING")
        )
    return plans


async def column_types(db_url: str) -> dict[str, dict[str, str]]:
    conn = await benchdb.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, a.attname, t.typname FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0"
        )
    finally:
        await conn.close()
    types: dict[str, dict[str, str]] = {}
    for row in rows:
        types.setdefault(row["relname"], {})[row["attname"]] = row["typname"]
    return types


_COUNTED = (
    "raw_events",
    "clusters",
    "tasks",
    "container_instances",
    "services",
    "deployments",
    "resource_tags",
    "alerts",
    "outbox",
    "datadog_facts",
)

#: The in-process pipeline should reach this share of the fair baseline (docs/performance.md).
FAIR_TARGET = 0.7


async def table_counts(db_url: str) -> dict[str, Any]:
    """Rows per table: the fair baseline must write what the pipeline wrote."""
    conn = await benchdb.connect(db_url)
    try:
        counts: dict[str, Any] = {
            t: await conn.fetchval(f'SELECT count(*) FROM "{t}"') for t in _COUNTED
        }
        # What the rows hold, not only how many: the newest version of every task.
        counts["tasks_fingerprint"] = await conn.fetchval(
            "SELECT md5(coalesce(string_agg(arn || ':' || coalesce(version, -1) || ':'"
            " || last_status, ',' ORDER BY arn), '')) FROM tasks"
        )
        return counts
    finally:
        await conn.close()


async def alert_rows(db_url: str) -> list[tuple[Any, ...]]:
    """The alerts the pipeline's run wrote, as COPY records (jsonb as text)."""
    conn = await benchdb.connect(db_url)
    try:
        rows = await conn.fetch(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts")
    finally:
        await conn.close()
    return [tuple(row) for row in rows]


async def fair_baseline(
    db_url: str, plans: list[BaselineBatch], n_events: int
) -> tuple[float, dict[str, Any]]:
    """Events/s of loading the pipeline's rows: per batch, one transaction of COPY
    into staging tables and the pipeline's upserts from them, plus its two
    deployment UPDATEs (end rollbacks, failed-task counts). One connection.

    Returns events/s and the µs per event of each step (COPY and upsert per table),
    with the run's CPU budget under ``cpu`` (:class:`CpuMeter`)."""
    conn = await benchdb.connect(db_url)
    try:
        stages: dict[tuple[str, tuple[str, ...], int], str] = {}
        for plan in plans:
            used: dict[tuple[str, tuple[str, ...]], int] = {}
            for step in plan.loads:
                shape = (step.table, step.columns)
                index = used.get(shape, 0)
                used[shape] = index + 1
                name = stages.get((*shape, index))
                if name is None:
                    name = f"stage_{len(stages)}"
                    stages[(*shape, index)] = name
                    cols = ", ".join(f'"{c}"' for c in step.columns)
                    await conn.execute(
                        f"CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS AS"
                        f' SELECT {cols} FROM "{step.table}" WITH NO DATA'
                    )
                step.stage = name
        statements = {}
        for plan in plans:
            for step in plan.loads:
                cols = ", ".join(f'"{c}"' for c in step.columns)
                statements[id(step)] = (
                    f'INSERT INTO "{step.table}" ({cols}) SELECT {cols} FROM {step.stage}'
                    f' ORDER BY "{step.key}"{step.conflict}'
                )
        gc.freeze()
        steps: dict[str, float] = {}

        def add(label: str, since: float) -> float:
            now = time.perf_counter()
            steps[label] = steps.get(label, 0.0) + now - since
            return now

        meter = CpuMeter(db_url)
        await meter.start()
        t0 = time.perf_counter()
        for plan in plans:
            mark = time.perf_counter()
            async with conn.transaction():
                mark = add("BEGIN", mark)
                for step in plan.loads:
                    await conn.copy_records_to_table(
                        step.stage, records=step.records, columns=list(step.columns)
                    )
                    mark = add(f"COPY {step.table}", mark)
                    await conn.execute(statements[id(step)])
                    mark = add(f"upsert {step.table}", mark)
                if plan.touched:
                    await conn.execute(upsert_module.END_ROLLBACKS, *_key_arrays(plan.touched))
                if plan.task_deployments:
                    await conn.execute(
                        upsert_module.COUNT_FAILED_TASKS,
                        *_key_arrays(plan.task_deployments),
                        list(upsert_module.FAILED_STOP_CODES),
                    )
                mark = add("deployment UPDATEs", mark)
            add("COMMIT", mark)
        total = time.perf_counter() - t0
        cpu = await meter.stop(n_events)
        steps["total"] = total
        budget: dict[str, Any] = {k: round(v / n_events * 1e6, 1) for k, v in steps.items()}
        budget["cpu"] = cpu
        return n_events / total, budget
    finally:
        await conn.close()


# Steps of the consumer's transaction (service.consumer.transaction.commit_events),
# timed one by one by phase_breakdown(): (module, function) -> label. Each is
# patched in the module that calls it.
_APPLY_PHASES = {
    ("service.state.apply", "_insert_raw"): "apply: raw events",
    ("service.state.apply", "_upsert_clusters"): "apply: clusters",
    ("service.state.apply", "apply_versioned"): "apply: tasks + container instances",
    ("service.state.apply", "apply_health"): "apply: instance health",
    ("service.state.apply", "_upsert_services"): "apply: services",
    ("service.state.apply", "_insert_services_of_tasks"): "apply: services of tasks",
    ("service.state.apply", "_mark_tags_unknown"): "apply: resource tags",
    ("service.deployments.lifecycle", "upsert_deployments"): "apply: deployments",
    ("service.deployments.lifecycle", "mark_crash_loops"): "deployments: crash loops",
    ("service.deployments.lifecycle", "attach_service_reasons"): "deployments: reasons",
    ("service.deployments.lifecycle", "read_snapshots"): "deployments: snapshots",
    ("service.consumer.transaction", "raise_alerts"): "apply: alerts",
}


async def phase_breakdown(db_url: str, bodies: list[str], batch: int) -> dict[str, float]:
    """µs per event of each phase, from a second in-process run with timers around them.

    The database is emptied and the same batches go through the handler again, with
    parse_message and each apply step wrapped in a timer. "commit + rest" is what
    the handler spends outside them (session, BEGIN/COMMIT, quarantine, telemetry).
    """
    import importlib

    from service.consumer import handler as handler_module

    timings: dict[str, float] = {"parse (json, validate, normalise)": 0.0}
    parse = handler_module.parse_message

    def timed_parse(body: str, *, received_at: datetime) -> Any:
        start = time.perf_counter()
        try:
            return parse(body, received_at=received_at)
        finally:
            timings["parse (json, validate, normalise)"] += time.perf_counter() - start

    originals = {key: getattr(importlib.import_module(key[0]), key[1]) for key in _APPLY_PHASES}

    def timed(name: tuple[str, str]) -> Any:
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
        for key in _APPLY_PHASES:
            setattr(importlib.import_module(key[0]), key[1], timed(key))
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
        for key, original in originals.items():
            setattr(importlib.import_module(key[0]), key[1], original)
    timings["commit + rest (session, handler)"] = total - sum(timings.values())
    timings["total (timed run)"] = total
    # One batch at a time: the run is either running Python or waiting for
    # PostgreSQL, so the two add up to the total.
    timings["of which Python CPU"] = python_cpu
    timings["of which waiting for PostgreSQL"] = total - python_cpu
    return {k: round(v / len(bodies) * 1e6, 1) for k, v in timings.items()}


async def profile_run(db_url: str, bodies: list[str], batch: int, out: Path) -> None:
    """The serial handler run under cProfile (--profile): top functions printed,
    the full stats written to ``out`` (for pstats or snakeviz)."""
    import cProfile
    import pstats

    await truncate(db_url)
    settings = load_settings(database_url=db_url)
    async with open_runtime(settings, pool_size=4) as runtime:
        handler = Handler(runtime.sessionmaker)
        messages = [Message(str(i), b) for i, b in enumerate(bodies)]
        profiler = cProfile.Profile()
        profiler.enable()
        for start in range(0, len(messages), batch):
            await handler.handle(messages[start : start + batch])
        profiler.disable()
    RESULTS.mkdir(exist_ok=True)
    profiler.dump_stats(out)
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


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
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="pipeline and fair baseline runs, alternated; the best of each is kept",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the in-process handler serially under cProfile and print the top"
        " functions (stats in bench/results/ingest.prof)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep Python's default garbage collector settings (ecswatch run settles them)",
    )
    args = parser.parse_args()
    configure_logging("json", "warning")
    db_url = await fresh_database(args.database_url)
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        bodies = [json.dumps(e) for e in workload(args.events)]
        if not args.default_gc:
            settle_gc()  # as `ecswatch run` does once it has started
        copy_rate = await copy_baseline(db_url, bodies)
        pipeline_rate, pipeline_cpu = await in_process(db_url, bodies, args.batch, args.workers)
        pipeline_rows = await table_counts(db_url)
        # The fair baseline: the same rows, built ahead of time (untimed), loaded
        # into the same tables (emptied) by COPY and the same upserts.
        plans = plan_baseline(
            bodies,
            args.batch,
            await column_types(db_url),
            await alert_rows(db_url),
            ALERT_COLUMNS,
        )
        await truncate(db_url)
        fair_rate, fair_steps = await fair_baseline(db_url, plans, len(bodies))
        baseline_rows = await table_counts(db_url)
        # Alternate the two --rounds times on emptied tables and keep each one's best:
        # this machine is shared, and a single pair of runs is a single moment.
        pipeline_runs, fair_runs = [(pipeline_rate, pipeline_cpu)], [(fair_rate, fair_steps)]
        for _ in range(args.rounds - 1):
            await truncate(db_url)
            pipeline_runs.append(await in_process(db_url, bodies, args.batch, args.workers))
            await truncate(db_url)
            fair_runs.append(await fair_baseline(db_url, plans, len(bodies)))
        pipeline_rate, pipeline_cpu = max(pipeline_runs, key=lambda run: run[0])
        fair_rate, fair_steps = max(fair_runs, key=lambda run: run[0])
        phases = await phase_breakdown(db_url, bodies, args.batch)
        if args.profile:
            await profile_run(db_url, bodies, args.batch, RESULTS / "ingest.prof")
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
        "fair_baseline_per_s": round(fair_rate),
        "in_process_vs_fair_baseline": round(pipeline_rate / fair_rate, 3),
        "fair_baseline_target": FAIR_TARGET,
        "rounds": {
            "pipeline_per_s": [round(x) for x, _ in pipeline_runs],
            "fair_baseline_per_s": [round(x) for x, _ in fair_runs],
        },
        "fair_baseline_steps_us_per_event": fair_steps,
        "pipeline_cpu_us_per_event": pipeline_cpu,
        "rows_written": {"pipeline": pipeline_rows, "fair_baseline": baseline_rows},
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
        ("same rows by COPY + same upserts (fair)", f"{results['fair_baseline_per_s']:,.0f}/s", ""),
        (
            f"pipeline in-process vs fair (target {FAIR_TARGET})",
            f"{pipeline:,.0f}/s",
            f"{results['in_process_vs_fair_baseline']:.0%}",
        ),
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
    steps = dict(results.get("fair_baseline_steps_us_per_event", {}))
    fair_cpu = steps.pop("cpu", None)
    if steps:
        print()
        print(f"{'fair baseline step (best round)':<42} {'µs/event':>14} {'share':>12}")
        for name, value in steps.items():
            share = "" if name == "total" else f"{value / steps['total']:.0%}"
            print(f"{name:<42} {value:>14,.1f} {share:>12}")
    pipeline_cpu = results.get("pipeline_cpu_us_per_event")
    if fair_cpu and pipeline_cpu:
        print()
        print(f"{'CPU budget, µs per event (best rounds)':<42} {'pipeline':>14} {'fair':>12}")
        for key in (
            "wall",
            "python_cpu",
            "postgres_cpu",
            "total_cpu",
            "cores_used",
            "load_average_1m",
        ):
            if key in pipeline_cpu and key in fair_cpu:
                print(f"{key:<42} {pipeline_cpu[key]:>14,} {fair_cpu[key]:>12,}")
        if pipeline_cpu.get("total_cpu") and fair_cpu.get("total_cpu"):
            # The share of the fair baseline's rate the pipeline would reach if both
            # got the same CPU time per second (a machine with one core free, or a
            # busy one): less sensitive to the load than the rates themselves.
            share = fair_cpu["total_cpu"] / pipeline_cpu["total_cpu"]
            print(f"{'fair ÷ pipeline CPU per event':<42} {share:>14.0%}")
    rounds = results.get("rounds", {})
    if rounds:
        print()
        print(
            f"rounds (alternated, best kept): pipeline {rounds['pipeline_per_s']}/s,"
            f" fair baseline {rounds['fair_baseline_per_s']}/s"
        )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    report(asyncio.run(main()))
