"""The Firehose sink: records within Firehose's limits, each message sent once however it is
re-batched, failed records retried alone, persistent failures answered 503."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from botocore.exceptions import ReadTimeoutError

from collector import api
from collector.config import Settings
from collector.firehose_sink import (
    BYTES_PER_CALL,
    RECORD_BYTES,
    RECORDS_PER_CALL,
    _calls,
    records,
)

from .conftest import DELIVERY_STREAM, Aws, invoke_batch, track, use_firehose


@pytest.fixture
def firehose_sink(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """The collector on EVENT_SINK=firehose, with moto's delivery stream into the bucket."""
    use_firehose(aws.bucket, monkeypatch)
    return aws


class FlakyFirehose:
    """Answers some records as failed (FailedPutCount), as Firehose does when throttled, which
    moto never does; keeps what it accepted."""

    def __init__(self, failures: list[set[int]]) -> None:
        # For each call in turn, the positions of the records it answers as failed.
        self.failures = failures
        self.calls: list[list[bytes]] = []
        self.accepted: list[bytes] = []

    def put_record_batch(self, DeliveryStreamName: str, Records: list[Any]) -> dict[str, Any]:
        data = [record["Data"] for record in Records]
        self.calls.append(data)
        failed = self.failures.pop(0) if self.failures else set()
        self.accepted += [record for n, record in enumerate(data) if n not in failed]
        responses = [
            {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}
            if n in failed
            else {"RecordId": f"r{n}"}
            for n in range(len(data))
        ]
        return {"FailedPutCount": len(failed), "RequestResponses": responses}


def delivered(aws: Aws) -> list[dict[str, Any]]:
    """Every line Firehose wrote under events/."""
    return aws.stored("events/")


def batch(*messages: dict[str, Any]) -> bytes:
    return orjson.dumps({"batch": list(messages)})


def test_records_are_split_between_lines_within_the_record_limit() -> None:
    lines = [orjson.dumps({"n": n, "pad": "x" * 30_000}) for n in range(100)]
    made = list(records(lines))
    assert len(made) == 3
    assert all(len(record) <= RECORD_BYTES and record.endswith(b"\n") for record in made)
    # Concatenated, as Firehose writes them into one object, they are the lines again.
    assert b"".join(made).splitlines() == lines


def test_calls_stay_within_the_batch_limits() -> None:
    many_small = [b"x"] * (RECORDS_PER_CALL * 2 + 1)
    assert [len(call) for call in _calls(many_small)] == [RECORDS_PER_CALL, RECORDS_PER_CALL, 1]
    large = [b"x" * RECORD_BYTES] * 9
    sizes = [sum(map(len, call)) for call in _calls(large)]
    assert all(size <= BYTES_PER_CALL for size in sizes)
    assert sum(sizes) == 9 * RECORD_BYTES


def test_events_reach_the_bucket_through_the_delivery_stream(firehose_sink: Aws, post: Any) -> None:
    sent = [track(n, properties={"emoji": "🎉", "city": "Zürich"}) for n in range(3)]
    assert post("/v1/batch", batch(*sent)).status_code == 200
    lines = delivered(firehose_sink)
    assert [line["messageId"] for line in lines] == [m["messageId"] for m in sent]
    assert lines[0]["properties"] == {"emoji": "🎉", "city": "Zürich"}
    # Only Firehose wrote them: its object names start with the stream's name.
    assert all(
        key.rsplit("/", 1)[1].startswith(DELIVERY_STREAM) for key in firehose_sink.keys("events/")
    )


def test_failed_records_alone_are_sent_again(
    firehose_sink: Aws, post: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request whose stamped lines outgrow one record: many messages, or large ones.
    monkeypatch.setenv("MAX_REQUEST_BYTES", str(2 * RECORD_BYTES))
    flaky = FlakyFirehose(failures=[{0}])
    api.use_clients({"s3": firehose_sink.s3, "dynamodb": firehose_sink.dynamodb, "firehose": flaky})
    big = [track(n, properties={"pad": "x" * 30_000}) for n in range(40)]
    assert post("/v1/batch", batch(*big)).status_code == 200
    first, retried = flaky.calls
    assert len(first) == 2 and retried == first[:1]
    ids = [orjson.loads(line)["messageId"] for r in flaky.accepted for line in r.splitlines()]
    assert sorted(ids) == sorted(m["messageId"] for m in big)


def test_records_that_keep_failing_answer_503_and_the_retry_sends_them_once(
    firehose_sink: Aws, post: Any
) -> None:
    flaky = FlakyFirehose(failures=[{0}, {0}, {0}])
    api.use_clients({"s3": firehose_sink.s3, "dynamodb": firehose_sink.dynamodb, "firehose": flaky})
    sent = [track(n) for n in range(5)]
    answer = post("/v1/batch", batch(*sent))
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) >= 1
    assert flaky.accepted == []
    assert post("/v1/batch", batch(*sent), {"X-Retry-Count": "1"}).status_code == 200
    ids = [orjson.loads(line)["messageId"] for r in flaky.accepted for line in r.splitlines()]
    assert ids == [m["messageId"] for m in sent]


