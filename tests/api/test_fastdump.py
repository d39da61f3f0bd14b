"""Answers without pydantic (service.api.fastdump) are the answers pydantic would give.

Two sides: every GET route, on rows written by the real pipeline from every
AWS sample plus the API seeds, answers the same JSON with the fast paths (rows
read straight from asyncpg, answered without pydantic) and without them (and
the fast paths do answer the main routes); and for any row,
generated or mangled, the fast path either answers what pydantic answers or
declines.
"""

from __future__ import annotations

import copy
import enum
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Union, get_args, get_origin
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api import fastdump, queries, schemas
from service.api.fastdump import FastDump, NotFast, static_fields
from service.api.routes import tasks as task_routes
from service.api.schemas import Task
from service.consumer.handler import Handler, Message
from service.runtime import Runtime
from tests.api import seed
from tests.api.conftest import ADMIN

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"

# Every model a GET route answers from rows (Webhook holds a filter object that
# FastDump does not take: it is always answered by pydantic).
MODELS: list[type[BaseModel]] = [
    getattr(schemas, name)
    for name in [
        "Alert",
        "Cluster",
        "ContainerInstance",
        "Deployment",
        "Event",
        "MetricPoint",
        "QuarantinedMessage",
        "Service",
        "ServiceDetail",
        "Task",
        "WebhookDelivery",
    ]
]


def _pydantic(model: type[BaseModel], row: dict[str, Any]) -> Any:
    adapter: TypeAdapter[Any] = TypeAdapter(model)
    return orjson.loads(adapter.dump_json(adapter.validate_python(row)))


# ---------------------------------------------------------------- routes, end to end


@pytest.fixture
async def everything(runtime: Runtime, engine: AsyncEngine) -> None:
    """Every AWS sample through the real handler, plus seeds for what events don't write."""
    bodies = [path.read_text() for path in sorted(SAMPLES.glob("*.json"))]
    assert len(bodies) > 20
    handler = Handler(runtime.sessionmaker)
    await handler.handle([Message(f"m{i}", body) for i, body in enumerate(bodies)])
    await handler.handle([Message("bad", '{"not": "an event"}')])  # quarantined
    await seed.insert_rows(engine, "clusters", [seed.cluster("prod")])
    await seed.insert_rows(engine, "services", [seed.service("prod", "web")])
    await seed.insert_rows(
        engine,
        "deployments",
        [seed.deployment("prod", "web", "ecs-svc/1", started_at=seed.at(0))],
    )


ROUTES = [
    "/v1/clusters",
    "/v1/services",
    "/v1/services/prod/web",
    "/v1/tasks",
    "/v1/tasks?limit=2",
    "/v1/container-instances",
    "/v1/deployments",
    "/v1/events",
    "/v1/events?limit=3",
    "/v1/metrics",
    "/v1/alerts",
    "/v1/quarantine",
]


async def _answers(client: httpx.AsyncClient, paths: list[str]) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for path in paths:
        response = await client.get(path, headers=ADMIN)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        answers[path] = response.json()
    return answers


