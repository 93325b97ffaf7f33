"""Stamping rules: the four timestamps, ids, ip, batch-level context and the collector block."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.ingest import process
from collector.stamping import RequestStamp
from collector.validation import InvalidMessage, validate_messages

RECEIVED = datetime(2026, 11, 22, 12, 0, 0, 250000, tzinfo=UTC)


def stamped(message: dict[str, Any], **request: Any) -> dict[str, Any]:
    """The message as stored (serialised and read back), timestamps parsed for comparison."""
    item = {"type": "track", "event": "E", "userId": "u", **message}
    defaults: dict[str, Any] = {"source_id": "src", "request_id": "req", "ip": "198.51.100.7"}
    processed = process([item], RequestStamp(RECEIVED, **{**defaults, **request}), 32768)
    assert not processed.rejected, processed.rejected
    [line] = processed.lines
    stored: dict[str, Any] = orjson.loads(line)
    for field in ("timestamp", "originalTimestamp", "sentAt", "receivedAt"):
        if field in stored:
            assert stored[field].endswith("Z"), stored[field]
            stored[field] = datetime.fromisoformat(stored[field])
    return stored


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(original=moments, sent=moments, batch_level=st.booleans())
def test_timestamp_takes_the_client_clock_skew_out(
    original: datetime, sent: datetime, batch_level: bool
) -> None:
    message = {"timestamp": original.isoformat()}
    if batch_level:
        result = stamped(message, sent_at=sent)
    else:
        result = stamped({**message, "sentAt": sent.isoformat()})
    assert result["originalTimestamp"] == original
    assert result["sentAt"] == sent
    assert result["receivedAt"] == RECEIVED
    assert result["timestamp"] == RECEIVED - (sent - original)


def test_without_sent_at_the_timestamp_is_the_client_one() -> None:
    result = stamped({"timestamp": "2026-11-20T08:00:00+02:00"})
    assert (
        result["timestamp"] == result["originalTimestamp"] == datetime(2026, 11, 20, 6, tzinfo=UTC)
    )
    assert "sentAt" not in result


def test_without_any_client_time_the_timestamp_is_the_receive_time() -> None:
    result = stamped({})
    assert result["timestamp"] == RECEIVED
    assert "originalTimestamp" not in result


def test_message_sent_at_wins_over_the_batch_one() -> None:
    own = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    result = stamped(
        {"timestamp": "2026-11-22T10:59:00Z", "sentAt": own.isoformat()},
        sent_at=datetime(2026, 11, 22, 9, 0, tzinfo=UTC),
    )
    assert result["sentAt"] == own
    assert result["timestamp"] == RECEIVED - timedelta(minutes=1)


def test_original_timestamp_is_kept_when_the_client_already_sent_one() -> None:
    result = stamped(
        {"originalTimestamp": "2026-11-22T10:00:00Z", "timestamp": "2030-01-01T00:00:00Z"}
    )
    assert result["originalTimestamp"] == datetime(2026, 11, 22, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("2026-11-22T10:00:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22T12:00:00+02:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22T10:00:00.123456789Z", datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)),
    ],
    ids=["no-offset-is-utc", "offset", "nanoseconds"],
)
def test_timestamps_are_read_as_utc(sent: str, expected: datetime) -> None:
    assert stamped({"timestamp": sent})["originalTimestamp"] == expected


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("sentAt", "last tuesday", "sentAt: 'last tuesday' is not an ISO-8601 date-time"),
        ("timestamp", 1700000000, "timestamp: '1700000000' is not an ISO-8601 date-time"),
        ("timestamp", "0001-01-01T00:00:00Z", "is outside the years 1900-2199"),
        ("originalTimestamp", "9999-12-31T23:59:59Z", "is outside the years 1900-2199"),
    ],
)
def test_invalid_timestamp_is_a_precise_rejection(field: str, value: object, reason: str) -> None:
    [result] = validate_messages([{"type": "track", "event": "E", "userId": "u", field: value}])
    assert isinstance(result, InvalidMessage)
    [text] = result.reasons
    assert reason in text


def test_message_id_is_generated_only_when_missing() -> None:
    assert stamped({"messageId": "client-1"})["messageId"] == "client-1"
    assert uuid.UUID(stamped({})["messageId"]).version == 4


def test_ip_comes_from_the_request_unless_the_client_set_it() -> None:
    assert stamped({})["context"] == {"ip": "198.51.100.7"}
    assert stamped({"context": {"ip": None}})["context"]["ip"] == "198.51.100.7"
    assert stamped({"context": {"ip": "203.0.113.1"}})["context"]["ip"] == "203.0.113.1"


def test_batch_context_and_integrations_are_merged_under_the_message_own() -> None:
    result = stamped(
        {"context": {"locale": "de-DE"}, "integrations": {"Mixpanel": False}},
        context={"locale": "en-US", "library": {"name": "batcher"}},
        integrations={"All": True, "Mixpanel": True},
    )
    assert result["context"] == {
        "locale": "de-DE",
        "library": {"name": "batcher"},
        "ip": "198.51.100.7",
    }
    assert result["integrations"] == {"All": True, "Mixpanel": False}


def test_write_key_is_removed_and_provenance_replaces_a_client_value() -> None:
    result = stamped({"writeKey": "secret", "collector": {"sourceId": "forged"}})
    assert "writeKey" not in result
    assert result["collector"] == {"sourceId": "src", "requestId": "req"}


def test_unknown_fields_and_explicit_nulls_are_kept() -> None:
    result = stamped({"anonymousId": None, "_metadata": {"bundled": ["Segment.io"]}, "x": [1]})
    assert result["anonymousId"] is None
    assert result["_metadata"] == {"bundled": ["Segment.io"]}
    assert result["x"] == [1]


def test_non_utc_offsets_are_stored_in_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    result = stamped({"timestamp": datetime(2026, 11, 22, 21, tzinfo=tokyo).isoformat()})
    assert result["originalTimestamp"] == datetime(2026, 11, 22, 12, tzinfo=UTC)
