"""``ecswatch datadog install`` against the intake's dashboards and monitors stand-in."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from service.config import load_settings
from service.datadog.install import (
    Action,
    Existing,
    Kind,
    Verb,
    Wanted,
    install,
    load_assets,
    metric_names,
    plan,
)
from service.datadog.metrics import REGISTRY
from service.demo.intake import DatadogIntake
from service.errors import ConfigError

#: The monitors install manages (the set of keys is pinned below).
MONITORS = sum(1 for w in load_assets() if w.kind is Kind.MONITOR)


def _settings(intake: DatadogIntake, **extra: Any) -> Any:
    return load_settings(dd_api_key="k", dd_app_key="a", datadog_url=intake.url, **extra)


def _verbs(actions: list[Action]) -> list[tuple[str, str]]:
    return sorted((a.verb.value, a.key) for a in actions)


async def test_install_creates_then_updates_and_never_duplicates(
    datadog_intake: DatadogIntake,
) -> None:
    settings = _settings(datadog_intake)
    first = await install(settings)
    assert {a.verb for a in first} == {Verb.CREATE}
    assert len(datadog_intake.dashboards) == 1
    assert len(datadog_intake.monitors) == MONITORS
    [dashboard] = datadog_intake.dashboards.values()
    assert dashboard["title"] == "ecswatch — ECS overview"
    assert all("managed_by:ecswatch" in m["tags"] for m in datadog_intake.monitors.values())

    second = await install(settings)
    assert {a.verb for a in second} == {Verb.UNCHANGED}
    assert len(datadog_intake.dashboards) == 1
    assert len(datadog_intake.monitors) == MONITORS

    # Someone edits a monitor and the dashboard in Datadog: install puts them back.
    monitor = next(
        m for m in datadog_intake.monitors.values() if "ecswatch_id:consumer_lag" in m["tags"]
    )
    monitor["query"] = "avg(last_5m):max:ecswatch.self.event_lag{*} > 9999"
    dashboard["widgets"] = dashboard["widgets"][:1]
    third = await install(settings)
    assert _verbs([a for a in third if a.verb is Verb.UPDATE]) == [
        ("update", "consumer_lag"),
        ("update", "overview"),
    ]
    assert "> 300" in monitor["query"]
    [dashboard] = datadog_intake.dashboards.values()
    assert len(dashboard["widgets"]) == 7
    assert len(datadog_intake.monitors) == MONITORS
    assert len(datadog_intake.dashboards) == 1

    # A copy made by hand (same managed tags) is reported, never deleted or duplicated.
    copy = {**monitor, "id": 9_999}
    datadog_intake.monitors[9_999] = copy
    fourth = await install(settings)
    assert [a.id for a in fourth if a.verb is Verb.DUPLICATE] == ["9999"]
    assert len(datadog_intake.monitors) == MONITORS + 1


async def test_dry_run_changes_nothing(datadog_intake: DatadogIntake) -> None:
    actions = await install(_settings(datadog_intake), dry_run=True)
    assert len(actions) == MONITORS + 1
    assert {a.verb for a in actions} == {Verb.CREATE}
    assert datadog_intake.dashboards == {}
    assert datadog_intake.monitors == {}
    writes = [r for r in datadog_intake.requests if r.method in ("POST", "PUT")]
    assert writes == []


async def test_cli_install_and_dry_run(datadog_intake: DatadogIntake) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_"))} | {
        "DD_API_KEY": "k",
        "DD_APP_KEY": "a",
        "ECSWATCH_DATADOG_URL": datadog_intake.url,
        "ECSWATCH_LOG_FORMAT": "json",
    }

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "datadog", "install", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, _ = await run("--dry-run")
    assert code == 0
    assert "would create dashboard 'ecswatch — ECS overview'" in out
    assert out.strip().endswith(f"would change {MONITORS + 1} of {MONITORS + 1} managed objects")
    assert datadog_intake.monitors == {}
    code, out, _ = await run()
    assert (code, out.strip().splitlines()[-1]) == (
        0,
        f"changed {MONITORS + 1} of {MONITORS + 1} managed objects",
    )
    code, out, _ = await run()
    assert (code, out.strip().splitlines()[-1]) == (
        0,
        f"changed 0 of {MONITORS + 1} managed objects",
    )
    assert len(datadog_intake.monitors) == MONITORS


async def test_install_needs_the_application_key(datadog_intake: DatadogIntake) -> None:
    settings = load_settings(dd_api_key="k", datadog_url=datadog_intake.url)
    with pytest.raises(ConfigError, match="DD_APP_KEY"):
        await install(settings)


def test_assets_name_only_metrics_that_are_sent() -> None:
    sent = {spec.name.value for spec in REGISTRY.values()}
    for item in load_assets():
        text = json.dumps(item.body)
        names = metric_names(text)
        assert names, f"{item.title} names no metric"
        assert names <= sent, f"{item.title} names unsent metrics {sorted(names - sent)}"


def test_dashboard_covers_the_documented_list() -> None:
    [dashboard] = [w for w in load_assets() if w.kind is Kind.DASHBOARD]
    groups = [w["definition"]["title"] for w in dashboard.body["widgets"]]
    for wanted in ("Fleet", "Services", "Deployments", "Failures", "Container instances"):
        assert any(g.startswith(wanted) for g in groups), wanted
    assert any("Load balancers" in g for g in groups)
    assert "ecswatch health" in groups
    names = metric_names(json.dumps(dashboard.body))
    for needed in ("self.event_lag", "self.outbox.oldest_age", "self.aws_throttles"):
        assert needed in names
    keys = {w.key for w in load_assets() if w.kind is Kind.MONITOR}
    assert keys == {
        "deployment_failed",
        "task_crash_loop",
        "service_below_desired",
        "alb_unhealthy_targets",
        "consumer_lag",
        "heartbeat_stale",
        "scope_heartbeat_stale",
        "scope_failing",
        "no_poller_leader",
        "outbox_backlog",
        "outbox_dead_rows",
        "webhook_failures",
    }


def test_assets_follow_the_metric_prefix() -> None:
    for item in load_assets("acme.ecs."):
        text = json.dumps(item.body)
        assert "ecswatch.tasks" not in text
        assert "ecswatch.service." not in text
        assert "ecswatch.self." not in text
    [dashboard] = [w for w in load_assets("acme.ecs.") if w.kind is Kind.DASHBOARD]
    assert "sum:acme.ecs.service.running{" in json.dumps(dashboard.body)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], [("create", "m")]),
        ([Existing(Kind.MONITOR, "m", "1", {"query": "q", "extra": 1})], [("unchanged", "m")]),
        ([Existing(Kind.MONITOR, "m", "1", {"query": "old"})], [("update", "m")]),
        (
            [
                Existing(Kind.MONITOR, "m", "7", {"query": "q"}),
                Existing(Kind.MONITOR, "m", "12", {}),
            ],
            [("duplicate", "m"), ("unchanged", "m")],
        ),
        ([Existing(Kind.DASHBOARD, "m", "1", {"query": "q"})], [("create", "m")]),
    ],
)
def test_plan_table(existing: list[Existing], expected: list[tuple[str, str]]) -> None:
    wanted = [Wanted(Kind.MONITOR, "m", "M", {"query": "q"})]
    assert _verbs(plan(wanted, existing)) == expected


@pytest.mark.parametrize(
    ("have", "verb"),
    [
        # What Datadog adds or normalises on its side is not a change.
        ({"query": "a  >  1", "tags": ["y", "x"], "options": {"t": 1.0, "d": 60}}, "unchanged"),
        ({"query": "a > 1", "tags": ["x", "y"], "options": {"t": 1}, "id": 5}, "unchanged"),
        # A field install owns that differs is.
        ({"query": "a > 2", "tags": ["x", "y"], "options": {"t": 1}}, "update"),
        ({"query": "a > 1", "tags": ["x"], "options": {"t": 1}}, "update"),
        ({"query": "a > 1", "tags": ["x", "y"], "options": {"t": 2}}, "update"),
    ],
)
def test_install_compares_only_the_fields_it_owns(have: dict[str, Any], verb: str) -> None:
    wanted = [
        Wanted(Kind.MONITOR, "m", "M", {"query": "a > 1", "tags": ["x", "y"], "options": {"t": 1}})
    ]
    [action] = plan(wanted, [Existing(Kind.MONITOR, "m", "1", have)])
    assert action.verb.value == verb
