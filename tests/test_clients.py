"""Real client packages, unchanged, against the local server: what lands in S3, field by field."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from collector.tools.localapi import LocalApiGateway

from .conftest import Aws


def at(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def assert_stamped(
    event: dict[str, Any], *, sent_after: datetime, sent_before: datetime, happened: datetime
) -> None:
    """The four timestamps: client clock as sent, server clock on arrival, skew taken out."""
    original, sent, received = (
        at(event["originalTimestamp"]),
        at(event["sentAt"]),
        at(event["receivedAt"]),
    )
    assert original == happened
    assert sent_after <= sent <= sent_before
    assert sent_after <= received <= sent_before
    assert at(event["timestamp"]) == received - (sent - original)


def send_all_calls(client: Any, happened: datetime) -> dict[str, str]:
    """One call of every type; returns messageId -> type."""
    ids = {
        kind: f"{kind}-{uuid.uuid4()}"
        for kind in ("identify", "track", "page", "screen", "group", "alias")
    }
    client.identify(
        "user-1",
        {"plan": "pro"},
        anonymous_id="anon-1",
        timestamp=happened,
        message_id=ids["identify"],
    )
    client.track(
        "user-1",
        "Order Completed",
        {"revenue": 42.5, "items": [{"sku": "a"}]},
        context={"campaign": {"name": "fall"}},
        timestamp=happened,
        message_id=ids["track"],
    )
    client.page(
        "user-1",
        "Docs",
        "Install",
        {"path": "/install"},
        timestamp=happened,
        message_id=ids["page"],
    )
    client.screen(
        "user-1", "Settings", "Profile", {"tab": 2}, timestamp=happened, message_id=ids["screen"]
    )
    client.group("user-1", "org-7", {"seats": 10}, timestamp=happened, message_id=ids["group"])
    client.alias("anon-1", "user-1", timestamp=happened, message_id=ids["alias"])
    client.flush()
    return {message_id: kind for kind, message_id in ids.items()}


def deliver_all_calls(
    client_class: Any, aws: Aws, happened: datetime, **options: Any
) -> list[dict[str, Any]]:
    """Send one call of each type with a real client; the stored events, stamps checked."""
    errors: list[Exception] = []
    client = client_class(max_retries=0, on_error=lambda error, _: errors.append(error), **options)
    before = datetime.now(UTC)
    sent = send_all_calls(client, happened)
    after = datetime.now(UTC)
    client.shutdown()
    assert errors == []
    events = aws.stored()
    assert {event["messageId"]: event["type"] for event in events} == sent
    for event in events:
        assert_stamped(event, sent_after=before, sent_before=after, happened=happened)
        assert event["context"]["ip"] == "127.0.0.1"
    return events


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_client_delivers_every_call_stamped(
    server: LocalApiGateway, aws: Aws, write_key: str, gzip: bool
) -> None:
    # analytics-python sends milliseconds.
    happened = datetime.now(UTC).replace(microsecond=123000) - timedelta(days=3)
    events = deliver_all_calls(
        SegmentClient, aws, happened, write_key=write_key, host=server.url, gzip=gzip
    )
    by_type = {event["type"]: event for event in events}
    for event in events:
        assert event["context"]["library"]["name"] == "analytics-python"
        assert event["collector"]["sourceId"]
        assert "writeKey" not in event
    track = by_type["track"]
    assert track["userId"] == "user-1"
    assert track["event"] == "Order Completed"
    assert track["properties"] == {"revenue": 42.5, "items": [{"sku": "a"}]}
    assert track["context"]["campaign"] == {"name": "fall"}
    assert by_type["identify"]["anonymousId"] == "anon-1"
    assert by_type["identify"]["traits"] == {"plan": "pro"}
    assert (by_type["page"]["category"], by_type["page"]["name"]) == ("Docs", "Install")
    assert by_type["screen"]["properties"] == {"tab": 2}
    assert by_type["group"]["groupId"] == "org-7"
    assert (by_type["alias"]["previousId"], by_type["alias"]["userId"]) == ("anon-1", "user-1")
    # One request, one object, partitioned by receive time.
    [key] = aws.keys("events/")
    received = at(track["receivedAt"])
    assert key.startswith(f"events/dt={received:%Y-%m-%d}/hour={received:%H}/")


# The Firehose sink too: a real client's calls, stamped, through moto's delivery stream.
@pytest.mark.sinks
def test_rudder_client_delivers_gzip_with_basic_auth(
    server: LocalApiGateway, aws: Aws, write_key: str
) -> None:
    happened = datetime.now(UTC).replace(microsecond=654321) - timedelta(hours=5)
    events = deliver_all_calls(RudderClient, aws, happened, write_key=write_key, host=server.url)
    for event in events:
        assert event["channel"] == "server"
        assert event["integrations"] == {"All": True}


def test_client_with_unknown_key_stores_nothing(server: LocalApiGateway, aws: Aws) -> None:
    errors: list[Any] = []
    client = SegmentClient(
        "not-a-key",
        host=server.url,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    client.track("user-1", "Signed Up")
    client.flush()
    client.shutdown()
    assert [(error.status, error.code) for error in errors] == [(401, "unknown_write_key")]
    assert aws.keys() == []
