"""Malformed, oversized, unauthenticated or failing requests: exact status, clear text, no loss."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import struct
import threading
import time
from typing import Any

import orjson
import pytest
import requests

from collector.tools.localapi import LocalApiGateway

from .conftest import Aws, basic, refused, track

# --- body decoding ---------------------------------------------------------------------------


def test_unsupported_content_encoding_is_415(post: Any, aws: Aws) -> None:
    response = post("/v1/batch", b"x", {"Content-Encoding": "br"})
    refused(response, 415, "unsupported_content_encoding", "send gzip or no encoding")
    assert aws.keys() == []


def test_gzip_bomb_is_413_without_inflating_it(post: Any, aws: Aws) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 20_000_000 + b"]}")
    assert len(bomb) < 30_000
    response = post("/v1/batch", bomb, {"Content-Encoding": "gzip"})
    refused(response, 413, "payload_too_large", "decompressed body is larger than 512000 bytes")
    assert aws.keys() == []


def test_oversized_plain_body_is_413(post: Any, aws: Aws) -> None:
    batch = {"batch": [track(i, properties={"pad": "x" * 1000}) for i in range(600)]}
    response = post("/v1/batch", orjson.dumps(batch))
    refused(response, 413, "payload_too_large", "send smaller batches")
    assert aws.keys() == []


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(orjson.dumps({"batch": [track()]}))[:-12], "truncated"),
    ],
    ids=["garbage", "truncated"],
)
def test_broken_gzip_is_400(post: Any, aws: Aws, data: bytes, text: str) -> None:
    refused(post("/v1/batch", data, {"Content-Encoding": "gzip"}), 400, "invalid_gzip", text)
    assert aws.keys() == []


def test_empty_body_is_400(post: Any, aws: Aws) -> None:
    refused(post("/v1/track", b""), 400, "empty_body", "body is empty")
    assert aws.keys() == []


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b'[{"type": "track"}]', "must be a JSON object, not an array"),
        (b'"track"', "not a string"),
        (b"[" * 5000 + b"]" * 5000, "depth"),
        (b'{"type": "track", "event": ', "not valid JSON"),
        (b"type=track&event=Clicked", "not valid JSON"),
    ],
    ids=["array", "string", "deep", "cut-off", "form-encoded"],
)
def test_a_body_that_is_no_json_object_is_400_and_kept_as_sent(
    post: Any, aws: Aws, data: bytes, text: str
) -> None:
    """The client authenticated by header, so what it sent is kept under rejected/."""
    refused(post("/v1/track", data), 400, "invalid_json", text)
    assert aws.keys("events/") == []
    [record] = aws.stored("rejected/")
    assert base64.b64decode(record["bodyBase64"]) == data
    assert record["reasons"][0].startswith("invalid_json: ")
    assert record["collector"]["sourceId"]


def test_an_unreadable_body_without_a_header_key_is_400_and_not_kept(post: Any, aws: Aws) -> None:
    refused(post("/v1/track", b"not json", auth=False), 400, "invalid_json", "not valid JSON")
    assert aws.keys() == []


def test_an_unreadable_body_with_an_unknown_header_key_is_401(post: Any, aws: Aws) -> None:
    response = post("/v1/track", b"not json", basic("no-such-key"), auth=False)
    refused(response, 401, "unknown_write_key", "")
    assert aws.keys() == []


def test_text_plain_body_like_analytics_js_is_accepted(
    server: LocalApiGateway, aws: Aws, write_key: str
) -> None:
    message = track(
        writeKey=write_key, sentAt="2026-11-22T10:00:00.000Z", _metadata={"bundled": ["Segment.io"]}
    )
    response = requests.post(
        f"{server.url}/v1/t",
        data=orjson.dumps(message),
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    [stored] = aws.stored()
    assert stored["_metadata"] == {"bundled": ["Segment.io"]}
    assert "writeKey" not in stored


def test_gzip_sent_as_text_plain_without_a_header_is_accepted(post: Any, aws: Aws) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track(0), track(1)]}))
    response = post("/v1/batch", body, {"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    assert len(aws.stored()) == 2


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body_key", "code", "text"),
    [
        ({}, None, "missing_write_key", "send it as the Basic auth username"),
        (basic("wrong"), None, "unknown_write_key", "unknown or revoked"),
        ({}, "wrong", "unknown_write_key", "unknown or revoked"),
        ({"Authorization": "Bearer abc"}, None, "unsupported_authorization", "use Basic"),
        ({"Authorization": "Basic %%%"}, None, "invalid_authorization", "not valid Basic"),
        ("header-key", "other", "conflicting_write_keys", "differ"),
    ],
    ids=["missing", "unknown-header", "unknown-body", "bearer", "garbled", "conflict"],
)
def test_unauthenticated_requests_are_401_and_store_nothing(
    post: Any, aws: Aws, write_key: str, headers: Any, body_key: str | None, code: str, text: str
) -> None:
    if headers == "header-key":
        headers = basic(write_key)
    body = {"batch": [track()], **({"writeKey": body_key} if body_key else {})}
    refused(post("/v1/batch", orjson.dumps(body), headers, auth=False), 401, code, text)
    assert aws.keys() == []


def test_write_key_in_body_alone_is_accepted(post: Any, aws: Aws, write_key: str) -> None:
    body = {"batch": [track()], "writeKey": write_key}
    assert post("/v1/batch", orjson.dumps(body), auth=False).status_code == 200
    assert len(aws.stored()) == 1


# --- validation and partial acceptance ---------------------------------------------------------


def test_batch_with_invalid_messages_keeps_the_valid_ones(post: Any, aws: Aws) -> None:
    good = [track(0), track(1)]
    bad = [
        {"type": "track", "userId": "u", "messageId": "no-event"},
        {"type": "launch", "userId": "u", "messageId": "bad-type"},
        {"type": "identify", "traits": {"a": 1}, "messageId": "no-ids"},
        "not an object",
        {"type": "track", "event": "e", "userId": "u", "messageId": "x" * 101},
        {"type": "track", "event": "e", "userId": "u", "timestamp": "yesterday"},
        {"type": "track", "event": "e", "userId": "u", "properties": {"big": "x" * 40_000}},
    ]
    response = post("/v1/batch", orjson.dumps({"batch": [good[0], *bad, good[1]]}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    reasons = {item["index"]: item["reasons"] for item in body["rejected"]}
    assert reasons == {
        1: ["event: Field required"],
        2: ["type: must be one of identify, track, page, screen, group, alias"],
        3: ["userId or anonymousId is required"],
        4: ["a message must be a JSON object"],
        5: ["messageId: String should have at most 100 characters"],
        6: ["timestamp: 'yesterday' is not an ISO-8601 date-time"],
        7: [reasons[7][0]],
    }
    assert reasons[7][0].startswith("message is 400") and "at most 32768" in reasons[7][0]
    assert [item["messageId"] for item in body["rejected"]][:3] == [
        "no-event",
        "bad-type",
        "no-ids",
    ]
    assert [event["messageId"] for event in aws.stored()] == [m["messageId"] for m in good]
    kept = aws.stored("rejected/")
    assert [line["index"] for line in kept] == [1, 2, 3, 4, 5, 6, 7]
    assert kept[0]["message"] == bad[0]
    assert kept[3]["message"] == "not an object"


def test_message_nested_too_deep_to_store_is_rejected_alone(post: Any, aws: Aws) -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = {"d": deep}
    body = {"batch": [track(0, properties=deep), track(1)]}
    response = post("/v1/batch", _dumps_deep(body))
    assert response.status_code == 200, response.text
    [rejection] = response.json()["rejected"]
    assert rejection["index"] == 0
    assert rejection["reasons"] == ["cannot be stored as JSON: nested deeper than 254 levels"]
    assert len(aws.stored()) == 1
    [kept] = aws.stored("rejected/")
    assert kept["message"] is None and "message not kept" in kept["reasons"][-1]


def _dumps_deep(value: Any) -> bytes:
    """orjson refuses to write what is nested this deep; a client's serialiser need not."""
    return json.dumps(value).encode()


