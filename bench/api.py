"""REST API benchmark: latency and throughput of the main list routes under load,
next to the very same SQL run directly through asyncpg, in the same run.

1. Creates a fresh database (dropped at the end unless --keep), migrates it, and
   seeds --tasks tasks (with tags; 20 tasks per deployment, a quarter of the
   deployments failed), --events events and ALB points every 15 minutes of each
   service with generate_series. The
   secondary indexes are dropped for the bulk insert and rebuilt from their own
   definitions afterwards (much faster than maintaining them row by row), then
   VACUUM ANALYZE.
2. Starts ``ecswatch run --roles api`` in a subprocess (the real server and CLI).
3. For each scenario: captures the SQL the route sends (the app run in-process
   once, statements recorded on the engine), then drives the route over HTTP
   with --concurrency concurrent requests for --duration seconds, then runs the
   captured statement through an asyncpg pool at the same concurrency.

Prints a table and writes bench/results/api.json: per scenario, requests/s and
latencies of both, the p99 ratio, the rps ratio (API requests/s over the same
statements' requests/s: how close the API comes to its own database ceiling)
and the API server process's CPU time per request (from /proc; steadier than
requests/s on a shared machine). Usage:

    .venv/bin/python bench/api.py [--tasks 1000000] [--events 5000000]
        [--concurrency 100] [--duration 10] [--keep] [--only NAME]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432]

``--concurrency 1,10,100`` runs every scenario at each level (a sweep: at which
concurrency does p99 stay under a given latency on this machine?); ``--only``
keeps the scenarios whose name contains the text.

The load generator, the server and PostgreSQL share this machine's CPUs; the
numbers are for comparing the API with its own database ceiling, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchdb  # noqa: E402  (bench/ is the script's directory, first on sys.path)

from service.api import queries as api_queries  # noqa: E402
from service.api.app import create_app  # noqa: E402
from service.config import load_settings  # noqa: E402
from service.db import create_engine, loads_json, to_asyncpg_url  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.runtime import open_runtime  # noqa: E402

TOKEN = "bench-read-token-0123456789"
ACCOUNT = "123456789012"
PREFIX = f"arn:aws:ecs:us-east-1:{ACCOUNT}"
CLUSTERS = 10
SERVICES = 200
TEAMS = 500
TASKS_PER_DEPLOYMENT = 20

SEED_TASKS = f"""
INSERT INTO tasks (
    arn, id, cluster_arn, cluster_name, service_name, "group", deployment_id, family, revision,
    launch_type, last_status, desired_status, health_status, stop_code, stopped_reason,
    version, container_instance_arn, availability_zone, containers,
    created_at, started_at, stopped_at, updated_at, seen_at
)
SELECT
    '{PREFIX}:task/c' || (g % {CLUSTERS}) || '/' || md5(g::text),
    md5(g::text),
    '{PREFIX}:cluster/c' || (g % {CLUSTERS}),
    'c' || (g % {CLUSTERS}),
    'svc-' || (g % {SERVICES}),
    'service:svc-' || (g % {SERVICES}),
    'ecs-svc/' || (g / {TASKS_PER_DEPLOYMENT}),
    'svc-' || (g % {SERVICES}),
    1 + g % 5,
    (ARRAY['FARGATE', 'EC2', 'EXTERNAL'])[1 + g % 3],
    CASE WHEN g % 10 < 7 THEN 'RUNNING' WHEN g % 10 < 9 THEN 'STOPPED' ELSE 'PENDING' END,
    CASE WHEN g % 10 BETWEEN 7 AND 8 THEN 'STOPPED' ELSE 'RUNNING' END,
    'HEALTHY',
    CASE WHEN g % 10 BETWEEN 7 AND 8 THEN
        (ARRAY['EssentialContainerExited', 'TaskFailedToStart', 'UserInitiated',
               'ServiceSchedulerInitiated'])[1 + g % 4]
    END,
    CASE WHEN g % 10 BETWEEN 7 AND 8 THEN 'Essential container in task exited' END,
    1 + g % 7,
    CASE WHEN g % 3 = 1 THEN
        '{PREFIX}:container-instance/c' || (g % {CLUSTERS}) || '/ci' || (g % 500)
    END,
    'us-east-1' || (ARRAY['a', 'b', 'c'])[1 + g % 3],
    jsonb_build_array(
        jsonb_build_object('name', 'app', 'last_status', 'RUNNING', 'exit_code', NULL,
                           'reason', NULL, 'image', '{ACCOUNT}.dkr.ecr.amazonaws.com/web:1'),
        jsonb_build_object('name', 'envoy', 'last_status', 'RUNNING', 'exit_code', NULL,
                           'reason', NULL, 'image', 'envoy:1.29')),
    now() - make_interval(secs => g * 2 + 60),
    now() - make_interval(secs => g * 2 + 30),
    CASE WHEN g % 10 BETWEEN 7 AND 8 THEN now() - make_interval(secs => g * 2) END,
    now() - make_interval(secs => g * 2),
    now()
