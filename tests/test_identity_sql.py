"""Identity in SQL, on AWS: the stack's Glue tables and Athena views are the local ones. Each
view's SQL is Athena (Trino) SQL, template.yaml holds exactly what tools/glue_views.py makes of
it, and the local tables have the Glue tables' columns; the export function reads only the
graph's pointers, from the start of the stream, and never gives up on a batch."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from collector.tools import glue_views
from collector.tools.resources import TEMPLATE, properties
from collector.tools.warehouse import VIEWS, LocalData, connect, glue_columns, view_sql


def test_the_template_holds_the_generated_views() -> None:
    text = TEMPLATE.read_text()
    start = text.index(glue_views.BEGIN)
    end = text.index(glue_views.END) + len(glue_views.END) + 1
    assert text[start:end] == glue_views.as_yaml(), (
        "template.yaml's views are stale: python -m collector.tools.glue_views"
    )


@pytest.mark.parametrize("name", VIEWS)
def test_each_view_is_trino_sql_with_the_columns_duckdb_derives(
    template: dict[str, Any], name: str
) -> None:
    sql = view_sql(name)
    sqlglot.parse_one(sql, read="trino", error_level=sqlglot.ErrorLevel.RAISE)
    table = properties(template, glue_views.resource_name(name))["TableInput"]
    assert table["Name"] == name
    assert table["TableType"] == "VIRTUAL_VIEW"
    encoded = table["ViewOriginalText"]["Fn::Join"][1][1]["Fn::Base64"]["Fn::Sub"]
    definition = json.loads(encoded.replace("${GlueDatabaseName}", "events_db"))
    assert definition["originalSql"] == sql.strip()
    assert definition["schema"] == "events_db"
    columns = glue_views.view_columns(name)
    assert [c["name"] for c in definition["columns"]] == [column for column, _ in columns]
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == columns
    # Athena decodes the same bytes CloudFormation's Fn::Base64 makes.
    assert base64.b64decode(base64.b64encode(encoded.encode())).decode() == encoded


def test_a_struct_column_is_a_row_for_presto() -> None:
    hive = "struct<sourceId:string,identity:struct<forced:boolean>,ids:array<int>>"
    assert glue_views.presto_type(hive) == (
        "row(sourceId varchar,identity row(forced boolean),ids array(integer))"
    )


def test_the_local_tables_have_the_glue_tables_columns(tmp_path: Path) -> None:
    db = connect(LocalData(tmp_path, "bucket", "table"))
    for table, logical_id in (("events", "EventsTable"), ("identities", "IdentitiesTable")):
        described = [(name, kind) for name, kind, *_ in db.sql(f"DESCRIBE {table}").fetchall()]
        expected = [(name, kind) for name, _, kind in glue_columns(logical_id)]
        assert [name for name, _ in described] == [name for name, _ in expected]
        for (_, local), (_, glue) in zip(described, expected, strict=True):
            assert local.replace('"', "") == glue.replace('"', "")


def test_the_export_reads_the_pointers_from_the_start_and_never_skips(
    template: dict[str, Any],
) -> None:
    stream = properties(template, "IdentityTable")["StreamSpecification"]
    assert stream == {"StreamViewType": "NEW_IMAGE"}
    mapping = properties(template, "IdentityExportMapping")
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["MaximumRetryAttempts"] == -1
    assert mapping["BisectBatchOnFunctionError"] is True
    [pattern] = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    assert pattern == {
        "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "ID#"}]}, "sk": {"S": ["ID"]}}}
    }
    function = properties(template, "IdentityExportFunction")
    statements = [s for policy in function["Policies"] for s in policy["Statement"]]
    writes = [s for s in statements if s["Action"] == "s3:PutObject"]
    assert [s["Resource"] for s in writes] == [{"Fn::Sub": "${EventsBucket.Arn}/identities/*"}]
    # SAM's DynamoDB event would attach a managed policy for every stream: not used.
    assert "Events" not in function
