"""Validation against the Segment spec: required fields per type, field types, limits, ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from collector.validation import InvalidMessage, validate_messages


def reasons(item: Any) -> list[str]:
    [result] = validate_messages([item])
    assert isinstance(result, InvalidMessage), result
    return result.reasons


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"type": "track", "userId": "u"}, ["event: Field required"]),
        (
            {"type": "track", "event": "", "userId": "u"},
            ["event: String should have at least 1 character"],
        ),
        ({"type": "group", "userId": "u"}, ["groupId: Field required"]),
        ({"type": "alias", "userId": "u"}, ["previousId: Field required"]),
        (
            {"type": "alias", "previousId": "p"},
            ["userId: required for alias (the id previousId becomes)"],
        ),
        ({"type": "identify", "traits": {}}, ["userId or anonymousId is required"]),
        (
            {"type": "identify", "userId": None, "anonymousId": None},
            ["userId or anonymousId is required"],
        ),
        ({"type": "page", "userId": "u", "properties": []}, ["properties: must be a JSON object"]),
        ({"type": "identify", "userId": "u", "context": "web"}, ["context: must be a JSON object"]),
        ({"type": "identify", "userId": True}, ["userId: Input should be a valid string"]),
        (
            {"type": "identify", "userId": "u", "messageId": "m" * 101},
            ["messageId: String should have at most 100 characters"],
        ),
        ({"userId": "u"}, ["type: must be one of identify, track, page, screen, group, alias"]),
        (
            {"type": "purchase", "userId": "u"},
            ["type: must be one of identify, track, page, screen, group, alias"],
        ),
        ([1, 2], ["a message must be a JSON object"]),
    ],
)
def test_invalid_messages_get_precise_reasons(item: Any, expected: list[str]) -> None:
    assert reasons(item) == expected


def test_numeric_ids_are_stored_as_strings() -> None:
    [result] = validate_messages([{"type": "group", "userId": 42, "groupId": 7}])
    assert isinstance(result, dict)
    assert (result["userId"], result["groupId"]) == ("42", "7")


def test_one_invalid_message_does_not_invalidate_its_neighbours() -> None:
    items = [
        {"type": "track", "event": "A", "userId": "u"},
        {"type": "track", "userId": "u"},
        {"type": "screen", "name": "Home", "anonymousId": "a"},
    ]
    results = validate_messages(items)
    assert [type(result).__name__ for result in results] == ["dict", "InvalidMessage", "dict"]


def test_unknown_fields_are_preserved_as_sent() -> None:
    item = {"type": "identify", "userId": "u", "traits": {"plan": "pro"}, "custom": {"deep": [1]}}
    [result] = validate_messages([item])
    assert result == item


@pytest.mark.parametrize(
    "neighbour",
    [
        {"type": "track", "event": "B", "userId": "u", "timestamp": "2026-11-22T10:00:00Z"},
        {"type": "track", "userId": "u"},  # invalid: the batch is checked one by one
    ],
    ids=["bulk", "one-by-one"],
)
@pytest.mark.parametrize(
    "sent",
    ["2026-11-22T10:00:00.250Z", "2026-11-22T10:00:00.250+00:00", "2026-11-22T11:00:00.250+01:00"],
)
def test_timestamps_are_held_naive_in_utc_whichever_way_the_batch_is_checked(
    neighbour: dict[str, Any], sent: str
) -> None:
    """orjson writes naive datetimes several times faster; both paths must agree on them."""
    item = {"type": "track", "event": "A", "userId": "u", "timestamp": sent, "sentAt": sent}
    result, _ = validate_messages([item, neighbour])
    assert isinstance(result, dict)
    expected = datetime(2026, 11, 22, 10, 0, 0, 250000)
    assert (result["timestamp"], result["sentAt"]) == (expected, expected)
    assert result["timestamp"].tzinfo is None
