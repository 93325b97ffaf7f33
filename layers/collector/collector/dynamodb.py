"""The DynamoDB calls the ledger and the identity graph share, with DynamoDB's limits and
failures handled once: BatchGetItem in reads of 100 keys, TransactWriteItems (or a single
conditional write) whose failed conditions raise ConditionsFailed; anything else, a throttled
transaction included, is StorageUnavailable (a 503)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from .errors import StorageUnavailable

KEYS_PER_READ = 100
ITEMS_PER_TRANSACTION = 100
_UNPROCESSED_ATTEMPTS = 5
_SINGLE_WRITES = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}
# A cancelled transaction lost a race only for these reasons; for any other (ThrottlingError,
# ProvisionedThroughputExceeded, ValidationError) it failed, and deciding again cannot help.
_LOST_RACE = frozenset({"ConditionalCheckFailed", "TransactionConflict"})
_Item = TypeVar("_Item")


class ConditionsFailed(Exception):
    """A transaction's conditions did not hold: another writer got there first."""


def get_many(dynamodb: Any, table: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items at `keys` that exist, read consistently, 100 keys a call."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), KEYS_PER_READ):
        request = {table: {"Keys": keys[start : start + KEYS_PER_READ], "ConsistentRead": True}}
        for _ in range(_UNPROCESSED_ATTEMPTS):
            try:
                answer = dynamodb.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as exc:
                raise StorageUnavailable(
                    f"DynamoDB BatchGetItem failed: {error_code(exc)}"
                ) from exc
            found.extend(answer["Responses"].get(table, []))
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise StorageUnavailable("DynamoDB BatchGetItem left keys unprocessed")
    return found


def transact(dynamodb: Any, items: list[dict[str, Any]]) -> None:
    """One all-or-nothing write of at most 100 items (each names its table)."""
    with _conditional("TransactWriteItems"):
        dynamodb.transact_write_items(TransactItems=items)


def write_one(dynamodb: Any, item: dict[str, Any]) -> None:
    """A transaction's single item written by itself: as atomic, and half the capacity (a
    transactional write costs 2 WRU per item, a plain conditional one 1)."""
    ((kind, request),) = item.items()
    with _conditional(f"{kind}Item"):
        getattr(dynamodb, _SINGLE_WRITES[kind])(**request)


@contextmanager
def _conditional(operation: str) -> Iterator[None]:
    """Failed conditions raise ConditionsFailed; any other failure is StorageUnavailable."""
    try:
        yield
    except ClientError as exc:
        if _lost_race(exc):
            raise ConditionsFailed from exc
        raise StorageUnavailable(f"DynamoDB {operation} failed: {error_code(exc)}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"DynamoDB {operation} failed: {error_code(exc)}") from exc


def chunks(items: list[_Item], size: int) -> Iterator[list[_Item]]:
    """`items` in runs of at most `size` (a transaction's or a read's limit)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lost_race(exc: ClientError) -> bool:
    """True if another writer got there first: a failed condition, or a transaction cancelled
    for one (or for a concurrent transaction on its items). A transaction throttled for lack
    of capacity is a failure like any other: read as a lost race, it had the identity graph
    decide again as if someone else had written, and a throttled claim answer 503
    messages_in_flight, a wait for a request that did not exist."""
    code = error_code(exc)
    if code != "TransactionCanceledException":
        return code == "ConditionalCheckFailedException"
    reasons = {reason.get("Code") for reason in exc.response.get("CancellationReasons") or []}
    return not reasons or not reasons.isdisjoint(_LOST_RACE)


def error_code(exc: ClientError | BotoCoreError) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__
