"""The identity export converges: random identify/alias sequences (a chunked merge finished by
another caller among them) change the graph in moto; its stream's records are delivered as
Lambda would, and worse (duplicated, interleaved across items, batches retried after S3
faults); afterwards the latest row per id under identities/ is exactly the table's mapping,
read both in Python and through the identity_map view."""

from __future__ import annotations

import copy
import gzip
import random
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import duckdb
import orjson
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends

from collector.errors import StorageUnavailable
from collector.identity_export import IDENTITIES_PREFIX, SEQUENCE_DIGITS, export, mapping_rows
from collector.identity_store import IdentityGraph
from collector.storage import EventStore
from collector.tools.export_identities import main as export_identities
from collector.tools.warehouse import view_sql

from .conftest import Aws
from .faults import Faults

USERS, ANONYMOUS = 12, 40
# More ids than one merge transaction moves (identity_store's 32): the merge goes in chunks.
CROWD = 36


def stream_records(aws: Aws) -> list[dict[str, Any]]:
    """Every record of the identity table's stream so far, in stream order. moto 5.2.5 answers
    the DynamoDB Streams API with "Not yet implemented", so they are read from its model."""
    tables = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].tables
    return [copy.deepcopy(record.record) for record in tables[aws.table].stream_shard.items]


def deliveries(records: list[dict[str, Any]], rng: random.Random) -> Iterator[list[dict[str, Any]]]:
    """Batches as a badly behaved event source might send them: records of different items
    interleaved in any order (each item's own order kept), some batches sent twice."""
    by_item: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_item.setdefault(orjson.dumps(record["dynamodb"]["Keys"]).decode(), []).append(record)
    queues = list(by_item.values())
    ordered: list[dict[str, Any]] = []
    while queues:
        queue = rng.choice(queues)
        ordered.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    position = 0
    while position < len(ordered):
        size = rng.randint(1, 60)
        batch = ordered[position : position + size]
        yield batch
        if rng.random() < 0.2:
            yield batch  # delivered again
        position += size


def deliver_until_stored(batch: list[dict[str, Any]], store: EventStore) -> int:
    """Lambda's retry of a failed batch: again, until the function succeeds."""
    for _ in range(100):
        with suppress(StorageUnavailable):
            return export(batch, store)
    raise AssertionError("a batch never got through")


def exported_rows(aws: Aws) -> list[dict[str, Any]]:
    rows = []
    for key in aws.keys(f"{IDENTITIES_PREFIX}/"):
        body = aws.s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read()
        rows.extend(orjson.loads(line) for line in gzip.decompress(body).splitlines())
    return rows


def table_mapping(aws: Aws) -> dict[str, str]:
    pages = aws.dynamodb.get_paginator("scan").paginate(TableName=aws.table, ConsistentRead=True)
    return {
        item["pk"]["S"][3:]: item["personId"]["S"]
        for page in pages
        for item in page["Items"]
        if item["pk"]["S"].startswith("ID#") and item["sk"]["S"] == "ID"
    }


def latest(rows: list[dict[str, Any]]) -> dict[str, str]:
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if (
            row["distinctId"] not in newest
            or row["sequence"] > newest[row["distinctId"]]["sequence"]
        ):
            newest[row["distinctId"]] = row
    return {i: row["personId"] for i, row in newest.items() if row["personId"] is not None}


def through_the_view(rows: list[dict[str, Any]]) -> dict[str, str]:
    db = duckdb.connect()
    db.execute("CREATE TABLE identities (distinct_id VARCHAR, person_id VARCHAR, sequence VARCHAR)")
    db.executemany(
        "INSERT INTO identities VALUES (?, ?, ?)",
        [(row["distinctId"], row["personId"], row["sequence"]) for row in rows],
    )
    found = db.sql(view_sql("identity_map", "duckdb")).fetchall()
    return {str(distinct_id): str(person_id) for distinct_id, person_id in found}


def message(kind: str, user: str, source: str, force: bool = False) -> dict[str, Any]:
    if kind == "identify":
        return {"type": "identify", "userId": user, "anonymousId": source}
    forced = {"integrations": {"Collector": {"mergeIdentified": True}}} if force else {}
    return {"type": "alias", "userId": user, "previousId": source, **forced}


