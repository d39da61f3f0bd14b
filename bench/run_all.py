"""Every benchmark in one place: run them one after another, then regenerate the
summary table of docs/performance.md (between its run_all markers).

Each benchmark is its own script and writes its own bench/results/<name>.json;
this script runs them as subprocesses at the sizes of ``--size`` (``default``
finishes within about 15 minutes on the 2-vCPU machine of docs/performance.md;
``small`` is a smoke run of a few minutes), records the run in
bench/results/run_all.json, and rewrites the table from those JSON files.

    .venv/bin/python bench/run_all.py [--size default|small] [--only ingest,api]
    .venv/bin/python bench/run_all.py --render-only   # the table from existing JSONs

The table is a pure function of the result files (:func:`render_table`), so
rendering twice gives the same document.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "performance.md"
BEGIN = "<!-- run_all:begin -->"
END = "<!-- run_all:end -->"

#: A benchmark still running after this long is stopped (its row says so).
PER_BENCH_TIMEOUT_S = 480

#: Scripts in bench/ that are helpers, not benchmarks.
HELPERS = frozenset({"benchdb.py", "run_all.py"})


@dataclass(frozen=True)
class Bench:
    name: str  # bench/<name>.py, writing bench/results/<name>.json
    sizes: dict[str, tuple[str, ...]]  # --size -> the script's arguments

    @property
    def script(self) -> str:
        return f"{self.name}.py"


BENCHES: tuple[Bench, ...] = (
    Bench(
        "ingest",
        {
            "default": ("--events", "20000", "--sqs-events", "500"),
            "small": ("--events", "3000", "--sqs-events", "100"),
        },
    ),
    Bench(
        "api",
        {
            "default": ("--tasks", "100000", "--events", "500000", "--duration", "5"),
            "small": ("--tasks", "10000", "--events", "50000", "--duration", "2"),
        },
    ),
    Bench("aws_calls", {"default": ("--size", "small"), "small": ("--size", "small")}),
    Bench(
        "alert_latency",
        {
            "default": ("--deployments", "100"),
            "small": ("--deployments", "20", "--ceiling-messages", "100"),
        },
    ),
    Bench(
        "datadog",
        {
            "default": ("--rows", "200", "--interval", "5", "--samples", "3"),
            "small": ("--rows", "50", "--interval", "5", "--samples", "1"),
        },
    ),
    Bench(
        "retention",
        {
            "default": ("--old-events", "100000", "--events", "10000", "--events-during", "30000"),
            "small": ("--old-events", "20000", "--events", "3000", "--events-during", "6000"),
        },
    ),
    Bench("contention", {"default": ("--duration", "20"), "small": ("--duration", "5")}),
    Bench("org_scale", {"default": ("--size", "default"), "small": ("--size", "small")}),
)


# ---- headlines: one result JSON -> rows of (measure, value, target, met)

Headline = tuple[str, str, str, bool | None]


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _ingest(r: dict[str, Any]) -> list[Headline]:
    rows: list[Headline] = []
    if "in_process_vs_fair_baseline" in r:
        ratio = r["in_process_vs_fair_baseline"]
        target = r.get("fair_baseline_target", 0.7)
        rows.append(
            (
                f"in-process pipeline ÷ same rows by COPY + same upserts"
                f" ({r['pipeline_in_process_per_s']:,} vs {r['fair_baseline_per_s']:,} events/s)",
                _pct(ratio),
                f"≥ {_pct(target)}",
                ratio >= target,
            )
        )
    rows.append(
        (
            "in-process pipeline ÷ COPY of the raw JSON",
            _pct(r["in_process_vs_copy"]),
            "≥ 25%",
            r["in_process_vs_copy"] >= 0.25,
        )
    )
    rows.append(
        (
            f"end to end through SQS on moto ÷ moto's receive+delete ceiling"
            f" ({r['end_to_end_per_s']} vs {r['moto_ceiling_per_s']} msg/s)",
            _pct(r["end_to_end_vs_moto"]),
            "≥ 80%",
            r["end_to_end_vs_moto"] >= 0.8,
        )
    )
    return rows


def _api(r: dict[str, Any]) -> list[Headline]:
    # The targets: ≥ 0.5 for 100-item pages, ≥ 0.2 for single rows.
    groups: dict[str, list[float]] = {"pages": [], "short": [], "single": []}
    for s in r.get("scenarios", []):
        if not s["sql"]["rps"]:
            continue
        ratio = s["api"]["rps"] / s["sql"]["rps"]
        kind = "single" if s["items"] <= 1 else "pages" if s["items"] >= 100 else "short"
        groups[kind].append(ratio)
    labels = {
        "pages": ("100-item pages", 0.5),
        "short": ("shorter list pages", None),
        "single": ("single rows", 0.2),
    }
    rows: list[Headline] = []
    for kind, ratios in groups.items():
        if not ratios:
            continue
        label, target = labels[kind]
        worst = min(ratios)
        rows.append(
            (
                f"API requests/s ÷ its statement's requests/s, {label} (worst of {len(ratios)})",
                f"{worst:.2f}",
                "" if target is None else f"≥ {target}",
                None if target is None else worst >= target,
            )
        )
    summary = r.get("summary", {})
    if summary.get("median_p99_ratio") is not None:
        rows.append(
            (
                "API p99 ÷ its statement's p99 (median over routes)",
                f"{summary['median_p99_ratio']:.2f}",
                "",
                None,
            )
        )
    return rows


def _aws_calls(r: dict[str, Any]) -> list[Headline]:
    rec, ev, pm = r["reconcile"], r["task_events"], r["per_minute_steady"]
    ratios = {
        "ECS calls per reconcile": rec["ecs_calls"] / max(1, rec["ecs_minimum"]),
        "GetMetricData per minute": pm["cloudwatch"] / max(1, pm["cloudwatch_minimum"]),
        "DescribeTasks per 1,000 events": ev["describe_tasks"]
        / max(1, ev["describe_tasks_minimum"]),
    }
    worst_name = max(ratios, key=lambda k: ratios[k])
    worst = ratios[worst_name]
    p95 = ev["tags_known_p95_s"]
    return [
        (
            f"AWS calls ÷ minimum from the batch limits (worst: {worst_name})",
            f"{worst:.2f}x",
            "≤ 1.2x",
            worst <= 1.2,
        ),
        ("commit → tags_known p95", f"{p95} s", "≤ 2 s", p95 <= 2),
    ]


def _alert_latency(r: dict[str, Any]) -> list[Headline]:
    return [
        (
            f"failing deployment event → verified webhook p95"
            f" (load {_pct(r['background_vs_ceiling'])} of moto's ceiling)",
            f"{r['p95_ms']:,} ms",
            "< 1,000 ms",
            r["p95_ms"] < 1000,
        )
    ]


def _datadog(r: dict[str, Any]) -> list[Headline]:
    return [
        (
            "points/s through outbox → dispatcher → intake ÷ the client alone",
            _pct(r["forward_vs_client_alone"]),
            "≥ 50%",
            r["forward_vs_client_alone"] >= 0.5,
        ),
        (
            f"freshness, put → intake, worst of {r['samples']} (interval {r['interval_s']} s)",
            f"{r['freshness_max_s']} s",
            f"≤ {r['target_s']} s",
            r["freshness_max_s"] <= r["target_s"],
        ),
    ]


def _retention(r: dict[str, Any]) -> list[Headline]:
    rows: list[Headline] = []
    for mode, name in (("drop", "partition drop"), ("delete", "batched delete")):
        m = r["modes"].get(mode)
        if m is None:
            continue
        rows.append(
            (
                f"{name}: a day of {r['old_events']:,} old events pruned in; ingestion"
                " while pruning ÷ alone; worst 500-event batch while pruning",
                f"{m['prune']['seconds']} s; {_pct(m['while_pruning_vs_alone'])};"
                f" {m['while_pruning']['batch_max_ms']:,} ms",
                "",
                None,
            )
        )
    return rows


def _contention(r: dict[str, Any]) -> list[Headline]:
    before, ordered = r["before"], r["ordered"]
    return [
        (
            f"Describe writes lost to deadlocks beside the consumer"
            f" ({ordered['describe_transactions']:,} transactions;"
            f" writes without the lock order lost {before['describe_lost']:,} of"
            f" {before['describe_transactions']:,})",
            f"{ordered['describe_lost']:,}",
            "0",
            ordered["describe_lost"] == 0,
        ),
        (
            "deadlocks per 1,000 Describe writes, with the lock order vs without",
            f"{ordered['deadlocks_per_1000_describes']}"
            f" vs {before['deadlocks_per_1000_describes']}",
            "",
            None,
        ),
    ]


def _org_scale(r: dict[str, Any]) -> list[Headline]:
    accounts, regions = r["size"][0], r["size"][1]
    rec, faults, ingest = r["reconcile"], r["faults"], r["ingest"]
    return [
        (
            f"ECS calls per scope per reconcile ÷ minimum from the batch limits"
            f" ({accounts} accounts x {regions} regions)",
            f"{rec['ratio']:.2f}x",
            "≤ 1.2x",
            rec["ratio"] <= 1.2,
        ),
        (
            f"slowest scope's reconcile ÷ median scope's, one account denied (left out),"
            f" one scope throttled (3 {faults['throttled_operation']} answers, included)",
            f"{faults['slowest_vs_median']:.2f}x",
            "≤ 2x",
            faults["slowest_vs_median"] <= 2,
        ),
        (
            "slowest scope not throttled ÷ median, same round",
            f"{faults['slowest_not_throttled_vs_median']:.2f}x",
            "",
            None,
        ),
        (
            f"consumer events/s, events from {ingest['scopes']} scopes ÷ from one"
            f" ({ingest['all_scopes_per_s']:,} vs {ingest['one_scope_per_s']:,})",
            f"{ingest['ratio']:.2f}",
            "≥ 0.95",
            ingest["ratio"] >= 0.95,
        ),
    ]


HEADLINES: dict[str, Callable[[dict[str, Any]], list[Headline]]] = {
    "ingest": _ingest,
    "api": _api,
    "aws_calls": _aws_calls,
    "alert_latency": _alert_latency,
    "datadog": _datadog,
    "retention": _retention,
    "contention": _contention,
    "org_scale": _org_scale,
}


def _exit(returncode: int) -> str:
    return f"stopped after {PER_BENCH_TIMEOUT_S} s" if returncode == -1 else f"exit {returncode}"


def render_table(results: dict[str, dict[str, Any]], run: dict[str, Any]) -> str:
    """The markdown between the markers, from the result JSONs and the run record.

    ``run`` is bench/results/run_all.json: ``{"date", "size", "benches": {name:
    {"args", "seconds", "returncode"}}}``. Pure: same inputs, same text.
    """
    lines = [
        f"Last `bench/run_all.py --size {run.get('size', '?')}` run: {run.get('date', '?')}."
        " The machine (2 vCPUs) is shared with other workloads while it runs, so"
        " absolute rates vary by ±30% between runs; compare the ratios, each taken"
        " within one run.",
        "",
        "| benchmark | size run | measure | value | target | met |",
        "|---|---|---|---:|---|:-:|",
    ]
    benches = run.get("benches", {})
    for bench in BENCHES:
        info = benches.get(bench.name, {})
        args = " ".join(info.get("args", bench.sizes.get(run.get("size", ""), ())))
        size = f"`{args}`" if args else ""
        if info.get("date") and info["date"] != run.get("date"):
            size += f" ({info['date']})"
        if info.get("returncode", 0) != 0:
            lines.append(f"| {bench.name} | {size} | failed (exit {info['returncode']}) | | | ✗ |")
            continue
        if bench.name not in results:
            lines.append(f"| {bench.name} | {size} | not run | | | |")
            continue
        headlines = HEADLINES[bench.name](results[bench.name])
        for i, (measure, value, target, met) in enumerate(headlines):
            mark = "" if met is None else ("✓" if met else "✗")
            first = (bench.name, size) if i == 0 else ("", "")
            lines.append(f"| {first[0]} | {first[1]} | {measure} | {value} | {target} | {mark} |")
    seconds = sum(info.get("seconds", 0) for info in benches.values())
    if seconds:
        lines += ["", f"Total time of the run: {seconds / 60:.1f} min."]
    return "\n".join(lines)


def replace_block(doc: str, table: str) -> str:
    """``doc`` with the text between the markers replaced by ``table`` (the markers
    appended under a heading of their own if the document has none)."""
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in doc and END in doc:
        head, _, rest = doc.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block + tail
    return doc.rstrip("\n") + "\n\n## All benchmarks (`bench/run_all.py`)\n\n" + block + "\n"


def load_results(directory: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for bench in BENCHES:
        path = directory / f"{bench.name}.json"
        if path.exists():
            results[bench.name] = json.loads(path.read_text())
    run_path = directory / "run_all.json"
    run = json.loads(run_path.read_text()) if run_path.exists() else {}
    return results, run


def regenerate(doc_path: Path = DOC, directory: Path = RESULTS) -> None:
    results, run = load_results(directory)
    doc_path.write_text(replace_block(doc_path.read_text(), render_table(results, run)))


def run_benches(size: str, only: set[str] | None) -> dict[str, Any]:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run: dict[str, Any] = {"date": date, "size": size}
    benches: dict[str, Any] = {}
    RESULTS.mkdir(exist_ok=True)
    previous = RESULTS / "run_all.json"
    if only and previous.exists():
        # --only: the other benchmarks keep their entries (and their own dates).
        before = json.loads(previous.read_text())
        benches = {
            name: {"date": before.get("date"), **info}
            for name, info in before.get("benches", {}).items()
        }
    for bench in BENCHES:
        if only and bench.name not in only:
            continue
        args = bench.sizes[size]
        print(f"== {bench.script} {' '.join(args)}", flush=True)
        started = time.perf_counter()
        # Its own process group, so that a benchmark over its time is stopped with
        # the servers it started (moto, the API) and the run goes on.
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / bench.script), *args], cwd=ROOT, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=PER_BENCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # SIGINT first: the script's finally blocks drop its database.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
            print(f"== {bench.name}: stopped after {PER_BENCH_TIMEOUT_S} s", flush=True)
            returncode = -1
        seconds = time.perf_counter() - started
        print(f"== {bench.name}: exit {returncode} in {seconds:.0f} s", flush=True)
        benches[bench.name] = {
            "date": date,
            "args": list(args),
            "seconds": round(seconds, 1),
            "returncode": returncode,
        }
    run["benches"] = benches
    (RESULTS / "run_all.json").write_text(json.dumps(run, indent=2) + "\n")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", choices=("default", "small"), default="default")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument(
        "--render-only", action="store_true", help="only regenerate the table from the JSONs"
    )
    args = parser.parse_args()
    failed = 0
    if not args.render_only:
        only = {n for n in args.only.split(",") if n} or None
        run = run_benches(args.size, only)
        failed = sum(1 for b in run["benches"].values() if b["returncode"] != 0)
    regenerate()
    print(f"regenerated the table in {DOC.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
