"""bench/run_all.py: it runs every benchmark, and its table is a pure function of
the result files (nothing here runs a benchmark or measures time)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_all"


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run_all = _run_all()


def test_every_benchmark_script_is_run() -> None:
    scripts = {p.name for p in BENCH.glob("*.py")} - run_all.HELPERS
    assert scripts == {b.script for b in run_all.BENCHES}
    assert set(run_all.HEADLINES) == {b.name for b in run_all.BENCHES}


def test_each_benchmark_writes_the_json_run_all_reads() -> None:
    for bench in run_all.BENCHES:
        text = (BENCH / bench.script).read_text()
        assert f"{bench.name}.json" in text, bench.script
        assert set(bench.sizes) == {"default", "small"}


def test_table_from_fixture() -> None:
    results, run = run_all.load_results(FIXTURE)
    table = run_all.render_table(results, run)
    assert "2026-12-01 23:00 UTC" in table
    assert "shared with other workloads" in table
    rows = {line.split("|")[3].strip(): line for line in table.splitlines() if line.count("|") > 5}
    fair = next(v for k, v in rows.items() if k.startswith("in-process pipeline ÷ same rows"))
    assert "| 59% | ≥ 70% | ✗ |" in fair
    assert "`--events 20000 --sqs-events 500`" in table
    api_lists = next(v for k, v in rows.items() if "100-item pages" in k)
    assert "| 0.52 | ≥ 0.5 | ✓ |" in api_lists
    api_single = next(v for k, v in rows.items() if "single rows" in k)
    assert "| 0.15 | ≥ 0.2 | ✗ |" in api_single
    assert "| 111.0 ms | < 1,000 ms | ✓ |" in table
    assert re.search(r"\| retention \| .* \| failed \(exit 2\) \|", table)
    assert "Total time of the run: 8.3 min." in table
    org_calls = next(v for k, v in rows.items() if k.startswith("ECS calls per scope"))
    assert "| 1.05x | ≤ 1.2x | ✓ |" in org_calls
    assert "`--size default`" in org_calls
    org_slowest = next(v for k, v in rows.items() if k.startswith("slowest scope's reconcile"))
    assert "| 2.40x | ≤ 2x | ✗ |" in org_slowest
    assert "3 ListTasks answers" in org_slowest
    org_others = next(v for k, v in rows.items() if k.startswith("slowest scope not throttled"))
    assert "| 1.50x |" in org_others
    org_ingest = next(v for k, v in rows.items() if k.startswith("consumer events/s"))
    assert "| 0.96 | ≥ 0.95 | ✓ |" in org_ingest


def test_regeneration_is_idempotent(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(
        "# Performance\n\n## All benchmarks\n\n"
        f"{run_all.BEGIN}\nold table\n{run_all.END}\n\n## Ingestion\n\ntext\n"
    )
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    run_all.regenerate(doc, results)
    once = doc.read_text()
    run_all.regenerate(doc, results)
    assert doc.read_text() == once
    assert "old table" not in once
    assert once.startswith("# Performance\n\n## All benchmarks\n\n")
    assert once.endswith(f"{run_all.END}\n\n## Ingestion\n\ntext\n")
    assert once.count(run_all.BEGIN) == once.count(run_all.END) == 1


def test_markers_added_once_to_a_document_without_them() -> None:
    table = run_all.render_table(*run_all.load_results(FIXTURE))
    once = run_all.replace_block("# Performance\n\nintro\n", table)
    assert once.count(run_all.BEGIN) == 1
    assert run_all.replace_block(once, table) == once


def test_the_performance_doc_holds_the_block_once() -> None:
    doc = (ROOT / "docs" / "performance.md").read_text()
    assert doc.count(run_all.BEGIN) == doc.count(run_all.END) == 1
    assert doc.index(run_all.BEGIN) < doc.index(run_all.END)