FROM generate_series(1, __N__) AS g
"""

SEED_TASK_TAGS = f"""
INSERT INTO resource_tags (resource_arn, tags, known, fetched_at)
SELECT arn,
       jsonb_build_object('team', 'team-' || (abs(hashtext(arn)) % {TEAMS}), 'env', 'prod'),
       true, now()
FROM tasks
"""

SEED_SERVICES = f"""
INSERT INTO services (arn, name, cluster_arn, cluster_name, status, desired_count,
                      running_count, pending_count, launch_type, task_definition,
                      deployment_controller, updated_at)
SELECT '{PREFIX}:service/c' || (s % {CLUSTERS}) || '/svc-' || s, 'svc-' || s,
       '{PREFIX}:cluster/c' || (s % {CLUSTERS}), 'c' || (s % {CLUSTERS}), 'ACTIVE',
       4, 4, 0, 'FARGATE', '{PREFIX}:task-definition/svc-' || s || ':1', 'ECS', now()
FROM generate_series(0, {SERVICES - 1}) AS s
"""

SEED_CLUSTERS = f"""
INSERT INTO clusters (arn, name, account, region, status, active_services_count,
                      running_tasks_count, pending_tasks_count,
                      registered_container_instances_count)
SELECT '{PREFIX}:cluster/c' || c, 'c' || c, '{ACCOUNT}', 'us-east-1', 'ACTIVE', 20, 1000, 0, 50
FROM generate_series(0, {CLUSTERS - 1}) AS c
"""

# Events: mostly task state changes, some service actions and deployments; one
# event every 0.5 s going back in time; resources name the task or service.
SEED_EVENTS = f"""
INSERT INTO raw_events (id, detail_type, source, account, region, time, resources, detail,
                        cluster_arn, cluster_name, received_at)
SELECT
    md5('event' || g::text),
    CASE WHEN g % 20 = 0 THEN 'ECS Service Action'
         WHEN g % 20 = 1 THEN 'ECS Deployment State Change'
         WHEN g % 20 = 2 THEN 'ECS Container Instance State Change'
         ELSE 'ECS Task State Change' END,
    'aws.ecs', '{ACCOUNT}', 'us-east-1',
    now() - make_interval(secs => g / 2.0),
    CASE WHEN g % 20 IN (0, 1)
         THEN jsonb_build_array(
             '{PREFIX}:service/c' || (g % {CLUSTERS}) || '/svc-' || (g % {SERVICES}))
         ELSE jsonb_build_array(
             '{PREFIX}:task/c' || ((g % __TASKS__ + 1) % {CLUSTERS}) || '/'
             || md5((g % __TASKS__ + 1)::text))
    END,
    jsonb_build_object(
        'clusterArn', '{PREFIX}:cluster/c' || (g % {CLUSTERS}),
        'lastStatus', 'RUNNING', 'desiredStatus', 'RUNNING',
        'version', 1 + g % 7, 'group', 'service:svc-' || (g % {SERVICES}),
        'updatedAt', now() - make_interval(secs => g / 2.0)),
    '{PREFIX}:cluster/c' || (g % {CLUSTERS}),
    'c' || (g % {CLUSTERS}),
    now() - make_interval(secs => g / 2.0)
FROM generate_series(1, __N__) AS g
"""

# One deployment per TASKS_PER_DEPLOYMENT tasks, with the service and start of its
# first task; every fourth one failed (so the detail route classifies a cause).
SEED_DEPLOYMENTS = f"""
INSERT INTO deployments (account_id, region, id, cluster_arn, cluster_name, service_arn,
                         service_name, kind, outcome, reason, task_definition, event_ids,
                         started_at, updated_at, finished_at, last_event_at, failed_tasks)
