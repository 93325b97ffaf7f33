"""A DynamoDB call throttled for lack of capacity (a transaction cancelled with ThrottlingError,
a single write refused with ProvisionedThroughputExceededException) is a storage failure,
answered 503 and retried, never a race the identity graph or the ledger lost."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from collector import api
from collector.dynamodb import ConditionsFailed, transact
from collector.errors import StorageUnavailable

from .conftest import Aws, graph_partition, invoke_batch, replayed_partition, track
from .faults import throttle


def send(write_key: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return invoke_batch([{**message, "writeKey": write_key} for message in messages])


def cancelled(*codes: str) -> ClientError:
    reasons = [{"Code": code} for code in codes]
    error = {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": reasons}
    return ClientError(error, "TransactWriteItems")  # type: ignore[arg-type]


def assert_storage_unavailable(answer: dict[str, Any], aws: Aws) -> None:
    """A 503 to retry after, with nothing stored."""
    assert answer["statusCode"] == 503, answer["body"]
    assert orjson.loads(answer["body"])["code"] == "storage_unavailable"
    assert answer["multiValueHeaders"]["Retry-After"]
    assert aws.keys("events/") == []


class Answering:
    """A DynamoDB client whose transactions fail with `error`."""

    def __init__(self, error: ClientError) -> None:
        self.error = error

    def transact_write_items(self, **_: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    "codes",
    [("None", "ConditionalCheckFailed"), ("TransactionConflict", "None"), ()],
    ids=["condition", "conflict", "no-reasons"],
)
def test_a_transaction_that_lost_a_race_is_a_failed_condition(codes: tuple[str, ...]) -> None:
    with pytest.raises(ConditionsFailed):
        transact(Answering(cancelled(*codes)), [{}])


@pytest.mark.parametrize(
    "codes",
    [("None", "ThrottlingError"), ("ProvisionedThroughputExceeded",), ("ValidationError",)],
    ids=["throttled", "capacity", "invalid"],
)
def test_a_transaction_cancelled_for_anything_else_is_a_storage_failure(
    codes: tuple[str, ...],
) -> None:
    with pytest.raises(StorageUnavailable, match="TransactionCanceledException"):
        transact(Answering(cancelled(*codes)), [{}])


def test_a_throttled_identify_answers_503_and_its_retry_decides_it(
    aws: Aws, write_key: str
) -> None:
    """Read as a lost race, the throttled transaction had the graph decide again as if another
    writer had got there first, and the request answered 200."""
    identify = {
        "type": "identify",
        "userId": "throttled-user",
        "anonymousId": "throttled-anon",
        "messageId": f"identify-{uuid.uuid4()}",
    }
    stop = throttle(api.aws_client("dynamodb"))

    assert_storage_unavailable(send(write_key, [identify]), aws)
    stop()

    retry = send(write_key, [identify])

    assert retry["statusCode"] == 200, retry["body"]
    [stored] = aws.stored()
    assert stored["collector"]["identity"]["outcome"] == "created"
    assert replayed_partition(aws.stored()) == graph_partition(aws.dynamodb, aws.table)


@pytest.mark.parametrize(
    ("size", "claim"),
    # A batch is claimed in one transaction; one message (a browser event) with a single
    # conditional PutItem, which a PROVISIONED table refuses past its capacity.
    [(3, "TransactWriteItems"), (1, "PutItem")],
    ids=["batch", "one-message"],
)
def test_a_throttled_claim_answers_503_and_its_retry_stores_the_messages(
    aws: Aws, write_key: str, size: int, claim: str
) -> None:
    batch = [track(n) for n in range(size)]
    stop = throttle(api.aws_client("dynamodb"), claim)

    assert_storage_unavailable(send(write_key, batch), aws)
    stop()

    assert send(write_key, batch)["statusCode"] == 200
    assert sorted(event["messageId"] for event in aws.stored()) == sorted(
        message["messageId"] for message in batch
    )
