"""Export and import of webhook subscriptions as JSON (``ecswatch webhooks export`` /
``import``), so they can be kept in version control and restored into an empty
database (docs/deploy.md "Backups", docs/runbook.md).

A restorable export needs a key the operator names (a Fernet key: 32 random bytes in
URL-safe base64, ``ecswatch secrets generate-key`` prints one; or several, comma
separated and newest first, like ``ECSWATCH_SECRET_KEY``). Each entry's URL,
secret and previous secret (with the entry's id) are sealed together in one Fernet
token under that key, so a wrong key, an altered token or a token moved to another
entry is refused. Without a key the export carries no secret and no URL path, only
``scheme://host`` to say which endpoint must be re-entered; such an export cannot be
imported.

Import validates every entry as ``POST /v1/webhooks`` does (the same request model,
the SSRF guard, the tag syntax) before writing anything, then writes all entries in
one transaction. It is idempotent: an entry whose id exists is updated only when a
field differs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.alerts.models import WebhookSubscription as W
from service.alerts.ssrf import check_webhook_url
from service.api.queries import parse_tags
from service.api.schemas import NO_NUL, WebhookCreate
from service.cipher import SecretCipher, parse_keys
from service.errors import EcswatchError

#: The ``kind`` and ``version`` of an export document.
KIND = "ecswatch.webhooks"
VERSION = 1
#: Largest export file read, in bytes (checked before parsing).
MAX_BYTES = 4 * 1024 * 1024
#: Most subscriptions in one export.
MAX_ENTRIES = 1000
#: Longest sealed token accepted (three values of at most 2048 characters, base64).
MAX_SEALED_CHARS = 16384


class TransferError(EcswatchError):
    """An export that cannot be written or imported; the message is one line and
    never contains a secret or a URL path."""

    problem_type = "webhook-transfer"
    title = "Webhook export or import refused"


def load_key(text: str, source: str) -> MultiFernet:
    """The export key in ``text``: one Fernet key, or several separated by commas,
    newest first, as in ``ECSWATCH_SECRET_KEY`` (the first seals, any opens).
    ``source`` names where it came from in the error (never the key itself)."""
    try:
        keys = parse_keys(text)
    except ValueError as exc:
        raise TransferError(f"{source} is not a key: {exc}") from None
    return MultiFernet([Fernet(key.encode("ascii")) for key in keys])


def host_only(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no path, query or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def export_document(
    session: AsyncSession, cipher: SecretCipher, key: MultiFernet | None
) -> dict[str, Any]:
    """Every subscription, oldest first; sealed under ``key``, or redacted without one."""
    rows = (await session.execute(select(W).order_by(W.created_at, W.id))).scalars().all()
    entries: list[dict[str, Any]] = []
    for row in rows:
        entry: dict[str, Any] = {
            "id": row.id,
            "events": list(row.events),
            "filter": dict(row.filter),
            "format": row.format,
            "active": row.active,
            "created_at": _iso(row.created_at),
            "previous_secret_expires_at": _iso(row.previous_secret_expires_at),
        }
        url = cipher.decrypt(row.url)
        if key is None:
            entry["endpoint"] = host_only(url)
        else:
            sealed = {
                "id": row.id,
                "url": url,
                "secret": cipher.decrypt(row.secret),
                "previous_secret": (
                    cipher.decrypt(row.previous_secret) if row.previous_secret else None
                ),
            }
            entry["sealed"] = key.encrypt(json.dumps(sealed).encode("utf-8")).decode("ascii")
        entries.append(entry)
    return {
        "kind": KIND,
        "version": VERSION,
        "restorable": key is not None,
        "subscriptions": entries,
    }


class _Entry(BaseModel):
    """One exported subscription as read back (the sealed part is checked later)."""

    id: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    events: list[Any] = Field(max_length=64)
    filter: dict[str, Any] = Field(default_factory=dict)
    format: str = "standard"
    active: bool = True
    created_at: datetime | None = None
    previous_secret_expires_at: datetime | None = None
    sealed: str | None = Field(default=None, max_length=MAX_SEALED_CHARS)
    endpoint: str | None = Field(default=None, max_length=2048)

    model_config = ConfigDict(extra="forbid")


class _Sealed(BaseModel):
    id: str
    url: str
    secret: str
    previous_secret: str | None = None

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Restored:
    """One validated subscription, in plain text (only in memory)."""

    id: str
    url: str
    events: list[str]
    filter: dict[str, Any]
    format: str
    active: bool
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime | None


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "entry"
    # Pydantic's message never repeats the input value here (input is not rendered).
    return f"{where}: {first['msg']}"


def read_document(data: bytes) -> list[Any]:
    """The entries of an export file's bytes: size, shape and count checked before
    any entry is looked at."""
    if len(data) > MAX_BYTES:
        raise TransferError(f"the export is larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise TransferError("the export is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise TransferError(f"the export is not an {KIND} document")
    if doc.get("version") != VERSION:
        raise TransferError(f"export version {doc.get('version')!r} is not {VERSION}")
    entries = doc.get("subscriptions")
    if not isinstance(entries, list):
        raise TransferError("the export has no subscriptions list")
    if len(entries) > MAX_ENTRIES:
        raise TransferError(f"the export has more than {MAX_ENTRIES} subscriptions")
    if doc.get("restorable") is not True:
        raise TransferError(
            "the export carries no secrets (it was made without a key) and cannot be "
            "imported; export again with --key-env or --key-file"
        )
    return entries


async def validate_entries(
    entries: Sequence[Any], key: MultiFernet, *, allow_private: bool
) -> list[Restored]:
    """Every entry opened with ``key`` and validated as ``POST /v1/webhooks`` validates
    a new subscription; the first bad one raises a one-line :class:`TransferError`
    naming it by position and id."""
    restored: list[Restored] = []
    seen: set[str] = set()
    for position, raw in enumerate(entries, start=1):
        label = f"entry {position}"
        try:
            entry = _Entry.model_validate(raw)
            label = f"entry {position} ({entry.id})"
            if entry.id in seen:
                raise TransferError(f"{label}: the id appears twice")
            seen.add(entry.id)
            if entry.sealed is None:
                raise TransferError(f"{label}: no sealed URL and secret")
            try:
                opened = key.decrypt(entry.sealed.encode("ascii"))
            except (InvalidToken, UnicodeError) as exc:
                raise TransferError(
                    f"{label}: the sealed URL and secret do not open with this key "
                    "(wrong key or altered export)"
                ) from exc
            sealed = _Sealed.model_validate_json(opened)
            if sealed.id != entry.id:
                raise TransferError(f"{label}: the sealed part belongs to another entry")
            body = WebhookCreate.model_validate(
                {
                    "url": sealed.url,
                    "events": entry.events,
                    "filter": entry.filter,
                    "format": entry.format,
                    "secret": sealed.secret,
                }
            )
            if sealed.previous_secret is not None:
                WebhookCreate.model_validate(
                    {"url": sealed.url, "events": entry.events, "secret": sealed.previous_secret}
                )
            if body.filter.tag is not None:
                parse_tags([body.filter.tag])
            await check_webhook_url(body.url, allow_private=allow_private)
        except TransferError:
            raise
        except ValidationError as exc:
            raise TransferError(f"{label}: {_one_line(exc)}") from None
        except EcswatchError as exc:
            raise TransferError(f"{label}: {exc.detail}") from None
        restored.append(
            Restored(
                id=entry.id,
                url=body.url,
                events=list(dict.fromkeys(e.value for e in body.events)),
                filter=body.filter.model_dump(exclude_none=True),
                format=body.format,
                active=entry.active,
                secret=sealed.secret,
                previous_secret=sealed.previous_secret,
                previous_secret_expires_at=(
                    entry.previous_secret_expires_at if sealed.previous_secret else None
                ),
                created_at=entry.created_at,
            )
        )
    return restored


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int


def _differs(row: W, item: Restored, cipher: SecretCipher) -> bool:
    current_previous = cipher.decrypt(row.previous_secret) if row.previous_secret else None
    return (
        list(row.events) != item.events
        or dict(row.filter) != item.filter
        or row.format != item.format
        or row.active != item.active
        or cipher.decrypt(row.url) != item.url
        or cipher.decrypt(row.secret) != item.secret
        or current_previous != item.previous_secret
        or row.previous_secret_expires_at != item.previous_secret_expires_at
    )


async def import_entries(
    session: AsyncSession, cipher: SecretCipher, items: Sequence[Restored]
) -> ImportResult:
    """Insert or update ``items`` by id inside the caller's transaction; a row equal
    to its entry is left untouched."""
    ids = [item.id for item in items]
    existing = {
        row.id: row
        for row in (await session.execute(select(W).where(W.id.in_(ids)).with_for_update()))
        .scalars()
        .all()
    }
    created = updated = 0
    for item in items:
        values: dict[str, Any] = {
            "url": cipher.encrypt(item.url),
            "events": item.events,
            "filter": item.filter,
            "format": item.format,
            "active": item.active,
            "secret": cipher.encrypt(item.secret),
            "previous_secret": (
                cipher.encrypt(item.previous_secret) if item.previous_secret else None
            ),
            "previous_secret_expires_at": item.previous_secret_expires_at,
        }
        row = existing.get(item.id)
        if row is None:
            if item.created_at is not None:
                values["created_at"] = item.created_at
            await session.execute(insert(W).values(id=item.id, **values))
            created += 1
        elif _differs(row, item, cipher):
            await session.execute(update(W).where(W.id == item.id).values(**values))
            updated += 1
    return ImportResult(created, updated, len(items) - created - updated)


#: Largest key file read, in bytes.
MAX_KEY_FILE_BYTES = 1024


def key_from(env: dict[str, str], key_env: str | None, key_file: str | None) -> MultiFernet | None:
    """The export key named by ``--key-env NAME`` (an environment variable) or
    ``--key-file PATH``; None when neither is given."""
    if key_env is not None:
        value = env.get(key_env)
        if not value:
            raise TransferError(f"the environment variable {key_env} is not set")
        return load_key(value, f"the environment variable {key_env}")
    if key_file is not None:
        try:
            with open(key_file, "rb") as fh:
                data = fh.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise TransferError(f"cannot read the key file: {exc.strerror}") from None
        if len(data) > MAX_KEY_FILE_BYTES:
            raise TransferError("the key file is not a key (too large)")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise TransferError("the key file is not a key") from None
        return load_key(text, "the key file")
    return None


def read_input(path: str) -> bytes:
    """At most :data:`MAX_BYTES` + 1 bytes of ``path`` (``-`` is stdin), so an
    oversized export is refused without reading it all."""
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_BYTES + 1)
        with open(path, "rb") as fh:
            return fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror}") from None


def write_output(text: str, path: str | None) -> None:
    """``text`` to stdout, or to ``path`` created (or truncated) with mode 0600."""
    if path is None:
        sys.stdout.write(text)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:
        raise TransferError(f"cannot write {path}: {exc.strerror}") from None