def change_the_graph(aws: Aws, rng: random.Random) -> None:
    """Random identifies and aliases, and one big merge that stops half-way (its chunks are
    separate transactions) and is finished by the next call that meets it."""
    graph = IdentityGraph(aws.dynamodb, aws.table)
    graph.resolve(message("identify", "big-0", "crowd-first"))
    for n in range(CROWD):
        graph.resolve(message("identify", "big-1", f"crowd-{n}"))
    calls = 0

    def crash_mid_merge(**_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the Lambda ran out of time in the middle of a merge")

    aws.dynamodb.meta.events.register("before-call.dynamodb.TransactWriteItems", crash_mid_merge)
    with pytest.raises(RuntimeError):
        graph.resolve(message("alias", "big-0", "big-1", force=True))
    aws.dynamodb.meta.events.unregister("before-call.dynamodb.TransactWriteItems", crash_mid_merge)
    assert graph.view("crowd-0") is not None
    graph.resolve(message("identify", "big-0", "crowd-late"))
    for _ in range(60):
        user, other = f"u{rng.randrange(USERS)}", f"u{rng.randrange(USERS)}"
        anonymous = f"a{rng.randrange(ANONYMOUS)}"
        kind = rng.choice(("identify", "identify", "alias", "forced"))
        if kind == "identify":
            graph.resolve(message("identify", user, anonymous))
        elif kind == "alias":
            graph.resolve(message("alias", user, anonymous))
        else:
            graph.resolve(message("alias", user, other, force=True))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_the_export_converges_to_the_table(aws: Aws, seed: int) -> None:
    rng = random.Random(seed)
    change_the_graph(aws, rng)
    faults = Faults(rate=0.3, seed=seed)
    faults.install(aws.s3)
    store = EventStore(aws.s3, aws.bucket)

    for batch in deliveries(stream_records(aws), rng):
        deliver_until_stored(batch, store)
    faults.enabled = False

    assert faults.injected, "no S3 call failed: the retries went untested"
    mapping = table_mapping(aws)
    # The interrupted merge was finished: the whole crowd is big-0's now.
    assert {mapping[f"crowd-{n}"] for n in range(CROWD)} == {mapping["big-0"]}
    rows = exported_rows(aws)
    assert latest(rows) == mapping
    assert through_the_view(rows) == mapping


def test_rows_are_the_pointer_items_only_with_sortable_sequences() -> None:
    def record(pk: str, sk: str, sequence: str, person: str | None) -> dict[str, Any]:
        change: dict[str, Any] = {
            "Keys": {"pk": {"S": pk}, "sk": {"S": sk}},
            "SequenceNumber": sequence,
            "ApproximateCreationDateTime": 1796000000.0,
        }
        if person is not None:
            change["NewImage"] = {"pk": {"S": pk}, "personId": {"S": person}}
        return {"eventName": "MODIFY" if person else "REMOVE", "dynamodb": change}

    rows = mapping_rows(
        [
            record("ID#anon", "ID", "9", "p1"),
            record("MSG#src#m1", "MSG", "10", None),
            record("PERSON#p1", "ID#anon", "11", None),
            record("ID#anon", "ID", "100", "p2"),
            record("ID#gone", "ID", "101", None),
        ]
    )

    assert [(r["distinctId"], r["personId"]) for r in rows] == [
        ("anon", "p1"), ("anon", "p2"), ("gone", None)
    ]  # fmt: skip
    assert all(len(r["sequence"]) == SEQUENCE_DIGITS for r in rows)
    assert rows[0]["sequence"] < rows[1]["sequence"]  # 9 < 100 as text, once padded
    assert rows[0]["changedAt"] == "2026-11-30T00:53:20Z"


def test_a_graph_older_than_its_stream_is_backfilled_and_later_changes_win(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = IdentityGraph(aws.dynamodb, aws.table)
    for n in range(5):
        graph.resolve(message("identify", f"old-{n}", f"anon-{n}"))
    already = len(stream_records(aws))

    assert export_identities(["--table", aws.table, "--bucket", aws.bucket]) == 0
    assert "exported 10 distinct ids" in capsys.readouterr().out
    assert latest(exported_rows(aws)) == table_mapping(aws)

    graph.resolve(message("alias", "old-0", "old-1", force=True))
    store = EventStore(aws.s3, aws.bucket)
    export(stream_records(aws)[already:], store)
    rows = exported_rows(aws)
    assert latest(rows) == table_mapping(aws) == through_the_view(rows)
    assert latest(rows)["anon-1"] == latest(rows)["old-0"]
