"""The S3 layout and its writes: gzip NDJSON objects, each written at most once."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .errors import StorageUnavailable

EVENTS_PREFIX = "events"
REJECTED_PREFIX = "rejected"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ALREADY_STORED = frozenset({"PreconditionFailed", "412"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def fingerprint(source_id: str, message_ids: Iterable[str]) -> str:
    """A name for a set of messages of one source (or a request's bytes): SHA-256, shortened."""
    text = "\0".join((source_id, *message_ids))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def object_key(prefix: str, received_at: datetime, name: str) -> str:
    """Hive-style partitions on the receive time (UTC); nothing a client sent is in the key."""
    return f"{prefix}/dt={received_at:%Y-%m-%d}/hour={received_at:%H}/{name}.json.gz"


def gzip_lines(lines: list[bytes], level: int) -> bytes:
    """Newline-delimited JSON, gzip-compressed (mtime 0, so equal input gives equal bytes)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(b"\n".join(lines)) + compressor.compress(b"\n") + compressor.flush()


class ObjectStore(Protocol):
    """Conditional object writes: what the sinks and the identity export need of S3."""

    def put_new(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> bool: ...

    def exists(self, key: str) -> bool: ...


class EventStore:
    """Writes objects with a conditional PUT, so a key is never written twice."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put_new(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> bool:
        """Store `body` at `key` unless something is there already; True if newly written."""
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
                return False
        return True

    def exists(self, key: str) -> bool:
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
