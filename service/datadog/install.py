"""``ecswatch datadog install [--dry-run]``: the dashboard and monitors, as code.

Their JSON lives in ``service/datadog/assets`` (shipped in the wheel). Each is
found again by its managed marker, never by its title: monitors by the tags
``managed_by:ecswatch`` and ``ecswatch_id:<key>``; the dashboard (whose tags
Datadog reserves for ``team:`` owners) by ``[managed_by:ecswatch
ecswatch_id:<key>]`` in its description. Absent: created. Present and
different: updated in place. Present and equal: left alone. Found twice:
the oldest is updated and the others are reported, never deleted.

The plan is a pure function of what exists and what is wanted; ``--dry-run``
prints it and changes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

from datadog_api_client import AsyncApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.model_utils import validate_and_convert_types
from datadog_api_client.v1.api.dashboards_api import DashboardsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.monitor_update_request import MonitorUpdateRequest

from service.config import Settings
from service.datadog.metrics import REGISTRY
from service.errors import ConfigError, EcswatchError

MANAGED_TAG = "managed_by:ecswatch"
DEFAULT_PREFIX = "ecswatch."
_MARKER = re.compile(r"\[managed_by:ecswatch ecswatch_id:([a-z0-9_]+)\]")
# Metric names in the assets are written with the default prefix.
_METRIC = re.compile(
    re.escape(DEFAULT_PREFIX)
    + "("
    + "|".join(re.escape(n) for n in sorted((s.value for s in REGISTRY), key=len, reverse=True))
    + r")(?![a-z0-9_])"
)
_ANY_METRIC = re.compile(re.escape(DEFAULT_PREFIX) + r"([a-z0-9_]+(?:\.[a-z0-9_]+)*)")


class Kind(StrEnum):
    DASHBOARD = "dashboard"
    MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class Wanted:
    """One managed object as the repository describes it."""

    kind: Kind
    key: str
    title: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Existing:
    """One managed object found in Datadog (its body as fetched)."""

    kind: Kind
    key: str
    id: str
    body: dict[str, Any]


class Verb(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    DUPLICATE = "duplicate"  # found more than once: reported, left alone


@dataclass(frozen=True, slots=True)
class Action:
    """What install does (or would do) about one object."""

    verb: Verb
    kind: Kind
    key: str
    title: str
    id: str | None = None
    body: dict[str, Any] | None = None

    def describe(self) -> str:
        where = f" ({self.id})" if self.id else ""
        return f"{self.verb.value} {self.kind.value} {self.title!r}{where}"


def metric_names(text: str) -> set[str]:
    """Unprefixed metric names a query text names (written with the default prefix)."""
    return set(_ANY_METRIC.findall(text))


def with_prefix(body: Any, prefix: str) -> Any:
    """``body`` with every registered metric name moved to ``prefix``."""
    if prefix == DEFAULT_PREFIX:
        return body
    encoded = _METRIC.sub(lambda m: prefix + m.group(1), json.dumps(body))
    return json.loads(encoded)


def load_assets(prefix: str = DEFAULT_PREFIX) -> list[Wanted]:
    """The dashboard and monitors of the repository, for ``prefix``."""
    folder = resources.files("service.datadog").joinpath("assets")
    dashboard = json.loads(folder.joinpath("dashboard_overview.json").read_text("utf-8"))
    found = _MARKER.search(dashboard.get("description", ""))
    if found is None:
        raise ValueError("dashboard_overview.json has no managed marker in its description")
    wanted = [Wanted(Kind.DASHBOARD, found[1], dashboard["title"], with_prefix(dashboard, prefix))]
    for entry in json.loads(folder.joinpath("monitors.json").read_text("utf-8")):
        monitor = with_prefix(entry["monitor"], prefix)
        wanted.append(Wanted(Kind.MONITOR, entry["key"], monitor["name"], monitor))
    return wanted


#: The fields install writes, per kind: only these are compared with what Datadog holds.
#: Datadog adds its own (ids, authors, dates, option defaults) and may reorder tags.
OWNED_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.DASHBOARD: ("title", "description", "layout_type", "template_variables", "widgets"),
    Kind.MONITOR: ("name", "type", "query", "message", "tags", "priority", "options"),
}
_SPACES = re.compile(r"\s+")


def owned(kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``body`` install writes for ``kind``, in a canonical form.

    Tags are a set (compared sorted); query texts compare with their whitespace
    collapsed, as Datadog stores a monitor query without the spacing it was sent with.
    """
    return {k: _canonical(k, body[k]) for k in OWNED_FIELDS[kind] if k in body}


