"""The identity graph's mapping, exported next to the events, so it is one join away in SQL.

The graph's DynamoDB stream (filtered to the ID#<distinct id> pointer items) feeds a small
function; each change of a distinct id's person becomes a row under identities/ (gzip JSON
lines, Hive partitions on the change time):

  {"distinctId": ..., "personId": ... or null (the id left the graph),
   "sequence": <the stream's sequence number, 40 digits>, "changedAt": ...}

"The current person of every distinct id" is the latest row per id by sequence (the
`identity_map` view). That converges to the table whatever the delivery does: DynamoDB orders
the records of one item and the function sees each at least once; a duplicate is the same row
again, a retried batch rewrites the same object (its name is the fingerprint of its records),
and records of different items may arrive in any order because each id only competes with
itself. A failed write raises, so Lambda retries the batch and nothing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from .storage import ObjectStore, fingerprint, gzip_lines, object_key

IDENTITIES_PREFIX = "identities"
# Stream sequence numbers are decimal strings of up to 40 digits: padded, text order is theirs.
SEQUENCE_DIGITS = 40
_POINTER_PREFIX, _POINTER_SORT_KEY = "ID#", "ID"
_GZIP_LEVEL = 6


def mapping_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the pointer records among `records` (DynamoDB stream records), in order."""
    rows = []
    for record in records:
        change = record["dynamodb"]
        keys = change["Keys"]
        if keys["sk"]["S"] != _POINTER_SORT_KEY or not keys["pk"]["S"].startswith(_POINTER_PREFIX):
            continue
        image = change.get("NewImage") if record["eventName"] != "REMOVE" else None
        rows.append(
            {
                "distinctId": keys["pk"]["S"][len(_POINTER_PREFIX) :],
                "personId": image["personId"]["S"] if image else None,
                "sequence": change["SequenceNumber"].zfill(SEQUENCE_DIGITS),
                "changedAt": _changed_at(change.get("ApproximateCreationDateTime")),
            }
        )
    return rows


def export(records: list[dict[str, Any]], store: ObjectStore) -> int:
    """Writes the rows of `records` as one object (again, harmlessly, on a retry); how many."""
    return write_rows(mapping_rows(records), store)


def current_rows(items: Iterable[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Rows for the pointers among table `items` as they are: sequence 0, so that any change
    the stream exports supersedes them (the backfill of a graph older than its stream)."""
    return [
        {
            "distinctId": item["pk"]["S"][len(_POINTER_PREFIX) :],
            "personId": item["personId"]["S"],
            "sequence": "0" * SEQUENCE_DIGITS,
            "changedAt": _changed_at(now),
        }
        for item in items
        if item["sk"]["S"] == _POINTER_SORT_KEY and item["pk"]["S"].startswith(_POINTER_PREFIX)
    ]


def write_rows(rows: list[dict[str, Any]], store: ObjectStore) -> int:
    """`rows` as one object named by their sequences and ids; how many rows."""
    if not rows:
        return 0
    name = fingerprint(
        IDENTITIES_PREFIX, [f"{row['sequence']}:{row['distinctId']}" for row in rows]
    )
    changed = datetime.fromisoformat(rows[0]["changedAt"])
    body = gzip_lines([orjson.dumps(row) for row in rows], _GZIP_LEVEL)
    store.put_new(object_key(IDENTITIES_PREFIX, changed, name), body)
    return len(rows)


def _changed_at(value: Any) -> str:
    """The record's time (epoch seconds from Lambda; a datetime from some SDKs), RFC 3339 UTC."""
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(float(value or 0), UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