def test_single_invalid_call_is_400_and_kept_under_rejected(post: Any, aws: Aws) -> None:
    response = post("/v1/track", orjson.dumps({"userId": "u", "messageId": "m1"}))
    body = refused(response, 400, "invalid_messages", "No message in the request is valid")
    assert body["rejected"] == [
        {"index": 0, "messageId": "m1", "reasons": ["event: Field required"]}
    ]
    assert aws.keys("events/") == []
    [kept] = aws.stored("rejected/")
    assert kept["message"]["messageId"] == "m1"
    assert kept["reasons"] == ["event: Field required"]


def test_batch_of_only_invalid_messages_is_400(post: Any, aws: Aws) -> None:
    response = post("/v1/batch", orjson.dumps({"batch": [{"type": "alias", "userId": "u"}]}))
    body = refused(response, 400, "invalid_messages", "see rejected")
    assert body["rejected"][0]["reasons"] == ["previousId: Field required"]
    assert len(aws.stored("rejected/")) == 1


def test_broken_batch_envelope_rejects_each_message_but_keeps_them(post: Any, aws: Aws) -> None:
    body = {"batch": [track(0), track(1)], "sentAt": "soon", "context": ["not", "an", "object"]}
    response = refused(post("/v1/batch", orjson.dumps(body)), 400, "invalid_messages", "rejected")
    assert response["rejected"][0]["reasons"] == [
        "batch sentAt: 'soon' is not an ISO-8601 date-time",
        "batch context: must be an object",
    ]
    assert len(aws.stored("rejected/")) == 2


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({"batch": {}}, "invalid_batch", "non-empty array"),
        ({"batch": []}, "invalid_batch", "non-empty array"),
        ({"batch": [track(i) for i in range(2501)]}, "batch_too_large", "at most 2500"),
    ],
    ids=["object", "empty", "too-many"],
)
def test_malformed_batch_is_400(post: Any, aws: Aws, body: Any, code: str, text: str) -> None:
    refused(post("/v1/batch", orjson.dumps(body)), 400, code, text)
    assert aws.keys() == []


