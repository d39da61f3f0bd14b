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


async def test_calls_waiting_in_one_slot_do_not_hold_back_another_slot() -> None:
    """One call per slot at a time: while a call of slot ``a`` waits (a throttled
    scope's backoff), the next ``a`` call waits behind it and slot ``b`` is served."""
    release = asyncio.Event()
    calls: list[str] = []

    async def fetch(kind: str, cluster: str, arns: list[str]) -> dict[str, str]:
        calls.append(cluster)
        if cluster == "a1":
            await release.wait()
        return {arn: cluster for arn in arns}

    async with CoalescingBatcher(
        fetch, LIMITS, window_s=0.01, concurrency=1, slot_of=lambda key: key[1][0]
    ) as batcher:
        held = asyncio.create_task(batcher.get_many("tasks", "a1", ["t1"]))
        queued = asyncio.create_task(batcher.get_many("tasks", "a2", ["t2"]))
        try:
            served = await asyncio.wait_for(batcher.get_many("tasks", "b1", ["t3"]), 30)
        finally:
            release.set()
        assert served == {"t3": "b1"}
        assert calls[:2] == ["a1", "b1"]
        assert await held == {"t1": "a1"}
        assert await queued == {"t2": "a2"}
    assert calls == ["a1", "b1", "a2"]
