"""Datadog forwarding benchmark: throughput and freshness, next to their baselines.

(a) Throughput: N outbox rows of metric points drained by the dispatcher and the
    real metrics sender to a local intake (in a process of its own), next to the
    datadog-api-client building, serialising and compressing the same series
    alone, in the same run. Reports points/s and compressed bytes per point.
(b) Freshness: a point put into moto's CloudWatch, fetched with GetMetricData and
    stored in metric_points (a stand-in for the poller, every --interval s),
    forwarded by the Datadog job (ecswatch's own, at --interval) and the
    dispatcher, until it arrives at the intake. Reports the seconds from put to
    arrival; the target is one interval plus 10 s.

Prints a table and writes bench/results/datadog.json. Usage:

    .venv/bin/python bench/datadog.py [--rows 200] [--interval 5] [--samples 3]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import benchdb  # bench/ is the script's directory, so first on sys.path
from aiobotocore.session import get_session
from datadog_api_client.model_utils import data_to_dict
from datadog_api_client.v2.model.metric_payload import MetricPayload
from sqlalchemy import text

from service.config import load_settings
from service.datadog.batching import RowSeries, plan_batches
from service.datadog.forwarder import COMPRESSORS, open_datadog_senders, to_model
from service.datadog.gauges import DatadogJob
from service.db import create_engine, create_sessionmaker
from service.demo.aws import MotoServer
from service.logging import configure_logging
from service.migrate import upgrade
from service.outbox.dispatcher import Dispatcher, build_registry

REPO = str(Path(__file__).resolve().parents[1])
SERIES_PER_ROW = 20
POINTS_PER_SERIES = 5

# The intake in a process of its own, so that its decompressing and parsing do
# not share the sender's CPU. It prints its URL, then totals once stdin closes.
_INTAKE = """
import asyncio, json, sys
from service.demo.intake import DatadogIntake

