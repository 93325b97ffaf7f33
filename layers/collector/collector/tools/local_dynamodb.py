"""An embedded DynamoDB for `make dev`: the client calls the collector makes, on one SQLite file.

The collector's DynamoDB code (sources, ledger, identity graph) runs unchanged on it: same
request and answer shapes, same conditional semantics, same error codes (ClientError with
ConditionalCheckFailedException, TransactionCanceledException and its CancellationReasons,
ValidationException). Writes run in `BEGIN IMMEDIATE` transactions, so conditions hold across
threads and across the dev server's Lambda processes; WAL lets reads go on beside a write.
The tests marked `engines` (the ledger's, the sources', the identity graph's and its races)
run against this and against moto.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import orjson
from botocore.exceptions import ClientError

from .embedded import EmbeddedClient, Paginator, operation
from .expressions import Condition, Item, UnsupportedExpression, parse_condition, parse_update

MAX_TRANSACTION_ITEMS = 100
MAX_BATCH_GET_KEYS = 100
MAX_BATCH_WRITE_ITEMS = 25
_PAGE_ITEMS = 1000
_BUSY_TIMEOUT_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, hash TEXT, range TEXT, ttl TEXT);
CREATE TABLE IF NOT EXISTS items (
    tbl TEXT NOT NULL, pk TEXT NOT NULL, sk TEXT NOT NULL, item BLOB NOT NULL,
    PRIMARY KEY (tbl, pk, sk)
) WITHOUT ROWID;
"""


