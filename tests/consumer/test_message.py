"""An SQS message's system attributes, read without trusting them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.consumer.loop import message_of


def test_attributes_as_sqs_sends_them() -> None:
    raw: Any = {
        "MessageId": "m1",
        "Body": "{}",
        "ReceiptHandle": "r1",
        "Attributes": {"SentTimestamp": "1764165600123", "ApproximateReceiveCount": "3"},
    }
    message = message_of(raw)
    assert message.sent_at == datetime(2025, 11, 26, 14, 0, 0, 123000, tzinfo=UTC)
    assert message.receive_count == 3
    assert (message.message_id, message.body, message.receipt_handle) == ("m1", "{}", "r1")


@pytest.mark.parametrize(
    ("sent", "count"),
    [("abc", "x"), ("9" * 40, "1.5"), ("", ""), ("-99999999999999999", "-")],
)
def test_odd_attributes_read_as_absent_instead_of_failing_the_receive(
    sent: str, count: str
) -> None:
    raw: Any = {
        "MessageId": "m1",
        "Body": "{}",
        "Attributes": {"SentTimestamp": sent, "ApproximateReceiveCount": count},
    }
    message = message_of(raw)
    assert message.sent_at is None
    assert message.receive_count == 1
