"""Pure splitting of metric series into payloads under Datadog's size limits.

The v2 series intake takes at most 512,000 bytes compressed and 5,242,880 bytes
uncompressed per payload. Series are packed greedily by their JSON size (the
client serialises with ``json.dumps`` defaults, which is what is measured here);
a batch that might exceed the compressed limit is compressed (with the same
codec the client will use, passed in) and halved until it fits. A series too big
on its own is split by points; a single point too big is reported, never sent.

Each series is tagged with the outbox row it came from, so the sender can
answer per row: a row is delivered when every batch holding one of its series
was accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_COMPRESSED = 512_000
MAX_UNCOMPRESSED = 5_242_880
# ``{"series": [`` + ``]}``.
_ENVELOPE = len(b'{"series": []}')
_SEPARATOR = len(b", ")
# zstd, gzip and deflate add a few dozen bytes to incompressible input at worst:
# a body this much under the compressed limit needs no trial compression.
_COMPRESSION_SLACK = 1_024

Series = dict[str, Any]
Compress = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class RowSeries:
    """One series and the outbox rows it carries points of (several once merged)."""

    row_ids: tuple[int, ...]
    series: Series


@dataclass(slots=True)
class Batch:
    """Series for one request, and the rows they belong to."""

    items: list[RowSeries] = field(default_factory=list)
    size: int = _ENVELOPE

    @property
    def row_ids(self) -> set[int]:
        return {r for i in self.items for r in i.row_ids}

    def body(self) -> dict[str, Any]:
        return {"series": [i.series for i in self.items]}


@dataclass(slots=True)
class Plan:
    """Batches to send, and series that can never fit (one point over a limit)."""

    batches: list[Batch] = field(default_factory=list)
    oversize: list[RowSeries] = field(default_factory=list)


def series_size(series: Series) -> int:
    """Bytes of ``series`` as the client serialises it."""
    return len(json.dumps(series).encode())


def encode_body(items: Sequence[RowSeries]) -> bytes:
    """The request body the client would send for ``items``, uncompressed."""
    return json.dumps({"series": [i.series for i in items]}).encode()


def plan_batches(
    items: Sequence[RowSeries],
    *,
    compress: Compress,
    max_compressed: int = MAX_COMPRESSED,
    max_uncompressed: int = MAX_UNCOMPRESSED,
) -> Plan:
    """Split ``items`` into batches whose bodies fit both limits.

    Order is kept. Pure: ``compress`` is the codec the client will apply.
    """
    plan = Plan()
    current = Batch()
    for item in items:
        for piece in _fitting_pieces(item, max_uncompressed, plan):
            size = series_size(piece.series)
            extra = size + (_SEPARATOR if current.items else 0)
            if current.items and current.size + extra > max_uncompressed:
                plan.batches.append(current)
                current = Batch()
                extra = size
            current.items.append(piece)
            current.size += extra
    if current.items:
        plan.batches.append(current)
    fitted: list[Batch] = []
    for batch in plan.batches:
        fitted.extend(_fit_compressed(batch, compress, max_compressed, plan))
    plan.batches = fitted
    return plan


def _fitting_pieces(item: RowSeries, max_uncompressed: int, plan: Plan) -> list[RowSeries]:
    """``item`` split by points until each piece fits ``max_uncompressed`` alone."""
    if series_size(item.series) + _ENVELOPE <= max_uncompressed:
        return [item]
    points = item.series.get("points") or []
    if len(points) <= 1:
        plan.oversize.append(item)
        return []
    half = len(points) // 2
    out: list[RowSeries] = []
    for part in (points[:half], points[half:]):
        out.extend(
            _fitting_pieces(
                RowSeries(item.row_ids, {**item.series, "points": part}), max_uncompressed, plan
            )
        )
    return out


def _fit_compressed(batch: Batch, compress: Compress, limit: int, plan: Plan) -> list[Batch]:
    if batch.size <= limit - _COMPRESSION_SLACK:
        return [batch]
    if len(compress(encode_body(batch.items))) <= limit:
        return [batch]
    if len(batch.items) == 1:
        item = batch.items[0]
        points = item.series.get("points") or []
        if len(points) <= 1:
            plan.oversize.append(item)
            return []
        half = len(points) // 2
        pieces = [
            RowSeries(item.row_ids, {**item.series, "points": part})
            for part in (points[:half], points[half:])
        ]
        return [b for p in pieces for b in _fit_compressed(_batch_of([p]), compress, limit, plan)]
    half = len(batch.items) // 2
    return [
        *_fit_compressed(_batch_of(batch.items[:half]), compress, limit, plan),
        *_fit_compressed(_batch_of(batch.items[half:]), compress, limit, plan),
    ]


def _batch_of(items: Sequence[RowSeries]) -> Batch:
    size = _ENVELOPE + sum(series_size(i.series) for i in items)
    return Batch(list(items), size + _SEPARATOR * max(len(items) - 1, 0))


def split_in_half(items: Sequence[RowSeries]) -> list[list[RowSeries]]:
    """Two halves of a batch the intake refused as too large (413); a lone series is
    split by points. Returns one list when nothing can be split further."""
    if len(items) > 1:
        half = len(items) // 2
        return [list(items[:half]), list(items[half:])]
    if len(items) == 1:
        points = items[0].series.get("points") or []
        if len(points) > 1:
            half = len(points) // 2
            return [
                [RowSeries(items[0].row_ids, {**items[0].series, "points": part})]
                for part in (points[:half], points[half:])
            ]
    return [list(items)]


@dataclass(frozen=True, slots=True)
class AgeSplit:
    """Series whose points Datadog still accepts, and the number of points too old."""

    fresh: list[Series]
    too_old: int


def drop_old_points(series: Sequence[Series], *, now: datetime, max_age_s: float) -> AgeSplit:
    """Keep points newer than ``now - max_age_s``; series left without points go.

    Datadog refuses points more than about an hour old; they are counted as
    dropped (reason ``too_old``) instead of being sent again and again.
    """
    cutoff = now.timestamp() - max_age_s
    fresh: list[Series] = []
    too_old = 0
    for s in series:
        points = s.get("points") or []
        kept = [p for p in points if p["timestamp"] >= cutoff]
        too_old += len(points) - len(kept)
        if kept:
            fresh.append(s if len(kept) == len(points) else {**s, "points": kept})
    return AgeSplit(fresh, too_old)


def merge_counts(items: Sequence[RowSeries]) -> list[RowSeries]:
    """Sum count points of the same metric, tags and timestamp; others pass through.

    Datadog keeps the last value sent for one series and timestamp, so two rows
    counting the same thing in the same second must arrive as one summed point.
    """
    out: list[RowSeries] = []
    index: dict[tuple[str, tuple[str, ...]], int] = {}
    for item in items:
        s = item.series
        if s.get("type") != 1:
            out.append(item)
            continue
        key = (s["metric"], tuple(s.get("tags") or ()))
        if key not in index:
            index[key] = len(out)
            out.append(RowSeries(item.row_ids, {**s, "points": [dict(p) for p in s["points"]]}))
            continue
        target = out[index[key]]
        by_time = {p["timestamp"]: p for p in target.series["points"]}
        for p in s["points"]:
            if p["timestamp"] in by_time:
                by_time[p["timestamp"]]["value"] += p["value"]
            else:
                copy = dict(p)
                target.series["points"].append(copy)
                by_time[p["timestamp"]] = copy
        ids = tuple(dict.fromkeys((*target.row_ids, *item.row_ids)))
        out[index[key]] = RowSeries(ids, target.series)
    return out


def split_by_rows(items: Sequence[RowSeries]) -> list[list[RowSeries]]:
    """Two halves of a refused batch that keep each row's series together, so that
    the row the intake refuses (400) is found without failing its neighbours.
    Returns one list when the batch holds one row (or one merged group)."""
    groups: dict[tuple[int, ...], list[RowSeries]] = {}
    for item in items:
        groups.setdefault(item.row_ids, []).append(item)
    if len(groups) < 2:
        return [list(items)]
    ordered = list(groups.values())
    half = len(ordered) // 2
    return [[i for g in ordered[:half] for i in g], [i for g in ordered[half:] for i in g]]
