"""`make bench`'s report: each target's verdict, and the machine-readable last line."""

from __future__ import annotations

import re

from . import bench_report


def rows(report: str) -> dict[str, str]:
    """Label -> the rest of its row (value, then target), for the table's rows: the columns
    are set apart by two spaces or more."""
    cells = [re.split(r"\s{2,}", line.strip()) for line in report.splitlines()[2:-1]]
    return {label: " ".join(rest) for label, *rest in cells}


def test_each_target_says_whether_this_run_met_it() -> None:
    report = bench_report.render(
        {"batch": {"ratio": 1.6, "ratio_with_ledger": 1.84}, "cold_start": {"import_ratio": 1.2}}
    )
    row = rows(report)
    assert row["ratio to the floor"] == "1.60 <= 1.60 met"  # the bound itself meets it
    assert row["ratio to the floor, with the ledger"] == "1.84 <= 1.80 MISSED"
    assert row["import ratio, handler / boto3"] == "1.20 <= 1.50 met"
    assert row["floor: parse + serialise + gzip, 500 messages (ms)"] == "-"  # no target


def test_the_last_line_is_the_summary_even_when_a_figure_is_missing() -> None:
    report = bench_report.render({"batch": {"ratio": 1.514, "us_per_message": 5.94}})
    assert report.splitlines()[-1] == "ratio_to_floor=1.51 us_per_message=5.9 import_ratio=-"
    assert rows(report)["import ratio, handler / boto3"] == "- <= 1.50 -"
