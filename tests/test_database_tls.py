"""``ECSWATCH_DATABASE_SSLMODE``: what each mode asks of the driver, and that the
driver really gets it (the test server speaks no TLS, so every mode but
``disable`` must fail to connect instead of silently falling back to plain text)."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy import text

from service.config import load_settings
from service.db import SslMode, create_engine, ssl_argument
from service.errors import ConfigError


def test_each_mode_asks_what_libpq_would() -> None:
    assert ssl_argument(None) is None
    assert ssl_argument("disable") is False
    require = ssl_argument("require")
    assert isinstance(require, ssl.SSLContext)
    assert (require.verify_mode, require.check_hostname) == (ssl.CERT_NONE, False)
    verify_ca = ssl_argument("verify-ca")
    assert isinstance(verify_ca, ssl.SSLContext)
    assert (verify_ca.verify_mode, verify_ca.check_hostname) == (ssl.CERT_REQUIRED, False)
    verify_full = ssl_argument("verify-full")
    assert isinstance(verify_full, ssl.SSLContext)
    assert (verify_full.verify_mode, verify_full.check_hostname) == (ssl.CERT_REQUIRED, True)


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
async def test_tls_modes_reach_the_driver(database_url: str, mode: SslMode) -> None:
    engine = create_engine(database_url, pool_size=1, sslmode=mode)
    try:
        with pytest.raises(Exception) as refused:  # noqa: PT011 - the driver's own error type
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert "ssl" in str(refused.value).lower() or "tls" in str(refused.value).lower()


async def test_disable_connects_in_plain_text(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, sslmode="disable")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_sslmode_setting(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().database_sslmode is None
    clean_env.setenv("ECSWATCH_DATABASE_SSLMODE", "verify-full")
    assert load_settings().database_sslmode == "verify-full"
    clean_env.setenv("ECSWATCH_DATABASE_SSLMODE", "prefer")
    with pytest.raises(ConfigError, match="ECSWATCH_DATABASE_SSLMODE"):
        load_settings()
