"""What `make bench` prints: the benchmarks' figures and targets as a table, then a summary line.

The benchmarks (`pytest -m bench`) `record` their measurement in the JSON file named by
BENCH_RESULTS when it is set (`make bench` sets it); `python -m tests.bench_report FILE` prints
it. The last line is machine-readable:
`ratio_to_floor=<x.xx> us_per_message=<y.y> import_ratio=<z.zz>`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# The issues' targets, each an upper bound: #10's ratio and import ratio, #7's with the ledger.
# The timed tests hold looser bounds (test_benchmark says why); the table says whether each
# target was met in this run.
TARGETS = {"ratio": 1.6, "ratio_with_ledger": 1.8, "import_ratio": 1.5}

# (section, key, label, format): the table's rows, in order.
ROWS = (
    ("batch", "us_per_message", "batch CPU per message, with the ledger (us)", "{:.1f}"),
    ("batch", "floor_ms", "floor: parse + serialise + gzip, 500 messages (ms)", "{:.2f}"),
    ("batch", "pipeline_ms", "pipeline, 500 messages (ms)", "{:.2f}"),
    ("batch", "with_ledger_ms", "pipeline with the ledger, 500 messages (ms)", "{:.2f}"),
    ("batch", "ratio", "ratio to the floor", "{:.2f}"),
    ("batch", "ratio_with_ledger", "ratio to the floor, with the ledger", "{:.2f}"),
    ("batch", "single_event_ms", "single-event request CPU, one browser track (ms)", "{:.3f}"),
    ("batch", "peak_traced_mib", "peak memory of the batch run, tracemalloc (MiB)", "{:.1f}"),
    ("batch", "max_rss_mib", "peak RSS of the measuring process (MiB)", "{:.0f}"),
    ("cold_start", "boto3_ms", "import boto3, fresh interpreter (ms CPU)", "{:.0f}"),
    ("cold_start", "handler_ms", "import the ingest handler, fresh interpreter (ms CPU)", "{:.0f}"),
    ("cold_start", "import_ratio", "import ratio, handler / boto3", "{:.2f}"),
    ("cold_start", "first_request_ms", "handler import + first request (ms CPU)", "{:.0f}"),
)


def record(section: str, figures: dict[str, float]) -> None:
    """Keep `figures` under `section` in the BENCH_RESULTS file; nothing when it is unset."""
    name = os.environ.get("BENCH_RESULTS")
    if not name:
        return
    path = Path(name)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[section] = figures
    path.write_text(json.dumps(results, indent=2))


def render(results: dict[str, dict[str, Any]]) -> str:
    """The table, then the summary line (a figure that was not measured shows as "-")."""

    def measured(section: str, key: str) -> float | None:
        figure: float | None = results.get(section, {}).get(key)
        return figure

    def value(figure: float | None, form: str) -> str:
        return "-" if figure is None else form.format(figure)

    def target(key: str, figure: float | None, form: str) -> str:
        bound = TARGETS.get(key)
        if bound is None:
            return ""
        verdict = "-" if figure is None else "met" if figure <= bound else "MISSED"
        return f"<= {form.format(bound)} {verdict}"

    rows = []
    for section, key, label, form in ROWS:
        figure = measured(section, key)
        rows.append((label, value(figure, form), target(key, figure, form)))
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'measure':<{width}}  {'value':>6}  target", f"{'-' * width}  ------  ------"]
    lines += [f"{label:<{width}}  {shown:>6}  {goal}".rstrip() for label, shown, goal in rows]
    lines.append(
        f"ratio_to_floor={value(measured('batch', 'ratio'), '{:.2f}')} "
        f"us_per_message={value(measured('batch', 'us_per_message'), '{:.1f}')} "
        f"import_ratio={value(measured('cold_start', 'import_ratio'), '{:.2f}')}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
