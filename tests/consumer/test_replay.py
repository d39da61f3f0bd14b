"""``ecswatch replay``: files of events through the same pipeline, without SQS."""

from __future__ import annotations

import json
import random
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.demo.events import task_lifecycle
from tests.test_cli import _run


async def test_replay_object_array_and_json_lines(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    events = task_lifecycle(random.Random(3))
    (tmp_path / "one.json").write_text(json.dumps(events[0], indent=2))
    (tmp_path / "array.json").write_text(json.dumps(events[1:4]))
    lines = [json.dumps(e) for e in events[4:]] + ["not an event", json.dumps(events[0])]
    (tmp_path / "lines.jsonl").write_text("\n".join(lines) + "\n")
    files = [str(tmp_path / n) for n in ("one.json", "array.json", "lines.jsonl")]
    result = _run("replay", *files, ECSWATCH_DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    # One batch: the newest version applies, the older ones are superseded (stale).
    assert result.stdout.strip() == (
        f"replayed {len(events) + 2} events from 3 file(s): "
        f"applied 1, duplicate 1, quarantined 1, stale {len(events) - 1}"
    )
    async with engine.connect() as conn:
        version = (await conn.execute(text("SELECT version FROM tasks"))).scalar()
        quarantined = (await conn.execute(text("SELECT error FROM quarantine"))).scalar()
    assert version == events[-1]["detail"]["version"]
    assert quarantined == "body is not JSON: Expecting value at line 1 column 1"


def test_replay_names_a_missing_file(tmp_path: Path) -> None:
    result = _run("replay", str(tmp_path / "nope.json"))
    assert result.returncode == 2  # a bad argument, like every usage error
    assert result.stderr.strip() == f"ecswatch: replay: {tmp_path / 'nope.json'}: no such file"


def test_consumer_role_needs_a_queue() -> None:
    result = _run("run", "--roles", "consumer")
    assert result.returncode == 2
    assert "ECSWATCH_QUEUE_URL is required" in result.stderr
