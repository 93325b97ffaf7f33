"""Logs and metrics: JSON logs correlated by request id, EMF metrics, and never a write key.

An accepted request writes one EMF document and nothing else at the default level (issue #10:
at most 300 bytes for a browser's); refusals, rejections and failures are logged with their codes.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from collector import api
from collector.tools.localapi import LambdaContext, proxy_event

from .conftest import Aws
from .test_benchmark import browser_track

# Function log per accepted browser request at the default level, as tests/measure_cost.py
# counts it (the log lines and EMF documents written to stdout).
MAX_BROWSER_LOG_BYTES = 300


def invoke(
    body: dict[str, Any] | bytes, key: str | None, path: str = "/v1/batch"
) -> tuple[dict[str, Any], str]:
    """One request through the Lambda handler; `key` by header (None: the body carries it)."""
    headers = [] if key is None else [("Authorization", f"Basic {_basic(key)}")]
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    event = proxy_event("POST", path, "", headers, raw, "10.0.0.1")
    assert event is not None
    response = api.lambda_handler(event, LambdaContext(aws_request_id="lambda-req"))
    return response, event["requestContext"]["requestId"]


def _basic(key: str) -> str:
    return base64.b64encode(f"{key}:".encode()).decode()


def json_lines(output: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


def everything_written(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Log records as Powertools formats them (JSON lines) plus what was printed (EMF metrics)."""
    formatter = api.logger.registered_formatter
    logs = "\n".join(formatter.format(record) for record in caplog.records)
    printed = capsys.readouterr()
    return "\n".join((logs, printed.out, printed.err))


def metric_documents(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "_aws" in line]


def test_logs_are_correlated_and_metrics_are_emitted(
    aws: Aws, write_key: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = {"batch": [{"type": "track", "event": "E", "userId": "u"}, {"type": "track"}]}
    response, request_id = invoke(batch, write_key)
    assert response["statusCode"] == 200
    lines = json_lines(everything_written(caplog, capsys))
    # A rejection is logged at INFO with its reasons.
    [stored] = [line for line in lines if line.get("message") == "request stored"]
    assert (stored["level"], stored["correlation_id"]) == ("INFO", request_id)
    assert (stored["accepted"], len(stored["rejected"])) == (1, 1)
    assert stored["rejected"][0]["reasons"] == ["event: Field required"]
    # One metric document per request, every metric under the service dimension alone.
    [metrics] = metric_documents(lines)
    assert metrics["AcceptedMessages"] == [1.0]
    assert metrics["RejectedMessages"] == [1.0]
    [directive] = metrics["_aws"]["CloudWatchMetrics"]
    assert (directive["Namespace"], directive["Dimensions"]) == ("EventCollector", [["service"]])
    assert metrics["service"] == "collector"


def test_an_accepted_browser_request_writes_one_small_metric_document(
    aws: Aws, write_key: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {**browser_track(1), "writeKey": write_key}
    response, _ = invoke(orjson.dumps(body), None, "/v1/t")
    assert response["statusCode"] == 200
    written = everything_written(caplog, capsys)
    assert len(written.strip().encode()) + 1 <= MAX_BROWSER_LOG_BYTES, written
    [metrics] = json_lines(written)
    assert (metrics["AcceptedMessages"], metrics["RequestBytes"]) == (
        [1.0],
        [float(len(orjson.dumps(body)))],
    )
    # Nothing rejected, so no RejectedMessages datapoint: the rate alarm sums them.
    assert "RejectedMessages" not in metrics


def test_refusals_are_logged_with_their_code_and_counted(
    aws: Aws, write_key: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    response, request_id = invoke(b'{"batch": [', write_key)
    assert response["statusCode"] == 400
    lines = json_lines(everything_written(caplog, capsys))
    [refused] = [line for line in lines if line.get("message") == "request refused"]
    assert (refused["status"], refused["code"]) == (400, "invalid_json")
    assert refused["correlation_id"] == request_id
    [metrics] = metric_documents(lines)
    assert metrics["RefusedRequests"] == [1.0]


def test_storage_failures_are_logged_with_their_code_and_counted(
    aws: Aws, write_key: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.s3.delete_bucket(Bucket=aws.bucket)  # every PUT now fails
    response, _ = invoke({"batch": [{"type": "track", "event": "E", "userId": "u"}]}, write_key)
    assert response["statusCode"] == 503
    lines = json_lines(everything_written(caplog, capsys))
    [failed] = [line for line in lines if line.get("message") == "storage unavailable"]
    assert (failed["level"], failed["code"]) == ("WARNING", "storage_unavailable")
    [metrics] = metric_documents(lines)
    assert metrics["StorageFailures"] == [1.0]


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
