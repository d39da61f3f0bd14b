"""``ecswatch replay``: events from files through the same handler, without SQS.

A file holds one event (a JSON object), a JSON array of events, or JSON lines.
Anything in it that is not an event is quarantined with the reason, exactly as
an SQS message would be; the rest is applied.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from service.consumer.handler import Handler, Message

_BATCH = 500


def read_bodies(path: Path) -> Iterator[tuple[str, str]]:
    """``(message id, body)`` of every event in ``path``; ids name file and position."""
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    stripped = text.strip()
    if not stripped:
        return
    try:
        whole = json.loads(stripped)
    except (ValueError, RecursionError):
        # Not one JSON document (JSON lines, or something the decoder refuses: too
        # deep, an over-long integer): read it line by line, and let the handler
        # quarantine each line that is not an event, naming why.
        whole = None
    if isinstance(whole, list):
        for index, item in enumerate(whole):
            try:
                body = json.dumps(item)
            except RecursionError:
                # Decodable but too deep to encode again: not an event anyway.
                # Quarantine a placeholder that says where it was.
                body = f"unencodable item {index} of {path}: nested too deeply"
            yield f"{path}#{index}", body
        return
    if whole is not None:
        yield f"{path}#0", stripped
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield f"{path}:{number}", line


async def replay_files(handler: Handler, paths: list[Path]) -> Counter[str]:
    """Feed every event of ``paths`` through ``handler``; count the outcomes."""
    counts: Counter[str] = Counter()
    batch: list[Message] = []

    async def flush() -> None:
        result = await handler.handle(batch)
        counts.update(result.outcomes.values())
        counts["retry"] += len(result.retry)
        batch.clear()

    for path in paths:
        for message_id, body in read_bodies(path):
            batch.append(Message(message_id=message_id, body=body))
            if len(batch) >= _BATCH:
                await flush()
    if batch:
        await flush()
    return counts