SELECT '{ACCOUNT}', 'us-east-1', 'ecs-svc/' || d,
       '{PREFIX}:cluster/c' || (d * {TASKS_PER_DEPLOYMENT} % {CLUSTERS}),
       'c' || (d * {TASKS_PER_DEPLOYMENT} % {CLUSTERS}),
       '{PREFIX}:service/c' || (d * {TASKS_PER_DEPLOYMENT} % {CLUSTERS}) || '/svc-'
           || (d * {TASKS_PER_DEPLOYMENT} % {SERVICES}),
       'svc-' || (d * {TASKS_PER_DEPLOYMENT} % {SERVICES}),
       'rolling',
       CASE WHEN d % 4 = 0 THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN d % 4 = 0 THEN 'ECS deployment circuit breaker: task failed to start.' END,
       '{PREFIX}:task-definition/svc-' || (d * {TASKS_PER_DEPLOYMENT} % {SERVICES}) || ':1',
       jsonb_build_array(md5('event' || (d * {TASKS_PER_DEPLOYMENT} + 1)),
                         md5('event' || (d * {TASKS_PER_DEPLOYMENT} + 2))),
       now() - make_interval(secs => d * {TASKS_PER_DEPLOYMENT} * 2 + 60),
       now() - make_interval(secs => d * {TASKS_PER_DEPLOYMENT} * 2 - 540),
       now() - make_interval(secs => d * {TASKS_PER_DEPLOYMENT} * 2 - 540),
       now() - make_interval(secs => d * {TASKS_PER_DEPLOYMENT} * 2 - 540),
       4
FROM generate_series(0, __N__ / {TASKS_PER_DEPLOYMENT}) AS d
"""

# ALB points of each service's target group every 15 minutes, as far back as the tasks go.
SEED_POINTS = f"""
INSERT INTO metric_points (namespace, name, statistic, unit, cluster_name, service_name,
                           dimensions, dimensions_key, timestamp, value)
SELECT 'AWS/ApplicationELB', 'UnHealthyHostCount', 'Maximum', 'Count',
       'c' || (s % {CLUSTERS}), 'svc-' || s,
       jsonb_build_object('TargetGroup', 'targetgroup/svc-' || s || '/0123456789abcdef',
                          'LoadBalancer', 'app/web/fedcba9876543210'),
       -- chr(59): the key's separator (the seed's steps are split at that character)
       'LoadBalancer=app/web/fedcba9876543210' || chr(59) || 'TargetGroup=targetgroup/svc-'
           || s || '/0123456789abcdef',
       date_trunc('minute', now()) - make_interval(mins => 15 * m), m % 3
FROM generate_series(0, {SERVICES - 1}) AS s,
     generate_series(0, (__N__ * 2 / 900) + 1) AS m
