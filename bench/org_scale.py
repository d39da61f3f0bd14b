"""Organization scale: many accounts and regions from one ecswatch.

An organization of accounts x regions is built in moto, each scope's resources
made with credentials from ``sts:AssumeRole`` into its account (moto keeps
separate resources per account and region). Half the scopes (each account's
first region) hold one cluster with its share of the services and tasks; the
others are empty, as an enabled region without ECS is. ecswatch watches every
scope through the counting proxy of tests/rig/aws_proxy.py. The run reports:

1. ECS calls per scope per reconcile ÷ the minimum from the batch limits
   (``reconcile_minimum`` of bench/aws_calls.py, per scope, with ListTasks in the
   one page moto gives; an empty scope's minimum is its one ListClusters);
2. the slowest scope's reconcile time ÷ the median scope's, in a round where one
   account (both of its scopes) is denied ``sts:AssumeRole`` and one scope (one
   account in one region) answers its first 3 ``ListTasks`` with throttling
   errors. Slowest is over every scope reconciled, the throttled one included;
   the denied scopes fail at once, back off and are left out (their time is on
   its own row). The median is over the scopes that hold a cluster. Beside it:
   the slowest scope not throttled ÷ the same median (does the fault spill
   over?), the throttled scope's time in the clean round, the clean round's own
   ratio, and the same faulty round with ``DescribeTasks`` throttled instead;
3. the consumer's events/s (bench/ingest.py's in-process measurement) with the
   events spread over every scope ÷ the same events all in one scope.

Prints a table and writes bench/results/org_scale.json. Usage:

    .venv/bin/python bench/org_scale.py [--size small|default]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]

Sizes (accounts x 2 regions, clusters, services, tasks, ingest events):
small 10 x 2, 10, 100, 1,000, 3,000; default 20 x 2, 20, 400, 4,000, 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import sys
import time
import zlib
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchdb  # bench/ is the script's directory, so first on sys.path
from aws_calls import INSTANCES_PER_CLUSTER, reconcile_minimum
from ingest import in_process, truncate, workload

from service.aws.scopes import Scope
from service.config import Settings, load_settings
from service.db import create_engine
from service.demo.aws import MotoServer
from service.demo.scopes import DemoScope, in_scope
from service.enrich.describer import Describer
from service.logging import configure_logging
from service.migrate import upgrade
from service.poller.reconcile import Reconciler, ReconcileReport
from service.runtime import open_runtime
from tests.rig.accounts import assumed
from tests.rig.aws_proxy import AwsProxy

REGIONS = ("us-east-1", "us-west-2")
ROLE = "ecswatch-read"
EXTERNAL_ID = "ecswatch-bench"
#: --size -> (accounts, clusters, services, tasks, ingest events)
SIZES = {
    "small": (10, 10, 100, 1_000, 3_000),
    "default": (20, 20, 400, 4_000, 10_000),
}
INGEST_BATCH = 500
INGEST_WORKERS = 2
THROTTLED_ANSWERS = 3
RATIO_TARGETS = {"calls": 1.2, "slowest_vs_median": 2.0, "ingest": 0.95}


def _account(i: int) -> str:
    return f"{300000000000 + i:012d}"


async def build_scope(endpoint: str, scope: Scope, services: int, tasks: int) -> None:
    """One cluster in ``scope`` with ``services`` services and ``tasks`` tasks."""
    from aiobotocore.session import get_session

    session: Any = get_session()
    kwargs = {
        "endpoint_url": endpoint,
        "region_name": scope.region,
        **await assumed(endpoint, scope.account, ROLE),
    }
    async with (
        session.create_client("ecs", **kwargs) as ecs,
        session.create_client("ec2", **kwargs) as ec2,
    ):
        image = (await ec2.describe_images())["Images"][0]["ImageId"]
        td = await ecs.register_task_definition(
            family="app",
            networkMode="bridge",
            containerDefinitions=[{"name": "app", "image": "app:1", "cpu": 1, "memory": 4}],
        )
        td_arn = td["taskDefinition"]["taskDefinitionArn"]
        await ecs.create_cluster(clusterName="prod")
        for _ in range(INSTANCES_PER_CLUSTER):
            instance = (await ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1))[
                "Instances"
            ][0]["InstanceId"]
            await ecs.register_container_instance(
                cluster="prod",
                instanceIdentityDocument=json.dumps(
                    {"instanceId": instance, "region": scope.region}
                ),
            )
        for s in range(services):
            await ecs.create_service(
                cluster="prod", serviceName=f"s{s}", taskDefinition=td_arn, desiredCount=0
            )
        per_service = tasks // services
        for s in range(services):
            left = per_service
            while left > 0:
                await ecs.run_task(
                    cluster="prod",
                    taskDefinition=td_arn,
                    count=min(10, left),
                    group=f"service:s{s}",
                    startedBy="ecs-svc/1",
                )
                left -= 10


class TimedReconciler(Reconciler):
    """The reconciler, with the wall time of each scope's reconcile recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds: dict[Scope, float] = {}
        #: When each scope's reconcile began, in seconds from the round's start.
        self.began: dict[Scope, float] = {}
        self._round_start = 0.0

    async def reconcile_all(self, now: datetime | None = None) -> ReconcileReport:
        self._round_start = time.perf_counter()
        return await super().reconcile_all(now)

    async def reconcile_scope(self, scope: Scope, started: datetime) -> ReconcileReport:
        t0 = time.perf_counter()
        self.began[scope] = t0 - self._round_start
        try:
            return await super().reconcile_scope(scope, started)
        finally:
            self.seconds[scope] = time.perf_counter() - t0


