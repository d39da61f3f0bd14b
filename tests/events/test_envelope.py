"""Unwrapping message bodies: raw EventBridge events, SNS envelopes, and poison bodies."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from service.errors import PermanentError
from service.events.envelope import unwrap_body, validate_event


def samples_dir() -> Path:
    """The AWS sample events: $ECSWATCH_EVENT_SAMPLES, else tests/fixtures/ecs-events."""
    override = os.environ.get("ECSWATCH_EVENT_SAMPLES")
    path = (
        Path(override)
        if override
        else Path(__file__).resolve().parents[1] / "fixtures" / "ecs-events"
    )
    assert path.is_dir(), f"event samples not found at {path} (set ECSWATCH_EVENT_SAMPLES)"
    return path


def minimal_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "e-1",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "detail": {"taskArn": "arn:aws:ecs:us-east-1:1:task/c/t"},
    }
    event.update(overrides)
    return event


def sns_envelope(message: object) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "63a3f6b6-d533-4a47-aef9-fcf5cf758c76",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
            "Message": message,
            "Timestamp": "2012-03-29T05:12:16.901Z",
            "SignatureVersion": "1",
        }
    )


# ---------------------------------------------------------------------------
# Events that pass
# ---------------------------------------------------------------------------


def test_raw_eventbridge_body_is_returned_as_is() -> None:
    body = (samples_dir() / "task_state_change_fargate_running_2020.json").read_text()
    event = unwrap_body(body)
    assert event == json.loads(body)
    assert event["id"] == "3317b2af-7005-947d-b652-f55e762e571a"


def test_sns_envelope_is_unwrapped() -> None:
    inner = (samples_dir() / "deployment_state_change_in_progress_rollback.json").read_text()
    event = unwrap_body(sns_envelope(inner))
    assert event == json.loads(inner)
    assert event["detail-type"] == "ECS Deployment State Change"


def test_key_order_and_unknown_keys_do_not_matter() -> None:
    event = {
        "zzz-unknown": [1, 2, 3],
        "detail": {"anything": True},
        "source": "aws.ecs",
        "detail-type": "Some Future Event",
        "id": "x",
        "Type": "NotANotification",
    }
    assert unwrap_body(json.dumps(event)) == event


def test_notification_without_string_message_is_judged_as_the_event_itself() -> None:
    # Only `Type == "Notification"` with a *string* Message is an SNS envelope.
    body = json.dumps({"Type": "Notification", "Message": {"id": "x"}})
    with pytest.raises(PermanentError) as info:
        unwrap_body(body)
    assert str(info.value) == "not an event: missing 'id', 'detail-type', 'source', 'detail'"


# ---------------------------------------------------------------------------
# Poison bodies: exact one-line reasons
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "body is not JSON: Expecting value at line 1 column 1"),
        ("hello", "body is not JSON: Expecting value at line 1 column 1"),
        ('{"id": "x"', "body is not JSON: Expecting ',' delimiter at line 1 column 11"),
        ("{}\n{}", "body is not JSON: Extra data at line 2 column 1"),
        ("[]", "not an event: body is an array, not an object"),
        ("[" + json.dumps(minimal_event()) + "]", "not an event: body is an array, not an object"),
        ('"text"', "not an event: body is a string, not an object"),
        ("42", "not an event: body is a number, not an object"),
        ("null", "not an event: body is null, not an object"),
        ("true", "not an event: body is a boolean, not an object"),
        ("{}", "not an event: missing 'id', 'detail-type', 'source', 'detail'"),
        (
            json.dumps({k: v for k, v in minimal_event().items() if k != "detail-type"}),
            "not an event: missing 'detail-type'",
        ),
        (
            json.dumps({k: v for k, v in minimal_event().items() if k != "detail"}),
            "not an event: missing 'detail'",
        ),
        (json.dumps(minimal_event(id=7)), "not an event: 'id' is a number, not a string"),
        (json.dumps(minimal_event(id="  ")), "not an event: 'id' is empty"),
        (
            json.dumps(minimal_event(**{"detail-type": None})),
            "not an event: 'detail-type' is null, not a string",
        ),
        (
            json.dumps(minimal_event(source=["aws.ecs"])),
            "not an event: 'source' is an array, not a string",
        ),
        (json.dumps(minimal_event(detail=[])), "not an event: 'detail' is an array, not an object"),
        (
            json.dumps(minimal_event(detail="{}")),
            "not an event: 'detail' is a string, not an object",
        ),
        (json.dumps(minimal_event(detail=None)), "not an event: 'detail' is null, not an object"),
        (
            sns_envelope("Hello world!"),
            "SNS message is not JSON: Expecting value at line 1 column 1",
        ),
        (sns_envelope("[1]"), "not an event: SNS message is an array, not an object"),
        (
            json.dumps({"Type": "SubscriptionConfirmation", "Message": "You have chosen..."}),
            "not an event: missing 'id', 'detail-type', 'source', 'detail'",
        ),
        (
            json.dumps(minimal_event(detail={"name": "a\u0000b"})),
            "not storable: $.detail.name has a NUL or lone surrogate",
        ),
        (
            '{"id": "x", "detail-type": "t", "source": "s", "detail": {"v": "\\ud800"}}',
            "not storable: $.detail.v has a NUL or lone surrogate",
        ),
        (
            '{"id": "x", "detail-type": "t", "source": "s", "detail": {"cpu": NaN}}',
            "not storable: $.detail.cpu is nan, not a JSON number",
        ),
        (
            '{"id": "x", "detail-type": "t", "source": "s", "detail": {"a\\u0000": 1}}',
            "not storable: a key in $.detail has a NUL or lone surrogate",
        ),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else None,
)
def test_poison_bodies_raise_permanent_error_with_reason(body: str, reason: str) -> None:
    with pytest.raises(PermanentError) as info:
        unwrap_body(body)
    assert str(info.value) == reason
    assert "\n" not in str(info.value)


def test_sns_sample_with_plain_text_message_is_poison() -> None:
    # The AWS docs sample is a generic SNS envelope whose Message is "Hello world!".
    body = (samples_dir() / "sns_to_sqs_body_envelope_docs_generic.json").read_text()
    assert json.loads(body)["Type"] == "Notification"
    with pytest.raises(PermanentError) as info:
        unwrap_body(body)
    assert str(info.value) == "SNS message is not JSON: Expecting value at line 1 column 1"


def test_deeply_nested_body_is_poison_not_a_crash() -> None:
    body = "[" * 100_000 + "]" * 100_000
    with pytest.raises(PermanentError) as info:
        unwrap_body(body)
    assert str(info.value) == "body is not JSON: nested too deeply"


def test_integer_too_long_to_convert_is_poison() -> None:
    body = '{"id": ' + "9" * 5000 + "}"
    with pytest.raises(PermanentError) as info:
        unwrap_body(body)
    assert str(info.value).startswith("body is not JSON: Exceeds the limit")


def test_deep_detail_with_a_bad_leaf_is_walked_without_recursion() -> None:
    # A NUL at the leaf defeats the json.dumps fast path, so the walk must reach it
    # (a clean value never leaves the fast path, and so would prove nothing).
    nested: Any = "bad\u0000leaf"
    for _ in range(900):
        nested = [nested]
    event = minimal_event(detail={"deep": nested})
    with pytest.raises(PermanentError) as info:
        validate_event(json.loads(json.dumps(event)))
    assert str(info.value).endswith("has a NUL or lone surrogate")


def test_nesting_beyond_the_recursion_limit_is_poison() -> None:
    # Built in Python (json could not decode it): the storability check must not
    # leak RecursionError, which is not a PermanentError.
    nested: Any = "leaf"
    for _ in range(sys.getrecursionlimit() + 100):
        nested = [nested]
    with pytest.raises(PermanentError):
        validate_event(minimal_event(detail={"deep": nested}))


def test_every_nesting_depth_near_the_limit_is_poison_or_accepted() -> None:
    # json.loads and json.dumps recurse per level from different stack depths:
    # some depth decodes but does not re-encode. Sweep the boundary.
    limit = sys.getrecursionlimit()
    for depth in range(limit - 300, limit + 20):
        body = json.dumps(minimal_event(detail={})).replace(
            '"detail": {}', '"detail": {"deep": ' + "[" * depth + "]" * depth + "}"
        )
        with contextlib.suppress(PermanentError):  # anything else escapes and fails
            unwrap_body(body)


def test_long_reason_paths_are_cut_to_one_short_line() -> None:
    event = minimal_event(detail={"k\n" * 100: "\u0000"})
    with pytest.raises(PermanentError) as info:
        validate_event(event)
    reason = str(info.value)
    assert "\n" not in reason
    assert reason.endswith("... has a NUL or lone surrogate")
    assert len(reason) < 200


@pytest.mark.parametrize(
    "detail",
    [
        {"n": 2**64, "m": -(2**63) - 1, "wide": 2**70 + 1},  # beyond 64 bits: kept exact
        {"n": 2**63 - 1, "m": -(2**63), "u": 2**64 - 1},  # the edges orjson reads itself
        {"f": 0.1, "g": 1e-300, "h": 1.7976931348623157e308, "z": -0.0, "e": 1e5},
        {"s": 'quote " backslash \\ snowman \u2603 emoji \U0001f600', "k\u00e9": [True, None]},
        {"id": "1234567890123456789012"},  # a long digit run in a string: the slow path
    ],
)
def test_fast_decoding_gives_what_the_standard_library_gives(detail: dict[str, Any]) -> None:
    # orjson decodes ordinary bodies; the standard library takes integers it would
    # turn into floats. The event is the same value, of the same types, either way.
    body = json.dumps(minimal_event(detail=detail))
    event = unwrap_body(body)
    expected = json.loads(body)
    assert event == expected
    assert [type(v) for v in event["detail"].values()] == [
        type(v) for v in expected["detail"].values()
    ]


def test_duplicate_keys_keep_the_last_value_as_the_standard_library_does() -> None:
    body = '{"id": "a", "id": "b", "detail-type": "t", "source": "s", "detail": {"v": 1, "v": 2}}'
    event = unwrap_body(body)
    assert event["id"] == "b"
    assert event["detail"] == {"v": 2}
