"""The coalescing batcher, with a recording fetch (no AWS: it is the unit under test)."""

from __future__ import annotations

import asyncio

import pytest

from service.enrich.batcher import CoalescingBatcher

LIMITS = {"tasks": 100, "services": 10}


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.fail = fail

    async def __call__(self, kind: str, cluster: str, arns: list[str]) -> dict[str, str]:
        self.calls.append((kind, cluster, arns))
        if self.fail:
            raise RuntimeError("boom")
        return {arn: f"{kind}:{arn}" for arn in arns}


async def test_groups_by_kind_and_cluster_up_to_the_limit() -> None:
    fetch = Recorder()
    async with CoalescingBatcher(fetch, LIMITS, window_s=0.05) as batcher:
        results = await asyncio.gather(
            batcher.get_many("tasks", "a", [f"t{i}" for i in range(250)]),
            batcher.get_many("tasks", "b", ["x"]),
            batcher.get_many("services", "a", [f"s{i}" for i in range(15)]),
        )
    assert results[1] == {"x": "tasks:x"}
    assert len(results[0]) == 250
    sizes = sorted((k, c, len(a)) for k, c, a in fetch.calls)
    assert sizes == [
        ("services", "a", 5),
        ("services", "a", 10),
        ("tasks", "a", 50),
        ("tasks", "a", 100),
        ("tasks", "a", 100),
        ("tasks", "b", 1),
    ]


async def test_concurrent_callers_share_one_call_and_one_slot_per_arn() -> None:
    fetch = Recorder()
    async with CoalescingBatcher(fetch, LIMITS, window_s=0.05) as batcher:
        first, second = await asyncio.gather(
            batcher.get_many("tasks", "a", ["t1", "t2"]),
            batcher.get_many("tasks", "a", ["t2", "t3"]),
        )
    assert first == {"t1": "tasks:t1", "t2": "tasks:t2"}
    assert second == {"t2": "tasks:t2", "t3": "tasks:t3"}
    assert [sorted(a) for _, _, a in fetch.calls] == [["t1", "t2", "t3"]]


async def test_a_full_batcher_refuses_instead_of_growing() -> None:
    fetch = Recorder()
    async with CoalescingBatcher(fetch, LIMITS, window_s=10, max_pending=3) as batcher:
        futures = [batcher.submit("tasks", "a", f"t{i}") for i in range(4)]
        assert [f is None for f in futures] == [False, False, False, True]
        assert batcher.pending == 3


async def test_a_failed_call_fails_its_callers_only() -> None:
    async with CoalescingBatcher(Recorder(fail=True), LIMITS, window_s=0.01) as batcher:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.get_many("tasks", "a", ["t1"])
        assert batcher.pending == 0