class LocalDynamoDB(EmbeddedClient):
    """The DynamoDB client subset the collector uses, on the SQLite database at `path`."""

    def __init__(self, path: Path) -> None:
        super().__init__("dynamodb", _json_request)
        self._path = path
        self._local = threading.local()
        with self._connection() as db:
            db.executescript(_SCHEMA)

    # --- tables ---------------------------------------------------------------------------

    @operation("CreateTable")
    def create_table(
        self, TableName: str, KeySchema: list[dict[str, str]], **_: Any
    ) -> dict[str, Any]:
        roles = {key["KeyType"]: key["AttributeName"] for key in KeySchema}
        with self._write() as db:
            if db.execute("SELECT 1 FROM tables WHERE name = ?", (TableName,)).fetchone():
                raise _error("ResourceInUseException", f"Table already exists: {TableName}")
            db.execute(
                "INSERT INTO tables (name, hash, range) VALUES (?, ?, ?)",
                (TableName, roles["HASH"], roles.get("RANGE")),
            )
        return {"TableDescription": {"TableName": TableName, "TableStatus": "ACTIVE"}}

    @operation("ListTables")
    def list_tables(self, **_: Any) -> dict[str, Any]:
        rows = self._connection().execute("SELECT name FROM tables ORDER BY name").fetchall()
        return {"TableNames": [name for (name,) in rows]}

    @operation("UpdateTimeToLive")
    def update_time_to_live(
        self, TableName: str, TimeToLiveSpecification: dict[str, Any]
    ) -> dict[str, Any]:
        attribute = TimeToLiveSpecification["AttributeName"]
        with self._write() as db:
            db.execute("UPDATE tables SET ttl = ? WHERE name = ?", (attribute, TableName))
        return {"TimeToLiveSpecification": TimeToLiveSpecification}

    def remove_expired(self, now: float | None = None) -> int:
        """What DynamoDB's TTL does in the background: delete items whose TTL has passed."""
        cutoff = time.time() if now is None else now
        removed = 0
        with self._write() as db:
            tables = db.execute("SELECT name, ttl FROM tables WHERE ttl IS NOT NULL").fetchall()
            for table, attribute in tables:
                removed += db.execute(
                    "DELETE FROM items WHERE tbl = ? AND "
                    "CAST(json_extract(item, '$.' || ? || '.N') AS REAL) < ?",
                    (table, attribute, cutoff),
                ).rowcount
        return removed

    # --- single items -----------------------------------------------------------------------

    @operation("GetItem")
    def get_item(self, TableName: str, Key: Item, **_: Any) -> dict[str, Any]:
        item = self._get(self._connection(), TableName, Key)
        return {} if item is None else {"Item": item}

    @operation("PutItem")
    def put_item(self, **request: Any) -> dict[str, Any]:
        return self._write_one("Put", request)

    @operation("UpdateItem")
    def update_item(self, **request: Any) -> dict[str, Any]:
        return self._write_one("Update", request)

    @operation("DeleteItem")
    def delete_item(self, **request: Any) -> dict[str, Any]:
        return self._write_one("Delete", request)

    # --- many items -------------------------------------------------------------------------

    @operation("BatchGetItem")
    def batch_get_item(self, RequestItems: dict[str, dict[str, Any]]) -> dict[str, Any]:
        if sum(len(request["Keys"]) for request in RequestItems.values()) > MAX_BATCH_GET_KEYS:
            raise _error("ValidationException", "Too many items requested for the BatchGetItem")
        db = self._connection()
        responses: dict[str, list[Item]] = {}
        with _reading(db):
            for table, request in RequestItems.items():
                found = (self._get(db, table, key) for key in request["Keys"])
                responses[table] = [item for item in found if item is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    @operation("BatchWriteItem")
    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        writes = [
            _Operation.parse(
                {"Put": {"TableName": table, **request["PutRequest"]}}
                if "PutRequest" in request
                else {"Delete": {"TableName": table, **request["DeleteRequest"]}}
            )
            for table, requests in RequestItems.items()
            for request in requests
        ]
        if len(writes) > MAX_BATCH_WRITE_ITEMS:
            raise _error("ValidationException", "Too many items requested for the BatchWriteItem")
        self._commit(writes)
        return {"UnprocessedItems": {}}

    @operation("TransactWriteItems")
    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:
        if len(TransactItems) > MAX_TRANSACTION_ITEMS:
            raise _error("ValidationException", "Member must have length less than or equal to 100")
        self._commit([_Operation.parse(entry) for entry in TransactItems], transaction=True)
        return {}

    @operation("Query")
    def query(
        self,
        TableName: str,
        KeyConditionExpression: str,
        ExpressionAttributeValues: dict[str, Any] | None = None,
        ExpressionAttributeNames: dict[str, str] | None = None,
        ExclusiveStartKey: Item | None = None,
        Limit: int = _PAGE_ITEMS,
        **_: Any,
    ) -> dict[str, Any]:
        names = self._key_names(TableName)
        try:
            matches = parse_condition(
                KeyConditionExpression, ExpressionAttributeNames, ExpressionAttributeValues
            )
            partition = _partition(
                KeyConditionExpression,
                names[0],
                ExpressionAttributeNames,
                ExpressionAttributeValues,
            )
        except UnsupportedExpression as exc:
            raise _error("ValidationException", str(exc)) from exc
        after = "" if ExclusiveStartKey is None else self._key(TableName, ExclusiveStartKey)[1]
        rows = self._connection().execute(
            "SELECT item FROM items WHERE tbl = ? AND pk = ? AND sk > ? ORDER BY sk",
            (TableName, partition, after),
        )
        return _page(names, (orjson.loads(item) for (item,) in rows), matches, Limit)

    @operation("Scan")
    def scan(
        self,
        TableName: str,
        ExclusiveStartKey: Item | None = None,
        Limit: int = _PAGE_ITEMS,
        **_: Any,
    ) -> dict[str, Any]:
        start = ("", "") if ExclusiveStartKey is None else self._key(TableName, ExclusiveStartKey)
        rows = self._connection().execute(
            "SELECT item FROM items WHERE tbl = ? AND (pk, sk) > (?, ?) ORDER BY pk, sk",
            (TableName, *start),
        )
        return _page(self._key_names(TableName), (orjson.loads(i) for (i,) in rows), None, Limit)

    def get_paginator(self, operation: str) -> Paginator:
        if operation not in ("query", "scan"):
            raise ValueError(f"no paginator for {operation}")
        return Paginator(getattr(self, operation), _last_key, "ExclusiveStartKey")

    # --- storage ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            # A write lost at a power cut is fine for a development store; a slow one is not.
            db.execute("PRAGMA synchronous = NORMAL")
            # One open file per thread: flock excludes other open files, not other threads.
            self._local.queue = os.open(f"{self._path}.writers", os.O_RDWR | os.O_CREAT, 0o600)
            self._local.db = db
        return db

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        db = self._connection()
        return _writing(db, self._local.queue)

    def _write_one(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        """PutItem, UpdateItem or DeleteItem: a transaction of one, failing as they fail."""
        self._commit([_Operation.parse({kind: request})])
        return {}

    def _commit(self, operations: list[_Operation], transaction: bool = False) -> None:
        """Check every condition and apply every write, or none: one SQLite write transaction."""
        targets = [(op.table, *self._key(op.table, op.key)) for op in operations]
        if len(set(targets)) != len(targets):
            raise _error(
                "ValidationException",
                "Transaction request cannot include multiple operations on one item",
            )
        with self._write() as db:
            current = [self._row(db, target) for target in targets]
            failed = [not op.condition(item) for op, item in zip(operations, current, strict=True)]
            if any(failed):
                if not transaction:
                    raise _error(
                        "ConditionalCheckFailedException", "The conditional request failed"
                    )
                raise _cancelled(failed)
            for op, target, item in zip(operations, targets, current, strict=True):
                try:
                    self._apply(db, op, target, item)
                except UnsupportedExpression as exc:
                    raise _error("ValidationException", str(exc)) from exc

    def _key_names(self, table: str) -> tuple[str, str | None]:
        cache: dict[str, tuple[str, str | None]] = self._local.__dict__.setdefault("keys", {})
        if table not in cache:
            row = (
                self._connection()
                .execute("SELECT hash, range FROM tables WHERE name = ?", (table,))
                .fetchone()
            )
            if row is None:
                raise _error("ResourceNotFoundException", "Requested resource not found")
            cache[table] = (row[0], row[1])
        return cache[table]

    def _key(self, table: str, key: Item) -> tuple[str, str]:
        hash_name, range_name = self._key_names(table)
        if hash_name not in key or (range_name is not None and range_name not in key):
            raise _error(
                "ValidationException", "The provided key element does not match the schema"
            )
        sort = "" if range_name is None else _key_value(key[range_name])
        return _key_value(key[hash_name]), sort

    def _get(self, db: sqlite3.Connection, table: str, key: Item) -> Item | None:
        return self._row(db, (table, *self._key(table, key)))

    @staticmethod
    def _row(db: sqlite3.Connection, target: tuple[str, str, str]) -> Item | None:
        row = db.execute(
            "SELECT item FROM items WHERE tbl = ? AND pk = ? AND sk = ?", target
        ).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    @staticmethod
    def _apply(
        db: sqlite3.Connection,
        operation: _Operation,
        target: tuple[str, str, str],
        item: Item | None,
    ) -> None:
        if operation.kind == "ConditionCheck":
            return
        if operation.kind == "Delete":
            db.execute("DELETE FROM items WHERE tbl = ? AND pk = ? AND sk = ?", target)
            return
        if operation.kind == "Put":
            new = operation.item
        else:
            # UpdateItem on a missing item creates it, as DynamoDB does.
            assert operation.update is not None
            new = operation.update.apply(item if item is not None else dict(operation.key))
        db.execute(
            "INSERT OR REPLACE INTO items (tbl, pk, sk, item) VALUES (?, ?, ?, ?)",
            (*target, orjson.dumps(new)),
        )


class _Operation:
    """One write of a transaction, its condition parsed."""

    def __init__(self, kind: str, body: dict[str, Any]) -> None:
        self.kind = kind
        self.table: str = body["TableName"]
        self.item: Item = body.get("Item", {})
        self.key: Item = body.get("Key") or self.item
        names, values = body.get("ExpressionAttributeNames"), body.get("ExpressionAttributeValues")
        self.condition = parse_condition(body.get("ConditionExpression"), names, values)
        self.update = (
            parse_update(body["UpdateExpression"], names, values) if kind == "Update" else None
        )

    @classmethod
    def parse(cls, entry: dict[str, Any]) -> _Operation:
        kinds = [kind for kind in ("Put", "Update", "Delete", "ConditionCheck") if kind in entry]
        if len(kinds) != 1:
            raise _error("ValidationException", "Each TransactItem holds exactly one operation")
        try:
            return cls(kinds[0], entry[kinds[0]])
        except UnsupportedExpression as exc:
            raise _error("ValidationException", str(exc)) from exc


@contextmanager
def _writing(db: sqlite3.Connection, queue: int) -> Iterator[sqlite3.Connection]:
    """A write transaction: taken at BEGIN, so conditions checked inside it still hold at
    COMMIT; a lock held past the busy timeout is DynamoDB's throttling (a 503 upstream).

    Writers first queue on `queue` (an flock'd file): SQLite's own busy handler polls with
    sleeps of up to 100 ms, which under load puts whole sleeps into the request latency;
    flock wakes the next writer the moment the lock is released."""
    fcntl.flock(queue, fcntl.LOCK_EX)
    try:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _error("ThrottlingException", f"local table busy: {exc}") from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        fcntl.flock(queue, fcntl.LOCK_UN)


@contextmanager
def _reading(db: sqlite3.Connection) -> Iterator[None]:
    """Several reads from one snapshot, as one BatchGetItem call sees the table."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")


def _page(
    keys: tuple[str, str | None], items: Iterator[Item], matches: Condition | None, limit: int
) -> dict[str, Any]:
    found: list[Item] = []
    for item in items:
        if matches is None or matches(item):
            found.append(item)
        if len(found) == limit:
            hash_name, range_name = keys
            last = {name: item[name] for name in (hash_name, range_name) if name is not None}
            return {"Items": found, "Count": len(found), "LastEvaluatedKey": last}
    return {"Items": found, "Count": len(found)}


_PARTITION_TERM = re.compile(r"\s*(#?\w+)\s*=\s*(:\w+)")


def _partition(
    expression: str,
    hash_name: str,
    names: Mapping[str, str] | None,
    values: Mapping[str, Any] | None,
) -> str:
    """The partition a KeyConditionExpression names: it must start `<hash key> = :value`."""
    found = _PARTITION_TERM.match(expression)
    if found is None or (names or {}).get(found[1], found[1]) != hash_name:
        raise UnsupportedExpression(f"{expression!r} does not start with `{hash_name} = :value`")
    return _key_value((values or {})[found[2]])


def _json_request(params: dict[str, Any]) -> dict[str, Any]:
    """A request as botocore serialises it for DynamoDB's JSON protocol."""
    return {
        "method": "POST",
        "url_path": "/",
        "body": orjson.dumps(params, option=orjson.OPT_NON_STR_KEYS),
    }


def _last_key(page: dict[str, Any]) -> Item | None:
    return page.get("LastEvaluatedKey")


def _key_value(value: dict[str, Any]) -> str:
    (kind, text), *rest = value.items()
    if rest or kind not in ("S", "N", "B"):
        raise _error("ValidationException", "A key attribute is a string, number or binary")
    return str(text)


def _error(code: str, message: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, **extra}, "LocalDynamoDB")


def _cancelled(failed: list[bool]) -> ClientError:
    reasons = [
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
        if fail
        else {"Code": "None"}
        for fail in failed
    ]
    codes = ", ".join(reason["Code"] for reason in reasons)
    return _error(
        "TransactionCanceledException",
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        CancellationReasons=reasons,
    )
