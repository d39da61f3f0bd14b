"""The dashboard and monitors as datadog-api-client's models read them.

Each asset is deserialised with the client's own models and type checks on
(``check_type=True``), the way ``ecswatch datadog install`` sends it, and no field
the client marks **Deprecated** may be set anywhere in it: Datadog may rewrite a
deprecated field on read, and install would then see a change on every run.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from datadog_api_client import Configuration
from datadog_api_client.exceptions import ApiTypeError, ApiValueError
from datadog_api_client.model_utils import OpenApiModel, validate_and_convert_types
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.monitor_update_request import MonitorUpdateRequest
from datadog_api_client.v1.model.timeseries_widget_request import TimeseriesWidgetRequest

from service.datadog.install import Kind, load_assets

_DEPRECATED = re.compile(r":param (\w+):[^\n]*\*\*Deprecated\*\*")


def _model(body: dict[str, Any], model: type[Any]) -> Any:
    config = Configuration()  # type: ignore[no-untyped-call]
    return validate_and_convert_types(body, (model,), ["body"], True, True, config)  # type: ignore[no-untyped-call]


def deprecated_fields(model: type[Any]) -> set[str]:
    """The fields the client's model marks deprecated (in its documented parameters)."""
    return set(_DEPRECATED.findall(model.__init__.__doc__ or ""))


def deprecated_in_use(value: Any, path: str = "body") -> list[str]:
    """Paths of every deprecated field set in a deserialised model tree."""
    found: list[str] = []
    if isinstance(value, OpenApiModel):
        marked = deprecated_fields(type(value))
        store: dict[str, Any] = getattr(value, "_data_store", {})
        found += [f"{path}.{name}" for name in store if name in marked]
        for name, item in store.items():
            found += deprecated_in_use(item, f"{path}.{name}")
        for inner in getattr(value, "_composed_instances", None) or []:
            found += deprecated_in_use(inner, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += deprecated_in_use(item, f"{path}[{i}]")
    return found


def test_the_check_sees_the_fields_the_client_marks() -> None:
    # The check is only as good as its reading of the client: it must find `q`.
    assert "q" in deprecated_fields(TimeseriesWidgetRequest)
    old = _model({"q": "avg:system.load.1{*}"}, TimeseriesWidgetRequest)
    assert deprecated_in_use(old) == ["body.q"]


def test_dashboard_deserialises_with_no_deprecated_field() -> None:
    [dashboard] = [a for a in load_assets() if a.kind is Kind.DASHBOARD]
    model = _model(dashboard.body, Dashboard)
    assert deprecated_in_use(model) == []
    assert all(v.defaults == ["*"] for v in model.template_variables)


@pytest.mark.parametrize(
    "monitor", [a for a in load_assets() if a.kind is Kind.MONITOR], ids=lambda a: a.key
)
@pytest.mark.parametrize("model_type", [Monitor, MonitorUpdateRequest])
def test_monitor_deserialises_with_no_deprecated_field(monitor: Any, model_type: type) -> None:
    model = _model(monitor.body, model_type)
    assert deprecated_in_use(model) == []


def test_type_checking_refuses_a_wrong_type() -> None:
    [dashboard] = [a for a in load_assets() if a.kind is Kind.DASHBOARD]
    broken = {**dashboard.body, "widgets": "not a list"}
    with pytest.raises((ApiTypeError, ApiValueError)):
        _model(broken, Dashboard)
