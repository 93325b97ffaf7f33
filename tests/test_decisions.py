"""Identity decisions are made once per message and stored as made: a retry after a failed S3
write stores the original decision, the stored outcomes replay to the graph in DynamoDB, and a
batch of identity calls that failed midway finishes on its next retry once faults stop."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from botocore.exceptions import EndpointConnectionError

from collector import api
from collector.tools.localapi import LambdaContext, proxy_event

from .conftest import Aws, basic, graph_partition, replayed_partition
from .faults import Faults


def identify(user_id: str, anonymous_id: str) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user_id,
        "anonymousId": anonymous_id,
        "messageId": f"identify-{uuid.uuid4()}",
    }


def send(write_key: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    headers = [("Content-Type", "application/json"), *basic(write_key).items()]
    body = orjson.dumps({"batch": messages})
    event = proxy_event("POST", "/v1/batch", "", headers, body, "127.0.0.1")
    assert event is not None
    return api.lambda_handler(event, LambdaContext(str(uuid.uuid4())))


def stored_outcome(aws: Aws, message_id: str) -> dict[str, Any]:
    [event] = [event for event in aws.stored() if event["messageId"] == message_id]
    return event["collector"]["identity"]


@pytest.fixture
def failing_puts() -> Any:
    """Every S3 PutObject of the collector fails until `stop()`: the graph write succeeds."""
    s3 = api.aws_client("s3")

    def refuse(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="s3")

    s3.meta.events.register_first("before-send.s3.PutObject", refuse)
    yield lambda: s3.meta.events.unregister("before-send.s3.PutObject", refuse)


def test_a_retry_after_a_failed_write_stores_the_original_decision(
    aws: Aws, write_key: str, failing_puts: Any
) -> None:
    """identify(U7, A7) decides `created` but is not stored; identify(U8, A7) is then refused;
    the retry of the first stores `created`, not the `already_linked` it would decide now."""
    first = identify("U7", "A7")
    assert send(write_key, [first])["statusCode"] == 503
    failing_puts()
    second = identify("U8", "A7")
    assert send(write_key, [second])["statusCode"] == 200
    assert send(write_key, [first])["statusCode"] == 200

    created = stored_outcome(aws, first["messageId"])
    assert created["outcome"] == "created"
    refused = stored_outcome(aws, second["messageId"])
    assert (refused["outcome"], refused["reason"]) == ("refused", "already_identified")
    api.identity_graph().view("A7")
    view = api.identity_graph().view("A7")
    assert view is not None and view.person_id == created["personId"]
    graph = graph_partition(aws.dynamodb, aws.table)
    assert graph == {frozenset({"U7", "A7"}), frozenset({"U8"})}
    assert replayed_partition(aws.stored()) == graph


def test_a_recomposed_retry_carries_the_decision_too(
    aws: Aws, write_key: str, failing_puts: Any
) -> None:
    """The retry is another batch (the Python client re-queues): the claim's lease is released
    after the failed write, so the new batch takes the message over with its decision."""
    first = identify("U1", "A1")
    assert send(write_key, [first])["statusCode"] == 503
    failing_puts()
    later = identify("U2", "A2")
    assert send(write_key, [later, first])["statusCode"] == 200
    assert stored_outcome(aws, first["messageId"])["outcome"] == "created"
    assert len(aws.stored()) == 2


def test_a_batch_of_identity_calls_finishes_on_its_first_retry_after_faults_stop(
    aws: Aws, write_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eleven messages, nine of them identify or alias, under failing AWS calls (80%, so that
    attempts fail): every attempt keeps what it decided, so the first attempt after the faults
    stop succeeds, with the outcomes a run without faults records."""
    monkeypatch.setenv("RETRY_AFTER_SECONDS", "1")
    batch: list[dict[str, Any]] = [identify(f"u{n}", f"a{n}") for n in range(6)]
    batch += [
        {"type": "alias", "previousId": f"b{n}", "userId": f"u{n}", "messageId": f"alias-{n}"}
        for n in range(3)
    ]
    batch += [
        {"type": "track", "event": "e", "userId": "u0", "messageId": f"t-{n}"} for n in range(2)
    ]
    faults = Faults(rate=0.8, seed=11)
    for service in ("s3", "dynamodb"):
        faults.install(api.aws_client(service))
    statuses = [send(write_key, batch)["statusCode"] for _ in range(4)]
    faults.enabled = False
    assert set(statuses) == {503}
    assert sum(faults.injected.values()) > 0

    assert send(write_key, batch)["statusCode"] == 200
    stored = aws.stored()
    assert sorted(event["messageId"] for event in stored) == sorted(m["messageId"] for m in batch)
    outcomes = {
        event["messageId"]: event["collector"]["identity"]["outcome"]
        for event in stored
        if event["type"] != "track"
    }
    assert set(outcomes.values()) == {"created", "attached"}
    assert [outcomes[m["messageId"]] for m in batch[:9]] == ["created"] * 6 + ["attached"] * 3
    assert replayed_partition(stored) == graph_partition(aws.dynamodb, aws.table)


@dataclass(frozen=True)
class ShrinkingContext(LambdaContext):
    """A Lambda context whose invocation loses a second each time its clock is read."""

    budget_ms: list[int] = field(default_factory=lambda: [6000])

    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        self.budget_ms[0] -= 1000
        return self.budget_ms[0]


def test_a_request_short_of_time_answers_503_and_its_retry_goes_on(
    aws: Aws, write_key: str
) -> None:
    """Forty new users take three transactions; the invocation runs short (3 s left, the
    margin) after two, answers 503 in time with those decisions kept, and its retry decides
    only the rest, with the outcomes an uninterrupted run records."""
    batch = [identify(f"late-{n}", f"anon-{n}") for n in range(40)]
    headers = [("Content-Type", "application/json"), *basic(write_key).items()]
    event = proxy_event("POST", "/v1/batch", "", headers, orjson.dumps({"batch": batch}), "::1")
    assert event is not None
    persons_created: list[str] = []

    def count_persons(params: dict[str, Any], **_: Any) -> None:
        for item in params["TransactItems"]:
            put = item.get("Put", {}).get("Item", {})
            if put.get("sk") == {"S": "PERSON"}:
                persons_created.append(put["pk"]["S"].removeprefix("PERSON#"))

    api.aws_client("dynamodb").meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems", count_persons
    )

    first = api.lambda_handler(event, ShrinkingContext("short", budget_ms=[5000]))

    assert first["statusCode"] == 503, first["body"]
    assert orjson.loads(first["body"])["code"] == "out_of_time"
    assert first["multiValueHeaders"]["Retry-After"] == ["5"]
    assert aws.keys("events/") == []
    decided_first = list(persons_created)
    assert 0 < len(decided_first) < 40

    retry = api.lambda_handler(event, LambdaContext("plenty"))

    assert retry["statusCode"] == 200, retry["body"]
    stored = {event["messageId"]: event["collector"]["identity"] for event in aws.stored()}
    assert [stored[m["messageId"]]["outcome"] for m in batch] == ["created"] * 40
    # The retry went on from the decisions kept: forty persons in all, not more.
    assert len(persons_created) == 40
    assert {outcome["personId"] for outcome in stored.values()} == set(persons_created)
    assert replayed_partition(aws.stored()) == graph_partition(aws.dynamodb, aws.table)
