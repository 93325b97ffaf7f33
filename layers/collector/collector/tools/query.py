"""`collector-query`: SQL over the data of `make dev`, with the tables and views Athena has
(collector/tools/warehouse.py). The SQL is Athena's (Trino) unless `--dialect duckdb`.

  collector-query "SELECT type, count(*) FROM events GROUP BY type"
  collector-query --json "SELECT * FROM profiles"
  make sql                                  # an interactive prompt; statements end with ;
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import duckdb
import orjson
import sqlglot

from .warehouse import VIEWS, LocalData, connect, run, view_sql


def print_table(columns: list[str], found: list[tuple[Any, ...]], out: TextIO) -> None:
    """Rows as an aligned text table, values as JSON would show them."""
    cells = [[_cell(value) for value in row] for row in found]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    print(
        "  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True)), file=out
    )
    print("  ".join("-" * width for width in widths), file=out)
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)), file=out
        )
    print(f"({len(found)} row{'s' if len(found) != 1 else ''})", file=out)


def print_json(columns: list[str], found: list[tuple[Any, ...]], out: TextIO) -> None:
    records = [dict(zip(columns, row, strict=True)) for row in found]
    out.write(orjson.dumps(records, default=str, option=orjson.OPT_INDENT_2).decode() + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def interactive(
    db: duckdb.DuckDBPyConnection, source: TextIO, out: TextIO, dialect: str = "trino"
) -> None:
    """A prompt: statements end with `;`; errors are shown and the prompt goes on."""
    print(f"Tables: events, identities; views: {', '.join(VIEWS)}. Ctrl-D quits.", file=out)
    pending: list[str] = []
    while True:
        if source.isatty():
            out.write("sql> " if not pending else "...> ")
            out.flush()
        line = source.readline()
        if not line:
            return
        pending.append(line)
        if not line.rstrip().endswith(";"):
            continue
        statement, pending = "".join(pending), []
        try:
            print_table(*run(db, statement, dialect), out)
        except (duckdb.Error, sqlglot.errors.SqlglotError) as exc:
            print(f"error: {exc}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="collector-query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sql", nargs="?", help="the statement; without it, read from stdin")
    parser.add_argument("--json", action="store_true", help="print a JSON array of objects")
    parser.add_argument(
        "--dialect",
        default="trino",
        choices=("trino", "duckdb"),
        help="the SQL's dialect: trino (Athena's, translated; the default) or duckdb",
    )
    parser.add_argument("--interactive", action="store_true", help="an interactive prompt")
    parser.add_argument(
        "--show-view",
        metavar="NAME",
        choices=VIEWS,
        help="print a view's SQL as DuckDB runs it (translated from Trino)",
    )
    args = parser.parse_args(argv)
    if args.show_view:
        print(view_sql(args.show_view, "duckdb"))
        return 0
    db = connect(LocalData.from_env())
    if args.interactive:
        interactive(db, sys.stdin, sys.stdout, args.dialect)
        return 0
    statement = args.sql if args.sql is not None else sys.stdin.read()
    try:
        columns, found = run(db, statement, args.dialect)
    except (duckdb.Error, sqlglot.errors.SqlglotError) as exc:
        print(f"collector-query: {exc}", file=sys.stderr)
        return 1
    (print_json if args.json else print_table)(columns, found, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