def _ecs_calls(proxy: AwsProxy) -> Counter[str]:
    return Counter({op: n for (service, op), n in proxy.calls.items() if service == "ecs"})


async def faulty_round(
    settings: Settings,
    proxy: AwsProxy,
    accounts: list[str],
    operation: str,
    clean: dict[Scope, float],
) -> dict[str, Any]:
    """One round with an account denied and one scope's ``operation`` throttled.

    A fresh runtime, so the denied account assumes its role anew. Slowest and median
    are taken over the scopes reconciled (the denied ones fail at once and are left
    out); the median over those that hold a cluster.
    """
    denied = accounts[len(accounts) // 2]
    throttled_scope = Scope(accounts[len(accounts) // 4], REGIONS[0])
    async with open_runtime(settings, pool_size=8) as runtime:
        aws = await runtime.aws_scopes()
        await runtime.aws_apis()  # as the poller role starts: the home scope's clients
        async with Describer(runtime.sessionmaker, aws) as describer:
            proxy.reset()
            proxy.deny_account(denied)
            proxy.throttle(
                operation,
                THROTTLED_ANSWERS,
                account=throttled_scope.account,
                region=throttled_scope.region,
            )
            faulty = TimedReconciler(runtime.sessionmaker, aws, describer)
            t0 = time.perf_counter()
            await faulty.reconcile_all()
            round_s = time.perf_counter() - t0
            throttled = {f"{a}/{r}": n for (a, r), n in proxy.throttled_scopes.items()}
            async with asyncio.timeout(60):
                while describer.batcher.pending:
                    await asyncio.sleep(0.05)
    denied_scopes = {Scope(denied, r) for r in REGIONS}
    served = {s: t for s, t in faulty.seconds.items() if s not in denied_scopes}
    median = statistics.median(t for s, t in served.items() if s.region == REGIONS[0])
    slowest = max(served, key=lambda s: served[s])
    others = {s: t for s, t in served.items() if s != throttled_scope}
    slowest_other = max(others, key=lambda s: others[s])
    return {
        "throttled_operation": operation,
        "round_s": round(round_s, 2),
        "denied_account": denied,
        "denied_scopes_s": {str(s): round(faulty.seconds.get(s, 0.0), 3) for s in denied_scopes},
        "errors": {str(s): e[:120] for s, e in faulty.rounds.errors.items()},
        "throttled_scope": str(throttled_scope),
        "throttled_answers": throttled,
        "scope_seconds": {str(s): round(t, 3) for s, t in sorted(faulty.seconds.items())},
        "scope_began_s": {str(s): round(t, 3) for s, t in sorted(faulty.began.items())},
        "median_scope_with_cluster_s": round(median, 3),
        "slowest_scope": str(slowest),
        "slowest_s": round(served[slowest], 3),
        "slowest_vs_median": round(served[slowest] / median, 2),
        "slowest_not_throttled_scope": str(slowest_other),
        "slowest_not_throttled_vs_median": round(others[slowest_other] / median, 2),
        "throttled_scope_s": round(served.get(throttled_scope, 0.0), 3),
        "throttled_scope_clean_s": round(clean.get(throttled_scope, 0.0), 3),
        "throttled_scope_vs_median": round(served.get(throttled_scope, 0.0) / median, 2),
    }


async def measure_reconcile(
    db_url: str, moto: MotoServer, accounts: list[str], per_scope: tuple[int, int, int]
) -> dict[str, Any]:
    clusters, services, tasks = per_scope
    scopes = [Scope(a, r) for a in accounts for r in REGIONS]
    full = [Scope(a, REGIONS[0]) for a in accounts]
    started = time.perf_counter()
    for scope in full:
        await build_scope(moto.endpoint_url, scope, services, tasks)
    build_s = time.perf_counter() - started
    # moto answers ListTasks in one page however many tasks a cluster has, where
    # ECS pages by 100: the minimum counts the pages moto gives.
    full_min = reconcile_minimum(clusters, services, tasks)["ecs"] - (math.ceil(tasks / 100) - 1)
    minimum = full_min * len(full) + 1 * (len(scopes) - len(full))  # ListClusters alone
    async with AwsProxy(moto.endpoint_url) as proxy:
        settings = load_settings(
            database_url=db_url,
            aws_endpoint_url=proxy.url,
            aws_region=REGIONS[0],
            regions=REGIONS,
            accounts={a: f"arn:aws:iam::{a}:role/{ROLE}" for a in accounts},
            external_id=EXTERNAL_ID,
        )
        async with open_runtime(settings, pool_size=8) as runtime:
            aws = await runtime.aws_scopes()
            await runtime.aws_apis()  # as the poller role starts: the home scope's clients
            async with Describer(runtime.sessionmaker, aws) as describer:
                # 1. A clean round: every scope reconciled, its ECS calls counted.
                clean = TimedReconciler(runtime.sessionmaker, aws, describer)
                proxy.reset()
                t0 = time.perf_counter()
                await clean.reconcile_all()
                clean_s = time.perf_counter() - t0
                calls = _ecs_calls(proxy)
                definitions = calls.pop("DescribeTaskDefinition", 0)
                ecs_calls = sum(calls.values())
                async with asyncio.timeout(60):
                    while describer.batcher.pending:
                        await asyncio.sleep(0.05)
        # 2. One account denied, one scope's listing throttled (the headline); then the
        # same with its Describe calls throttled instead.
        faults = await faulty_round(settings, proxy, accounts, "ListTasks", clean.seconds)
        describes = await faulty_round(settings, proxy, accounts, "DescribeTasks", clean.seconds)
    clean_full = sorted(t for s, t in clean.seconds.items() if s in full)
    faults["clean_round_slowest_vs_median"] = round(
        clean_full[-1] / statistics.median(clean_full), 2
    )
    faults["clean_scope_seconds"] = {str(s): round(t, 3) for s, t in sorted(clean.seconds.items())}
    return {
        "scopes": len(scopes),
        "scopes_with_a_cluster": len(full),
        "fleet_build_s": round(build_s, 1),
        "clean_round_s": round(clean_s, 2),
        "reconcile": {
            "calls": dict(calls),
            "ecs_calls": ecs_calls,
            "ecs_minimum": minimum,
            "per_scope": round(ecs_calls / len(scopes), 2),
            "per_scope_minimum": round(minimum / len(scopes), 2),
            "ratio": round(ecs_calls / minimum, 3),
            "task_definitions_described": definitions,
        },
        "faults": faults,
        "faults_describe": describes,
    }


_SERVICE = re.compile(r"svc(\d+)")


def spread(events: list[dict[str, Any]], scopes: list[DemoScope]) -> list[dict[str, Any]]:
    """``events`` moved into ``scopes``: a service's events (its tasks', deployments')
    stay in one scope; the others go by their first resource."""
    out = []
    for event in events:
        raw = json.dumps(event)
        found = _SERVICE.search(raw)
        key = int(found.group(1)) if found else zlib.crc32(raw.encode())
        out.append(in_scope(event, scopes[key % len(scopes)]))
    return out


async def measure_ingest(db_url: str, n: int, scopes: list[DemoScope]) -> dict[str, Any]:
    events = workload(n)
    one = [json.dumps(in_scope(e, scopes[0])) for e in events]
    many = [json.dumps(e) for e in spread(events, scopes)]
    rates: dict[str, list[float]] = {"one": [], "many": []}
    # Alternate, twice each, so that load on the shared machine falls on both.
    for name, bodies in (("one", one), ("many", many), ("one", one), ("many", many)):
        await truncate(db_url)
        rate, _ = await in_process(db_url, bodies, INGEST_BATCH, INGEST_WORKERS)
        rates[name].append(rate)
    best = {k: max(v) for k, v in rates.items()}
    return {
        "events": len(events),
        "scopes": len(scopes),
        "one_scope_per_s": round(best["one"]),
        "all_scopes_per_s": round(best["many"]),
        "runs_per_s": {k: [round(r) for r in v] for k, v in rates.items()},
        "ratio": round(best["many"] / best["one"], 3),
    }


async def run(size: str, database_url: str) -> dict[str, Any]:
    n_accounts, clusters, services, tasks, events = SIZES[size]
    accounts = [_account(i) for i in range(n_accounts)]
    per_scope = (1, services // clusters, tasks // clusters)
    db_url = await benchdb.fresh_database(database_url, "bench_org")
    try:
        engine = create_engine(db_url, pool_size=1)
        await upgrade(engine)
        await engine.dispose()
        results: dict[str, Any] = {
            "size": [n_accounts, len(REGIONS), clusters, services, tasks],
            "targets": RATIO_TARGETS,
        }
        with MotoServer() as moto:
            moto.pin_ecs_tasks()
            results.update(await measure_reconcile(db_url, moto, accounts, per_scope))
        await truncate(db_url)
        scopes = [DemoScope(a, r) for a in accounts for r in REGIONS]
        results["ingest"] = await measure_ingest(db_url, events, scopes)
        return results
    finally:
        await benchdb.drop_database(db_url)


def report(results: dict[str, Any]) -> None:
    accounts, regions, c, s, t = results["size"]
    rec, faults, ing = results["reconcile"], results["faults"], results["ingest"]
    describes = results["faults_describe"]
    rows = [
        (
            "organization",
            f"{accounts} accounts x {regions} regions; {c} clusters, {s} services,"
            f" {t} tasks in all ({results['scopes_with_a_cluster']} scopes hold a cluster)",
        ),
        ("fleet build in moto", f"{results['fleet_build_s']} s"),
        (
            "reconcile: ECS calls per scope",
            f"{rec['per_scope']} (minimum {rec['per_scope_minimum']}, ratio {rec['ratio']:.2f},"
            f" target ≤ {RATIO_TARGETS['calls']})",
        ),
        ("reconcile: by operation", json.dumps(rec["calls"], sort_keys=True)),
        ("clean round, all scopes", f"{results['clean_round_s']} s"),
        (
            "faulty round",
            f"{faults['round_s']} s; account {faults['denied_account']} denied;"
            f" {faults['throttled_scope']} throttled"
            f" ({THROTTLED_ANSWERS} {faults['throttled_operation']} answers)",
        ),
        ("denied scopes (left out)", json.dumps(faults["denied_scopes_s"], sort_keys=True)),
        (
            "slowest scope ÷ median scope",
            f"{faults['slowest_vs_median']} ({faults['slowest_scope']} {faults['slowest_s']} s vs"
            f" {faults['median_scope_with_cluster_s']} s;"
            f" target ≤ {RATIO_TARGETS['slowest_vs_median']})",
        ),
        (
            "throttled scope",
            f"{faults['throttled_scope_s']} s ({faults['throttled_scope_vs_median']}x the median;"
            f" {faults['throttled_scope_clean_s']} s in the clean round)",
        ),
        (
            "slowest scope not throttled ÷ median",
            f"{faults['slowest_not_throttled_vs_median']}"
            f" ({faults['slowest_not_throttled_scope']})",
        ),
        (
            "same, in the clean round",
            f"{faults['clean_round_slowest_vs_median']} (scopes with a cluster)",
        ),
        (
            f"{describes['throttled_operation']} throttled instead",
            f"round {describes['round_s']} s; slowest ÷ median {describes['slowest_vs_median']};"
            f" throttled scope {describes['throttled_scope_vs_median']}x; slowest not throttled"
            f" {describes['slowest_not_throttled_vs_median']}x",
        ),
        ("ingest: events/s, 1 scope", f"{ing['one_scope_per_s']:,}"),
        (f"ingest: events/s, {ing['scopes']} scopes", f"{ing['all_scopes_per_s']:,}"),
        ("ingest: many ÷ one", f"{ing['ratio']:.3f} (target ≥ {RATIO_TARGETS['ingest']})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "org_scale.json").write_text(json.dumps(results, indent=2, sort_keys=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument(
        "--database-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    configure_logging("json", "error")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    report(asyncio.run(run(args.size, args.database_url)))


if __name__ == "__main__":
    main()
