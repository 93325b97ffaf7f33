"""Where a request's stamped events and rejected records go: the sink interface, and S3.

The pipeline names what it stores (a fingerprint of the messages, so a retry of the same set
names the same thing) and hands the lines to a sink; the sink decides where that name lives,
how it is written and how to tell later whether it was. The messageId ledger records that
place for each message it claims, and asks `holds` when it meets a claim whose request may
have died.

Sinks: `S3Sink` (one object per request, written with a conditional PUT) and
`firehose_sink.FirehoseSink` (records into a Kinesis Data Firehose delivery stream).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from .stamping import RequestStamp
from .storage import EVENTS_PREFIX, REJECTED_PREFIX, ObjectStore, gzip_lines, object_key


class EventSink(Protocol):
    """Stores events and rejected records; every failure is raised as StorageUnavailable."""

    def place(self, name: str, received_at: datetime) -> str:
        """Where the events called `name` go, as the ledger records it."""
        ...

    def put_events(self, place: str, lines: list[bytes], request: RequestStamp) -> None:
        """Store these JSON lines at `place`; storing a place a second time stores nothing."""
        ...

    def holds(self, place: str) -> bool:
        """Whether the events of `place` are known to be stored."""
        ...

    def put_rejected(self, name: str, lines: list[bytes], request: RequestStamp) -> None:
        """Store rejected records (as JSON lines) under rejected/, named `name`."""
        ...


class S3Sink:
    """One gzip JSON-lines object per request under events/ (Hive partitions on the receive
    hour): the place is the object key, and the conditional PUT keeps each key to one write."""

    def __init__(self, store: ObjectStore, gzip_level: int) -> None:
        self._store = store
        self._gzip_level = gzip_level

    def place(self, name: str, received_at: datetime) -> str:
        return object_key(EVENTS_PREFIX, received_at, name)

    def put_events(self, place: str, lines: list[bytes], request: RequestStamp) -> None:
        self._store.put_new(place, gzip_lines(lines, self._gzip_level), metadata(request))

    def holds(self, place: str) -> bool:
        return self._store.exists(place)

    def put_rejected(self, name: str, lines: list[bytes], request: RequestStamp) -> None:
        self._store.put_new(
            object_key(REJECTED_PREFIX, request.received_at, name),
            gzip_lines(lines, self._gzip_level),
            metadata(request),
        )


def metadata(request: RequestStamp) -> dict[str, str]:
    """The S3 object metadata of everything a request stores."""
    return {"source-id": request.source_id, "request-id": request.request_id}