"""

# raw_events is partitioned by day: the seeded days get their partitions, as the
# retention job would have made them ahead of time.
SEED_EVENT_PARTITIONS = """
SELECT raw_events_add_day(d::date)
FROM generate_series((now() AT TIME ZONE 'UTC' - make_interval(secs => __N__ / 2.0))::date,
                     (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS d
"""

SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef
FROM pg_indexes i
JOIN pg_class c ON c.relname = i.indexname
WHERE i.schemaname = 'public' AND i.tablename = ANY(:tables)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)
"""


def scenarios(tasks: int) -> list[tuple[str, str]]:
    """(name, path) of the measured requests: the main list routes with filters."""
    some_task = f"{PREFIX}:task/c{(tasks // 2) % CLUSTERS}/" + _md5(tasks // 2)
    failed_deployment = tasks // TASKS_PER_DEPLOYMENT // 2 // 4 * 4
    return [
        ("tasks: first page", "/v1/tasks"),
        ("tasks: cluster + last_status", "/v1/tasks?cluster=c3&last_status=RUNNING"),
        ("tasks: cluster + service", "/v1/tasks?cluster=c7&service=svc-17"),
        (
            "tasks: service ARN + stopped",
            f"/v1/tasks?service={quote(PREFIX + ':service/c7/svc-17')}&last_status=STOPPED",
        ),
        ("tasks: tag", "/v1/tasks?tag=team:team-42"),
        (
            "tasks: stop_code + cluster ARN",
            f"/v1/tasks?stop_code=TaskFailedToStart&cluster={quote(PREFIX + ':cluster/c7')}",
        ),
        ("task: by id", f"/v1/tasks/{_md5(tasks // 2)}"),
        ("task: by ARN", "/v1/tasks/" + quote(some_task, safe="")),
        ("events: newest", "/v1/events"),
        ("events: detail_type", "/v1/events?detail_type=ECS%20Deployment%20State%20Change"),
        ("events: cluster + since", "/v1/events?cluster=c2&since=2000-01-01T00:00:00Z"),
        ("events: resource", f"/v1/events?resource={quote(some_task)}"),
        ("services: cluster", "/v1/services?cluster=c4"),
        # A failed deployment in the middle of the data (every fourth one failed).
        ("deployment: detail + cause", f"/v1/deployments/ecs-svc/{failed_deployment}"),
        ("deployments: account_id", f"/v1/deployments?account_id={ACCOUNT}"),
        (
            "deployments: account_id + region",
            f"/v1/deployments?account_id={ACCOUNT}&region=us-east-1",
        ),
    ]


def _md5(n: int) -> str:
    import hashlib

    return hashlib.md5(str(n).encode()).hexdigest()


class HttpConnections:
    """Keep-alive HTTP/1.1 connections to the server, one request in flight on each.

    A deliberately minimal client: at 100 concurrent requests httpx spends far
    more CPU per request than the server does (36 requests/s against /healthz
    where this client does over 2,000 on the same machine), so it would measure
    itself, not the API.
    """

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.opened: list[asyncio.StreamWriter] = []

    async def open(self, count: int) -> None:
        for _ in range(count):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened.append(writer)
            self.free.put_nowait((reader, writer))

    async def close(self) -> None:
        for writer in self.opened:
            writer.close()
        self.opened.clear()

    async def get(self, path: str) -> int:
        """GET ``path``; the status code (0 when the connection failed)."""
        reader, writer = await self.free.get()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n"
        ).encode()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            status = int(head[9:12])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened.append(writer)
            status = 0
        self.free.put_nowait((reader, writer))
        return status


@dataclass
class Result:
    """One measured series."""

    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    calls: int = 0  # every completed call, the warm-up second's included


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc), 0.0 elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(call: Callable[[], Awaitable[bool]], concurrency: int, duration: float) -> Result:
    """Run ``call`` from ``concurrency`` workers for ``duration`` s (after a 1 s warm-up)."""
    latencies: list[float] = []
    errors = 0
    calls = 0
    warm_until = time.perf_counter() + 1.0
    stop_at = warm_until + duration

    async def worker() -> None:
        nonlocal errors, calls
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            ok = await call()
            end = time.perf_counter()
            calls += 1
            if start >= warm_until:
                latencies.append(end - start)
                if not ok:
                    errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - max(began, warm_until)
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return Result(
        requests=len(latencies),
        errors=errors,
        seconds=round(elapsed, 2),
        rps=round(len(latencies) / elapsed, 1) if elapsed > 0 else 0.0,
        p50_ms=round(pct(0.50), 2),
        p90_ms=round(pct(0.90), 2),
        p99_ms=round(pct(0.99), 2),
        max_ms=round(latencies[-1] * 1000, 2) if latencies else float("nan"),
        calls=calls,
    )


async def fresh_database(server_url: str) -> str:
    return await benchdb.fresh_database(server_url, "ecswatch_bench_api")


drop_database = benchdb.drop_database


async def seed(db_url: str, tasks: int, events: int) -> dict[str, float]:
    """Migrate and fill the database; returns seconds per step."""
    timings: dict[str, float] = {}
    engine = create_engine(db_url, pool_size=1)
    try:
        await upgrade(engine)
        tables = ["tasks", "raw_events", "resource_tags", "deployments", "metric_points"]
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            indexes = (await conn.execute(text(SECONDARY_INDEXES), {"tables": tables})).all()
            for name, _ in indexes:
                await conn.execute(text(f'DROP INDEX "{name}"'))
            await conn.execute(text("SET maintenance_work_mem = '512MB'"))
            # Plain driver SQL: ARNs are full of colons that text() would read as binds.
            steps = [
                ("clusters + services", SEED_CLUSTERS + ";" + SEED_SERVICES),
                ("tasks", SEED_TASKS.replace("__N__", str(tasks))),
                ("task tags", SEED_TASK_TAGS),
                ("deployments", SEED_DEPLOYMENTS.replace("__N__", str(tasks))),
                ("alb points", SEED_POINTS.replace("__N__", str(tasks))),
                ("event partitions", SEED_EVENT_PARTITIONS.replace("__N__", str(events))),
                (
                    "events",
                    SEED_EVENTS.replace("__N__", str(events)).replace("__TASKS__", str(tasks)),
                ),
            ]
            for label, sql in steps:
                start = time.perf_counter()
                for part in sql.split(";"):
                    if part.strip():
                        await conn.exec_driver_sql(part)
                timings[label] = round(time.perf_counter() - start, 1)
            start = time.perf_counter()
            for _, definition in indexes:
                # A partitioned table's index reads "ON ONLY": rebuilt on the
                # partitions too, as the migration built it.
                await conn.exec_driver_sql(definition.replace(" ON ONLY ", " ON "))
            timings["rebuild indexes"] = round(time.perf_counter() - start, 1)
            start = time.perf_counter()
            await conn.execute(text("VACUUM ANALYZE"))
            timings["vacuum analyze"] = round(time.perf_counter() - start, 1)
    finally:
        await engine.dispose()
    return timings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ECSWATCH_DATABASE_URL": db_url,
        "ECSWATCH_API_TOKENS": f"read:{TOKEN}",
        "ECSWATCH_LOG_FORMAT": "json",
        "ECSWATCH_LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "service", "run", "--roles", "api", "--port", str(port)],
        cwd=ROOT,
        env=env,
    )


