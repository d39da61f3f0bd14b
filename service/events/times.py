"""The one ISO 8601 time formatter: what ecswatch writes wherever it writes a time as
text (alert bodies, stored JSON documents). Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
@overload
def iso(value: datetime | None) -> str | None: ...
def iso(value: datetime | None) -> str | None:
    """``value`` in UTC as ``2026-12-01T10:00:00Z`` (microseconds when it has them);
    None stays None. A naive datetime is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
