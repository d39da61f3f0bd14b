"""ECSWATCH_DB_POOL_SIZE: one size for every process, or one per role."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Settings, load_settings
from service.errors import ConfigError
from service.runtime import open_runtime


@pytest.mark.parametrize(
    ("value", "roles", "sizes"),
    [
        (None, ("consumer", "api"), (10, 10)),
        ("4", ("poller", "api"), (4, 4)),
        ("consumer=5,api=20", ("consumer",), (5, 20)),
        # The api role beside a worker role: writes sized by the worker, reads by api.
        ("consumer=5,api=20", ("consumer", "api"), (5, 20)),
        ("consumer=5,api=20", ("api",), (20, 20)),
        ("consumer=5,api=20", ("dispatcher",), (10, 20)),
        ("3, api=6", ("poller", "consumer"), (3, 6)),
        ("3, poller=7", ("dispatcher", "poller", "api"), (7, 3)),
    ],
)
def test_sizes_of_a_process(
    clean_env: pytest.MonkeyPatch,
    value: str | None,
    roles: tuple[str, ...],
    sizes: tuple[int, int],
) -> None:
    if value is not None:
        clean_env.setenv("ECSWATCH_DB_POOL_SIZE", value)
    assert load_settings().db_pool_sizes(roles) == sizes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "from 1 to 100"),
        ("101", "from 1 to 100"),
        ("api=x", "from 1 to 100"),
        ("reader=4", "unknown role 'reader'"),
        ("1,2,3,4,5,6", "at most 5 entries"),
    ],
)
def test_bad_values_name_the_variable(
    clean_env: pytest.MonkeyPatch, value: str, message: str
) -> None:
    clean_env.setenv("ECSWATCH_DB_POOL_SIZE", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert err.value.detail.startswith("invalid ECSWATCH_DB_POOL_SIZE: ")
    assert message in err.value.detail


async def test_the_engines_take_the_size(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    async with open_runtime(settings, pool_size=3, read_pool_size=5) as runtime:
        assert runtime.engine.pool.size() == 3  # type: ignore[attr-defined]
        assert runtime.read_engine.pool.size() == 5  # type: ignore[attr-defined]
