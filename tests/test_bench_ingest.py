"""bench/ingest.py still runs against the code it measures: at a tiny size, once.

The benchmark builds its fair baseline from the consumer's own statements (the
upserts, the deployment UPDATEs and their parameters), so a change to those can
break it without breaking a test of the service. Nothing here reads a rate: the
run must finish and write the result file that bench/run_all.py reads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_the_ingest_benchmark_runs_at_a_tiny_size(server_url: str, tmp_path: Path) -> None:
    # A copy of bench/, so that its result files land in tmp_path, not beside a
    # developer's real results.
    bench = tmp_path / "bench"
    shutil.copytree(REPO_ROOT / "bench", bench, ignore=shutil.ignore_patterns("results"))
    result = subprocess.run(
        [
            sys.executable,
            str(bench / "ingest.py"),
            "--events",
            "500",
            "--sqs-events",
            "20",
            "--batch",
            "100",
            "--rounds",
            "1",
            "--database-url",
            server_url,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((bench / "results" / "ingest.json").read_text())
    assert results["events_in_process"] == 500
    # The baseline is fair only if it writes what the pipeline wrote.
    written = results["rows_written"]
    assert written["pipeline"] == written["fair_baseline"]
    for key in ("pipeline_in_process_per_s", "fair_baseline_per_s", "end_to_end_per_s"):
        assert results[key] > 0, key