async def main():
    async with DatadogIntake() as intake:
        print(intake.url, flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.strip() == b"arrivals":
                arrivals = [
                    [s["metric"], s["tags"], [p["timestamp"] for p in s["points"]], r.received_at]
                    for r in intake.requests if r.path == "/api/v2/series" and r.status == 202
                    for s in r.json["series"]
                ]
                print(json.dumps(arrivals), flush=True)
        ok = [r for r in intake.requests if r.path == "/api/v2/series" and r.status == 202]
        print(json.dumps({
            "requests": len(ok),
            "wire_bytes": sum(r.wire_size for r in ok),
            "points": sum(len(s["points"]) for r in ok for s in r.json["series"]),
        }), flush=True)

asyncio.run(main())
"""


class IntakeProcess:
    """The local Datadog intake in a child process."""

    async def __aenter__(self) -> IntakeProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _INTAKE,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = (await self.proc.stdout.readline()).decode().strip()
        return self

    async def arrivals(self) -> list[Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"arrivals\n")
        await self.proc.stdin.drain()
        result: list[Any] = json.loads(await self.proc.stdout.readline())
        return result

    async def totals(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        result: dict[str, Any] = json.loads(await self.proc.stdout.readline())
        await self.proc.wait()
        return result

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def rows_of(n: int, now: int) -> list[dict[str, Any]]:
    """``n`` rows of SERIES_PER_ROW series of POINTS_PER_SERIES recent points each."""
    rows = []
    for r in range(n):
        series = []
        for s in range(SERIES_PER_ROW):
            service = f"svc-{(r * SERIES_PER_ROW + s) % 400}"
            series.append(
                {
                    "metric": "aws.ecs.service.cpu_utilization",
                    "points": [[now - 60 * (POINTS_PER_SERIES - i) - r, 20.0 + i + s / 7]
                               for i in range(POINTS_PER_SERIES)],
                    "tags": [
                        "ecs_cluster_name:prod", "clustername:prod", f"ecs_service:{service}",
                        f"servicename:{service}", "launch_type:fargate", "region:eu-west-1",
                        "aws_account:123456789012", "statistic:average",
                    ],
                    "resource_tags": {"team": "payments", "env": "prod"},
                }
            )  # fmt: skip
        rows.append({"series": series, "source": "bench"})
    return rows


def client_alone(rows: list[dict[str, Any]], sender: Any) -> tuple[float, int, int]:
    """The client building, serialising and compressing the same series: (s, bytes, points)."""
    items = [
        RowSeries((i,), sender._series(s)) for i, row in enumerate(rows) for s in row["series"]
    ]
    compress = COMPRESSORS["zstd1"]
    started = time.perf_counter()
    plan = plan_batches(items, compress=compress)
    wire = points = 0
    for batch in plan.batches:
        payload = MetricPayload(series=[to_model(i.series) for i in batch.items])
        body = json.dumps(data_to_dict(payload)).encode()
        wire += len(compress(body))
        points += sum(len(i.series["points"]) for i in batch.items)
    return time.perf_counter() - started, wire, points


async def throughput(db_url: str, n_rows: int) -> dict[str, Any]:
    engine = create_engine(db_url, pool_size=4)
    sessionmaker = create_sessionmaker(engine)
    now = int(time.time())
    rows = rows_of(n_rows, now)
    async with engine.begin() as conn:
        for i, row in enumerate(rows):
            await conn.execute(
                text(
                    "INSERT INTO outbox (kind, dedupe_key, payload)"
                    " VALUES ('datadog_metrics', :k, CAST(:p AS jsonb))"
                ),
                {"k": f"bench:{i}", "p": json.dumps(row)},
            )
    async with IntakeProcess() as intake:
        settings = load_settings(dd_api_key="k", datadog_url=intake.url)
        async with open_datadog_senders(settings) as senders:
            metrics_sender = senders[0]
            alone_s, alone_bytes, alone_points = client_alone(rows, metrics_sender)
            dispatcher = Dispatcher(engine, sessionmaker, build_registry(senders), batch_size=50)
            started = time.perf_counter()
            while await dispatcher.dispatch_once():
                pass
            elapsed = time.perf_counter() - started
        totals = await intake.totals()
    async with engine.connect() as conn:
        pending = (
            await conn.execute(text("SELECT count(*) FROM outbox WHERE status <> 'delivered'"))
        ).scalar()
    await engine.dispose()
    points = n_rows * SERIES_PER_ROW * POINTS_PER_SERIES
    assert totals["points"] == points, totals
    assert pending == 0
    return {
        "rows": n_rows,
        "points": points,
        "forward_points_per_s": round(points / elapsed),
        "client_alone_points_per_s": round(alone_points / alone_s),
        "forward_vs_client_alone": round((points / elapsed) / (alone_points / alone_s), 3),
        "compressed_bytes_per_point": round(totals["wire_bytes"] / points, 2),
        "client_alone_bytes_per_point": round(alone_bytes / alone_points, 2),
        "requests": totals["requests"],
    }


async def freshness(db_url: str, interval: int, samples: int) -> dict[str, Any]:
    """Seconds from put_metric_data in moto to the point's arrival at the intake."""
    engine = create_engine(db_url, pool_size=4)
    sessionmaker = create_sessionmaker(engine)
    latencies: list[float] = []
    with MotoServer() as moto:
        kwargs = {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1",
                  "aws_access_key_id": "x", "aws_secret_access_key": "x"}  # fmt: skip
        async with (
            get_session().create_client("cloudwatch", **kwargs) as cloudwatch,
            IntakeProcess() as intake,
        ):
            settings = load_settings(dd_api_key="k", datadog_url=intake.url)
            async with open_datadog_senders(settings) as senders:
                dispatcher = Dispatcher(
                    engine, sessionmaker, build_registry(senders), poll_interval_s=1.0
                )
                stop = asyncio.Event()
                loops = [
                    asyncio.create_task(dispatcher.run(stop)),
                    asyncio.create_task(_poller_stand_in(cloudwatch, engine, interval, stop)),
                    asyncio.create_task(DatadogJob(sessionmaker, interval_s=interval).run(stop)),
                ]
                try:
                    for n in range(samples):
                        value = 1000.0 + n
                        put_at = time.time()
                        await cloudwatch.put_metric_data(
                            Namespace="AWS/ECS",
                            MetricData=[{
                                "MetricName": "CPUUtilization", "Value": value,
                                "Timestamp": datetime.now(UTC), "Unit": "Percent",
                                "Dimensions": [{"Name": "ClusterName", "Value": "prod"},
                                               {"Name": "ServiceName", "Value": "web"}],
                            }],
                        )  # fmt: skip
                        arrived = await _wait_arrival(intake, n + 1, within=interval * 3 + 30)
                        latencies.append(arrived - put_at)
                        await asyncio.sleep(interval * 0.37)  # land at another phase
                finally:
                    stop.set()
                    await asyncio.gather(*loops, return_exceptions=True)
            await intake.totals()
    await engine.dispose()
    return {
        "interval_s": interval,
        "samples": samples,
        "freshness_s": [round(x, 2) for x in latencies],
        "freshness_max_s": round(max(latencies), 2),
        "target_s": interval + 10,
    }


async def _wait_arrival(intake: IntakeProcess, count: int, within: float) -> float:
    async with asyncio.timeout(within):
        while True:
            arrivals = await intake.arrivals()
            cpu = [a for a in arrivals if a[0].endswith("aws.ecs.service.cpu_utilization")]
            if len(cpu) >= count:
                return float(cpu[count - 1][3])
            await asyncio.sleep(0.2)


SERVICE_DIMENSIONS = '{"ClusterName": "prod", "ServiceName": "web"}'


async def _poller_stand_in(
    cloudwatch: Any, engine: Any, interval: int, stop: asyncio.Event
) -> None:
    """What the poller does for this one metric: GetMetricData, store points."""
    while not stop.is_set():
        end = datetime.now(UTC) + timedelta(minutes=1)
        found = await cloudwatch.get_metric_data(
            MetricDataQueries=[{
                "Id": "cpu", "ReturnData": True,
                "MetricStat": {"Metric": {"Namespace": "AWS/ECS", "MetricName": "CPUUtilization",
                    "Dimensions": [{"Name": "ClusterName", "Value": "prod"},
                                   {"Name": "ServiceName", "Value": "web"}]},
                    "Period": 60, "Stat": "Average"},
            }],
            StartTime=end - timedelta(minutes=10), EndTime=end,
        )  # fmt: skip
        result = found["MetricDataResults"][0]
        async with engine.begin() as conn:
            for at, value in zip(result["Timestamps"], result["Values"], strict=True):
                await conn.execute(
                    text(
                        "INSERT INTO metric_points (namespace, name, statistic, unit,"
                        " cluster_name, service_name, dimensions, dimensions_key, timestamp,"
                        " value) VALUES ('AWS/ECS', 'CPUUtilization', 'Average', 'Percent',"
                        " 'prod', 'web', CAST(:dims AS jsonb), 'c', :at, :v) ON CONFLICT DO NOTHING"
                    ),
                    # The dimensions the poller stores: a service's point, named
                    # aws.ecs.service.* (a cluster's has no ServiceName).
                    {"at": at, "v": value, "dims": SERVICE_DIMENSIONS},
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="outbox rows of 100 points")
    parser.add_argument("--interval", type=int, default=5, help="metrics interval (s)")
    parser.add_argument("--samples", type=int, default=3, help="freshness samples")
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    configure_logging("json", "warning")
    db_url = await benchdb.fresh_database(args.database_url, "ecswatch_bench_dd")
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        results = await throughput(db_url, args.rows)
        results |= await freshness(db_url, args.interval, args.samples)
    finally:
        await benchdb.drop_database(db_url)
    return results


def report(results: dict[str, Any]) -> None:
    """Print the table and write bench/results/datadog.json."""
    table = [
        ("client alone: build, serialise, zstd (baseline)",
         f"{results['client_alone_points_per_s']:,}/s", ""),
        ("outbox → dispatcher → sender → intake",
         f"{results['forward_points_per_s']:,}/s", f"{results['forward_vs_client_alone']:.0%}"),
        ("compressed bytes per point (sent)", f"{results['compressed_bytes_per_point']}", ""),
        ("compressed bytes per point (client alone)",
         f"{results['client_alone_bytes_per_point']}", ""),
        (f"freshness, worst of {results['samples']} (interval {results['interval_s']} s)",
         f"{results['freshness_max_s']} s", f"target ≤ {results['target_s']} s"),
    ]  # fmt: skip
    print(f"{'measure':<52} {'value':>12} {'vs baseline':>16}")
    for name, value, ratio in table:
        print(f"{name:<52} {value:>12} {ratio:>16}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "datadog.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    report(asyncio.run(main()))
