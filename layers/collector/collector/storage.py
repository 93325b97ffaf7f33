"""The S3 layout and its writes: one gzip NDJSON object per request, at a key retries reproduce."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .errors import StorageUnavailable

EVENTS_PREFIX = "events"
REJECTED_PREFIX = "rejected"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_HOUR = timedelta(hours=1)
# Network time the skew correction cannot see; a first attempt may precede the newest message by it.
_LATENCY_SLACK = timedelta(minutes=1)
_ALREADY_STORED = frozenset({"PreconditionFailed", "412"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def fingerprint(source_id: str, message_ids: Iterable[str]) -> str:
    """The identity of a request: its source and its messages' ids, in order."""
    text = "\0".join((source_id, *message_ids))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def object_key(prefix: str, received_at: datetime, request_fingerprint: str) -> str:
    """Hive-style partitions on the receive time (UTC); nothing a client sent is in the key."""
    return f"{prefix}/dt={received_at:%Y-%m-%d}/hour={received_at:%H}/{request_fingerprint}.json.gz"


def earlier_hours(
    received_at: datetime, first_sent_after: datetime, max_hours: int
) -> list[datetime]:
    """Hour partitions before this one where an earlier attempt of this request may have landed.

    A first attempt cannot precede the newest message it carries, so a fresh request has none
    and a retry an hour later has one or two.
    """
    this_hour = received_at.replace(minute=0, second=0, microsecond=0)
    earliest = max(first_sent_after - _LATENCY_SLACK, this_hour - max_hours * _HOUR)
    hours = []
    hour = this_hour - _HOUR
    while hour + _HOUR > earliest:
        hours.append(hour)
        hour -= _HOUR
    return hours


def gzip_lines(lines: list[bytes], level: int) -> bytes:
    """Newline-delimited JSON, gzip-compressed (mtime 0, so equal input gives equal bytes)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(b"\n".join(lines)) + compressor.compress(b"\n") + compressor.flush()


class EventStore:
    """Writes each object at most once: a conditional PUT, after looking in earlier partitions."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put_once(
        self,
        prefix: str,
        received_at: datetime,
        request_fingerprint: str,
        body: bytes,
        earlier: Iterable[datetime] = (),
        metadata: dict[str, str] | None = None,
    ) -> tuple[str, bool]:
        """Store `body` unless this request is already stored; returns (key, newly written)."""
        for hour in earlier:
            key = object_key(prefix, hour, request_fingerprint)
            if self._exists(key):
                return key, False
        key = object_key(prefix, received_at, request_fingerprint)
        with _unavailable_on_failure("PutObject"):
            try:
                self._s3.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=body,
                    ContentType="application/x-ndjson",
                    ContentEncoding="gzip",
                    IfNoneMatch="*",
                    Metadata=metadata or {},
                )
            except ClientError as exc:
                if _error_code(exc) not in _ALREADY_STORED:
                    raise
                return key, False
        return key, True

    def _exists(self, key: str) -> bool:
        with _unavailable_on_failure("HeadObject"):
            try:
                self._s3.head_object(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if _error_code(exc) not in _MISSING:
                    raise
                return False
        return True


@contextmanager
def _unavailable_on_failure(operation: str) -> Iterator[None]:
    """Any S3 failure left unhandled becomes StorageUnavailable: a 503 the client retries."""
    try:
        yield
    except ClientError as exc:
        raise StorageUnavailable(f"S3 {operation} failed: {_error_code(exc)}") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable(f"S3 {operation} failed: {type(exc).__name__}") from exc


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))
