"""The messageId ledger: each (source, messageId) claims one events/ object, so a message is
stored once within the dedupe window, whatever batches it arrives in.

One item per message in the identity table:
  MSG#<source id>#<messageId> / MSG
    objectKey   the events/ object the message is (being) stored in
    leaseUntil  epoch seconds until which the claimant may still be writing that object
    expiresAt   end of the dedupe window (the table's TTL attribute)
    identity    the identity decision of an identify or alias, once made (JSON)

A message whose object exists is stored. One whose object does not exist yet is being written,
until its lease ends; then another request may take it over. The lease outlasts any Lambda
that could still be writing, so a takeover never races the first writer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import orjson

from .dynamodb import (
    ITEMS_PER_TRANSACTION,
    KEYS_PER_READ,
    ConditionsFailed,
    chunks,
    get_many,
    transact,
    write_one,
)
from .errors import StorageUnavailable


class ClaimLost(Exception):
    """One of these messages is claimed already, or was claimed after we read it."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A message's ledger item as read."""

    object_key: str
    lease_until: float
    identity: dict[str, Any] | None


@dataclass(slots=True)
class Plan:
    """What a request does with its messages (positions in its list of accepted messages)."""

    write: list[int] = field(default_factory=list)
    # Already stored by an earlier request: answered as stored, not written again.
    duplicates: list[int] = field(default_factory=list)
    # Being written by a request still running: retried later, when its lease has ended.
    busy: list[int] = field(default_factory=list)
    busy_until: float = 0.0
    # The ledger items of the messages to write that were claimed before, as read.
    previous: dict[int, Entry] = field(default_factory=dict)


def plan(
    message_ids: list[str],
    entries: dict[str, Entry],
    stored: Callable[[str], bool],
    object_key_for: Callable[[list[str]], str],
    now: float,
) -> tuple[Plan, str]:
    """Sort a request's messages into written, duplicate and busy, and name the object the
    written ones go to: a function of exactly that set of messages, so that a request writing
    the same set as a claim it finds (its own earlier attempt) writes the same object, which the
    conditional PUT keeps to one copy.
    """
    result = Plan()
    if not entries and len(set(message_ids)) == len(message_ids):
        # The usual request: nothing seen before. The hot path, so no per-message work here.
        result.write = [*range(len(message_ids))]
        return result, object_key_for(message_ids)
    candidates: list[int] = []
    seen: set[str] = set()
    for position, message_id in enumerate(message_ids):
        entry = entries.get(message_id)
        if message_id in seen or (entry is not None and stored(entry.object_key)):
            result.duplicates.append(position)
        else:
            candidates.append(position)
            if entry is not None:
                result.previous[position] = entry
        seen.add(message_id)
    while True:
        key = object_key_for([message_ids[position] for position in candidates])
        busy = [
            position
            for position in candidates
            if _held_elsewhere(result.previous.get(position), key, now)
        ]
        if not busy:
            result.write = candidates
            return result, key
        for position in busy:
            entry = result.previous.pop(position)
            result.busy.append(position)
            result.busy_until = max(result.busy_until, entry.lease_until)
        busy_set = set(busy)
        candidates = [position for position in candidates if position not in busy_set]


def _held_elsewhere(entry: Entry | None, object_key: str, now: float) -> bool:
    """Claimed for another object by a request that may still be writing it."""
    return entry is not None and entry.object_key != object_key and entry.lease_until > now


