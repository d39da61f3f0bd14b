"""Typed adapter over CloudWatch GetMetricData (500 queries a call, paginated)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from service.aws.calls import AwsCaller

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch import CloudWatchClient
    from types_aiobotocore_cloudwatch.type_defs import (
        MetricDataQueryTypeDef,
        MetricDataResultTypeDef,
    )

#: GetMetricData's limit of queries per call.
QUERIES_PER_CALL = 500


class CloudWatchApi:
    """CloudWatch reads, each through the shared :class:`AwsCaller`."""

    def __init__(self, client: CloudWatchClient, caller: AwsCaller) -> None:
        self._client = client
        self._caller = caller

    async def get_metric_data(
        self, queries: Sequence[MetricDataQueryTypeDef], start: datetime, end: datetime
    ) -> list[MetricDataResultTypeDef]:
        """Every result of one batch of queries (following ``NextToken``)."""
        if not 0 < len(queries) <= QUERIES_PER_CALL:
            raise ValueError(f"GetMetricData takes 1 to {QUERIES_PER_CALL} queries")
        results: list[MetricDataResultTypeDef] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "MetricDataQueries": list(queries),
                "StartTime": start,
                "EndTime": end,
                "ScanBy": "TimestampAscending",
            }
            if token:
                kwargs["NextToken"] = token
            page = await self._caller.call(
                "cloudwatch", "GetMetricData", partial(self._client.get_metric_data, **kwargs)
            )
            results.extend(page.get("MetricDataResults", []))
            token = page.get("NextToken")
            if not token:
                return results