def _canonical(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(k, v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_canonical(key, v) for v in value]
        if key == "tags" and all(isinstance(v, str) for v in items):
            return sorted(items)
        return items
    if key == "query" and isinstance(value, str):
        return _SPACES.sub(" ", value).strip()
    return value


def _contains(have: Any, want: Any) -> bool:
    """True when everything in ``want`` is in ``have`` (the server adds defaults and ids)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_contains(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)


def unchanged(kind: Kind, have: dict[str, Any], want: dict[str, Any]) -> bool:
    """True when Datadog's copy holds every field install owns, as wanted."""
    return _contains(owned(kind, have), owned(kind, want))


def plan(wanted: list[Wanted], existing: list[Existing]) -> list[Action]:
    """What to do to make Datadog hold ``wanted`` (pure)."""
    actions: list[Action] = []
    for item in wanted:
        found = sorted(
            (e for e in existing if e.kind is item.kind and e.key == item.key),
            key=lambda e: (len(e.id), e.id),
        )
        if not found:
            actions.append(Action(Verb.CREATE, item.kind, item.key, item.title, body=item.body))
            continue
        first, *others = found
        verb = Verb.UNCHANGED if unchanged(item.kind, first.body, item.body) else Verb.UPDATE
        actions.append(Action(verb, item.kind, item.key, item.title, first.id, item.body))
        for other in others:
            actions.append(Action(Verb.DUPLICATE, item.kind, item.key, item.title, other.id))
    return actions


async def _aw(call: Any) -> Any:
    """Await a client call: with AsyncApiClient the (sync-typed) methods return awaitables."""
    return await call


def _model(body: dict[str, Any], model: type[Any], config: Configuration) -> Any:
    return validate_and_convert_types(body, (model,), ["body"], True, True, config)  # type: ignore[no-untyped-call]


def _plain(model: Any) -> dict[str, Any]:
    value = model.to_dict() if hasattr(model, "to_dict") else model
    plain: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return plain


async def _existing(client: AsyncApiClient) -> list[Existing]:
    found: list[Existing] = []
    dashboards = DashboardsApi(client)  # type: ignore[no-untyped-call]
    summary = await _aw(dashboards.list_dashboards(filter_shared=False))
    for item in summary.dashboards or []:
        marker = _MARKER.search(getattr(item, "description", None) or "")
        if marker is not None:
            full = await _aw(dashboards.get_dashboard(item.id))
            found.append(Existing(Kind.DASHBOARD, marker[1], str(item.id), _plain(full)))
    monitors = MonitorsApi(client)  # type: ignore[no-untyped-call]
    for monitor in await _aw(monitors.list_monitors(monitor_tags=MANAGED_TAG)):
        keys = [t.split(":", 1)[1] for t in monitor.tags or [] if t.startswith("ecswatch_id:")]
        if keys:
            found.append(Existing(Kind.MONITOR, keys[0], str(monitor.id), _plain(monitor)))
    return found


def _configuration(settings: Settings) -> Configuration:
    if not settings.datadog_enabled:
        raise ConfigError("datadog install needs DD_API_KEY (and DD_APP_KEY)")
    if settings.dd_app_key is None or not settings.dd_app_key.get_secret_value():
        raise ConfigError("datadog install needs DD_APP_KEY: dashboards and monitors need it")
    assert settings.dd_api_key is not None
    config = Configuration(host=settings.datadog_base_url)  # type: ignore[no-untyped-call]
    config.api_key["apiKeyAuth"] = settings.dd_api_key.get_secret_value()
    config.api_key["appKeyAuth"] = settings.dd_app_key.get_secret_value()
    config.enable_retry = True  # a one-shot command: the client's own backoff is fine here
    return config


async def install(settings: Settings, *, dry_run: bool = False) -> list[Action]:
    """Plan, and unless ``dry_run`` apply, the managed dashboard and monitors."""
    config = _configuration(settings)
    wanted = load_assets(settings.metric_prefix)
    try:
        async with AsyncApiClient(config) as client:
            actions = plan(wanted, await _existing(client))
            if dry_run:
                return actions
            applied: list[Action] = []
            for action in actions:
                applied.append(await _apply(client, action, config))
            return applied
    except ApiException as exc:
        raise EcswatchError(f"Datadog answered HTTP {exc.status}: {exc.reason}") from exc


async def _apply(client: AsyncApiClient, action: Action, config: Configuration) -> Action:
    if action.verb in (Verb.UNCHANGED, Verb.DUPLICATE) or action.body is None:
        return action
    if action.kind is Kind.DASHBOARD:
        api = DashboardsApi(client)  # type: ignore[no-untyped-call]
        body = _model(action.body, Dashboard, config)
        if action.verb is Verb.CREATE:
            created = await _aw(api.create_dashboard(body=body))
            return Action(action.verb, action.kind, action.key, action.title, str(created.id))
        await _aw(api.update_dashboard(str(action.id), body=body))
        return action
    monitors = MonitorsApi(client)  # type: ignore[no-untyped-call]
    if action.verb is Verb.CREATE:
        created = await _aw(monitors.create_monitor(body=_model(action.body, Monitor, config)))
        return Action(action.verb, action.kind, action.key, action.title, str(created.id))
    update = _model(action.body, MonitorUpdateRequest, config)
    await _aw(monitors.update_monitor(int(action.id or 0), body=update))
    return action