class Ledger:
    """Reads and claims ledger items in DynamoDB, always in batches as large as the API allows."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        window_seconds: float,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._window = window_seconds
        self.lease_seconds = lease_seconds
        self._clock = clock

    def read(self, source_id: str, message_ids: list[str]) -> dict[str, Entry]:
        """The live ledger items of these messages (expired ones read as absent)."""
        unique = list(dict.fromkeys(message_ids))
        now = self._clock()
        found: dict[str, Entry] = {}
        prefix, sort_key = _pk_prefix(source_id), {"S": "MSG"}
        for start in range(0, len(unique), KEYS_PER_READ):
            keys = [
                {"pk": {"S": prefix + message_id}, "sk": sort_key}
                for message_id in unique[start : start + KEYS_PER_READ]
            ]
            for item in get_many(self._db, self._table, keys):
                if float(item["expiresAt"]["N"]) > now:
                    found[item["pk"]["S"][len(prefix) :]] = _entry(item)
        return found

    def claim(
        self, source_id: str, message_ids: list[str], previous: dict[str, Entry], object_key: str
    ) -> float:
        """Claim each message for `object_key`, conditional on its item being as it was read
        (`previous`, or absent); returns the lease's end. Raises ClaimLost if another request
        got in between."""
        now = self._clock()
        # To the millisecond, rounded down, and returned as stored: the holder and a request
        # reading the item see the same end, and a reader is never told to wait past it (rounded
        # up, a request arriving within a millisecond of the claim was told 2 s for a 1 s lease).
        lease_until = math.floor((now + self.lease_seconds) * 1000) / 1000
        # One request's items share every value but the key: built once, and each message's
        # put a copy of them with its key set (copying a dict and setting one key costs ~40%
        # less than building the two dicts anew; the placeholders keep the keys' order).
        prefix, table, sort_key = _pk_prefix(source_id), self._table, {"S": "MSG"}
        lease, target = {"N": f"{lease_until:.3f}"}, {"S": object_key}
        shared_item: dict[str, Any] = {
            "pk": None,
            "sk": sort_key,
            "objectKey": target,
            "leaseUntil": lease,
            "expiresAt": {"N": str(int(now + self._window))},
        }
        shared_put: dict[str, Any] = {
            "TableName": table,
            "Item": None,
            # An expired item that TTL has not removed yet counts as absent.
            "ConditionExpression": "attribute_not_exists(pk) OR expiresAt < :now",
            "ExpressionAttributeValues": {":now": {"N": str(int(now))}},
        }
        # Each transaction's items are built just before it is sent, so at most one
        # transaction's dicts are alive at a time (all 500 messages' at once set off three of
        # the garbage collector's passes over them).
        for start in range(0, len(message_ids), ITEMS_PER_TRANSACTION):
            items: list[dict[str, Any]] = []
            for message_id in message_ids[start : start + ITEMS_PER_TRANSACTION]:
                pk = {"S": prefix + message_id}
                if message_id in previous:
                    key = {"pk": pk, "sk": sort_key}
                    items.append(_reclaim(table, key, previous[message_id], target, lease))
                    continue
                item, put = shared_item.copy(), shared_put.copy()
                item["pk"], put["Item"] = pk, item
                items.append({"Put": put})
            try:
                self._transact(items)
            except (ClaimLost, StorageUnavailable):
                # All or nothing for the caller: the chunks already claimed are let go again.
                self.release(source_id, message_ids[:start], object_key)
                raise
        return lease_until

    def check_lease(self, lease_until: float) -> None:
        """Refuse to start a write that might not finish while the lease holds."""
        if self._clock() > lease_until - self.lease_seconds / 2:
            raise StorageUnavailable("the claim's lease ran short before the write")

    def record_identity(
        self, source_id: str, message_id: str, object_key: str, identity: dict[str, Any]
    ) -> dict[str, Any]:
        """The transaction item that records a message's identity decision, once: it fails if
        the message is no longer claimed for `object_key` or already has a decision."""
        return {
            "Update": {
                "TableName": self._table,
                "Key": _key(source_id, message_id),
                "UpdateExpression": "SET #identity = :identity",
                "ConditionExpression": "objectKey = :object AND attribute_not_exists(#identity)",
                "ExpressionAttributeNames": {"#identity": "identity"},
                "ExpressionAttributeValues": {
                    ":identity": {"S": orjson.dumps(identity).decode()},
                    ":object": {"S": object_key},
                },
            }
        }

    def recorded_identity(self, source_id: str, message_id: str) -> dict[str, Any] | None:
        """The identity decision recorded for a message, if any."""
        entry = self.read(source_id, [message_id]).get(message_id)
        return None if entry is None else entry.identity

    def record_identities(
        self, source_id: str, object_key: str, identities: dict[str, dict[str, Any]]
    ) -> None:
        """Record decisions that changed nothing in the graph, in as few calls as possible."""
        items = [
            self.record_identity(source_id, message_id, object_key, identity)
            for message_id, identity in identities.items()
        ]
        for chunk in chunks(items, ITEMS_PER_TRANSACTION):
            try:
                self._transact(chunk)
            except ClaimLost:
                # A twin of this request recorded them first: the twin's decisions stand.
                continue

    def release(self, source_id: str, message_ids: list[str], object_key: str) -> None:
        """End our lease early after a failed write, so a retry need not wait for it; decisions
        stay. Best effort: if this fails too, the lease simply runs out."""
        items = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _key(source_id, message_id),
                    "UpdateExpression": "SET leaseUntil = :zero",
                    "ConditionExpression": "objectKey = :object",
                    "ExpressionAttributeValues": {
                        ":zero": {"N": "0"},
                        ":object": {"S": object_key},
                    },
                }
            }
            for message_id in dict.fromkeys(message_ids)
        ]
        for chunk in chunks(items, ITEMS_PER_TRANSACTION):
            with suppress(ClaimLost, StorageUnavailable):
                self._transact(chunk)

    def _transact(self, items: list[dict[str, Any]]) -> None:
        try:
            # One message (every browser request): a plain conditional write, at half the cost.
            if len(items) == 1:
                write_one(self._db, items[0])
            else:
                transact(self._db, items)
        except ConditionsFailed as exc:
            raise ClaimLost from exc


class RequestDecisions:
    """The identity decisions of one request's messages, each recorded once in its claim: in
    the graph's own transaction when the decision writes to the graph, else deferred to one
    batched write for the whole request."""

    def __init__(self, ledger: Ledger, source_id: str, object_key: str) -> None:
        self._ledger = ledger
        self._source_id = source_id
        self._object_key = object_key
        self._deferred: dict[str, dict[str, Any]] = {}

    def about(self, message_id: str) -> MessageDecision:
        return MessageDecision(self, message_id)

    def record_item(self, message_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
        return self._ledger.record_identity(self._source_id, message_id, self._object_key, outcome)

    def recorded(self, message_id: str) -> dict[str, Any] | None:
        return self._ledger.recorded_identity(self._source_id, message_id)

    def defer(self, message_id: str, outcome: dict[str, Any]) -> None:
        self._deferred[message_id] = outcome

    def flush(self) -> None:
        if self._deferred:
            self._ledger.record_identities(self._source_id, self._object_key, self._deferred)
            self._deferred = {}


@dataclass(frozen=True, slots=True)
class MessageDecision:
    """One message's decision log, as the identity graph sees it (`identity_store.DecisionLog`)."""

    decisions: RequestDecisions
    message_id: str

    def record_item(self, outcome: dict[str, Any]) -> dict[str, Any]:
        return self.decisions.record_item(self.message_id, outcome)

    def recorded(self) -> dict[str, Any] | None:
        return self.decisions.recorded(self.message_id)

    def defer(self, outcome: dict[str, Any]) -> None:
        self.decisions.defer(self.message_id, outcome)


