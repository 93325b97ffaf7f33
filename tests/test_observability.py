"""Logs and metrics: JSON logs correlated by request id, EMF metrics, and never a write key."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from collector import api
from collector.tools.localapi import LambdaContext, proxy_event

from .conftest import Aws


def invoke(body: dict[str, Any], key: str, path: str = "/v1/batch") -> tuple[dict[str, Any], str]:
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    event = proxy_event("POST", path, "", [("Authorization", auth)], orjson.dumps(body), "10.0.0.1")
    assert event is not None
    response = api.lambda_handler(event, LambdaContext(aws_request_id="lambda-req"))
    return response, event["requestContext"]["requestId"]


def json_lines(output: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


def everything_written(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Log records as Powertools formats them (JSON lines) plus what was printed (EMF metrics)."""
    formatter = api.logger.registered_formatter
    logs = "\n".join(formatter.format(record) for record in caplog.records)
    printed = capsys.readouterr()
    return "\n".join((logs, printed.out, printed.err))


def test_logs_are_correlated_and_metrics_are_emitted(
    aws: Aws, write_key: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = {"batch": [{"type": "track", "event": "E", "userId": "u"}, {"type": "track"}]}
    response, request_id = invoke(batch, write_key)
    assert response["statusCode"] == 200
    lines = json_lines(everything_written(caplog, capsys))
    [stored] = [line for line in lines if line.get("message") == "request stored"]
    assert stored["correlation_id"] == request_id
    assert (stored["accepted"], len(stored["rejected"])) == (1, 1)
    totals = [line for line in lines if "RejectedMessages" in line]
    assert totals[0]["AcceptedMessages"] == [1.0]
    assert totals[0]["RejectedMessages"] == [1.0]
    assert totals[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "EventCollector"
    [per_type] = [line for line in lines if line.get("type") == "track" and "_aws" in line]
    assert per_type["AcceptedMessages"] == [1.0]


@pytest.mark.parametrize(
    "body",
    [
        {"batch": [{"type": "track", "event": "E", "userId": "u"}]},
        {"batch": [{"type": "track", "userId": "u"}]},
        {"type": "identify", "userId": "u", "writeKey": "{key}"},
    ],
    ids=["stored", "rejected", "single-call-with-body-key"],
)
def test_write_keys_never_reach_logs_responses_or_s3(
    aws: Aws,
    write_key: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    body: dict[str, Any],
) -> None:
    body = orjson.loads(orjson.dumps(body).replace(b"{key}", write_key.encode()))
    path = "/v1/identify" if "type" in body else "/v1/batch"
    response, _ = invoke(body, write_key, path)
    assert write_key not in everything_written(caplog, capsys)
    assert write_key not in response["body"]
    stored = b"".join(
        orjson.dumps(line) for prefix in ("events/", "rejected/") for line in aws.stored(prefix)
    )
    assert stored and write_key.encode() not in stored


def test_an_unknown_key_is_not_logged_either(
    aws: Aws, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    response, _ = invoke({"batch": [{"type": "track", "event": "E", "userId": "u"}]}, "guess-123")
    written = everything_written(caplog, capsys)
    assert response["statusCode"] == 401
    assert "guess-123" not in written
    assert any(line.get("code") == "unknown_write_key" for line in json_lines(written))
