"""Typed settings, read once from the environment and validated at start.

Every variable of docs/configuration.md lives here; nothing else in ecswatch reads
``os.environ``. A bad value stops the process with one line naming the variable.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.deployments.rows import group_key
from service.errors import ConfigError
from service.events.arns import partition_of

Scope = Literal["read", "admin"]
#: The roles one process can run (``ecswatch run --roles``).
ROLES = ("consumer", "poller", "dispatcher", "api")
#: Database pool size of a role that ECSWATCH_DB_POOL_SIZE does not name.
DEFAULT_DB_POOL_SIZE = 10
#: The dispatcher's lease must be at least this many delivery deadlines long.
LEASE_MARGIN = 2.0
_SCOPES: tuple[Scope, ...] = ("read", "admin")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One bearer token and the scope it grants (``admin`` implies ``read``)."""

    scope: Scope
    token: SecretStr


@dataclass(frozen=True, slots=True)
class ServiceRef:
    """A ``cluster/service`` pair that a CodeDeploy deployment group deploys to, with
    the service's ARN where it is known (names are unique only within a scope)."""

    cluster: str
    service: str
    arn: str | None = None


#: First parts of metric names that Datadog's integrations and Agent write under; a
#: prefix there would mix ecswatch's series into theirs (docs/metrics.md, "Names").
RESERVED_METRIC_NAMESPACES = frozenset(
    {
        "aws",
        "azure",
        "gcp",
        "ecs",
        "datadog",
        "dd",
        "trace",
        "system",
        "docker",
        "container",
        "containerd",
        "kubernetes",
        "kubernetes_state",
        "process",
        "runtime",
        "otel",
    }
)


#: ``arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME``: the role ecswatch assumes in an account.
ROLE_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov|aws-iso[a-z-]*):iam::(\d{12}):role/[\w+=,.@/-]{1,512}$"
)
#: An IAM role name (no path).
ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
ACCOUNT_ID = re.compile(r"^\d{12}$")
#: ``arn:PARTITION:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE``: a service in one scope.
SERVICE_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov|aws-iso[a-z-]*):ecs:([a-z0-9-]+):(\d{12})"
    r":service/([A-Za-z0-9_-]{1,255})/([A-Za-z0-9_-]{1,255})$"
)


def known_regions() -> frozenset[str]:
    """Every region botocore's bundled partition data names (read locally, no network)."""
    from botocore.loaders import create_loader

    loader = create_loader()
    regions: set[str] = set()
    for partition in loader.load_data("endpoints").get("partitions", []):
        regions.update(partition.get("regions", {}))
    try:
        for partition in loader.load_data("partitions").get("partitions", []):
            regions.update(partition.get("regions", {}))
    except Exception:  # older botocore without partitions.json: endpoints.json suffices
        pass
    return frozenset(regions)


def role_arn(account: str, role_name: str, partition: str = "aws") -> str:
    """The ARN of role ``role_name`` in ``account``."""
    return f"arn:{partition}:iam::{account}:role/{role_name}"


def _one_partition(regions: tuple[str, ...]) -> None:
    """Refuse regions of several partitions: IAM roles and credentials are each valid
    in one partition only (docs/aws.md, "Accounts and regions")."""
    first = partition_of(regions[0])
    for region in regions[1:]:
        if partition_of(region) != first:
            raise ValueError(
                f"{regions[0]} is in partition {first} and {region} in {partition_of(region)}:"
                " one ecswatch watches one partition (its roles and credentials are per"
                " partition); run one deployment per partition"
            )


