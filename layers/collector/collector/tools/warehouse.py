"""The tables and views Athena has, in an in-memory DuckDB over the data of `make dev`.

The views (`tools/sql/*.sql`) are written once, in Athena's dialect (Trino), and translated to
DuckDB's by sqlglot. Only the two base tables are local: `events`, the stored objects read in
place (gzip JSON lines under the bucket's events/) with exactly the columns and types of
template.yaml's Glue table, and `identities`, the identity graph's mapping (one row per
distinct id, read from the dev server's table; on AWS, the rows the export writes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import sqlglot

from collector.storage import EVENTS_PREFIX

from .devserver import DEFAULTS
from .instances import TABLE_FILE, bucket_dir, engines
from .resources import load_template

# Dependencies first: each view reads the tables and the views before it.
VIEWS = ("identity_map", "person_events", "persons", "profiles")
_HIVE_TYPES = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "boolean": "BOOLEAN",
    "double": "DOUBLE",
}
_HIVE_TOKEN = re.compile(r"struct<|array<|>|,|:|\w+")


@dataclass(frozen=True)
class LocalData:
    """Where `make dev` keeps its data, found through the environment it reads."""

    data_dir: Path
    bucket: str
    table: str

    @classmethod
    def from_env(cls) -> LocalData:
        def get(name: str) -> str:
            return os.environ.get(name) or DEFAULTS[name]

        return cls(Path(get("COLLECTOR_DATA_DIR")), get("EVENTS_BUCKET"), get("IDENTITY_TABLE"))

    @property
    def events_dir(self) -> Path:
        return bucket_dir(self.data_dir, self.bucket) / EVENTS_PREFIX


def view_sql(name: str, dialect: str = "trino") -> str:
    """A view's body: as written (Trino, what Athena runs) or translated to `dialect`."""
    text = resources.files(__package__).joinpath("sql", f"{name}.sql").read_text()
    if dialect == "trino":
        return text
    [translated] = sqlglot.transpile(text, read="trino", write=dialect)
    return str(translated)


def connect(data: LocalData) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the base tables read from `data` and every view defined."""
    db = duckdb.connect()
    _create_events(db, data)
    columns = ", ".join(f"{name} {kind}" for name, _, kind in glue_columns("IdentitiesTable"))
    db.execute(f"CREATE TABLE identities ({columns})")
    mapping = list(_mapping(data))
    if mapping:
        # The graph as it is now: one row per id, as if each had changed once.
        db.executemany("INSERT INTO identities VALUES (?, ?, '0', NULL, NULL, NULL)", mapping)
    for name in VIEWS:
        db.execute(f"CREATE VIEW {name} AS {view_sql(name, 'duckdb')}")
    return db


def run(
    db: duckdb.DuckDBPyConnection, sql: str, dialect: str = "trino"
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The columns and rows of the last statement of `sql`, written in `dialect` (by default
    Athena's: the query that runs here runs there)."""
    statements = (
        [sql] if dialect == "duckdb" else sqlglot.transpile(sql, read=dialect, write="duckdb")
    )
    relation = None
    for statement in statements:
        relation = db.sql(statement)
    if relation is None:
        return [], []
    return list(relation.columns), relation.fetchall()


@cache
def glue_table(logical_id: str) -> tuple[tuple[str, str, str], ...]:
    """(column, JSON key, Hive type) of a Glue table of template.yaml, partitions last."""
    table = load_template()["Resources"][logical_id]["Properties"]["TableInput"]
    storage = table["StorageDescriptor"]
    mapping = {
        name.removeprefix("mapping."): key
        for name, key in storage["SerdeInfo"].get("Parameters", {}).items()
        if name.startswith("mapping.")
    }
    return tuple(
        (str(column["Name"]), str(mapping.get(column["Name"], column["Name"])), str(column["Type"]))
        for column in [*storage["Columns"], *table.get("PartitionKeys", [])]
    )


def glue_columns(logical_id: str = "EventsTable") -> list[tuple[str, str, str]]:
    """(column, JSON key, DuckDB type) of a Glue table of template.yaml, partitions last."""
    return [(name, key, duckdb_type(hive)) for name, key, hive in glue_table(logical_id)]


def duckdb_type(hive: str) -> str:
    """A Glue (Hive) column type as DuckDB spells it: struct<a:string> is STRUCT("a" VARCHAR)."""
    tokens = _HIVE_TOKEN.findall(hive)
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return str(tokens[position - 1])

    def read() -> str:
        word = take()
        if word == "array<":
            inner = read()
            take()  # >
            return f"{inner}[]"
        if word != "struct<":
            return _HIVE_TYPES[word]
        fields = []
        while True:
            name = take()
            take()  # :
            fields.append(f'"{name}" {read()}')
            if take() == ">":
                return f"STRUCT({', '.join(fields)})"

    return read()


def _create_events(db: duckdb.DuckDBPyConnection, data: LocalData) -> None:
    columns = glue_columns()
    stored = [(name, key, kind) for name, key, kind in columns if name not in ("dt", "hour")]
    if not any(data.events_dir.glob("*/*/*.json.gz")):
        declared = ", ".join(f'"{name}" {kind}' for name, _, kind in columns)
        db.execute(f"CREATE TABLE events ({declared})")
        return
    schema = "{" + ", ".join(f"'{key}': '{kind}'" for _, key, kind in stored) + "}"
    selected = ", ".join(f'"{key}" AS "{name}"' for name, key, _ in stored)
    # Only template.yaml's column names and types are spliced in; the path is a parameter.
    db.execute(
        f"CREATE TABLE events AS SELECT {selected}, CAST(dt AS VARCHAR) AS dt, "  # noqa: S608
        "CAST(hour AS INTEGER) AS hour "
        f"FROM read_json($pattern, format = 'newline_delimited', columns = {schema}, "
        "hive_partitioning = true, hive_types_autocast = false)",
        {"pattern": str(data.events_dir / "*" / "*" / "*.json.gz")},
    )


def _mapping(data: LocalData) -> Iterable[tuple[str, str]]:
    """(distinct id, person id) for every id in the dev server's identity graph."""
    if not (data.data_dir / TABLE_FILE).exists():
        return
    dynamodb = engines(data.data_dir)["dynamodb"]
    for page in dynamodb.get_paginator("scan").paginate(TableName=data.table):
        for item in page["Items"]:
            if item["pk"]["S"].startswith("ID#") and item["sk"]["S"] == "ID":
                yield item["pk"]["S"][3:], item["personId"]["S"]
