"""Fuzzing the handler: arbitrary and mutated bodies never get a 5xx or an exception, and a valid
message beside arbitrary neighbours in a batch is stored exactly once."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collector import api
from collector.tools.localapi import LambdaContext, proxy_event

from .conftest import Aws, basic

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ROUTES = ["/v1/batch", "/v1/track", "/v1/identify", "/v1/alias", "/v1/t", "/v1/b", "/v1/m"]

# Strings with what clients really send wrong: lone surrogates, controls, look-alike nulls.
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["\ud83d", "\ude00x", "null", "\u200bnull", "\uff4e\uff55\uff4c\uff4c", "\x00"]
    ),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["type", "userId", "event", "messageId", "x"]) | texts,
                      children, max_size=4),
    max_leaves=12,
)  # fmt: skip
neighbours = st.lists(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"type": st.sampled_from(["track", "identify", "alias", "page", "bogus"])},
            optional={
                "userId": json_values,
                "anonymousId": json_values,
                "previousId": json_values,
                "event": json_values,
                "timestamp": json_values,
                "properties": json_values,
                "context": json_values,
            },
        ),
    ),
    max_size=5,
)


def invoke(path: str, body: bytes, key: str | None, headers: dict[str, str] | None = None) -> Any:
    all_headers = [("Content-Type", "text/plain"), *(headers or {}).items()]
    if key is not None:
        all_headers.extend(basic(key).items())
    event = proxy_event("POST", path, "", all_headers, body, "127.0.0.1")
    assert event is not None
    return api.lambda_handler(event, LambdaContext(str(uuid.uuid4())))


def assert_no_server_error(response: dict[str, Any]) -> None:
    assert response["statusCode"] < 500, response["body"]
    assert "Traceback" not in response["body"]


@FUZZ
@given(path=st.sampled_from(ROUTES), body=st.binary(max_size=300), gzip=st.booleans())
@example(path="/v1/batch", body=b"\xef\xbb\xbf", gzip=False)
@example(path="/v1/batch", body=b'{"batch": [1e999999]}', gzip=False)
@example(path="/v1/track", body=b'{"writeKey": "\\ud800"}', gzip=False)
def test_arbitrary_bytes_never_get_a_server_error(
    aws: Aws, write_key: str, path: str, body: bytes, gzip: bool
) -> None:
    headers = {"Content-Encoding": "gzip"} if gzip else {}
    assert_no_server_error(invoke(path, body, write_key, headers))


@FUZZ
@given(
    others=neighbours,
    position=st.integers(min_value=0, max_value=5),
    extra=st.dictionaries(st.sampled_from(["x", "_metadata", "\ud800"]), json_values, max_size=2),
    ensure_ascii=st.booleans(),
)
@example(others=[{"type": "track", "event": "\ud83d"}], position=0, extra={}, ensure_ascii=True)
@example(others=[float("nan"), 10**30], position=1, extra={"x": float("inf")}, ensure_ascii=False)
def test_a_valid_message_beside_anything_is_stored_exactly_once(
    aws: Aws,
    write_key: str,
    others: list[Any],
    position: int,
    extra: dict[str, Any],
    ensure_ascii: bool,
) -> None:
    valid = {"type": "track", "event": "Kept", "userId": "u1", "messageId": str(uuid.uuid4())}
    batch = [*others]
    batch.insert(min(position, len(batch)), valid)
    text = json.dumps({"batch": batch, **extra}, ensure_ascii=ensure_ascii, allow_nan=True)
    body = text.encode("utf-8", "surrogatepass")
    before = set(aws.keys("events/"))

    response = invoke("/v1/batch", body, write_key)

    assert response["statusCode"] == 200, response["body"]
    written = [key for key in aws.keys("events/") if key not in before]
    stored = Counter(line["messageId"] for key in written for line in aws.read_lines(key))
    assert stored[valid["messageId"]] == 1


@FUZZ
@given(data=st.data())
def test_mutated_client_bodies_never_get_a_server_error(aws: Aws, write_key: str, data: Any):
    """Bytes flipped, cut and inserted in a body the way a real client writes it."""
    body = bytearray(
        orjson.dumps(
            {
                "batch": [
                    {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"n": 1}},
                    {"type": "alias", "previousId": "a2", "userId": "u1"},
                    {"type": "track", "event": "e", "userId": "u1", "messageId": "m1"},
                ],
                "sentAt": "2026-12-01T10:00:00Z",
            }
        )
    )
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            body[at] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "cut":
            del body[at : at + data.draw(st.integers(min_value=1, max_value=8))]
        else:
            body[at:at] = data.draw(st.sampled_from([b"\\ud800", b"NaN", b"\xff", b"1e999", b"{"]))
        if not body:
            body = bytearray(b"{")
    assert_no_server_error(invoke("/v1/batch", bytes(body), write_key))


pytestmark = pytest.mark.usefixtures("aws")
