"""One error hierarchy for ecswatch.

The consumer maps :class:`RetryableError` to "leave the message in the queue" and
:class:`PermanentError` to "quarantine"; the API renders every subclass as
``application/problem+json`` with a stable ``type``.
"""

from __future__ import annotations


class EcswatchError(Exception):
    """Base of every error ecswatch raises on purpose."""

    #: Stable problem type slug (``https://ecswatch.dev/problems/<slug>``).
    problem_type: str = "internal-error"
    status_code: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class RetryableError(EcswatchError):
    """A transient failure: the same work may succeed later (database down, throttled)."""

    problem_type = "service-unavailable"
    status_code = 503
    title = "Service temporarily unavailable"


class PermanentError(EcswatchError):
    """Work that can never succeed as given (a poison message, a broken event)."""

    problem_type = "unprocessable"
    status_code = 422
    title = "Unprocessable input"


class InvalidInputError(PermanentError):
    """A caller-supplied value is malformed; ``param`` names it when known."""

    problem_type = "invalid-parameter"
    status_code = 400
    title = "Invalid parameter"

    def __init__(self, detail: str, *, param: str | None = None, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.param = param


class NotFoundError(EcswatchError):
    """The addressed resource does not exist."""

    problem_type = "not-found"
    status_code = 404
    title = "Not found"


class AmbiguousNameError(EcswatchError):
    """A name matches resources of several scopes (account and region); ``scopes``
    lists them, so the caller can name one."""

    problem_type = "ambiguous-name"
    status_code = 409
    title = "Name matches several scopes"

    def __init__(self, detail: str, *, scopes: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.scopes = scopes


class ConfigError(EcswatchError):
    """A setting is missing or invalid; the process stops with one line naming it."""

    problem_type = "configuration"
    title = "Configuration error"
