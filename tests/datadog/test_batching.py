"""Pure splitting of series under Datadog's payload limits, as tables of cases."""

from __future__ import annotations

import json
import os
import zlib
from datetime import UTC, datetime

import pytest

from service.datadog.batching import (
    MAX_COMPRESSED,
    MAX_UNCOMPRESSED,
    RowSeries,
    drop_old_points,
    encode_body,
    merge_counts,
    plan_batches,
    split_in_half,
)
from service.datadog.forwarder import COMPRESSORS


def _series(metric: str, points: int, *, tags: int = 2, start: int = 1_700_000_000) -> dict:
    return {
        "metric": metric,
        "type": 3,
        "points": [{"timestamp": start + i, "value": float(i)} for i in range(points)],
        "tags": [f"tag{i}:value{i}" for i in range(tags)],
    }


def _items(n: int, points: int = 10) -> list[RowSeries]:
    return [RowSeries((i,), _series(f"m.{i}", points)) for i in range(n)]


def _check(plan_items: list[RowSeries], compress_name: str, limit_c: int, limit_u: int) -> None:
    compress = COMPRESSORS[compress_name]
    plan = plan_batches(
        plan_items, compress=compress, max_compressed=limit_c, max_uncompressed=limit_u
    )
    for batch in plan.batches:
        body = encode_body(batch.items)
        assert len(body) <= limit_u
        assert len(compress(body)) <= limit_c
    # Nothing lost, nothing doubled: every point of every row arrives once.
    sent = sorted(
        (i.row_ids, p["timestamp"])
        for b in plan.batches
        for i in b.items
        for p in i.series["points"]
    )
    expected = sorted((i.row_ids, p["timestamp"]) for i in plan_items for p in i.series["points"])
    assert sent == expected
    assert plan.oversize == []


@pytest.mark.parametrize(
    ("rows", "points", "codec", "limit_c", "limit_u", "min_batches"),
    [
        (1, 1, "zstd1", MAX_COMPRESSED, MAX_UNCOMPRESSED, 1),
        (500, 10, "zstd1", MAX_COMPRESSED, MAX_UNCOMPRESSED, 1),
        (200, 10, "gzip", 20_000, 40_000, 2),  # the uncompressed limit binds
        (200, 10, "deflate", 600, 1_000_000, 2),  # the compressed limit binds
        (3, 5_000, "zstd1", 10_000, 50_000, 6),  # series split by points
    ],
)
def test_batches_fit_both_limits(
    rows: int, points: int, codec: str, limit_c: int, limit_u: int, min_batches: int
) -> None:
    items = _items(rows, points)
    _check(items, codec, limit_c, limit_u)
    plan = plan_batches(
        items, compress=COMPRESSORS[codec], max_compressed=limit_c, max_uncompressed=limit_u
    )
    assert len(plan.batches) >= min_batches


def test_incompressible_tags_are_split_by_the_compressed_limit() -> None:
    # Random tags compress badly: the compressed check, not the size guess, decides.
    items = [
        RowSeries((i,), {**_series(f"m.{i}", 1), "tags": [os.urandom(200).hex()]})
        for i in range(100)
    ]
    _check(items, "zstd1", 8_000, 1_000_000)


def test_full_size_payloads_stay_under_datadogs_limits() -> None:
    items = _items(3_000, 60)  # about 10 MB of JSON
    assert len(encode_body(items)) > MAX_UNCOMPRESSED
    _check(items, "zstd1", MAX_COMPRESSED, MAX_UNCOMPRESSED)


def test_a_point_that_can_never_fit_is_reported_not_sent() -> None:
    huge = RowSeries((7,), {**_series("big", 1), "tags": ["x:" + "y" * 5_000]})
    plan = plan_batches(
        [huge, *_items(2)], compress=zlib.compress, max_compressed=1_000, max_uncompressed=2_000
    )
    assert plan.oversize == [huge]
    assert {r for b in plan.batches for r in b.row_ids} == {0, 1}


def test_order_is_kept() -> None:
    items = _items(50)
    plan = plan_batches(items, compress=zlib.compress, max_compressed=3_000, max_uncompressed=3_000)
    assert [i.series["metric"] for b in plan.batches for i in b.items] == [
        f"m.{i}" for i in range(50)
    ]


@pytest.mark.parametrize(
    ("series_count", "points", "expected_sizes"),
    [(4, 1, [2, 2]), (5, 1, [2, 3]), (1, 4, [1, 1]), (1, 1, [1])],
)
def test_split_in_half(series_count: int, points: int, expected_sizes: list[int]) -> None:
    items = _items(series_count, points)
    halves = split_in_half(items)
    assert [len(h) for h in halves] == expected_sizes
    flat = sorted(p["timestamp"] for h in halves for i in h for p in i.series["points"])
    assert flat == sorted(p["timestamp"] for i in items for p in i.series["points"])


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ages", "kept", "too_old"),
    [
        ([0, 60, 3_000], 3, 0),
        ([0, 3_700], 1, 1),
        ([4_000, 7_200], 0, 2),
        ([], 0, 0),
    ],
)
def test_drop_old_points(ages: list[int], kept: int, too_old: int) -> None:
    series = {
        "metric": "m",
        "type": 3,
        "points": [{"timestamp": int(NOW.timestamp()) - a, "value": 1.0} for a in ages],
        "tags": [],
    }
    split = drop_old_points([series], now=NOW, max_age_s=3_600)
    assert sum(len(s["points"]) for s in split.fresh) == kept
    assert split.too_old == too_old
    assert all(s["points"] for s in split.fresh)


def test_merge_counts_sums_same_series_and_second_only() -> None:
    def count(row: int, ts: int, value: float, tag: str = "a:1") -> RowSeries:
        return RowSeries(
            (row,),
            {
                "metric": "c",
                "type": 1,
                "points": [{"timestamp": ts, "value": value}],
                "tags": [tag],
            },
        )

    gauge = RowSeries((9,), _series("g", 1))
    merged = merge_counts(
        [count(1, 10, 1), count(2, 10, 2), count(3, 11, 5), count(4, 10, 7, "a:2"), gauge]
    )
    by_tag = {tuple(m.series["tags"]): m for m in merged if m.series["type"] == 1}
    first = by_tag[("a:1",)]
    assert first.row_ids == (1, 2, 3)
    assert sorted((p["timestamp"], p["value"]) for p in first.series["points"]) == [
        (10, 3),
        (11, 5),
    ]
    assert by_tag[("a:2",)].series["points"] == [{"timestamp": 10, "value": 7}]
    assert gauge in merged
    assert json.dumps(count(1, 10, 1).series)  # inputs untouched