# --- routes ----------------------------------------------------------------------------------


def test_unknown_call_is_404_with_the_routes(post: Any) -> None:
    refused(post("/v1/purchase", orjson.dumps(track())), 404, "unknown_route", "/v1/batch")


def test_unrouted_path_answers_like_api_gateway(server: LocalApiGateway) -> None:
    response = requests.get(f"{server.url}/v1/track", timeout=10)
    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}


def test_a_client_hanging_up_before_its_answer_leaves_no_trace(
    server: LocalApiGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client whose timeout ran out is gone; the answer written to its socket fails there."""
    invoke = server.invoke
    answered = threading.Event()

    def slow(event: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.3)  # the client resets its connection meanwhile
        try:
            return invoke(event)
        finally:
            answered.set()

    server.invoke = slow
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sendall(b"POST /v1/m HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert answered.wait(10)
    time.sleep(0.2)  # the write to the reset socket, and whatever it prints
    assert "Traceback" not in capsys.readouterr().err
    assert requests.post(f"{server.url}/v1/m", data=b"{}", timeout=10).status_code == 200


def test_telemetry_is_accepted_and_discarded(server: LocalApiGateway, aws: Aws) -> None:
    response = requests.post(f"{server.url}/v1/m", data=b'{"series": []}', timeout=10)
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert aws.keys() == []


def test_preflight_allows_the_headers_analytics_js_sends(server: LocalApiGateway) -> None:
    response = requests.options(
        f"{server.url}/v1/t",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
        timeout=10,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


# --- storage failures ------------------------------------------------------------------------


def _break_bucket(aws: Aws) -> None:
    aws.s3.delete_bucket(Bucket=aws.bucket)


def _break_table(aws: Aws) -> None:
    aws.dynamodb.delete_table(TableName=aws.table)


@pytest.mark.parametrize("breakage", [_break_bucket, _break_table], ids=["s3", "dynamodb"])
def test_storage_failure_is_503_with_retry_after(post: Any, aws: Aws, breakage: Any) -> None:
    breakage(aws)
    response = post("/v1/batch", orjson.dumps({"batch": [track()]}))
    body = refused(response, 503, "storage_unavailable", "nothing was lost")
    assert response.headers["Retry-After"] == "5"
    assert body["message"].endswith("Retry in 5 s.")
