"""Scopes: the (account, region) pairs ecswatch watches, and their clients.

A scope is one account in one region. The accounts come from
``ECSWATCH_ACCOUNTS`` (each with the role ecswatch assumes there), from
``organizations:ListAccounts`` when ``ECSWATCH_ORGANIZATION_ROLE_NAME`` is set
(active accounts only, asked again by :meth:`AwsScopes.refresh_accounts`), or,
by default, the credentials' own account (``sts:GetCallerIdentity``, once, with
the process's own credentials and no role). The regions come from
``ECSWATCH_REGIONS``, else ``AWS_REGION``.

Credentials of an account with a role are botocore's refreshable credentials
(:class:`AioDeferredRefreshableCredentials`): the first call assumes the role
(``sts:AssumeRole`` with ``ECSWATCH_EXTERNAL_ID`` and a ``RoleSessionName``
starting ``ecswatch``), and botocore assumes it again before the credentials
expire (its advisory and mandatory windows, 15 and 10 minutes). The accounts'
sessions share the process session's loader of service models. Each scope gets
one client per service, created on first use and closed with the runtime; all
scopes share one :class:`~service.aws.limiter.Limiter`, whose buckets are keyed
by account and region, so a throttled scope slows only itself.

See docs/aws.md, "Accounts and regions".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from aiobotocore.credentials import AioCredentialResolver, AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession
from botocore.credentials import CredentialProvider

from service.aws.apis import AwsApis, build_aws_apis
from service.aws.backoff import Backoff
from service.aws.calls import AwsCaller, AwsCallFailed, error_code
from service.aws.events import EventsApi
from service.aws.limiter import Limiter
from service.events.arns import parse_arn, partition_of
from service.logging import get_logger

log = get_logger(__name__)

#: Services whose clients a scope holds.
SCOPED_SERVICES = ("ecs", "cloudwatch", "elbv2", "codedeploy")
#: How long an assumed role's credentials last (AssumeRole's default and minimum is 900).
SESSION_DURATION_S = 3600
#: Seconds one STS or Organizations call may take.
CALL_TIMEOUT_S = 20.0
#: Tries of GetCallerIdentity or ListAccounts at start-up before giving up.
START_ATTEMPTS = 6
#: Account ids ListAccounts may return at most (a bound on the input).
MAX_ACCOUNTS = 10_000

_SAFE_SESSION = re.compile(r"[^\w+=,.@-]")


@dataclass(frozen=True, order=True, slots=True)
class Scope:
    """One account in one region."""

    account: str
    region: str

    def __str__(self) -> str:
        return f"{self.account}/{self.region}"


def scope_of_arn(arn: str | None) -> Scope | None:
    """The scope an ARN names (its account and region); None for no ARN or a global one."""
    parsed = parse_arn(arn)
    if parsed is None or not parsed.account or not parsed.region:
        return None
    return Scope(parsed.account, parsed.region)


def session_name(account: str) -> str:
    """``RoleSessionName`` of ecswatch's sessions: starts ``ecswatch``, at most 64 chars."""
    return _SAFE_SESSION.sub("-", f"ecswatch-{account}")[:64]


ClientKwargs = Callable[[str], dict[str, Any]]
TimeFetcher = Callable[[], datetime]


def _list_accounts(org: Any, *, kwargs: dict[str, Any]) -> Any:
    return org.list_accounts(**kwargs)


class _Provides(CredentialProvider):
    """A credential provider that hands botocore one credentials object."""

    METHOD = "ecswatch-assume-role"
    CANONICAL_NAME = "ecswatch-assume-role"

    def __init__(self, credentials: Any) -> None:
        super().__init__()
        self._credentials = credentials

    async def load(self) -> Any:
        return self._credentials


