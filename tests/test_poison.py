"""One bad value costs only its own message: values JSON cannot carry, a BOM, ids DynamoDB
cannot key. The neighbours are stored and the bad message is kept, escaped, under rejected/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector import api
from collector.tools.localapi import LambdaContext

from .conftest import Aws, refused, track

EVENTS = Path(__file__).resolve().parents[1] / "events"


def batch_around(poison: bytes) -> tuple[bytes, list[str]]:
    """A raw batch body: a valid track, the poisoned message, another valid track."""
    first, last = track(0), track(2)
    body = b'{"batch": [%s, %s, %s]}' % (orjson.dumps(first), poison, orjson.dumps(last))
    return body, [first["messageId"], last["messageId"]]


def poisoned(properties: bytes = b"{}", event: bytes = b'"Clicked"') -> bytes:
    return (
        b'{"type": "track", "event": %s, "userId": "u1", "messageId": "poisoned", '
        b'"properties": %s}' % (event, properties)
    )


POISONS = {
    # JSON.stringify of a string cut inside an emoji.
    "lone-surrogate": (poisoned(b'{"title": "caf\\ud83d"}'), "properties.title", "caf\\ud83d"),
    "lone-low-surrogate": (poisoned(b'{"t": "\\ude00x"}'), "properties.t", "\\ude00x"),
    "beyond-double": (poisoned(b'{"v": 1e400}'), "properties.v", "1e400"),
    "negative-beyond-double": (poisoned(b'{"v": -1e400}'), "properties.v", "-1e400"),
    "5000-digit-integer": (poisoned(b'{"v": %s}' % (b"7" * 5000)), "properties.v", "7" * 5000),
    "nan": (poisoned(b'{"v": NaN}'), "properties.v", "NaN"),
    "infinity": (poisoned(b'{"v": [1, Infinity]}'), "properties.v.1", "Infinity"),
    "invalid-utf8": (poisoned(event=b'"Clicked \xff"'), "event", "Clicked \\xff"),
}


@pytest.mark.parametrize(("poison", "path", "kept"), POISONS.values(), ids=POISONS)
def test_a_poisoned_message_is_rejected_alone(
    post: Any, aws: Aws, poison: bytes, path: str, kept: str
) -> None:
    body, neighbours = batch_around(poison)
    response = post("/v1/batch", body)

    assert response.status_code == 200, response.text
    [rejection] = response.json()["rejected"]
    assert rejection["index"] == 1
    assert rejection["messageId"] == "poisoned"
    [reason] = rejection["reasons"]
    assert reason.startswith(f"{path}: ")
    assert sorted(event["messageId"] for event in aws.stored()) == sorted(neighbours)
    [record] = aws.stored("rejected/")
    value: Any = record["message"]
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    assert value == kept
    assert record["reasons"] == [reason]


def test_a_poisoned_single_call_is_400_and_kept(post: Any, aws: Aws) -> None:
    response = post("/v1/track", poisoned(b'{"v": NaN}'))
    body = refused(response, 400, "invalid_messages", "No message in the request is valid")
    assert body["rejected"][0]["reasons"] == ["properties.v: NaN is not a JSON number"]
    [record] = aws.stored("rejected/")
    assert record["message"]["properties"] == {"v": "NaN"}


def test_poison_in_the_batch_envelope_rejects_every_message_but_keeps_them(
    post: Any, aws: Aws
) -> None:
    body = b'{"batch": [%s], "context": {"locale": "\\ud800"}}' % orjson.dumps(track(0))
    response = refused(post("/v1/batch", body), 400, "invalid_messages", "see rejected")
    assert response["rejected"][0]["reasons"] == [
        "batch context.locale: not valid Unicode (a lone surrogate or a byte that is not UTF-8)"
    ]
    assert len(aws.stored("rejected/")) == 1


def test_a_leading_byte_order_mark_is_skipped(post: Any, aws: Aws) -> None:
    messages = [track(0), track(1)]
    response = post("/v1/batch", b"\xef\xbb\xbf" + orjson.dumps({"batch": messages}))
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert len(aws.stored()) == 2


def test_numbers_orjson_reads_stay_numbers(post: Any, aws: Aws) -> None:
    """The lenient parser reads what orjson would have read the same way."""
    body, _ = batch_around(poisoned(b'{"v": NaN, "big": 123456789012345678901234, "n": -5}'))
    post("/v1/batch", body.replace(b"}, {", b', "properties": {"ok": 1.5}}, {', 1))
    [record] = aws.stored("rejected/")
    assert record["message"]["properties"] == {"v": "NaN", "big": 1.2345678901234568e23, "n": -5}
    first = next(event for event in aws.stored() if event["userId"] == "u0")
    assert first["properties"] == {"ok": 1.5}


def test_a_user_id_dynamodb_cannot_key_is_refused_for_identity_and_stored(
    post: Any, aws: Aws
) -> None:
    """342 CJK characters: under 400 characters, but 1,026 bytes of UTF-8."""
    user_id = "用" * 342
    identify = {"type": "identify", "userId": user_id, "anonymousId": "a1", "messageId": "big"}
    body = {"batch": [track(0), identify, track(2)]}
    response = post("/v1/batch", orjson.dumps(body))

    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    stored = {event["messageId"]: event for event in aws.stored()}
    assert len(stored) == 3
    outcome = stored["big"]["collector"]["identity"]
    assert outcome["outcome"] == "refused"
    assert outcome["reason"] == "illegal_user_id"
    assert "1026 bytes of UTF-8" in outcome["detail"]


def test_a_text_body_with_a_lone_surrogate_is_a_rejection_not_a_500(aws: Aws, write_key: str):
    """Bodies not marked base64 arrive as text, which can hold a lone surrogate."""
    event: dict[str, Any] = json.loads((EVENTS / "t.json").read_text(encoding="utf-8"))
    message = {**track(0), "writeKey": write_key}
    text = orjson.dumps(message).decode().replace('"Clicked"', '"Clicked \ud83d"')
    event.update(body=text, isBase64Encoded=False)
    event["headers"].pop("Authorization", None)

    response = api.lambda_handler(event, LambdaContext("poison-test"))

    assert response["statusCode"] == 400, response["body"]
    [rejection] = json.loads(response["body"])["rejected"]
    assert rejection["reasons"][0].startswith("event: not valid Unicode")
    [record] = aws.stored("rejected/")
    assert record["message"]["event"] == "Clicked \\ud83d"
    assert "writeKey" not in record["message"]
