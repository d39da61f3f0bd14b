"""Unwrap an SQS message body into an EventBridge event, or say why it is not one.

Bodies arrive either as the raw EventBridge event (the default SQS target input,
or SNS with ``RawMessageDelivery``) or wrapped in an SNS notification whose
``Message`` is the event as a JSON string. After unwrapping, one rule
(docs/events.md) decides what counts as an event: a JSON object with string ``id``, ``detail-type``
and ``source`` and an object ``detail``. Key order and unknown keys never matter.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from service.errors import PermanentError

#: Top-level keys that must be non-empty strings, in the order reasons name them.
_REQUIRED_STRINGS = ("id", "detail-type", "source")
# PostgreSQL text and jsonb reject NUL, and UTF-8 has no lone surrogates: an event
# carrying either could never be stored, so it would fail on every redelivery.
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def unwrap_body(body: str) -> dict[str, Any]:
    """Parse an SQS body, unwrap an SNS envelope if there is one, and validate the event.

    Raises :class:`PermanentError` when the body is not JSON, the SNS ``Message`` is
    not JSON, or the result is not an event.
    """
    return unwrap_body_with_detail_json(body)[0]


def unwrap_body_with_detail_json(body: str) -> tuple[dict[str, Any], str | bytes | None]:
    """:func:`unwrap_body`, and the event's ``detail`` as JSON text (see :func:`checked_event`)."""
    value, finite, clean = _load_json(body, what="body")
    where = "body"
    if (
        isinstance(value, dict)
        and value.get("Type") == "Notification"
        and isinstance(value.get("Message"), str)
    ):
        value, finite, clean = _load_json(value["Message"], what="SNS message")
        where = "SNS message"
    return checked_event(value, where=where, finite=finite, clean=clean)


def validate_event(value: object, *, where: str = "event") -> dict[str, Any]:
    """Return ``value`` as an event dict, or raise :class:`PermanentError` naming the flaw.

    Every missing key is named at once, so one quarantine entry tells the whole story.
    """
    return checked_event(value, where=where)[0]


def checked_event(
    value: object, *, where: str = "event", finite: bool = False, clean: bool = False
) -> tuple[dict[str, Any], str | bytes | None]:
    """:func:`validate_event`, and the event's ``detail`` serialised as JSON text.

    The text comes for free from the storability check (which serialises the event
    anyway), so the raw event can be stored without serialising it a second time.
    It is ``None`` only in the rare case the check had to walk the event instead.
    ``finite`` says the value is known to hold no NaN or infinity (:func:`_load_json`
    refused them while decoding), which lets the check use the fast serialiser;
    ``clean`` that it holds nothing unstorable at all (see :func:`_load_json`).
    """
    if not isinstance(value, dict):
        raise PermanentError(f"not an event: {where} is {json_type_name(value)}, not an object")
    missing = [key for key in (*_REQUIRED_STRINGS, "detail") if key not in value]
    if missing:
        names = ", ".join(f"'{key}'" for key in missing)
        raise PermanentError(f"not an event: missing {names}")
    for key in _REQUIRED_STRINGS:
        field = value[key]
        if not isinstance(field, str):
            raise PermanentError(f"not an event: '{key}' is {json_type_name(field)}, not a string")
        if not field.strip():
            raise PermanentError(f"not an event: '{key}' is empty")
    if not isinstance(value["detail"], dict):
        raise PermanentError(
            f"not an event: 'detail' is {json_type_name(value['detail'])}, not an object"
        )
    return value, _check_storable(value, finite=finite, clean=clean)


