"""Each (source, messageId) is stored once, however clients recompose their batches: the
patterns analytics-next and segment-analytics-python produce, and two recomposed batches racing."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import requests
from botocore.exceptions import ReadTimeoutError
from segment.analytics import Client

from collector import api
from collector.tools.localapi import LocalApiGateway

from .conftest import Aws, basic, invoke_batch

pytestmark = pytest.mark.engines


def browser_message(n: int, write_key: str) -> dict[str, Any]:
    """A message as analytics-next batches it: its own sentAt, _metadata, an ajs-next id."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "type": "track",
        "event": f"Step {n}",
        "anonymousId": "anon-browser",
        "messageId": f"ajs-next-1764000000{n:03d}-{uuid.uuid4()}",
        "timestamp": now,
        "sentAt": now,
        "writeKey": write_key,
        "context": {"library": {"name": "analytics.js", "version": "npm:next-1.84.3"}},
        "_metadata": {"bundled": ["Segment.io"], "unbundled": []},
    }


def send_browser_batch(
    server: LocalApiGateway, messages: list[dict[str, Any]], retry: int = 0
) -> int:
    """As analytics-next 1.84 posts a batch: text/plain, Basic auth, X-Retry-Count on retries."""
    headers = {"Content-Type": "text/plain", **basic(messages[0]["writeKey"])}
    if retry:
        headers["X-Retry-Count"] = str(retry)
    body = orjson.dumps({"batch": messages, "sentAt": messages[-1]["sentAt"]})
    return requests.post(f"{server.url}/v1/b", data=body, headers=headers, timeout=10).status_code


def stored_ids(aws: Aws) -> Counter[str]:
    return Counter(event["messageId"] for event in aws.stored())


@pytest.mark.sinks
def test_a_page_hide_flush_then_the_timer_flush_stores_each_message_once(
    server: LocalApiGateway, aws: Aws, write_key: str
) -> None:
    """analytics-next 1.84 batching: the hide flush does not clear its buffer."""
    m1, m2, m3 = (browser_message(n, write_key) for n in range(3))
    assert send_browser_batch(server, [m1, m2]) == 200
    assert send_browser_batch(server, [m1, m2, m3]) == 200
    assert stored_ids(aws) == Counter({m["messageId"]: 1 for m in (m1, m2, m3)})


@pytest.mark.sinks
def test_a_lost_response_retried_with_newer_messages_stores_each_once(
    server: LocalApiGateway, aws: Aws, write_key: str
) -> None:
    """analytics-next retries a failed batch merged with what it buffered meanwhile."""
    first = [browser_message(n, write_key) for n in range(2)]
    assert send_browser_batch(server, first) == 200  # stored; the browser never saw the answer
    later = browser_message(2, write_key)
    assert send_browser_batch(server, [*first, later], retry=1) == 200
    assert sorted(stored_ids(aws).values()) == [1, 1, 1]
    assert len(aws.keys("events/")) == 2


def test_segment_client_requeue_after_503_stores_each_message_once(
    server: LocalApiGateway, aws: Aws, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """segment-analytics-python 2.4 puts a batch answered 503 behind newer messages. The first
    events PUT is applied but its answer times out, so the collector answers 503 while the
    messages are in S3; the client's retry is a differently composed batch."""
    monkeypatch.setenv("RETRY_AFTER_SECONDS", "1")
    s3 = api.aws_client("s3")
    failed: list[str] = []

    def time_out_once(**_: Any) -> None:
        if not failed:
            failed.append("PutObject")
            raise ReadTimeoutError(endpoint_url="s3")

    s3.meta.events.register("after-call.s3.PutObject", time_out_once)
    sent: list[list[str]] = []
    invoke = server.invoke

    def recording(event: dict[str, Any]) -> dict[str, Any]:
        body = orjson.loads(base64.b64decode(event["body"]))
        sent.append([message["messageId"] for message in body["batch"]])
        return invoke(event)

    server.invoke = recording
    client = Client(write_key, host=server.url, upload_size=10, max_retries=3)
    for n in range(25):
        client.track(f"user-{n}", "Re-queued", {"n": n})
    client.flush()
    client.shutdown()

    assert failed == ["PutObject"]
    first_attempt = set(sent[0])
    assert len(first_attempt) == 10
    # The retry is not the same batch again: the proof that the client recomposed it.
    assert all(set(batch) != first_attempt for batch in sent[1:])
    assert sum(len(batch) for batch in sent) > 25
    counts = stored_ids(aws)
    assert len(counts) == 25 and set(counts.values()) == {1}


@pytest.mark.sinks
def test_two_recomposed_batches_racing_store_each_message_once(atomic: Aws, write_key: str) -> None:
    """Both reach their claim before either makes it: the claim conditions decide who stores
    the shared messages, and the loser stores only what is left."""
    messages = [browser_message(n, write_key) for n in range(9)]
    batches = [messages[:6], messages[3:]]
    barrier = threading.Barrier(2, timeout=10)
    dynamodb = api.aws_client("dynamodb")
    waiting = threading.local()

    def hold_before_the_claim(model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems" and not getattr(waiting, "done", False):
            waiting.done = True
            barrier.wait()

    dynamodb.meta.events.register("before-call.dynamodb", hold_before_the_claim)
    statuses: list[int] = [0, 0]

    def send(index: int) -> None:
        statuses[index] = invoke_batch(batches[index])["statusCode"]

    threads = [threading.Thread(target=send, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    dynamodb.meta.events.unregister("before-call.dynamodb", hold_before_the_claim)

    # The loser of the claim answers 503 if the winner's object was not yet written, else it
    # finds the shared messages stored: either way its retry (if any) stores only the rest.
    assert set(statuses) <= {200, 503} and 200 in statuses
    for index, status in enumerate(statuses):
        if status == 503:
            assert invoke_batch(batches[index])["statusCode"] == 200
    counts = stored_ids(atomic)
    assert len(counts) == 9 and set(counts.values()) == {1}
    shared = {m["messageId"] for m in messages[3:6]}
    stored_by = {e["collector"]["requestId"] for e in atomic.stored() if e["messageId"] in shared}
    assert len(stored_by) == 1


def test_a_crash_after_the_claim_neither_loses_nor_duplicates(
    aws: Aws, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Lambda dies between its claim and its S3 write, so nothing is released. The same
    batch retried goes on at once (it names the same object); a recomposed one waits for the
    lease, then takes the messages over."""
    monkeypatch.setenv("CLAIM_LEASE_SECONDS", "1")
    messages = [browser_message(n, write_key) for n in range(3)]
    s3 = api.aws_client("s3")

    def die(**_: Any) -> None:
        raise SystemExit("the Lambda ran out of time")

    s3.meta.events.register_first("before-send.s3.PutObject", die)
    with pytest.raises(SystemExit):
        invoke_batch(messages[:2])
    s3.meta.events.unregister("before-send.s3.PutObject", die)

    recomposed = invoke_batch(messages)
    assert recomposed["statusCode"] == 503
    assert orjson.loads(recomposed["body"])["code"] == "messages_in_flight"
    assert recomposed["multiValueHeaders"]["Retry-After"] == ["1"]
    assert set(stored_ids(aws)) == {messages[2]["messageId"]}  # the rest went in meanwhile

    assert invoke_batch(messages[:2])["statusCode"] == 200  # the same batch: no wait
    time.sleep(1.1)
    assert invoke_batch(messages)["statusCode"] == 200
    counts = stored_ids(aws)
    assert len(counts) == 3 and set(counts.values()) == {1}