def _reclaim(
    table: str,
    key: dict[str, Any],
    previous: Entry,
    target: dict[str, str],
    lease: dict[str, str],
) -> dict[str, Any]:
    """The claim of a message claimed before: our own earlier attempt, or a lapsed claim."""
    values: dict[str, Any] = {":lease": lease, ":object": target}
    if previous.object_key == target["S"]:
        # Our own earlier attempt (or its twin still running): the same object, a fresh lease.
        return {
            "Update": {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "SET leaseUntil = :lease",
                "ConditionExpression": "objectKey = :object",
                "ExpressionAttributeValues": values,
            }
        }
    # A lapsed claim whose object was never written: ours now, its decision kept.
    values[":previous"] = {"S": previous.object_key}
    values[":previous_lease"] = {"N": f"{previous.lease_until:.3f}"}
    return {
        "Update": {
            "TableName": table,
            "Key": key,
            "UpdateExpression": "SET objectKey = :object, leaseUntil = :lease",
            "ConditionExpression": "objectKey = :previous AND leaseUntil = :previous_lease",
            "ExpressionAttributeValues": values,
        }
    }


def _pk_prefix(source_id: str) -> str:
    return f"MSG#{source_id}#"


def _key(source_id: str, message_id: str) -> dict[str, Any]:
    return {"pk": {"S": _pk_prefix(source_id) + message_id}, "sk": {"S": "MSG"}}


def _entry(item: dict[str, Any]) -> Entry:
    identity = item.get("identity")
    return Entry(
        object_key=item["objectKey"]["S"],
        lease_until=float(item["leaseUntil"]["N"]),
        identity=None if identity is None else orjson.loads(identity["S"]),
    )