def test_rejected_messages_stay_objects_under_rejected(firehose_sink: Aws, post: Any) -> None:
    answer = post("/v1/batch", batch(track(1), {"type": "track", "messageId": "no-user"}))
    assert answer.status_code == 200
    assert [r["messageId"] for r in answer.json()["rejected"]] == ["no-user"]
    assert [line["messageId"] for line in firehose_sink.stored("rejected/")] == ["no-user"]


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"EVENT_SINK": "kinesis"}, "EVENT_SINK must be s3 or firehose"),
        ({"EVENT_SINK": "firehose"}, "needs DELIVERY_STREAM"),
        (
            {
                "EVENT_SINK": "firehose",
                "DELIVERY_STREAM": DELIVERY_STREAM,
                "DEDUPE_SCOPE": "request",
            },
            "needs DEDUPE_SCOPE=message",
        ),
    ],
)
def test_a_sink_setting_that_cannot_work_fails_the_cold_start(
    variables: dict[str, str], problem: str
) -> None:
    env = {"EVENTS_BUCKET": "b", "IDENTITY_TABLE": "t", **variables}
    with pytest.raises(RuntimeError, match=problem):
        Settings.from_env(env)


# --- the in-doubt windows (docs/design.md, "Sinks") ------------------------------------------


def test_a_crash_between_the_claim_and_the_put_neither_loses_nor_duplicates(
    firehose_sink: Aws, write_key: str
) -> None:
    """The invocation dies before its records leave: nothing was sent, the claim is left. The
    same batch retried takes its own claim over at once and sends each message once."""
    messages = [track(n, writeKey=write_key) for n in range(3)]
    firehose = api.aws_client("firehose")

    def die(**_: Any) -> None:
        raise SystemExit("the Lambda ran out of time")

    firehose.meta.events.register_first("before-send.firehose.PutRecordBatch", die)
    with pytest.raises(SystemExit):
        invoke_batch(messages)
    firehose.meta.events.unregister("before-send.firehose.PutRecordBatch", die)
    assert delivered(firehose_sink) == []
    assert invoke_batch(messages)["statusCode"] == 200
    assert sorted(line["messageId"] for line in delivered(firehose_sink)) == sorted(
        m["messageId"] for m in messages
    )


@pytest.mark.parametrize("lost", ["the put's answer", "the receipt"])
def test_a_delivery_in_doubt_answers_503_and_stores_each_message_at_most_twice(
    firehose_sink: Aws, write_key: str, lost: str
) -> None:
    """Firehose took the records, then the collector could not know it (the answer timed out)
    or could not note it (the receipt's write failed): the request answers 503, its retry sends
    the records again. Nothing is lost; this is the window docs/design.md states."""
    messages = [track(n, writeKey=write_key) for n in range(3)]
    failed: list[str] = []

    def once(**_: Any) -> None:
        if not failed:
            failed.append(lost)
            raise ReadTimeoutError(endpoint_url="aws")

    client, event = (
        (api.aws_client("firehose"), "after-call.firehose.PutRecordBatch")
        if lost == "the put's answer"
        else (api.aws_client("dynamodb"), "before-parameter-build.dynamodb.PutItem")
    )
    client.meta.events.register(event, receipt_only(once) if "receipt" in lost else once)
    answer = invoke_batch(messages)
    assert answer["statusCode"] == 503
    assert answer["multiValueHeaders"]["Retry-After"]
    assert invoke_batch(messages)["statusCode"] == 200
    counts = Counter(line["messageId"] for line in delivered(firehose_sink))
    assert set(counts) == {m["messageId"] for m in messages}
    assert set(counts.values()) == {2}
    # From then on the receipt answers: a third attempt sends nothing.
    assert invoke_batch(messages)["statusCode"] == 200
    assert len(delivered(firehose_sink)) == 6


def receipt_only(fault: Callable[..., None]) -> Callable[..., None]:
    """`fault` for the receipt's PutItem only (a one-message claim is a PutItem too)."""

    def hook(params: dict[str, Any], **kwargs: Any) -> None:
        if params["Item"]["pk"]["S"].startswith("SENT#"):
            fault(params=params, **kwargs)

    return hook
