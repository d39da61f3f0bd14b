"""The commands run on uvloop, a dependency wherever it exists (not on Windows)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from service import eventloop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build")
def test_commands_run_on_uvloop() -> None:
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_the_runner_returns_the_coroutines_result_and_closes_its_loop() -> None:
    async def answer() -> int:
        return 42

    assert eventloop.run(answer()) == 42
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # no loop left running
