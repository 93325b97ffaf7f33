"""The browser door (HTTP API, payload v2) end to end on moto: what it stores from text bodies,
and that a gzip body it cannot receive intact is refused with 415 `use_rest_endpoint`, never
stored corrupted. Bodies go through the local HTTP API's text-or-base64 rule (tools/http_api.py).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
import requests

from collector import browser_api
from collector.ingest import Collector
from collector.tools.http_api import http_api_event
from collector.tools.localapi import LambdaContext, LocalApiGateway

from .conftest import Aws, basic, refused, track

# An emoji (outside the BMP: a surrogate pair in JSON's \u escapes), accents and CJK.
PROPERTIES = {"note": "caf\u00e9 \U0001f600 \u65e5\u672c", "plan": "pr\u00f6"}


def send(
    door: LocalApiGateway,
    write_key: str,
    data: bytes,
    content_type: str = "text/plain",
    path: str = "/v1/t",
    **headers: str,
) -> requests.Response:
    all_headers = {"Content-Type": content_type, **basic(write_key), **headers}
    return requests.post(f"{door.url}{path}", data=data, headers=all_headers, timeout=10)


def utf8(message: dict[str, Any]) -> bytes:
    # As JSON.stringify writes it: non-ASCII as UTF-8, not as escapes.
    return json.dumps(message, ensure_ascii=False).encode()


@pytest.mark.parametrize("content_type", ["text/plain", "application/json; charset=utf-8"])
def test_a_text_body_is_stored_intact(
    browser_server: LocalApiGateway, aws: Aws, write_key: str, content_type: str
) -> None:
    message = track(1, properties=PROPERTIES)
    response = send(browser_server, write_key, utf8(message), content_type)
    assert response.status_code == 200, response.text
    [stored] = aws.stored()
    assert stored["properties"] == PROPERTIES
    assert (stored["messageId"], stored["type"]) == (message["messageId"], "track")
    assert stored["context"]["ip"] == "127.0.0.1"


def test_a_batch_is_stored_intact(
    browser_server: LocalApiGateway, aws: Aws, write_key: str
) -> None:
    batch = [track(n, properties=PROPERTIES) for n in range(3)]
    response = send(browser_server, write_key, utf8({"batch": batch}), path="/v1/b")
    assert response.status_code == 200, response.text
    stored = {event["messageId"]: event for event in aws.stored()}
    assert sorted(stored) == sorted(message["messageId"] for message in batch)
    assert all(event["properties"] == PROPERTIES for event in stored.values())


@pytest.mark.parametrize(
    ("content_type", "headers"),
    [
        ("text/plain", {"Content-Encoding": "gzip"}),
        ("application/json", {"Content-Encoding": "gzip"}),
        # posthog-js and some SDKs: gzip as text/plain, no header; only the bytes show it.
        ("text/plain", {}),
        ("text/plain;charset=UTF-8", {}),
    ],
)
def test_gzip_sent_as_text_is_refused_naming_the_rest_endpoint(
    browser_server: LocalApiGateway,
    aws: Aws,
    write_key: str,
    content_type: str,
    headers: dict[str, str],
) -> None:
    body = gzip.compress(utf8({"batch": [track(1)]}))
    response = send(browser_server, write_key, body, content_type, "/v1/batch", **headers)
    refused(response, 415, "use_rest_endpoint", "REST endpoint")
    assert aws.keys() == []


def test_the_refusal_names_the_rest_url_when_configured(
    browser_server: LocalApiGateway,
    write_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rest = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
    monkeypatch.setenv("REST_API_URL", rest)
    body = gzip.compress(utf8(track(1)))
    response = send(browser_server, write_key, body, **{"Content-Encoding": "gzip"})
    refused(response, 415, "use_rest_endpoint", rest)


@pytest.mark.parametrize("encoding", [{"Content-Encoding": "gzip"}, {}])
def test_gzip_with_a_binary_type_arrives_as_base64_and_is_stored(
    browser_server: LocalApiGateway, aws: Aws, write_key: str, encoding: dict[str, str]
) -> None:
    message = track(1, properties=PROPERTIES)
    body = gzip.compress(utf8(message))
    response = send(browser_server, write_key, body, "application/octet-stream", **encoding)
    assert response.status_code == 200, response.text
    assert [event["properties"] for event in aws.stored()] == [PROPERTIES]


def test_telemetry_is_accepted_without_a_write_key(
    browser_server: LocalApiGateway, aws: Aws
) -> None:
    response = requests.post(
        f"{browser_server.url}/v1/m", data='{"series": []}', headers={}, timeout=10
    )
    assert response.status_code == 200 and response.json() == {"success": True}
    assert aws.keys() == []


def test_refusals_are_the_rest_doors(browser_server: LocalApiGateway, write_key: str) -> None:
    refused(send(browser_server, "wrong-key", utf8(track(1))), 401, "unknown_write_key", "")
    refused(send(browser_server, write_key, b"{"), 400, "invalid_json", "not valid JSON")
    refused(send(browser_server, write_key, b"{}", path="/v1/x"), 404, "unknown_route", "/v1/x")


def test_only_the_browser_routes_are_routed(browser_server: LocalApiGateway) -> None:
    # The identity read is IAM-only on the REST door; an HTTP API answers unrouted paths 404.
    for method, path in (("GET", "/v1/identities/user-1"), ("GET", "/v1/t"), ("POST", "/v2/t")):
        response = requests.request(method, f"{browser_server.url}{path}", timeout=10)
        assert (response.status_code, response.json()) == (404, {"message": "Not Found"})


# --- the function invoked directly: the REST door's handlers read this door's event --------


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return browser_api.lambda_handler(event, LambdaContext(aws_request_id="direct"))


def test_an_unknown_route_invoked_directly_is_named_from_the_v2_event(aws: Aws) -> None:
    event = http_api_event("POST", "/v1/t", "", [("Content-Type", "text/plain")], b"{}", "::1")
    assert event is not None
    event["requestContext"]["http"]["method"] = "GET"
    answer = invoke(event)
    assert answer["statusCode"] == 404
    assert json.loads(answer["body"])["code"] == "unknown_route"
    assert "GET /v1/t" in json.loads(answer["body"])["message"]


def test_a_bug_answers_500_with_the_v2_request_id(
    aws: Aws, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Collector, "ingest", broken)
    headers = [("Content-Type", "text/plain"), *basic(write_key).items()]
    event = http_api_event("POST", "/v1/t", "", headers, utf8(track(1)), "::1")
    assert event is not None
    answer = invoke(event)
    body = json.loads(answer["body"])
    assert (answer["statusCode"], body["code"]) == (500, "internal_error")
    assert event["requestContext"]["requestId"] in body["message"]
    assert "a bug" not in answer["body"]