def _split_csv(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


class Settings(BaseSettings):
    """ecswatch's configuration; see docs/configuration.md for each variable."""

    model_config = SettingsConfigDict(
        env_prefix="ECSWATCH_", case_sensitive=False, extra="ignore", frozen=True
    )

    database_url: str | None = None
    data_dir: Path = Path(".ecswatch")
    queue_url: str | None = None

    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL")
    )
    aws_region: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )

    dd_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("DD_API_KEY"))
    dd_app_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("DD_APP_KEY"))
    dd_site: str = Field(default="datadoghq.com", validation_alias=AliasChoices("DD_SITE"))
    datadog_url: str | None = None
    metric_prefix: str = "ecswatch."
    # Datadog forwarding (service.datadog): ECS tag keys forwarded; empty = all.
    datadog_tag_keys: Annotated[tuple[str, ...], NoDecode] = ()

    api_tokens: Annotated[tuple[ApiToken, ...], NoDecode] = ()
    # false: no /docs, /redoc or /openapi.json (they answer 404).
    api_docs: bool = True
    webhook_allow_private: bool = False

    metrics_interval_s: int = Field(default=60, ge=1, le=86_400)
    reconcile_interval_s: int = Field(default=600, ge=1, le=604_800)

    clusters: Annotated[tuple[str, ...], NoDecode] = ()
    codedeploy_groups: Annotated[dict[str, ServiceRef], NoDecode] = Field(default_factory=dict)
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Consumer tuning (not part of the contract's table; documented in configuration.md).
    receive_concurrency: int = Field(default=2, ge=1, le=64)
    max_in_flight: int = Field(default=200, ge=10, le=10_000)
    shutdown_grace_s: float = Field(default=20.0, gt=0, le=120)

    # Retention: history older than this is pruned by the poller's leader.
    retention_days: int = Field(default=30, ge=1, le=36_500)
    # ---- alerts and dispatcher (documented in configuration.md)
    dispatch_batch_size: int = Field(default=50, ge=1, le=1000)
    dispatch_poll_interval_s: float = Field(default=5.0, gt=0, le=3600)
    dispatch_lease_s: float = Field(default=60.0, ge=5, le=3600)
    dispatch_retry_base_s: float = Field(default=1.0, gt=0, le=600)
    dispatch_retry_budget_s: float = Field(default=3600.0, ge=3600, le=7 * 86_400)
    # One delivery's overall deadline (Standard Webhooks recommends 15 s); it must stay
    # well inside the lease (see _check_deadline_within_lease).
    webhook_timeout_s: float = Field(default=15.0, gt=0, le=300)
    # Deliveries in flight at once to one subscription; its other rows wait their turn.
    webhook_max_in_flight: int = Field(default=4, ge=1, le=64)
    # After POST /v1/webhooks/{id}/rotate-secret, deliveries carry signatures under the
    # new and the previous secret for this long.
    webhook_secret_overlap_s: float = Field(default=86_400.0, ge=0, le=30 * 86_400)
    # Keys of the encryption at rest, newest first (service/cipher.py).
    secret_key: SecretStr | None = None
    crashloop_tasks: int = Field(default=3, ge=1, le=1000)
    crashloop_window_s: float = Field(default=600.0, gt=0, le=86_400)
    stuck_after_s: float = Field(default=1800.0, ge=60, le=7 * 86_400)
    alert_cooldown_s: float = Field(default=900.0, ge=0, le=86_400)
    # Enrichment after commit (Describe calls for unknown tags and details).
    enrich: bool = True
    # ---- CodeDeploy checks of the poller's leader (configuration.md):
    # group mapping and BatchGetDeployments of in-progress CodeDeploy deployments.
    codedeploy_interval_s: int = Field(default=30, ge=1, le=3600)
    # Database pool per role (docs/configuration.md, docs/deploy.md "Sizing the
    # database"): "" = the default for every role.
    db_pool_size: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    # ---- the poller leader's heartbeat through the event path (configuration.md)
    heartbeat_interval_s: int = Field(default=120, ge=10, le=3600)

    # ---- the edge (docs/security.md; each documented in configuration.md)
    api_max_body_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    api_limit_concurrency: int = Field(default=1000, ge=10, le=100_000)
    metrics_port: int | None = Field(default=None, ge=1, le=65_535)
    database_sslmode: Literal["disable", "require", "verify-ca", "verify-full"] | None = None

    @field_validator("metrics_port", "database_sslmode", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    # ---- scopes: accounts and regions watched (docs/aws.md, "Accounts and regions").
    regions: Annotated[tuple[str, ...], NoDecode] = ()
    accounts: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    external_id: str | None = Field(default=None, min_length=2, max_length=1224)
    organization_role_name: str | None = None
    #: Scopes reconciled or polled at the same time within one round.
    scope_concurrency: int = Field(default=4, ge=1, le=64)

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from service.cipher import parse_keys

        parse_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _check_deadline_within_lease(self) -> Settings:
        # A batch's rows are leased while they are sent; a delivery that outlived the
        # lease would let another dispatcher send the same row at the same time.
        if self.webhook_timeout_s * LEASE_MARGIN > self.dispatch_lease_s:
            raise ValueError(
                f"must be at most 1/{LEASE_MARGIN:g} of ECSWATCH_DISPATCH_LEASE_S "
                f"({self.dispatch_lease_s:g} s)"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql+asyncpg://", "postgresql://", "postgres://")):
            raise ValueError("must be a postgresql+asyncpg:// URL")
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value.replace("postgres://", "postgresql://", 1))
            port = url.port  # parsed lazily by some drivers: force it here
        except (ArgumentError, ValueError) as exc:
            raise ValueError(f"not a valid database URL ({exc})") from None
        if port is not None and not 0 < port < 65536:
            raise ValueError("the port must be 1 to 65535")
        if not url.database:
            # Without one, the driver picks a database named after the OS user and
            # ecswatch would migrate and fill whatever it finds there.
            raise ValueError("name the database: postgresql+asyncpg://user@host:5432/DBNAME")
        # No host is fine: the driver then uses the local socket, as psql does.
        return value

    @field_validator("queue_url", "aws_endpoint_url", "datadog_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if not value.endswith("://") else value

    @field_validator("metric_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty: ecswatch's metrics need a namespace of their own")
        if not all(c.isascii() and (c.isalnum() or c in "._") for c in value):
            raise ValueError("may contain only letters, digits, '.' and '_'")
        if not value[0].isalpha():
            raise ValueError("must start with a letter")
        if not value.endswith("."):
            raise ValueError(f"must end with a dot (e.g. {value}.)")
        if ".." in value:
            raise ValueError("must not contain an empty part ('..')")
        first = value.split(".", 1)[0].lower()
        if first in RESERVED_METRIC_NAMESPACES:
            raise ValueError(
                f"must not start with {first}.: Datadog's own integrations write there"
            )
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: object) -> tuple[ApiToken, ...]:
        if isinstance(value, tuple) and all(isinstance(v, ApiToken) for v in value):
            return value
        tokens: list[ApiToken] = []
        for pair in _split_csv(value):
            scope, sep, token = pair.partition(":")
            if not sep or not token:
                raise ValueError(f"expected scope:token pairs, got {scope!r} without a token")
            if scope not in _SCOPES:
                raise ValueError(f"unknown scope {scope!r} (expected read or admin)")
            if len(token) < 16:
                raise ValueError("each token must be at least 16 characters")
            tokens.append(ApiToken(scope=scope, token=SecretStr(token)))
        return tuple(tokens)

    @field_validator("clusters", mode="before")
    @classmethod
    def _parse_clusters(cls, value: object) -> tuple[str, ...]:
        return tuple(_split_csv(value))

    @field_validator("datadog_tag_keys", mode="before")
    @classmethod
    def _parse_datadog_tag_keys(cls, value: object) -> tuple[str, ...]:
        return tuple(_split_csv(value))

    @field_validator("codedeploy_groups", mode="before")
    @classmethod
    def _parse_groups(cls, value: object) -> dict[str, ServiceRef]:
        if isinstance(value, dict):
            return value
        groups: dict[str, ServiceRef] = {}
        for pair in _split_csv(value):
            group, sep, target = pair.partition("=")
            app, slash, name = group.partition("/")
            if not (sep and slash and app and name):
                raise ValueError(
                    "expected application/group=cluster/service or"
                    f" application/group=<service ARN>, got {pair[:200]!r}"
                )
            if target.startswith("arn:"):
                # The group of the ARN's scope only, resolved to that very service.
                match = SERVICE_ARN.match(target)
                if match is None:
                    raise ValueError(f"malformed service ARN for {group}: {target[:200]!r}")
                if match.group(2) not in known_regions():
                    raise ValueError(f"unknown region {match.group(2)!r} in {target[:200]!r}")
                key = group_key(app, name, (match.group(3), match.group(2)))
                ref = ServiceRef(cluster=match.group(4), service=match.group(5), arn=target)
            else:
                cluster, slash2, service = target.partition("/")
                if not (slash2 and cluster and service):
                    raise ValueError(
                        "expected application/group=cluster/service or"
                        f" application/group=<service ARN>, got {pair[:200]!r}"
                    )
                key, ref = group_key(app, name), ServiceRef(cluster=cluster, service=service)
            if key in groups:
                raise ValueError(f"{group} is listed twice")
            groups[key] = ref
        return groups

    @field_validator("db_pool_size", mode="before")
    @classmethod
    def _parse_pool_size(cls, value: object) -> dict[str, int]:
        if isinstance(value, dict):
            return value
        if isinstance(value, int):
            value = str(value)
        parts = _split_csv(value)
        if len(parts) > len(ROLES) + 1:
            raise ValueError(f"at most {len(ROLES) + 1} entries: one per role and a default")
        sizes: dict[str, int] = {}
        for part in parts:
            role, sep, number = part.rpartition("=")
            role = role.strip() if sep else "*"
            if role != "*" and role not in ROLES:
                raise ValueError(f"unknown role {role!r} (expected {', '.join(ROLES)})")
            number = number.strip()
            if not number.isdigit() or not 1 <= int(number) <= 100:
                raise ValueError(f"pool sizes are whole numbers from 1 to 100, got {number[:20]!r}")
            sizes[role] = int(number)
        return sizes

    def db_pool_sizes(self, roles: tuple[str, ...]) -> tuple[int, int]:
        """Pool sizes (writes, REST reads) of a process that runs ``roles``.

        ``ECSWATCH_DB_POOL_SIZE`` is one number for every role, or ``role=size``
        pairs with an optional bare number for the roles it does not name. The
        write pool takes the largest size of the process's roles other than
        ``api`` (``api``'s when it runs alone: webhook writes, health); the pool
        of REST reads takes ``api``'s. Each pool opens up to twice its size
        (overflow): docs/deploy.md, "Sizing the database".
        """
        default = self.db_pool_size.get("*", DEFAULT_DB_POOL_SIZE)
        api = self.db_pool_size.get("api", default)
        workers = [self.db_pool_size.get(role, default) for role in roles if role != "api"]
        return (max(workers) if workers else api), api

    @field_validator("regions", mode="before")
    @classmethod
    def _parse_regions(cls, value: object) -> tuple[str, ...]:
        regions = tuple(dict.fromkeys(_split_csv(value)))
        if regions:
            known = known_regions()
            unknown = [r for r in regions if r not in known]
            if unknown:
                raise ValueError(f"unknown region {unknown[0]!r}")
            _one_partition(regions)
        return regions

    @field_validator("accounts", mode="before")
    @classmethod
    def _parse_accounts(cls, value: object, info: ValidationInfo) -> dict[str, str]:
        if isinstance(value, dict):
            pairs = [f"{k}={v}" for k, v in value.items()]
        else:
            pairs = _split_csv(value)
        accounts: dict[str, str] = {}
        for pair in pairs:
            account, sep, arn = (part.strip() for part in pair.partition("="))
            if not sep or not ACCOUNT_ID.match(account):
                raise ValueError(f"expected account_id=role_arn pairs, got {pair[:80]!r}")
            match = ROLE_ARN.match(arn)
            if match is None:
                raise ValueError(f"malformed role ARN for account {account}: {arn[:120]!r}")
            if match.group(2) != account:
                raise ValueError(
                    f"the role for account {account} is in account {match.group(2)}: {arn}"
                )
            regions = info.data.get("regions") or (info.data.get("aws_region"),)
            watched = next((r for r in regions if r), None)
            if watched is not None and partition_of(watched) != match.group(1):
                raise ValueError(
                    f"the role for account {account} is in partition {match.group(1)}, the"
                    f" regions in {partition_of(watched)} ({watched}): {arn}"
                )
            if account in accounts:
                raise ValueError(f"account {account} is listed twice")
            accounts[account] = arn
        return accounts

    @field_validator("organization_role_name")
    @classmethod
    def _check_role_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        if not ROLE_NAME.match(value):
            raise ValueError(f"not an IAM role name: {value[:80]!r}")
        if info.data.get("accounts"):
            raise ValueError("set ECSWATCH_ACCOUNTS or ECSWATCH_ORGANIZATION_ROLE_NAME, not both")
        return value

    @property
    def scope_regions(self) -> tuple[str, ...]:
        """The regions watched: ``ECSWATCH_REGIONS``, else ``AWS_REGION`` (may be empty)."""
        if self.regions:
            return self.regions
        return (self.aws_region,) if self.aws_region else ()

    @property
    def datadog_enabled(self) -> bool:
        return self.dd_api_key is not None and bool(self.dd_api_key.get_secret_value())

    @property
    def datadog_base_url(self) -> str:
        return self.datadog_url or f"https://api.{self.dd_site}"


_ENV_NAMES = {
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "aws_region": "AWS_REGION",
    "dd_api_key": "DD_API_KEY",
    "dd_app_key": "DD_APP_KEY",
    "dd_site": "DD_SITE",
}


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    if field.isupper():  # pydantic reports an aliased field by its alias
        return field
    return _ENV_NAMES.get(field, f"ECSWATCH_{field.upper()}")


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise :class:`ConfigError` naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        if not err["loc"] and "ECSWATCH_DISPATCH_LEASE_S" in str(err["msg"]):
            field = "webhook_timeout_s"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid {env_name(field)}: {message}") from None


def is_loopback(host: str) -> bool:
    """True when ``host`` names only this machine."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
