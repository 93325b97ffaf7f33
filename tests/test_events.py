"""The sample events in events/ (for `sam local invoke -e`) through the real handler, under moto."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from collector import api
from collector.sources import SourceRegistry
from collector.tools.localapi import LambdaContext
from collector.tools.sample_events import WRITE_KEY, write_events

from .conftest import Aws

EVENTS = Path(__file__).resolve().parents[1] / "events"
SERVER_TYPES = ["identify", "track", "page", "screen", "group", "alias"]
# File stem -> (status, types of the messages stored under events/, in the order sent).
EXPECTED: dict[str, tuple[int, list[str]]] = {
    "identify": (200, ["identify"]),
    "track": (200, ["track"]),
    "page": (200, ["page"]),
    "screen": (200, ["screen"]),
    "group": (200, ["group"]),
    "alias": (200, ["alias"]),
    "batch": (200, SERVER_TYPES),
    "import": (200, SERVER_TYPES),
    "batch-gzip": (200, SERVER_TYPES),
    "i": (200, ["identify"]),
    "t": (200, ["track"]),
    "p": (200, ["page"]),
    "s": (200, ["screen"]),
    "g": (200, ["group"]),
    "a": (200, ["alias"]),
    "b": (200, ["page", "track", "identify"]),
    "m": (200, []),
    "options-preflight": (204, []),
}
INGEST = sorted(name for name, (_, types) in EXPECTED.items() if types)


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))
    return event


def sent_messages(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages in an event's body, decoded as the client encoded them."""
    raw = base64.b64decode(event["body"])
    if (event["headers"] or {}).get("Content-Encoding") == "gzip":
        raw = gzip.decompress(raw)
    body: dict[str, Any] = json.loads(raw)
    messages: list[dict[str, Any]] = body.get("batch", [body])
    return messages


def response_headers(response: dict[str, Any]) -> dict[str, str]:
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ",".join(values)
    return headers


@pytest.fixture
def invoke(aws: Aws) -> Any:
    SourceRegistry(aws.dynamodb, aws.table).add("dev", WRITE_KEY)

    def call(name: str) -> dict[str, Any]:
        response: dict[str, Any] = api.lambda_handler(
            load(name), LambdaContext(aws_request_id=f"sample-{name}")
        )
        return response

    return call


def test_every_sample_has_an_expectation() -> None:
    assert sorted(path.stem for path in EVENTS.glob("*.json")) == sorted(EXPECTED)


def test_samples_are_base64_rest_proxy_events() -> None:
    for name in EXPECTED:
        event = load(name)
        assert event["resource"] == "/v1/{call}", name
        assert event["isBase64Encoded"] is (event["body"] is not None), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_answers_expected_status(invoke: Any, name: str) -> None:
    assert invoke(name)["statusCode"] == EXPECTED[name][0]


@pytest.mark.parametrize("name", INGEST)
def test_sample_stores_every_message_with_its_type(invoke: Any, aws: Aws, name: str) -> None:
    response = invoke(name)
    assert json.loads(response["body"]) == {"success": True}
    stored = aws.stored()
    sent_ids = [message["messageId"] for message in sent_messages(load(name))]
    assert [event["messageId"] for event in stored] == sent_ids
    assert [event["type"] for event in stored] == EXPECTED[name][1]
    assert aws.keys("rejected/") == []


@pytest.mark.parametrize("name", INGEST)
def test_sample_stores_no_write_key(invoke: Any, aws: Aws, name: str) -> None:
    invoke(name)
    assert all("writeKey" not in event for event in aws.stored())


def test_telemetry_sample_stores_nothing(invoke: Any, aws: Aws) -> None:
    response = invoke("m")
    assert json.loads(response["body"]) == {"success": True}
    assert aws.keys() == []


def test_preflight_sample_allows_analytics_js_headers(invoke: Any, aws: Aws) -> None:
    headers = response_headers(invoke("options-preflight"))
    allowed = {name.strip().lower() for name in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert headers["access-control-allow-origin"] == "*"
    assert "POST" in headers["access-control-allow-methods"].split(",")
    assert aws.keys() == []


def test_regenerated_samples_are_identical(tmp_path: Path) -> None:
    written = write_events(tmp_path)
    assert sorted(path.name for path in written) == sorted(p.name for p in EVENTS.glob("*.json"))
    for path in written:
        assert path.read_bytes() == (EVENTS / path.name).read_bytes(), path.name
