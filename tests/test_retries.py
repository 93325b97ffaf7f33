"""Retry safety: a retried request (same messageIds, new sentAt) never leaves a second copy."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from segment.analytics import Client

from collector import api
from collector.auth import Source, SourceCache
from collector.config import Settings
from collector.ingest import Collector, IncomingRequest
from collector.ledger import Ledger
from collector.sink import S3Sink
from collector.storage import EventStore
from collector.tools.localapi import LocalApiGateway, one_instance

from .conftest import BUCKET, TABLE, Aws


def test_segment_client_retry_after_a_lost_response_stores_once(aws: Aws, write_key: str) -> None:
    """The first response is lost after the events were stored; the client retries the batch."""
    invocations: list[dict[str, Any]] = []

    def lose_first_response(event: dict[str, Any], context: Any) -> dict[str, Any]:
        invocations.append(event)
        response = api.lambda_handler(event, context)
        if len(invocations) == 1:
            return {"statusCode": 503, "headers": {}, "body": '{"message": "timeout"}'}
        return response

    server = LocalApiGateway(("127.0.0.1", 0), one_instance(lose_first_response))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        client = Client(write_key, host=server.url, max_retries=3)
        for n in range(5):
            client.track(f"user-{n}", "Retried", {"n": n})
        client.flush()
        client.shutdown()
    finally:
        server.shutdown()
        server.server_close()

    assert len(invocations) == 2
    assert invocations[1]["headers"]["X-Retry-Count"] == "1"
    first, retry = (orjson.loads(base64.b64decode(event["body"])) for event in invocations)
    assert first["sentAt"] != retry["sentAt"]
    assert len(aws.keys("events/")) == 1
    assert sorted(event["properties"]["n"] for event in aws.stored()) == [0, 1, 2, 3, 4]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


SETTINGS = Settings(events_bucket=BUCKET, identity_table=TABLE)


@pytest.fixture
def collector_at(aws: Aws) -> Any:
    """A collector on moto's S3 and DynamoDB whose clock the test sets; the source is fixed."""
    clock = Clock(datetime(2026, 11, 22, 10, 59, 58, tzinfo=UTC))
    ledger = Ledger(
        aws.dynamodb,
        aws.table,
        window_seconds=SETTINGS.dedupe_window_hours * 3600,
        lease_seconds=SETTINGS.claim_lease_seconds,
        clock=lambda: clock.now.timestamp(),
    )
    collector = Collector(
        SETTINGS,
        SourceCache(lambda _: Source("src-1", "web"), ttl=60),
        S3Sink(EventStore(aws.s3, aws.bucket), SETTINGS.gzip_level),
        ledger=ledger,
        clock=clock,
    )
    return collector, clock


def batch_request(sent_at: datetime, happened: datetime, request_id: str) -> IncomingRequest:
    """A three-message batch as a client sends it; `sent_at` and `happened` are client clock."""
    body = {
        "batch": [
            {
                "type": "track",
                "event": "Paid",
                "userId": "u1",
                "messageId": f"m-{n}",
                "timestamp": (happened - timedelta(seconds=n)).isoformat(),
            }
            for n in range(3)
        ],
        "sentAt": sent_at.isoformat(),
        "writeKey": "any",
    }
    return IncomingRequest(
        call="batch",
        body=base64.b64encode(orjson.dumps(body)).decode(),
        is_base64_encoded=True,
        request_id=request_id,
    )


@pytest.mark.parametrize(
    ("delay", "client_skew"),
    [
        (timedelta(seconds=30), timedelta(0)),
        (timedelta(minutes=40), timedelta(0)),
        (timedelta(hours=5), timedelta(0)),
        (timedelta(hours=23), timedelta(0)),
        (timedelta(minutes=40), timedelta(hours=-3)),
        (timedelta(minutes=40), timedelta(hours=7)),
    ],
    ids=["same-hour", "next-hour", "five-hours", "23-hours", "client-3h-behind", "client-7h-ahead"],
)
def test_a_retry_within_the_window_is_recognised(
    collector_at: Any, aws: Aws, delay: timedelta, client_skew: timedelta
) -> None:
    collector, clock = collector_at
    first_sent = clock.now + client_skew
    happened = first_sent - timedelta(seconds=1)
    first = collector.ingest(batch_request(first_sent, happened, "req-1"))
    clock.now += delay
    retry = collector.ingest(batch_request(first_sent + delay, happened, "req-2"))

    assert (first.duplicates, retry.duplicates) == (0, 3)
    assert retry.accepted == 3
    [key] = aws.keys("events/")
    assert "/dt=2026-11-22/hour=10/" in key
    assert {event["collector"]["requestId"] for event in aws.stored()} == {"req-1"}


def test_a_retry_after_the_window_is_stored_again(collector_at: Any, aws: Aws) -> None:
    """The documented limit: after DEDUPE_WINDOW_HOURS a message is new again."""
    collector, clock = collector_at
    sent = clock.now
    collector.ingest(batch_request(sent, sent - timedelta(seconds=1), "req-1"))
    late = SETTINGS.dedupe_window_hours + 1
    clock.now += timedelta(hours=late)
    retry = collector.ingest(batch_request(sent + timedelta(hours=late), sent, "req-2"))
    assert retry.duplicates == 0
    assert len(aws.keys("events/")) == 2


def test_a_recomposed_batch_stores_only_its_new_message(collector_at: Any, aws: Aws) -> None:
    collector, clock = collector_at
    first = batch_request(clock.now, clock.now, "req-1")
    other_body = orjson.loads(base64.b64decode(first.body or ""))
    other_body["batch"][0]["messageId"] = "m-other"
    other = IncomingRequest(
        call="batch",
        body=base64.b64encode(orjson.dumps(other_body)).decode(),
        is_base64_encoded=True,
        request_id="req-2",
    )
    assert collector.ingest(first).duplicates == 0
    assert collector.ingest(other).duplicates == 2
    assert len(aws.keys("events/")) == 2
    assert sorted(event["messageId"] for event in aws.stored()) == ["m-0", "m-1", "m-2", "m-other"]


def test_a_fresh_request_makes_one_put_and_no_other_s3_call(collector_at: Any, aws: Aws) -> None:
    collector, clock = collector_at
    clock.now = clock.now.replace(minute=30)
    calls: list[str] = []
    aws.s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    tables: list[str] = []
    aws.dynamodb.meta.events.register(
        "before-call.dynamodb", lambda model, **_: tables.append(model.name)
    )
    collector.ingest(batch_request(clock.now, clock.now - timedelta(seconds=1), "req-1"))
    assert calls == ["PutObject"]
    # The ledger: one conditional claim for the batch, not a call per message, and no read
    # (new messages are claimed first; only a claim that meets one seen before reads).
    assert tables == ["TransactWriteItems"]