async def test_every_route_answers_the_same_with_and_without_the_fast_path(
    everything: None, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = (await client.get("/v1/tasks?limit=1")).json()["items"][0]
    paths = [*ROUTES, f"/v1/tasks/{first['id']}", f"/v1/tasks/{quote(first['arn'], safe='')}"]

    fast: dict[str, int] = {}
    declined: dict[str, int] = {}
    item = FastDump.item

    def counting(self: FastDump, row: dict[str, Any]) -> dict[str, Any]:
        name = self.model.__name__
        try:
            answer = item(self, row)
        except NotFast:
            declined[name] = declined.get(name, 0) + 1
            raise
        fast[name] = fast.get(name, 0) + 1
        return answer

    direct_reads: list[str] = []
    compile_direct = queries.direct_form

    def recording(stmt: Any, dialect: Any) -> Any:
        direct = compile_direct(stmt, dialect)
        if direct is not None:
            direct_reads.append(direct.sql)
        return direct

    monkeypatch.setattr(FastDump, "item", counting)
    monkeypatch.setattr(queries, "direct_form", recording)
    with_fast = await _answers(client, paths)

    def never(self: FastDump, row: dict[str, Any]) -> dict[str, Any]:
        raise NotFast

    # The reference: pydantic for every answer, SQLAlchemy's execution for every read.
    monkeypatch.setattr(FastDump, "item", never)
    monkeypatch.setattr(queries, "direct_form", lambda stmt, dialect: None)
    without = await _answers(client, paths)

    for path in paths:
        assert with_fast[path] == without[path], path
    # The rows the pipeline and the seeds wrote take the fast path, all of them.
    assert declined == {}
    for model in ("Task", "Event", "Service", "Cluster", "ContainerInstance", "Deployment"):
        assert fast.get(model, 0) > 0, (model, fast)
    assert sum(len(answer.get("items", [answer])) for answer in with_fast.values()) > 50
    # ...and were read straight from the driver.
    assert direct_reads


async def test_a_row_the_model_would_reshape_takes_the_validated_path(
    everything: None, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """A container with a key the model does not show: the whole page goes through pydantic."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        arn = (await conn.execute(text("SELECT arn FROM tasks ORDER BY arn LIMIT 1"))).scalar_one()
        await conn.execute(
            text(
                "UPDATE tasks SET containers = "
                """'[{"name": "app", "extra": 1, "exitCode": 2, "exit_code": "137"}]'::jsonb"""
                " WHERE arn = :arn"
            ),
            {"arn": arn},
        )
    page = (await client.get("/v1/tasks")).json()
    mine = next(task for task in page["items"] if task["arn"] == arn)
    assert mine["containers"] == [
        {"name": "app", "last_status": None, "exit_code": 137, "reason": None, "image": None}
    ]
    one = (await client.get(f"/v1/tasks/{quote(arn, safe='')}")).json()
    assert one["containers"] == mine["containers"]


# ---------------------------------------------------------------- any row


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(-1e9, 1e9) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def _values(annotation: Any) -> st.SearchStrategy[Any]:
    """Valid values of a field type, as the database (asyncpg, JSONB decoding) gives them."""
    if get_origin(annotation) in (Union, types.UnionType):
        return st.one_of(*(_values(arg) for arg in get_args(annotation)))
    if annotation is type(None):
        return st.none()
    if annotation is Any:
        return _JSON
    if annotation is str:
        return st.text(max_size=20)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-(2**63), 2**63 - 1)
    if annotation is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if annotation is datetime:
        return st.datetimes(timezones=st.just(UTC))
    if isinstance(annotation, type) and issubclass(annotation, enum.StrEnum):
        return st.sampled_from([member.value for member in annotation])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _rows(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), _values(args[1]), max_size=3)
    if origin is list:
        return st.lists(_values(args[0]), max_size=3)
    raise AssertionError(f"no strategy for {annotation!r}")


def _rows(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {name: _values(field.annotation) for name, field in model.model_fields.items()}
    )


def _dumped(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Rows as the database would hand them over, valid for the model."""
    return _rows(model)


_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.just("137"),
    st.just(datetime(2025, 1, 1, 12, 0)),  # naive
    st.just(datetime(2025, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just([{"name": "x", "extra": 1}]),
)


def _mangle(row: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Change one value, drop a key or add one: something pydantic may reshape or refuse."""
    row = dict(row)
    action = data.draw(st.sampled_from(["set", "drop", "add"]))
    key = data.draw(st.sampled_from(sorted(row)))
    if action == "set":
        row[key] = data.draw(_ODD_VALUES)
    elif action == "drop":
        del row[key]
    else:
        row["unexpected"] = data.draw(_ODD_VALUES)
    return row


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_row_is_answered_as_pydantic_would_or_declined(
    model: type[BaseModel], data: st.DataObject
) -> None:
    fast = FastDump(model)
    assert fast.supported, model.__name__
    row = data.draw(_dumped(model))
    if data.draw(st.booleans()):
        row = _mangle(row, data)
    original = copy.deepcopy(row)
    try:
        answer = fast.one(row)
    except NotFast:
        return  # pydantic answers it (or refuses it) as before
    # The fast path answered: pydantic must agree, value for value.
    assert orjson.loads(answer) == _pydantic(model, original)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_rows_take_the_fast_path(model: type[BaseModel], data: st.DataObject) -> None:
    """Without this, a fast path that always declined would pass the test above."""
    row = data.draw(_dumped(model))
    answer = FastDump(model).one(copy.deepcopy(row))
    assert orjson.loads(answer) == _pydantic(model, row)


def test_what_the_fast_path_declines() -> None:
    fast = FastDump(Task)
    row = Task.model_validate(seed_task()).model_dump()
    assert orjson.loads(fast.one(row)) == _pydantic(Task, row)
    declined: list[Callable[[dict[str, Any]], None]] = [
        lambda r: r.update(unexpected=1),  # a key the model does not show
        lambda r: r.pop("cpu"),  # a key it fills with its default
        lambda r: r.update(revision="42"),  # a value pydantic converts
        lambda r: r.update(revision=True),
        lambda r: r.update(revision=2**64),  # beyond what orjson writes
        lambda r: r.update(created_at=datetime(2025, 1, 1)),  # naive
        lambda r: r.update(tags={"team": 1}),
        lambda r: r.update(containers=[{**r["containers"][0], "exit_code": "1"}]),
        lambda r: r.update(containers={"name": "app"}),
        lambda r: r.update(arn=None),
    ]
    for change in declined:
        mangled = copy.deepcopy(row)
        change(mangled)
        with pytest.raises(NotFast):
            fast.one(mangled)
    # A container as ecswatch stores it (more keys than the model shows), or
    # with keys missing: the model's own fields, as pydantic answers them.
    stored = {**row["containers"][0], "container_arn": "arn:…", "runtime_id": "r", "cpu": "0"}
    for containers in ([stored], [{"name": "app"}], []):
        changed = {**copy.deepcopy(row), "containers": containers}
        expected = _pydantic(Task, copy.deepcopy(changed))
        assert orjson.loads(fast.one(changed)) == expected


def seed_task() -> dict[str, Any]:
    at = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
    return {
        "arn": "arn:aws:ecs:us-east-1:123456789012:task/prod/abc",
        "id": "abc",
        "cluster": "prod",
        "cluster_arn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
        "service": "web",
        "service_arn": "arn:aws:ecs:us-east-1:123456789012:service/prod/web",
        "family": "web",
        "revision": 3,
        "launch_type": "FARGATE",
        "last_status": "STOPPED",
        "desired_status": "STOPPED",
        "health_status": None,
        "stop_code": "EssentialContainerExited",
        "stopped_reason": "Essential container in task exited",
        "version": 4,
        "container_instance_arn": None,
        "availability_zone": "us-east-1a",
        "containers": [
            {"name": "app", "last_status": "STOPPED", "exit_code": 1, "reason": None, "image": "x"}
        ],
        "tags": {"team": "web"},
        "tags_known": True,
        "created_at": at,
        "started_at": at,
        "stopped_at": at,
        "updated_at": at,
        "task_definition_arn": None,
        "cpu": "256",
        "memory": "512",
        "gone_at": None,
    }


def test_unsupported_field_types_never_take_the_fast_path() -> None:
    class Odd(BaseModel):
        values: set[int]

    fast = FastDump(Odd)
    assert not fast.supported
    with pytest.raises(NotFast):
        fast.one({"values": {1}})


def test_static_fields_are_proven_by_column_types() -> None:
    proven = static_fields(Task, task_routes.LIST._select.selected_columns)
    # Nullable text, integer and timestamptz columns of the table...
    assert {"family", "revision", "stopped_at", "cluster", "availability_zone"} <= proven
    # ...but not JSONB, not fields that must not be null, not expressions of unknown type.
    assert not {"containers", "tags", "arn", "id", "tags_known"} & proven


def test_orjson_refusals_fall_back() -> None:
    with pytest.raises(NotFast):
        fastdump.dumps({"n": 2**70})
    with pytest.raises(NotFast):
        fastdump.dumps({"s": "\ud800"})


def test_pydantic_refuses_what_the_fast_path_refuses() -> None:
    """A non-optional field holding null: the fast path declines and pydantic refuses."""
    row = Task.model_validate(seed_task()).model_dump()
    row["arn"] = None
    with pytest.raises(NotFast):
        FastDump(Task).one(row)
    with pytest.raises(ValidationError):
        Task.model_validate(row)
