"""Every AWS call of the adapters goes through :class:`AwsCaller`.

One place takes the limiter's token, applies the timeout, retries throttling
with the one backoff (:mod:`service.aws.backoff`), and counts the call in
``/metrics`` by service, operation and outcome (ok, throttled, error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from service import telemetry
from service.aws.backoff import Backoff
from service.aws.limiter import OPERATION_CATEGORY, Limiter
from service.errors import RetryableError
from service.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: Error codes AWS uses for "slow down" (ECS, CloudWatch, ELBv2, CodeDeploy).
THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)

#: Seconds one call may take, retries of throttling excluded.
CALL_TIMEOUT_S = 20.0
#: Attempts of one call when AWS keeps throttling it.
MAX_ATTEMPTS = 6


class AwsThrottled(RetryableError):
    """AWS kept throttling a call through every retry."""


class AwsCallFailed(RetryableError):
    """An AWS call failed (network, timeout, access denied, invalid parameter)."""

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.code = code


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_throttle(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLE_CODES


class AwsCaller:
    """Limiter, timeout, throttling backoff and counting around one AWS call."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        account: str = "self",
        region: str = "default",
        timeout_s: float = CALL_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=0.2, cap=10.0),
    ) -> None:
        self.limiter = limiter
        self.account = account
        self.region = region
        self._timeout = timeout_s
        self._max_attempts = max_attempts
        self._backoff = backoff

    async def call(self, service: str, operation: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` (one request of ``service``'s ``operation``) under the policy."""
        bucket = self.limiter.bucket(
            self.account, self.region, OPERATION_CATEGORY[(service, operation)]
        )
        backoff = self._backoff()
        for attempt in range(1, self._max_attempts + 1):
            await bucket.acquire()
            try:
                async with asyncio.timeout(self._timeout):
                    result = await fn()
            except ClientError as exc:
                if is_throttle(exc):
                    telemetry.AWS_CALLS.labels(service, operation, "throttled").inc()
                    telemetry.AWS_THROTTLES.labels(operation).inc()
                    delay = backoff.next_delay()
                    # Every caller of this category waits, not only this one.
                    bucket.pause(delay)
                    if attempt == self._max_attempts:
                        raise AwsThrottled(
                            f"{service}:{operation} throttled {attempt} times"
                        ) from exc
                    log.info("aws_throttled", operation=operation, attempt=attempt, retry_in=delay)
                    continue
                telemetry.AWS_CALLS.labels(service, operation, "error").inc()
                raise AwsCallFailed(
                    f"{service}:{operation} failed: {exc}"[:500], code=error_code(exc)
                ) from exc
            except (BotoCoreError, TimeoutError, OSError) as exc:
                telemetry.AWS_CALLS.labels(service, operation, "error").inc()
                raise AwsCallFailed(
                    f"{service}:{operation} failed: {type(exc).__name__}: {exc}"[:500]
                ) from exc
            telemetry.AWS_CALLS.labels(service, operation, "ok").inc()
            return result
        raise AssertionError("unreachable")  # pragma: no cover


def response(value: Any) -> dict[str, Any]:
    """A typed-dict response as a plain dict (the stubs' TypedDicts are closed)."""
    return dict(value)
