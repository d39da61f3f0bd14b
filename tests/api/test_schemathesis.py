"""Schemathesis against the app's own OpenAPI: no 5xx, every response matches its schema.

The app runs in a real uvicorn server on a free port, in a thread with its own
event loop and runtime, because schemathesis drives it synchronously. Every GET
route is fuzzed, and the webhook routes with the admin token. The database is
seeded once so that list responses carry items to validate.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import text

from service.config import load_settings
from service.readiness import RoleStatus
from service.roles.api import serve_api
from service.runtime import Runtime, open_runtime
from service.schema import metadata
from tests.api import seed
from tests.api.conftest import ADMIN_TOKEN, READ_TOKEN
from tests.api.openapi_document import build_document

_TABLES = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)


async def _seed(runtime: Runtime) -> None:
    runtime_engine = runtime.engine
    async with runtime_engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    await seed.insert_rows(runtime_engine, "clusters", [seed.cluster("prod")])
    await seed.insert_rows(runtime_engine, "services", [seed.service("prod", "web")])
    await seed.insert_rows(
        runtime_engine,
        "tasks",
        [
            seed.task("prod", "t1"),
            seed.task("prod", "t2", last_status="STOPPED", stop_code="UserInitiated"),
        ],
    )
    await seed.insert_rows(
        runtime_engine, "container_instances", [seed.container_instance("prod", "ci1")]
    )
    await seed.insert_rows(
        runtime_engine, "deployments", [seed.deployment("prod", "web", "ecs-svc/1")]
    )
    await seed.insert_rows(runtime_engine, "raw_events", [seed.event("e1", 1)])
    await seed.insert_rows(runtime_engine, "metric_points", [seed.metric(1)])
    await seed.insert_rows(
        runtime_engine, "resource_tags", [seed.tags(seed.task_arn("prod", "t1"), {"team": "web"})]
    )
    await seed.insert_rows(
        runtime_engine,
        "alerts",
        [
            {
                "id": "a1",
                "type": "deployment.failed",
                "dedupe_key": "a1",
                "summary": "x",
                "payload": {},
            }
        ],
    )
    await seed.insert_rows(
        runtime_engine, "quarantine", [{"body_sha256": "x", "body": "{", "error": "not JSON"}]
    )
    await seed.insert_rows(
        runtime_engine,
        "webhook_subscriptions",
        [
            seed.webhook(
                runtime.settings,
                "wh_seeded",
                "https://93.184.215.14/",
                events=["deployment.failed"],
            )
        ],
    )


class ApiServer:
    """uvicorn serving the app in a thread of its own, until stopped."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.settings = load_settings(
            database_url=database_url,
            data_dir=data_dir,
            api_tokens=f"read:{READ_TOKEN},admin:{ADMIN_TOKEN}",
        )
        self.port: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="api-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        started: asyncio.Future[int] = self._loop.create_future()
        async with open_runtime(self.settings, pool_size=5) as runtime:
            await _seed(runtime)
            serving = asyncio.create_task(
                serve_api(
                    runtime,
                    self._stop,
                    host="127.0.0.1",
                    port=0,
                    roles=RoleStatus(running={"api": True}),
                    started=started,
                )
            )
            self.port = await started
            self._ready.set()
            await serving

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None or self.port is None:
            raise RuntimeError(f"the API server did not start: {self.error!r}")
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def api_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ApiServer(database_url, tmp_path_factory.mktemp("schemathesis"))
    try:
        yield server.start()
    finally:
        server.stop()


# The OpenAPI document does not depend on the runtime, so it is built at import
# time (schemathesis parametrizes at collection), from an app that never serves
# on a runtime that is never opened.
# (The lazy ``schemathesis.pytest.from_fixture`` loader fails on pytest 9.)
OPENAPI = build_document()
# The admin token through schemathesis' own auth config (not a fixed header), so
# that the cases that leave the Authorization header out really send none.
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {"auth": {"openapi": {"bearerAuth": {"bearer": ADMIN_TOKEN}}}}
)
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


# Values whose validity the schema cannot express: a cursor is opaque (a random
# string is rightly refused), and a webhook URL is judged by where its host
# resolves (the SSRF guard). Their own tests are in test_pagination.py and
# test_webhooks.py.
OPAQUE_PARAMS = {"cursor", "url"}


def accepts_schema_valid_data(ctx: object, response: Response, case: Case) -> None:
    """schemathesis' positive_data_acceptance, except 400s naming an opaque parameter."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return
    problem = response.json()
    if problem.get("param") not in OPAQUE_PARAMS:
        raise AssertionError(f"a schema-valid request was refused: {problem}")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: Case, api_url: str) -> None:
    case.call_and_validate(
        base_url=api_url,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[accepts_schema_valid_data],
    )
