"""The local HTTP API's payload v2 events (tools/http_api.py): which bodies arrive as text, the
fields Powertools' APIGatewayHttpResolver and the browser door read, and the routes it knows."""

from __future__ import annotations

import base64
import gzip

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from collector.tools.http_api import arrives_as_text, http_api_event

HEADERS = [
    ("Host", "127.0.0.1:3001"),
    ("Content-Type", "text/plain"),
    ("Authorization", "Basic a2V5Og=="),
    ("X-Retry-Count", "1"),
    ("Accept", "text/html"),
    ("Accept", "application/json"),
    ("Cookie", "session=s-1; theme=dark"),
]


@pytest.mark.parametrize(
    ("content_type", "as_text"),
    [
        ("text/plain", True),
        ("text/plain;charset=UTF-8", True),
        ("Text/HTML", True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/xml", True),
        ("application/javascript", True),
        ("application/octet-stream", False),
        ("application/x-www-form-urlencoded", False),
        ("application/gzip", False),
        ("", False),
        (None, False),
    ],
)
def test_text_types_arrive_as_text_and_all_others_as_base64(
    content_type: str | None, as_text: bool
) -> None:
    assert arrives_as_text(content_type) is as_text


def test_the_event_has_the_fields_of_payload_v2() -> None:
    event = http_api_event("POST", "/v1/t", "a=1&a=2&b=", HEADERS, b'{"x": 1}', "203.0.113.9")
    assert event is not None
    assert (event["version"], event["routeKey"], event["rawPath"]) == (
        "2.0",
        "POST /v1/{call}",
        "/v1/t",
    )
    assert event["pathParameters"] == {"call": "t"}
    assert event["rawQueryString"] == "a=1&a=2&b="
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    # Lower-case names, repeated headers joined with commas, cookies apart from the headers.
    assert event["headers"]["accept"] == "text/html,application/json"
    assert event["headers"]["x-retry-count"] == "1"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["session=s-1", "theme=dark"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"x": 1}', False)

    parsed = APIGatewayProxyEventV2(event)
    assert (parsed.http_method, parsed.path) == ("POST", "/v1/t")
    assert parsed.request_context.http.source_ip == "203.0.113.9"
    assert parsed.request_context.stage == "$default"
    assert parsed.request_context.request_id
    assert parsed.headers["authorization"] == "Basic a2V5Og=="


def test_a_text_body_is_decoded_as_utf8_and_gzip_is_mangled() -> None:
    text = "caf\u00e9 \U0001f600".encode()
    event = http_api_event("POST", "/v1/t", "", HEADERS, text, "127.0.0.1")
    assert event is not None and event["body"] == "caf\u00e9 \U0001f600"
    compressed = gzip.compress(b'{"x": 1}')
    mangled = http_api_event("POST", "/v1/t", "", HEADERS, compressed, "127.0.0.1")
    assert mangled is not None and mangled["isBase64Encoded"] is False
    # 8b is no UTF-8 start byte: the gzip magic arrives as U+001F U+FFFD, the bytes are gone.
    assert mangled["body"].startswith("\x1f\ufffd")


def test_any_other_body_arrives_base64_encoded() -> None:
    compressed = gzip.compress(b'{"x": 1}')
    binary = [(name, value) for name, value in HEADERS if name != "Content-Type"]
    for headers in (binary, [*binary, ("Content-Type", "application/octet-stream")]):
        event = http_api_event("POST", "/v1/b", "", headers, compressed, "127.0.0.1")
        assert event is not None and event["isBase64Encoded"] is True
        assert base64.b64decode(event["body"]) == compressed


def test_an_empty_body_is_absent() -> None:
    event = http_api_event("OPTIONS", "/v1/t", "", HEADERS, b"", "127.0.0.1")
    assert event is not None
    assert "body" not in event and event["isBase64Encoded"] is False
    assert event["routeKey"] == "OPTIONS /v1/{call}"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/identities/user-1"), ("GET", "/v1/t"), ("POST", "/v1/t/x"), ("POST", "/t")],
)
def test_only_the_browser_routes_make_an_event(method: str, path: str) -> None:
    assert http_api_event(method, path, "", HEADERS, b"", "127.0.0.1") is None
