"""Sources and their write keys in the DynamoDB table; only a hash of each key is ever stored."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .auth import Source, hash_write_key
from .errors import StorageUnavailable

# The shortest key-id prefix `revoke` accepts, so a typo cannot revoke every key at once.
MIN_KEY_ID = 6
# All keys live in one item collection: the Lambda reads one item, the CLI queries them all.
_PARTITION = "writekey"


@dataclass(frozen=True, slots=True)
class WriteKeyRecord:
    """A write key as stored: its hash (the first characters identify it), source and state."""

    key_hash: str
    source: Source
    created_at: str
    revoked_at: str | None

    @property
    def key_id(self) -> str:
        return self.key_hash[:12]


class SourceRegistry:
    """Adds, lists, rotates and revokes write keys; `lookup` is the Lambda's one read."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._dynamodb = dynamodb
        self._table = table

    def lookup(self, key_hash: str) -> Source | None:
        try:
            item = self._dynamodb.get_item(
                TableName=self._table,
                Key={"pk": {"S": _PARTITION}, "sk": {"S": key_hash}},
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"DynamoDB GetItem failed: {type(exc).__name__}") from exc
        if item is None or "revokedAt" in item:
            return None
        return _record(item).source

    def records(self) -> list[WriteKeyRecord]:
        pages = self._dynamodb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _PARTITION}},
        )
        return [_record(item) for page in pages for item in page["Items"]]

    def add(
        self, name: str, write_key: str | None = None, may_force_merge: bool = False
    ) -> tuple[Source, str]:
        """A new source with a fresh write key (or the given one, for local development)."""
        if any(record.source.name == name for record in self.records()):
            raise ValueError(f"a source named {name!r} exists; rotate its key instead")
        source = Source(id=uuid.uuid4().hex[:16], name=name, may_force_merge=may_force_merge)
        return source, self._issue_key(source, write_key)

    def rotate(self, name: str, write_key: str | None = None) -> str:
        """A new key (or the given one, for local development) for an existing source; its
        old keys keep working until revoked."""
        return self._issue_key(self._source_named(name), write_key)

    def revoke(self, name: str, key_id: str | None = None) -> list[WriteKeyRecord]:
        """Revoke every live key of a source, or only the one key whose id starts with `key_id`."""
        if key_id is not None and len(key_id) < MIN_KEY_ID:
            raise ValueError(f"a key id has at least {MIN_KEY_ID} characters (see `list`)")
        matching = [
            record
            for record in self.records()
            if record.source.name == name
            and record.revoked_at is None
            and (key_id is None or record.key_hash.startswith(key_id))
        ]
        if not matching:
            raise LookupError(f"no live key for source {name!r}")
        if key_id is not None and len(matching) > 1:
            raise ValueError(f"key id {key_id!r} matches {len(matching)} keys; give more of it")
        now = _now()
        for record in matching:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={"pk": {"S": _PARTITION}, "sk": {"S": record.key_hash}},
                UpdateExpression="SET revokedAt = :now",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":now": {"S": now}},
            )
        return matching

    def _source_named(self, name: str) -> Source:
        for record in self.records():
            if record.source.name == name:
                return record.source
        raise LookupError(f"no source named {name!r}")

    def _issue_key(self, source: Source, write_key: str | None) -> str:
        write_key = write_key or secrets.token_urlsafe(24)
        self._dynamodb.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": _PARTITION},
                "sk": {"S": hash_write_key(write_key)},
                "sourceId": {"S": source.id},
                "sourceName": {"S": source.name},
                "mayForceMerge": {"BOOL": source.may_force_merge},
                "createdAt": {"S": _now()},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )
        return write_key


def _record(item: dict[str, Any]) -> WriteKeyRecord:
    return WriteKeyRecord(
        key_hash=item["sk"]["S"],
        source=Source(
            id=item["sourceId"]["S"],
            name=item["sourceName"]["S"],
            may_force_merge=item.get("mayForceMerge", {}).get("BOOL", False),
        ),
        created_at=item["createdAt"]["S"],
        revoked_at=item.get("revokedAt", {}).get("S"),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
