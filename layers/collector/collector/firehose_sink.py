"""The Kinesis Data Firehose sink: a request's events as records of a delivery stream, which
writes them to the bucket's events/ layout in large gzip objects (docs/design.md, "Sinks").

Firehose cannot say afterwards whether it took a record, so each delivery leaves a receipt in
the identity table (one small item per request, expiring with the dedupe window): `holds` reads
it. A message is therefore sent once, like an S3 object is written once, except in one window:
Firehose took the records and the receipt could not be written; the request answers 503 and
its retry sends them again. Firehose's own delivery to S3 is at least once as well. Both leave
two lines with one messageId; docs/design.md ("Sinks") says how often and how to count them once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .dynamodb import error_code, get_many, write_one
from .errors import StorageUnavailable
from .sink import EventSink
from .stamping import RequestStamp

# Firehose's limits: a record of at most 1,000 KiB, a PutRecordBatch of 500 records and 4 MiB.
RECORD_BYTES = 1_000 * 1024
RECORDS_PER_CALL = 500
BYTES_PER_CALL = 4 * 1024 * 1024
# Attempts at records Firehose answered as failed (FailedPutCount); botocore retries whole calls.
RECORD_ATTEMPTS = 3
_BACKOFF_SECONDS = 0.05


class DeliveryReceipts:
    """One item per delivered request, `SENT#<name>`, gone after the dedupe window."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        window_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb
        self._table = table
        self._window = window_seconds
        self._clock = clock

    def record(self, place: str) -> None:
        item = {**_receipt_key(place), "expiresAt": {"N": str(int(self._clock() + self._window))}}
        write_one(self._db, {"Put": {"TableName": self._table, "Item": item}})

    def has(self, place: str) -> bool:
        return bool(get_many(self._db, self._table, [_receipt_key(place)]))


def _receipt_key(place: str) -> dict[str, Any]:
    return {"pk": {"S": place}, "sk": {"S": "SENT"}}


class FirehoseSink:
    """Events into a delivery stream; rejected records (rare, and read one by one) stay
    objects, through `rejected`."""

    def __init__(
        self,
        firehose: Any,
        stream: str,
        receipts: DeliveryReceipts,
        rejected: EventSink,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._firehose = firehose
        self._stream = stream
        self._receipts = receipts
        self._rejected = rejected
        self._sleep = sleep

    def place(self, name: str, received_at: datetime) -> str:
        # Firehose names the objects; the place only has to tell one request's set from another.
        return f"SENT#{name}"

    def put_events(self, place: str, lines: list[bytes], request: RequestStamp) -> None:
        for call in _calls(list(records(lines))):
            self._put(call)
        self._receipts.record(place)

    def holds(self, place: str) -> bool:
        return self._receipts.has(place)

    def put_rejected(self, name: str, lines: list[bytes], request: RequestStamp) -> None:
        self._rejected.put_rejected(name, lines, request)

    def _put(self, data: list[bytes]) -> None:
        """One PutRecordBatch, then the records it answered as failed again, and only those."""
        pending = data
        for attempt in range(RECORD_ATTEMPTS):
            if attempt:
                self._sleep(_BACKOFF_SECONDS * 2**attempt)
            try:
                answer = self._firehose.put_record_batch(
                    DeliveryStreamName=self._stream,
                    Records=[{"Data": record} for record in pending],
                )
            except (ClientError, BotoCoreError) as exc:
                raise StorageUnavailable(
                    f"Firehose PutRecordBatch failed: {error_code(exc)}"
                ) from exc
            if not answer.get("FailedPutCount"):
                return
            failed = [
                (record, result.get("ErrorCode"))
                for record, result in zip(pending, answer["RequestResponses"], strict=True)
                if result.get("ErrorCode")
            ]
            pending = [record for record, _ in failed]
        raise StorageUnavailable(f"Firehose kept failing {len(pending)} records: {failed[0][1]}")


def records(lines: list[bytes]) -> Iterator[bytes]:
    """The lines as few records as Firehose's record size allows, split between lines; each
    record ends with a newline, so the objects Firehose concatenates them into stay JSON lines.
    A line is at most 32 KiB (the message limit plus its stamp), far below a record."""
    record: list[bytes] = []
    size = 0
    for line in lines:
        if record and size + len(line) + 1 > RECORD_BYTES:
            yield b"\n".join(record) + b"\n"
            record, size = [], 0
        record.append(line)
        size += len(line) + 1
    if record:
        yield b"\n".join(record) + b"\n"


def _calls(data: list[bytes]) -> Iterator[list[bytes]]:
    """Records grouped into PutRecordBatch calls within the per-call limits."""
    call: list[bytes] = []
    size = 0
    for record in data:
        if call and (len(call) == RECORDS_PER_CALL or size + len(record) > BYTES_PER_CALL):
            yield call
            call, size = [], 0
        call.append(record)
        size += len(record)
    if call:
        yield call