def _check_storable(
    event: dict[str, Any], *, finite: bool = False, clean: bool = False
) -> str | bytes | None:
    """Refuse values that PostgreSQL jsonb cannot hold (NUL, lone surrogates, NaN).

    Returns ``detail`` as JSON text when the fast check produced it, else ``None``.
    """
    if clean:
        # Known storable: only the detail's text is wanted (orjson cannot write
        # nesting deeper than 254, which the checks below then take).
        try:
            return orjson.dumps(event["detail"])
        except TypeError:
            pass
    # Fast path at C speed for the common, clean event: ``detail`` and the rest of
    # the event are serialised apart, so the detail text can be kept for storage.
    # The walk below runs only when this finds something, to name the offending path.
    if finite:
        # orjson refuses lone surrogates (and integers beyond 64 bits, or nesting
        # deeper than 254: storable, but the walk decides) and escapes NUL as
        # \u0000; it would write NaN as null, which ``finite`` rules out.
        try:
            detail_bytes = orjson.dumps(event["detail"])
            rest_bytes = orjson.dumps({k: v for k, v in event.items() if k != "detail"})
        except TypeError:
            pass
        else:
            if b"\\u0000" not in detail_bytes and b"\\u0000" not in rest_bytes:
                return detail_bytes
    detail_json: str | None = None
    try:
        detail_json = json.dumps(event["detail"], ensure_ascii=False, allow_nan=False)
        rest = json.dumps(
            {key: value for key, value in event.items() if key != "detail"},
            ensure_ascii=False,
            allow_nan=False,
        )
        detail_json.encode("utf-8")
        rest.encode("utf-8")
    except RecursionError:
        # json.loads accepted this nesting a few frames higher up the stack; the
        # encoder needs the same depth from deeper down and runs out. Never let it
        # escape: it is not a PermanentError and would kill the consumer's worker.
        raise PermanentError("not storable: nested too deeply") from None
    except (ValueError, UnicodeEncodeError):
        detail_json = None
    else:
        if "\\u0000" not in detail_json and "\\u0000" not in rest:
            return detail_json
    # Iterative: json.loads accepts nesting deeper than a recursive walk could take.
    pending: list[tuple[str, object]] = [("$", event)]
    while pending:
        path, node = pending.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                if isinstance(key, str) and _UNSTORABLE_CHARACTER.search(key):
                    raise PermanentError(
                        f"not storable: a key in {_short(path)} has a NUL or lone surrogate"
                    )
                pending.append((f"{path}.{key}", child))
        elif isinstance(node, list):
            pending.extend((f"{path}[{index}]", child) for index, child in enumerate(node))
        elif isinstance(node, str):
            if _UNSTORABLE_CHARACTER.search(node):
                raise PermanentError(f"not storable: {_short(path)} has a NUL or lone surrogate")
        elif isinstance(node, float) and not math.isfinite(node):
            raise PermanentError(f"not storable: {_short(path)} is {node!r}, not a JSON number")
    # Storable after all (say, a literal backslash-u0000 in a string).
    return detail_json


def _short(path: str) -> str:
    # Keys come from the message: keep the reason on one short line.
    printable = "".join(c if c.isprintable() else "?" for c in path)
    return printable if len(printable) <= 120 else printable[:117] + "..."


def json_type_name(value: object) -> str:
    """Name a decoded JSON value's type the way JSON does ("an array", "a number", ...)."""
    # bool first: it is a subclass of int.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


class _NonFinite(ValueError):
    """A NaN, an infinity, or a number too large for a float, met while decoding."""


def _refuse_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NonFinite(text)
    return number


# JSON as RFC 8259 has it: no NaN or Infinity. Python's decoder accepts both; this
# one stops at them, so a decoded value is known finite (see checked_event).
_FINITE_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


# orjson decodes about three times faster than the standard library and refuses
# NaN, Infinity and numbers that overflow a double, but it reads an integer beyond
# 64 bits as a float (losing its digits): text with a run of 19 digits or more goes
# to the standard library, which keeps them exact. So does anything orjson refuses
# (lone surrogates, nesting deeper than 1024, not JSON), so that the result and the
# error messages stay those of the standard library. (The digit run is found by
# mapping every digit to 0 and searching for 19 zeros: a regular expression takes
# ten times as long.)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _load_json(text: str, *, what: str) -> tuple[Any, bool, bool]:
    """The decoded value, whether it is known to hold only finite numbers, and
    whether it is known to be storable as it is (``clean``).

    What orjson decoded is clean unless the text has a ``\\u0000`` escape: it refuses
    lone surrogates, NaN and infinities, raw control characters, and only reads
    integers that fit 64 bits here, so a NUL is the one unstorable value left.
    """
    if type(text) is str:
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the standard library names it
            pass
        else:
            if _LONG_DIGITS not in encoded.translate(_DIGITS_TO_ZERO):
                try:
                    value = orjson.loads(encoded)
                except orjson.JSONDecodeError:
                    pass
                else:
                    return value, True, b"\\u0000" not in encoded
    try:
        return _FINITE_DECODER.decode(text), True, False
    except (ValueError, RecursionError, TypeError):
        # A NaN (decoded as Python does, so the storability check can name where it
        # is), bytes rather than text, or not JSON at all (the error names why).
        return _decode(text, what=what), False, False


def _decode(text: str, *, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PermanentError(
            f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        # json's C decoder recurses per nesting level; a hostile body must not
        # escape as a non-permanent error and be redelivered forever.
        raise PermanentError(f"{what} is not JSON: nested too deeply") from exc
    except ValueError as exc:
        # Integer literals longer than sys.get_int_max_str_digits() end up here.
        raise PermanentError(f"{what} is not JSON: {exc}") from exc
    except TypeError as exc:
        raise PermanentError(f"{what} is not text: {type(text).__name__}") from exc
