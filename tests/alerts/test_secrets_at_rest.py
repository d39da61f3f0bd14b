"""Webhook secrets and URLs at rest: the cipher and its keys, the settings that hold
them, ``ecswatch secrets``, the refusal to run unprotected, and migration 0011."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.cipher import (
    SecretCipher,
    SecretDecryptError,
    cipher_for,
    derived_key,
    generate_key,
    looks_encrypted,
    parse_keys,
)
from service.config import load_settings
from service.db import create_engine
from service.errors import ConfigError
from service.migrate import downgrade, upgrade

SLACK_URL = "https://hooks.slack.com/services/T0000000/B0000000/abcdefghijklmnopqrstuvwx"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_newest_key_encrypts_every_key_decrypts() -> None:
    old, new = generate_key(), generate_key()
    token = SecretCipher([old]).encrypt(SLACK_URL)
    assert SLACK_URL not in token
    assert looks_encrypted(token)
    both = SecretCipher([new, old])
    assert both.decrypt(token) == SLACK_URL
    assert not both.is_current(token)
    rotated = both.rotate(token)
    assert both.is_current(rotated)
    assert SecretCipher([new]).decrypt(rotated) == SLACK_URL
    with pytest.raises(SecretDecryptError):
        SecretCipher([old]).decrypt(rotated)
    with pytest.raises(SecretDecryptError):
        both.decrypt(SLACK_URL)  # plain text is not a token
    assert not looks_encrypted(SLACK_URL)


@pytest.mark.parametrize(
    "value",
    ["", "short", "A" * 44, generate_key() + ",not-a-key", ",".join([generate_key()] * 9)],
)
def test_bad_keys_are_refused_without_echoing_them(
    value: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("ECSWATCH_SECRET_KEY", value)
    if not value:
        assert load_settings().secret_key is None  # empty means unset
        return
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.detail.startswith("invalid ECSWATCH_SECRET_KEY: ")
    assert "\n" not in raised.value.detail
    for part in value.split(","):
        if len(part) > 5:
            assert part not in raised.value.detail


def test_several_keys_newest_first(clean_env: pytest.MonkeyPatch) -> None:
    keys = [generate_key(), generate_key()]
    clean_env.setenv("ECSWATCH_SECRET_KEY", " , ".join(keys))
    assert parse_keys(",".join(keys)) == tuple(keys)
    cipher = cipher_for(load_settings())
    assert SecretCipher([keys[0]]).decrypt(cipher.encrypt("x")) == "x"


def test_the_derived_key_is_local_and_said_once(tmp_path: Path) -> None:
    one, other = tmp_path / "one", tmp_path / "other"
    assert derived_key(one) == derived_key(tmp_path / "x" / ".." / "one")
    assert derived_key(one) != derived_key(other)
    parse_keys(derived_key(one))  # a valid Fernet key
    settings = load_settings(data_dir=one)
    with structlog.testing.capture_logs() as logs:
        token = cipher_for(settings).encrypt("x")
        cipher_for(settings)
    assert [e["event"] for e in logs] == ["secret_key_derived"]
    assert "not secure" in logs[0]["detail"]
    assert SecretCipher([derived_key(one)]).decrypt(token) == "x"


def test_the_delivery_deadline_stays_inside_the_lease(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().webhook_timeout_s == 15
    load_settings(webhook_timeout_s=30, dispatch_lease_s=60)
    with pytest.raises(ConfigError) as raised:
        load_settings(webhook_timeout_s=31, dispatch_lease_s=60)
    assert raised.value.detail.startswith("invalid ECSWATCH_WEBHOOK_TIMEOUT_S: ")
    assert "ECSWATCH_DISPATCH_LEASE_S" in raised.value.detail


async def _ecswatch(*args: str, **env: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ECSWATCH_", "DD_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        env={**clean, "ECSWATCH_LOG_FORMAT": "json", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_generate_key_prints_a_usable_key() -> None:
    code, out, _ = await _ecswatch("secrets", "generate-key")
    assert code == 0
    [key] = out.split()
    assert parse_keys(key) == (key,)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--roles", "api", "--host", "0.0.0.0"], {"ECSWATCH_API_TOKENS": "admin:" + "a" * 20}),
        (
            ["--roles", "dispatcher"],
            {"ECSWATCH_DATABASE_URL": "postgresql+asyncpg://u@db.example.com:5432/ecswatch"},
        ),
    ],
)
async def test_run_refuses_off_loopback_without_a_key(args: list[str], env: dict[str, str]) -> None:
    code, _, err = await _ecswatch("run", *args, **env)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("ecswatch: refusing to run off loopback without ECSWATCH_SECRET_KEY")


async def test_rotate_key_reencrypts_every_row(database_url: str, engine: AsyncEngine) -> None:
    old, new = generate_key(), generate_key()
    before = SecretCipher([old])
    async with engine.begin() as conn:
        for n in range(3):
            await conn.execute(
                text(
                    "INSERT INTO webhook_subscriptions (id, url, secret, previous_secret)"
                    " VALUES (:id, :url, :secret, :previous)"
                ),
                {
                    "id": f"wh_{n}",
                    "url": before.encrypt(f"{SLACK_URL}{n}"),
                    "secret": before.encrypt(SECRET),
                    "previous": before.encrypt(SECRET) if n == 0 else None,
                },
            )
    keys = f"{new},{old}"
    code, out, err = await _ecswatch(
        "secrets", "rotate-key", ECSWATCH_DATABASE_URL=database_url, ECSWATCH_SECRET_KEY=keys
    )
    assert code == 0, err
    assert out.strip() == "re-encrypted 3 of 3 webhook subscriptions under the newest key"
    only_new = SecretCipher([new])
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT id, url, secret, previous_secret FROM webhook_subscriptions")
            )
        ).all()
    for row in rows:
        n = row.id.removeprefix("wh_")
        assert only_new.decrypt(row.url) == f"{SLACK_URL}{n}"
        assert only_new.decrypt(row.secret) == SECRET
        if row.previous_secret is not None:
            assert only_new.decrypt(row.previous_secret) == SECRET
    # A second run has nothing left to do.
    code, out, _ = await _ecswatch(
        "secrets", "rotate-key", ECSWATCH_DATABASE_URL=database_url, ECSWATCH_SECRET_KEY=keys
    )
    assert (code, out.strip()) == (
        0,
        "re-encrypted 0 of 3 webhook subscriptions under the newest key",
    )
    # Without the key that made them, rotation stops with one line and writes nothing.
    code, _, err = await _ecswatch(
        "secrets",
        "rotate-key",
        ECSWATCH_DATABASE_URL=database_url,
        ECSWATCH_SECRET_KEY=generate_key(),
    )
    assert code == 1
    assert err.strip().splitlines() == [
        "ecswatch: webhook wh_0: a stored value cannot be decrypted with the keys of "
        "ECSWATCH_SECRET_KEY"
    ]


async def test_migration_0011_encrypts_and_its_downgrade_decrypts(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv("ECSWATCH_SECRET_KEY", key)
    engine = create_engine(empty_database_url, pool_size=1)
    try:
        await upgrade(engine, "0010")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO webhook_subscriptions (id, url, secret) VALUES"
                    " ('wh_a', :url, :secret), ('wh_b', 'https://example.com/b', :secret)"
                ),
                {"url": SLACK_URL, "secret": SECRET},
            )
        await upgrade(engine)
        cipher = SecretCipher([key])
        async with engine.connect() as conn:
            rows = {
                r.id: r
                for r in await conn.execute(
                    text("SELECT id, url, secret, previous_secret FROM webhook_subscriptions")
                )
            }
        assert cipher.decrypt(rows["wh_a"].url) == SLACK_URL
        assert cipher.decrypt(rows["wh_a"].secret) == SECRET
        assert cipher.decrypt(rows["wh_b"].url) == "https://example.com/b"
        assert rows["wh_a"].previous_secret is None
        await downgrade(engine, "0010")
        async with engine.connect() as conn:
            plain = dict(
                (await conn.execute(text("SELECT id, url FROM webhook_subscriptions"))).all()
            )
            secrets = set(
                (await conn.execute(text("SELECT secret FROM webhook_subscriptions"))).scalars()
            )
        assert plain == {"wh_a": SLACK_URL, "wh_b": "https://example.com/b"}
        assert secrets == {SECRET}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("command", [["upgrade"], ["downgrade", "0010"]])
async def test_db_migrations_refuse_a_remote_database_without_a_key(command: list[str]) -> None:
    remote = "postgresql+asyncpg://u@db.example.com:5432/ecswatch"
    code, _, err = await _ecswatch("db", *command, ECSWATCH_DATABASE_URL=remote)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("ecswatch: refusing to migrate a remote database without")