class AwsScopes:
    """The scopes, their credentials and their adapters; see the module docstring."""

    def __init__(
        self,
        *,
        session: AioSession,
        stack: AsyncExitStack,
        client_kwargs: ClientKwargs,
        regions: Iterable[str],
        roles: dict[str, str] | None = None,
        organization_role_name: str | None = None,
        external_id: str | None = None,
        limiter: Limiter | None = None,
        time_fetcher: TimeFetcher | None = None,
    ) -> None:
        self._session = session
        self._stack = stack
        self._client_kwargs = client_kwargs
        self._regions = tuple(dict.fromkeys(regions))
        self._fixed_roles = dict(roles or {})
        self._organization_role = organization_role_name
        self._external_id = external_id
        self.limiter = limiter or Limiter()
        self._time_fetcher = time_fetcher
        #: account -> the role assumed there (None: the process's own credentials).
        self.roles: dict[str, str | None] = {}
        self.home_account: str | None = None
        self._sessions: dict[str, AioSession] = {}
        self._apis: dict[Scope, AwsApis] = {}
        self._events: dict[Scope, EventsApi] = {}
        self._home_clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        #: How many times each account's role was assumed (refreshes included).
        self.assumed: dict[str, int] = {}

    # ------------------------------------------------------------- the scopes
    @property
    def regions(self) -> tuple[str, ...]:
        return self._regions

    @property
    def scopes(self) -> list[Scope]:
        """Every watched scope, in a stable order."""
        return sorted(Scope(a, r) for a in self.roles for r in self._regions)

    @property
    def home(self) -> Scope:
        """The scope of the process's own account in the first region (else the first)."""
        for region in self._regions:
            if self.home_account in self.roles:
                return Scope(self.home_account or "", region)
        return self.scopes[0]

    def monitors(self, scope: Scope) -> bool:
        return scope.account in self.roles and scope.region in self._regions

    async def start(self) -> None:
        """Find the accounts: configured, discovered, or the credentials' own.

        STS or Organizations failing at start-up is retried with the one backoff
        (0.5 s to 30 s, ``START_ATTEMPTS`` times) before the error is raised.
        """
        if not self._regions:
            region = self._session.get_config_variable("region") or "us-east-1"
            self._regions = (str(region),)
        if self._fixed_roles:
            self.roles = dict(self._fixed_roles)
        else:
            backoff = Backoff(initial=0.5, cap=30.0)
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    await self._find_accounts()
                    break
                except AwsCallFailed as exc:
                    if attempt == START_ATTEMPTS:
                        raise
                    log.warning("scopes_not_found_yet", attempt=attempt, error=str(exc)[:300])
                    await backoff.sleep()
        log.info("scopes", accounts=len(self.roles), regions=list(self._regions))

    async def _find_accounts(self) -> None:
        if self._organization_role:
            await self.refresh_accounts()
            return
        identity = await self._home_call(
            "sts", "GetCallerIdentity", lambda sts: sts.get_caller_identity()
        )
        self.home_account = str(identity["Account"])
        self.roles = {self.home_account: None}

    async def refresh_accounts(self, now: datetime | None = None) -> int:
        """Organization discovery: the active accounts of ``organizations:ListAccounts``."""
        if not self._organization_role:
            return len(self.roles)
        accounts: list[dict[str, Any]] = []
        token: str | None = None
        while len(accounts) < MAX_ACCOUNTS:
            kwargs: dict[str, Any] = {"NextToken": token} if token else {}
            page = await self._home_call(
                "organizations", "ListAccounts", partial(_list_accounts, kwargs=kwargs)
            )
            accounts.extend(page.get("Accounts", []))
            token = page.get("NextToken")
            if not token:
                break
        active = sorted(
            str(a["Id"]) for a in accounts if a.get("Status") == "ACTIVE" and a.get("Id")
        )
        # Settings refuse regions of several partitions: the first region's is every one's.
        partition = partition_of(self._regions[0]) if self._regions else "aws"
        roles: dict[str, str | None] = {}
        for account in active:
            roles[account] = f"arn:{partition}:iam::{account}:role/{self._organization_role}"
        self.roles = roles
        log.info("accounts_discovered", accounts=len(roles))
        return len(roles)

    # ---------------------------------------------------------- the adapters
    async def apis(self, scope: Scope) -> AwsApis | None:
        """The adapters of ``scope`` (clients made once, reused); None when not watched."""
        if not self.monitors(scope):
            return None
        apis = self._apis.get(scope)
        if apis is not None:  # the common case: no wait behind another scope's clients
            return apis
        async with self._lock:
            apis = self._apis.get(scope)
            if apis is None:
                session = self._session_of(scope.account)
                kwargs = self._client_kwargs(scope.region)
                clients: dict[str, Any] = {}
                for service in SCOPED_SERVICES:
                    creator: Any = session.create_client(service, **kwargs)  # type: ignore[call-overload]
                    clients[service] = await self._stack.enter_async_context(creator)
                caller = AwsCaller(self.limiter, account=scope.account, region=scope.region)
                apis = self._apis[scope] = build_aws_apis(
                    clients, region=scope.region, caller=caller
                )
            return apis

    async def events(self, scope: Scope) -> EventsApi | None:
        """EventBridge writes in ``scope`` with its credentials (the scope's heartbeat,
        service.poller.heartbeat), through the scope's caller; None when not watched."""
        apis = await self.apis(scope)
        if apis is None:
            return None
        async with self._lock:
            events = self._events.get(scope)
            if events is None:
                session = self._session_of(scope.account)
                creator: Any = session.create_client("events", **self._client_kwargs(scope.region))
                client = await self._stack.enter_async_context(creator)
                events = self._events[scope] = EventsApi(client, apis.caller)
            return events

    def _session_of(self, account: str) -> AioSession:
        role = self.roles.get(account)
        if role is None:
            return self._session
        session = self._sessions.get(account)
        if session is None:
            kwargs: dict[str, Any] = {}
            if self._time_fetcher is not None:
                kwargs["time_fetcher"] = self._time_fetcher
            credentials = AioDeferredRefreshableCredentials(
                refresh_using=self._refresher(account), method="assume-role", **kwargs
            )
            session = AioSession()
            session.register_component(
                "credential_provider", AioCredentialResolver([_Provides(credentials)])
            )
            # One loader for every account: each session would otherwise parse the
            # service models again, CPU that holds the event loop from every scope.
            session.register_component("data_loader", self._session.get_component("data_loader"))
            self._sessions[account] = session
        return session

    def _refresher(self, account: str) -> Callable[[], Any]:
        async def refresh() -> dict[str, Any]:
            role = self.roles.get(account)
            if role is None:
                raise AwsCallFailed(f"account {account} is no longer watched")
            request: dict[str, Any] = {
                "RoleArn": role,
                "RoleSessionName": session_name(account),
                "DurationSeconds": SESSION_DURATION_S,
            }
            if self._external_id:
                request["ExternalId"] = self._external_id
            answer = await self._home_call(
                "sts", "AssumeRole", lambda sts: sts.assume_role(**request)
            )
            self.assumed[account] = self.assumed.get(account, 0) + 1
            credentials = answer["Credentials"]
            expiration = credentials["Expiration"]
            return {
                "access_key": credentials["AccessKeyId"],
                "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"],
                "expiry_time": expiration.isoformat()
                if isinstance(expiration, datetime)
                else str(expiration),
            }

        return refresh

    async def _home_call(self, service: str, operation: str, call: Callable[[Any], Any]) -> Any:
        """One STS or Organizations call with the process's own credentials."""
        client = self._home_clients.get(service)
        if client is None:
            creator: Any = self._session.create_client(  # type: ignore[call-overload]
                service, **self._client_kwargs(self._regions[0] if self._regions else "us-east-1")
            )
            client = self._home_clients[service] = await self._stack.enter_async_context(creator)
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                return await call(client)
        except AwsCallFailed:
            raise
        except Exception as exc:
            raise AwsCallFailed(
                f"{service}:{operation} failed: {type(exc).__name__}: {exc}"[:500],
                code=error_code(exc),
            ) from exc
