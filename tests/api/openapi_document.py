"""The OpenAPI document as the app writes it, built without opening a runtime."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from service.api.app import create_app
from service.config import load_settings
from service.runtime import Runtime


def build_document() -> dict[str, Any]:
    """The document is built from the routes alone: the runtime is never opened."""
    document: dict[str, Any] = create_app(
        Runtime(load_settings(api_docs=True), AsyncExitStack())
    ).openapi()
    return document
