"""``ecswatch webhooks export`` / ``import``, run as the real command line.

The restore test exports from one database, imports into a brand-new one upgraded
to head (with a different ECSWATCH_SECRET_KEY) and delivers a signed alert to the
restored subscription through the real dispatcher and local receiver, whose
``standardwebhooks`` check uses the original secret.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from service.cipher import SecretCipher, generate_key
from service.db import create_engine, create_sessionmaker
from service.demo.receiver import WebhookReceiver
from tests.alerts.test_webhook_delivery import add_alert, drain, make_dispatcher, new_secret

SOURCE_KEY = generate_key()
TARGET_KEY = generate_key()
EXPORT_KEY = generate_key()


def _env(db_url: str, secret_key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_"))}
    env.update(
        ECSWATCH_DATABASE_URL=db_url,
        ECSWATCH_SECRET_KEY=secret_key,
        ECSWATCH_LOG_FORMAT="json",
        ECSWATCH_WEBHOOK_ALLOW_PRIVATE="true",
        EXPORT_KEY=EXPORT_KEY,
    )
    env.update(extra)
    return env


def ecswatch(
    db_url: str,
    *args: str,
    secret_key: str = SOURCE_KEY,
    input_file: Path | None = None,
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=_env(db_url, secret_key, **extra),
        input=input_file.read_text() if input_file is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one line a refused command prints."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ecswatch: ")
    return lines[0]


async def add_subscription(
    engine: AsyncEngine,
    wid: str,
    url: str,
    secret: str,
    *,
    previous: str | None = None,
    filter_: dict[str, Any] | None = None,
) -> None:
    cipher = SecretCipher([SOURCE_KEY])
    expires = datetime.now(UTC) + timedelta(hours=1) if previous else None
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO webhook_subscriptions (id, url, events, filter, secret,"
                " previous_secret, previous_secret_expires_at) VALUES (:id, :url,"
                " '[\"deployment.failed\"]', CAST(:filter AS jsonb), :secret, :prev, :exp)"
            ),
            {
                "id": wid,
                "url": cipher.encrypt(url),
                "filter": json.dumps(filter_ or {}),
                "secret": cipher.encrypt(secret),
                "prev": cipher.encrypt(previous) if previous else None,
                "exp": expires,
            },
        )


async def rows(db_url: str) -> list[dict[str, Any]]:
    eng = create_engine(db_url, pool_size=1)
    try:
        async with eng.connect() as conn:
            found = await conn.execute(text("SELECT * FROM webhook_subscriptions ORDER BY id"))
            return [dict(r) for r in found.mappings()]
    finally:
        await eng.dispose()


async def test_restore_into_an_empty_database_delivers_a_signed_alert(
    engine: AsyncEngine,
    database_url: str,
    empty_database_url: str,
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    secret, previous = new_secret(), new_secret()
    url = webhook_receiver.expect("/restored/token-abc", secret)
    await add_subscription(
        engine, "wh_restore1", url, secret, previous=previous, filter_={"cluster": "prod"}
    )
    out = tmp_path / "webhooks.json"
    ok(
        ecswatch(
            database_url, "webhooks", "export", "--key-env", "EXPORT_KEY", "--output", str(out)
        )
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    exported = out.read_text()
    for clear in (secret, previous, "/restored/token-abc", secret.removeprefix("whsec_")):
        assert clear not in exported
    [entry] = json.loads(exported)["subscriptions"]
    assert entry["filter"] == {"cluster": "prod"}

    # A fresh database, upgraded to head, under another ECSWATCH_SECRET_KEY.
    target = empty_database_url
    ok(ecswatch(target, "db", "upgrade", secret_key=TARGET_KEY))
    first = ok(
        ecswatch(
            target, "webhooks", "import", str(out), "--key-env", "EXPORT_KEY", secret_key=TARGET_KEY
        )
    )
    assert "1 created, 0 updated, 0 unchanged" in first
    before = await rows(target)
    again = ok(
        ecswatch(
            target, "webhooks", "import", str(out), "--key-env", "EXPORT_KEY", secret_key=TARGET_KEY
        )
    )
    assert "0 created, 0 updated, 1 unchanged" in again
    assert await rows(target) == before
    [row] = before
    cipher = SecretCipher([TARGET_KEY])
    assert cipher.decrypt(row["url"]) == url
    assert cipher.decrypt(row["secret"]) == secret
    # The rotation overlap survives: the previous secret and its expiry.
    assert cipher.decrypt(row["previous_secret"]) == previous
    assert row["previous_secret_expires_at"] is not None
    assert row["filter"] == {"cluster": "prod"}

    restored = create_engine(target, pool_size=3)
    try:
        await add_alert(restored, "wh_restore1")
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            await drain(
                make_dispatcher(restored, create_sessionmaker(restored), http, cipher=cipher)
            )
    finally:
        await restored.dispose()
    [got] = webhook_receiver.deliveries
    assert got.verified, got.error
    # Signed with both the original secret and the previous one (the overlap).
    Webhook(secret).verify(got.body, got.headers)
    Webhook(previous).verify(got.body, got.headers)


async def test_export_without_a_key(engine: AsyncEngine, database_url: str, tmp_path: Path) -> None:
    secret = new_secret()
    await add_subscription(
        engine, "wh_nokey", "https://hooks.slack.com/services/T000/B000/XXXXSECRET", secret
    )
    # Without a key and without --no-secrets the export is refused.
    line = refused(ecswatch(database_url, "webhooks", "export"), code=2)
    assert "--key-env" in line
    doc_text = ok(ecswatch(database_url, "webhooks", "export", "--no-secrets"))
    assert secret not in doc_text
    assert "/services" not in doc_text
    assert "XXXXSECRET" not in doc_text
    doc = json.loads(doc_text)
    assert doc["restorable"] is False
    [entry] = doc["subscriptions"]
    assert entry["endpoint"] == "https://hooks.slack.com"
    assert "sealed" not in entry
    # Such an export cannot be imported.
    path = tmp_path / "redacted.json"
    path.write_text(doc_text)
    line = refused(
        ecswatch(database_url, "webhooks", "import", str(path), "--key-env", "EXPORT_KEY")
    )
    assert "cannot be imported" in line


async def test_tampered_wrong_key_and_bad_entries_import_nothing(
    engine: AsyncEngine,
    database_url: str,
    empty_database_url: str,
    tmp_path: Path,
) -> None:
    secret = new_secret()
    await add_subscription(engine, "wh_a", "http://127.0.0.1:9/a", secret)
    await add_subscription(engine, "wh_b", "http://127.0.0.1:9/b", new_secret())
    key_file = tmp_path / "export.key"
    key_file.write_text(EXPORT_KEY + "\n")
    doc = json.loads(ok(ecswatch(database_url, "webhooks", "export", "--key-file", str(key_file))))
    target = empty_database_url
    ok(ecswatch(target, "db", "upgrade", secret_key=TARGET_KEY))

    def attempt(document: Any, *key_args: str, **extra: str) -> str:
        path = tmp_path / "in.json"
        path.write_text(json.dumps(document))
        args = key_args or ("--key-file", str(key_file))
        return refused(
            ecswatch(target, "webhooks", "import", str(path), *args, secret_key=TARGET_KEY, **extra)
        )

    # A wrong key.
    line = attempt(doc, "--key-env", "OTHER", OTHER=generate_key())
    assert line.endswith(
        "entry 1 (wh_a): the sealed URL and secret do not open with this key "
        "(wrong key or altered export)"
    )
    # A tampered token in the second entry: nothing of the first is written either.
    tampered = json.loads(json.dumps(doc))
    token = tampered["subscriptions"][1]["sealed"]
    tampered["subscriptions"][1]["sealed"] = (
        token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    )
    assert "entry 2 (wh_b): the sealed URL and secret do not open" in attempt(tampered)
    # A sealed part moved to another entry.
    swapped = json.loads(json.dumps(doc))
    subs = swapped["subscriptions"]
    subs[0]["sealed"], subs[1]["sealed"] = subs[1]["sealed"], subs[0]["sealed"]
    assert "entry 1 (wh_a): the sealed part belongs to another entry" in attempt(swapped)
    # An entry the API would refuse (an unknown event type).
    bad = json.loads(json.dumps(doc))
    bad["subscriptions"][1]["events"] = ["deployment.exploded"]
    line = attempt(bad)
    assert "entry 2 (wh_b): events.0:" in line
    # An unknown filter key is refused like POST /v1/webhooks refuses it.
    bad = json.loads(json.dumps(doc))
    bad["subscriptions"][0]["filter"] = {"owner": "x"}
    assert "entry 1 (wh_a): filter.owner:" in attempt(bad)
    # Too large: refused before parsing.
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (4 * 1024 * 1024 + 1))
    line = refused(
        ecswatch(
            target,
            "webhooks",
            "import",
            str(big),
            "--key-file",
            str(key_file),
            secret_key=TARGET_KEY,
        )
    )
    assert "larger than" in line
    assert await rows(target) == []


async def test_import_refuses_a_private_address_without_the_allowance(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    await add_subscription(engine, "wh_local", "http://127.0.0.1:9/hook", new_secret())
    out = tmp_path / "w.json"
    ok(
        ecswatch(
            database_url, "webhooks", "export", "--key-env", "EXPORT_KEY", "--output", str(out)
        )
    )
    line = refused(
        ecswatch(
            database_url,
            "webhooks",
            "import",
            str(out),
            "--key-env",
            "EXPORT_KEY",
            ECSWATCH_WEBHOOK_ALLOW_PRIVATE="false",
        )
    )
    assert line.startswith("ecswatch: entry 1 (wh_local): ")
    assert "/hook" not in line


@pytest.mark.parametrize("value", ["", "not-a-key"])
async def test_a_bad_export_key_is_one_line(
    database_url: str, engine: AsyncEngine, value: str
) -> None:
    line = refused(
        ecswatch(database_url, "webhooks", "export", "--key-env", "EXPORT_KEY", EXPORT_KEY=value)
    )
    assert "EXPORT_KEY" in line


async def test_import_updates_only_what_changed(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    await add_subscription(engine, "wh_same", "http://127.0.0.1:9/same", new_secret())
    await add_subscription(engine, "wh_edit", "http://127.0.0.1:9/edit", new_secret())
    out = tmp_path / "w.json"
    ok(
        ecswatch(
            database_url, "webhooks", "export", "--key-env", "EXPORT_KEY", "--output", str(out)
        )
    )
    before = await rows(database_url)
    # Into the database it came from: nothing changes, not even a stored token.
    # The export key may be a list, newest first, as in ECSWATCH_SECRET_KEY: any opens.
    done = ok(
        ecswatch(
            database_url,
            "webhooks",
            "import",
            str(out),
            "--key-env",
            "KEYS",
            KEYS=f"{generate_key()},{EXPORT_KEY}",
        )
    )
    assert "0 created, 0 updated, 2 unchanged" in done
    assert await rows(database_url) == before
    doc = json.loads(out.read_text())
    doc["subscriptions"][1]["events"] = ["deployment.failed", "deployment.rolled_back"]
    doc["subscriptions"][1]["active"] = False
    out.write_text(json.dumps(doc))
    done = ok(
        ecswatch(database_url, "webhooks", "import", "-", "--key-env", "EXPORT_KEY", input_file=out)
    )
    assert "0 created, 1 updated, 1 unchanged" in done
    after = {r["id"]: r for r in await rows(database_url)}
    assert after["wh_same"] == next(r for r in before if r["id"] == "wh_same")
    assert after["wh_edit"]["events"] == ["deployment.failed", "deployment.rolled_back"]
    assert after["wh_edit"]["active"] is False
