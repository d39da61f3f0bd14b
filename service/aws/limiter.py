"""Token buckets per account, region and AWS throttle category.

ECS throttles per account and region across every caller, in categories with
their own burst and refill rate (documented under "Request throttling for the
Amazon ECS API"). ecswatch takes a token before every call it makes, so that it
stays under those rates on its own and leaves room for the console, CI and
other tools. A throttled answer drains the bucket (:meth:`TokenBucket.pause`),
so every caller of that category backs off together, not only the unlucky one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class Category(StrEnum):
    """Throttle categories ecswatch's calls fall in."""

    ECS_CLUSTER_READ = "ecs_cluster_read"
    ECS_SERVICE_READ = "ecs_service_read"
    ECS_CLUSTER_RESOURCE_READ = "ecs_cluster_resource_read"
    ECS_TASK_DEFINITION_READ = "ecs_task_definition_read"
    CLOUDWATCH_GET_METRIC_DATA = "cloudwatch_get_metric_data"
    ELBV2_DESCRIBE = "elbv2_describe"
    CODEDEPLOY_READ = "codedeploy_read"
    ECS_SERVICE_DEPLOYMENT_READ = "ecs_service_deployment_read"
    EVENTS_PUT = "events_put"


@dataclass(frozen=True, slots=True)
class Rate:
    """A bucket's capacity (burst) and refill rate (tokens a second)."""

    burst: float
    per_second: float


#: ECS's documented rates; the others are conservative shares of their service's limits.
RATES: dict[Category, Rate] = {
    Category.ECS_CLUSTER_READ: Rate(burst=50, per_second=20),
    Category.ECS_SERVICE_READ: Rate(burst=100, per_second=20),
    Category.ECS_CLUSTER_RESOURCE_READ: Rate(burst=100, per_second=20),
    Category.ECS_TASK_DEFINITION_READ: Rate(burst=50, per_second=20),
    Category.CLOUDWATCH_GET_METRIC_DATA: Rate(burst=50, per_second=10),
    Category.ELBV2_DESCRIBE: Rate(burst=10, per_second=5),
    Category.CODEDEPLOY_READ: Rate(burst=10, per_second=5),
    # Not in ECS's throttling table: a conservative share, like the other reads.
    Category.ECS_SERVICE_DEPLOYMENT_READ: Rate(burst=20, per_second=5),
    Category.EVENTS_PUT: Rate(burst=10, per_second=5),
}

#: Which category each operation ecswatch calls belongs to.
OPERATION_CATEGORY: dict[tuple[str, str], Category] = {
    ("ecs", "ListClusters"): Category.ECS_CLUSTER_READ,
    ("ecs", "DescribeClusters"): Category.ECS_CLUSTER_READ,
    ("ecs", "ListServices"): Category.ECS_SERVICE_READ,
    ("ecs", "DescribeServices"): Category.ECS_SERVICE_READ,
    ("ecs", "ListTasks"): Category.ECS_CLUSTER_RESOURCE_READ,
    ("ecs", "DescribeTasks"): Category.ECS_CLUSTER_RESOURCE_READ,
    ("ecs", "ListContainerInstances"): Category.ECS_CLUSTER_RESOURCE_READ,
    ("ecs", "DescribeContainerInstances"): Category.ECS_CLUSTER_RESOURCE_READ,
    ("ecs", "DescribeTaskDefinition"): Category.ECS_TASK_DEFINITION_READ,
    ("cloudwatch", "GetMetricData"): Category.CLOUDWATCH_GET_METRIC_DATA,
    ("elbv2", "DescribeTargetGroups"): Category.ELBV2_DESCRIBE,
    ("codedeploy", "GetDeploymentGroup"): Category.CODEDEPLOY_READ,
    ("codedeploy", "BatchGetDeployments"): Category.CODEDEPLOY_READ,
    ("ecs", "ListServiceDeployments"): Category.ECS_SERVICE_DEPLOYMENT_READ,
    ("ecs", "DescribeServiceDeployments"): Category.ECS_SERVICE_DEPLOYMENT_READ,
    ("ecs", "DescribeServiceRevisions"): Category.ECS_SERVICE_DEPLOYMENT_READ,
    ("events", "PutEvents"): Category.EVENTS_PUT,
}


def refill(tokens: float, rate: Rate, elapsed: float) -> float:
    """Tokens after ``elapsed`` seconds of refill, never above the burst."""
    return min(rate.burst, tokens + max(0.0, elapsed) * rate.per_second)


def wait_for_token(tokens: float, rate: Rate) -> float:
    """Seconds until one token is available (0 when one is there now)."""
    return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate.per_second


@dataclass
class TokenBucket:
    """One bucket; :meth:`acquire` waits for a token, in arrival order."""

    rate: Rate
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    _updated: float = field(init=False)
    _paused_until: float = field(init=False, default=0.0)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.tokens = self.rate.burst
        self._updated = self.clock()

    def _refill(self) -> float:
        now = self.clock()
        self.tokens = refill(self.tokens, self.rate, now - self._updated)
        self._updated = now
        return now

    async def acquire(self) -> float:
        """Take one token, waiting as long as needed; return the seconds waited."""
        waited = 0.0
        async with self._lock:  # FIFO: one waiter refills and sleeps at a time
            while True:
                now = self._refill()
                delay = max(self._paused_until - now, wait_for_token(self.tokens, self.rate))
                if delay <= 0:
                    self.tokens -= 1.0
                    return waited
                await asyncio.sleep(delay)
                waited += delay

    def pause(self, seconds: float) -> None:
        """AWS said slow down: no token for ``seconds``, and start again from empty."""
        now = self._refill()
        self._paused_until = max(self._paused_until, now + seconds)
        self.tokens = 0.0


class Limiter:
    """The buckets of one process, keyed by (account, region, category)."""

    def __init__(
        self,
        rates: dict[Category, Rate] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rates = rates or RATES
        self._clock = clock
        self._buckets: dict[tuple[str, str, Category], TokenBucket] = {}

    def bucket(self, account: str, region: str, category: Category) -> TokenBucket:
        key = (account, region, category)
        if key not in self._buckets:
            self._buckets[key] = TokenBucket(self._rates[category], clock=self._clock)
        return self._buckets[key]