async def wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if server.poll() is not None:
                raise RuntimeError(f"the API server exited with {server.returncode}")
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API server did not become ready")


async def capture_sql(
    db_url: str, path: str
) -> tuple[list[tuple[str, tuple[Any, ...]]], int, bool]:
    """The statements (and parameters) the route sends, from one in-process request,
    the number of items the route answered, and whether it answered a page."""
    settings = load_settings(database_url=db_url)
    captured: list[tuple[str, tuple[Any, ...]]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        captured.append((statement, tuple(parameters or ())))

    def record_direct(statement: str, args: Any) -> None:
        captured.append((statement, tuple(args)))

    # Reads the API sends straight to the driver (older trees have no such path).
    listeners = getattr(api_queries, "DIRECT_READ_LISTENERS", [])
    listeners.append(record_direct)
    async with open_runtime(settings, pool_size=1) as runtime:
        # The API reads through its read engine (older trees: the one engine).
        api_engine = getattr(runtime, "read_engine", runtime.engine)
        event.listen(api_engine.sync_engine, "before_cursor_execute", record)
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            response = await client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
    listeners.remove(record_direct)
    body = response.json()
    page = "items" in body and "next_cursor" in body
    return captured, len(body["items"]) if page else 1, page


def _encode_json(value: Any) -> str:
    # The captured parameters are already serialised by SQLAlchemy.
    return value if isinstance(value, str) else json.dumps(value)


async def init_connection(conn: asyncpg.Connection) -> None:
    # Decode JSON as the API's engine does (service.db.loads_json), so both sides pay for it.
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_encode_json, decoder=loads_json, schema="pg_catalog", format="text"
        )


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'scenario':34} {'conc':>5} {'API rps':>8} {'p50':>7} {'p99':>7} │ "
        f"{'SQL rps':>8} {'p50':>7} {'p99':>7} │ {'p99 ratio':>9} {'rps ratio':>9} {'CPU/req':>7}"
    )
    print(header)
    print("─" * len(header))
    for row in rows:
        api, sql = row["api"], row["sql"]
        ratio = api["p99_ms"] / sql["p99_ms"] if sql["p99_ms"] else float("nan")
        rps_ratio = row.get("rps_ratio") or float("nan")
        print(
            f"{row['scenario']:34} {row['concurrency']:5d} "
            f"{api['rps']:8.0f} {api['p50_ms']:7.1f} {api['p99_ms']:7.1f} │ "
            f"{sql['rps']:8.0f} {sql['p50_ms']:7.1f} {sql['p99_ms']:7.1f} │ "
            f"{ratio:9.2f} {rps_ratio:9.2f} {row.get('server_cpu_ms_per_request') or 0:7.2f}"
        )
    print("(latencies in ms; 'SQL' is the route's own statement through an asyncpg pool;")
    print(" rps ratio = API requests/s / the same statements' requests/s, higher is better;")
    print(" CPU/req = the API server process's CPU ms per request)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[100],
        help="concurrent requests; a comma-separated list runs a sweep",
    )
    parser.add_argument("--only", default="", help="scenarios whose name contains this")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per series")
    parser.add_argument("--pool", type=int, default=20, help="asyncpg pool size (the API's is 20)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "ECSWATCH_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432"
        ),
        help="server URL; a fresh database is created on it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse", metavar="DATABASE", help="measure an already seeded (--keep) database"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api.json")
    args = parser.parse_args()

    if args.reuse:
        db_url = (
            make_url(to_asyncpg_url(args.database_url))
            .set(database=args.reuse)
            .render_as_string(hide_password=False)
        )
    else:
        db_url = await fresh_database(args.database_url)
    print(f"database: {make_url(db_url).database}")
    server: subprocess.Popen[bytes] | None = None
    try:
        timings: dict[str, float] = {}
        if not args.reuse:
            started = time.perf_counter()
            timings = await seed(db_url, args.tasks, args.events)
            print(
                f"seeded {args.tasks} tasks and {args.events} events in "
                f"{time.perf_counter() - started:.0f} s: {timings}"
            )

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(db_url, port)
        await wait_ready(base, server)

        pool = await asyncpg.create_pool(
            **benchdb.connect_kwargs(db_url),
            min_size=args.pool,
            max_size=args.pool,
            init=init_connection,
        )
        rows: list[dict[str, Any]] = []
        try:
            for (name, path), concurrency in (
                (scenario, level)
                for scenario in scenarios(args.tasks)
                if args.only in scenario[0]
                for level in args.concurrency
            ):
                statements, items, page = await capture_sql(db_url, path)
                if items == 0:
                    print(f"  warning: {name} answers no items on this data")
                if page:
                    async with pool.acquire() as conn:
                        # The page is the route's last statement (a cluster lookup may
                        # come first).
                        statement, params = statements[-1]
                        direct = await conn.fetch(statement, *params)
                    # Same rows both ways (lists fetch one extra row to see a next page).
                    if len(direct) not in (items, items + 1):
                        raise RuntimeError(
                            f"{path}: the API answered {items} items, SQL {len(direct)}"
                        )

                # Fresh connections per series: idle keep-alive ones time out.
                client = HttpConnections("127.0.0.1", port, TOKEN)
                await client.open(concurrency)

                async def http_call(path: str = path, client: HttpConnections = client) -> bool:
                    return await client.get(path) == 200

                async def sql_call(
                    statements: list[tuple[str, tuple[Any, ...]]] = statements,
                ) -> bool:
                    async with pool.acquire() as conn:
                        for statement, params in statements:
                            await conn.fetch(statement, *params)
                    return True

                cpu_before = cpu_seconds(server.pid)
                api = await drive(http_call, concurrency, args.duration)
                # The server's own CPU per request: robust on a shared machine,
                # where requests/s also depends on what else is running.
                server_cpu = cpu_seconds(server.pid) - cpu_before
                await client.close()
                sql = await drive(sql_call, concurrency, args.duration)
                rows.append(
                    {
                        "scenario": name,
                        "concurrency": concurrency,
                        "path": path,
                        "statements": len(statements),
                        "items": items,
                        "api": asdict(api),
                        "sql": asdict(sql),
                        # API requests/s over the same statements' requests/s.
                        "rps_ratio": round(api.rps / sql.rps, 3) if sql.rps else None,
                        "server_cpu_ms_per_request": (
                            round(server_cpu / api.calls * 1000, 3) if api.calls else None
                        ),
                    }
                )
                print(
                    f"  {name} (x{concurrency}): API p99 {api.p99_ms} ms, {api.rps} rps; "
                    f"SQL p99 {sql.p99_ms} ms, {sql.rps} rps"
                )
        finally:
            await pool.close()

        print()
        print_table(rows)
        ratios = [r["api"]["p99_ms"] / r["sql"]["p99_ms"] for r in rows if r["sql"]["p99_ms"]]
        summary = {
            "median_p99_ratio": round(statistics.median(ratios), 2) if ratios else None,
            "max_p99_ratio": round(max(ratios), 2) if ratios else None,
            "max_api_p99_ms": max(r["api"]["p99_ms"] for r in rows),
            "min_rps_ratio_pages": min(
                (r["rps_ratio"] for r in rows if r["items"] > 1 and r["rps_ratio"]), default=None
            ),
            "min_rps_ratio_single": min(
                (r["rps_ratio"] for r in rows if r["items"] == 1 and r["rps_ratio"]), default=None
            ),
        }
        print(f"summary: {summary}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "when": datetime.now(UTC).isoformat(),
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                    },
                    "tasks": args.tasks,
                    "events": args.events,
                    "concurrency": args.concurrency,
                    "duration_s": args.duration,
                    "asyncpg_pool": args.pool,
                    "seed_seconds": timings,
                    "scenarios": rows,
                    "summary": summary,
                },
                indent=2,
            )
        )
        print(f"wrote {args.out}")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        if not args.keep and not args.reuse:
            await drop_database(db_url)


if __name__ == "__main__":
    asyncio.run(main())
